// CPU GEMM with an int8 weight (dynamic quantization, as onnxruntime's MatMulInteger after
// quantize_dynamic, but symmetric and per row on both sides):
//
//   qw[n, k] = round(W[n, k] / sw[n]),  sw[n] = max_k |W[n, k]| / 127      once (quantize_weight_q8)
//   qa[m, k] = round(a[m, k] / sa[m]),  sa[m] = max_k |a[m, k]| / 127      at every call
//   out[m, n] = float(sum_k qa[m, k] * qw[n, k]) * sa[m] * sw[n], then the epilogues of gemm
//
// round: to nearest even of the f32 product x * (127 / amax), clamped to [-127, 127]; a row of
// zeros has scale 0 and quantizes to zeros. A NaN in a row of a makes that row's outputs NaN
// (its scale is NaN); an infinity makes them NaN too (inf * 0). The sums are exact int32 (with
// the offset, (qa + 128) qw <= 255 * 127, and K <= 2^16), so every kernel and thread count gives
// the same bits up to the epilogue.
//
// Kernels, chosen at run time: AVX-512 VNNI (vpdpbusd on qa + 128, minus 128 * the weight's row
// sums) when the CPU has it and the backend runs the avx512 path; AVX2 (int8 widened to int16
// in registers, vpmaddwd); scalar otherwise, which reads A as the VNNI kernel does (qa + 128 and
// the row-sum correction), so that path's driver side is tested on every CPU.
//
// Tiling: one task per MC x NC tile of out; in it, each weight panel (16 rows x Kp bytes: 12 KiB
// for K = 768) stays in cache while the tile's rows of qa pass it. A is quantized once per call
// into a per-thread buffer.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/gemm_driver.h"
#include "cpu/gemm_kernels.h"
#include "cpu/gemm_q8_kernels.h"
#include "cpu/ops.h"

namespace elmo::cpu {
namespace gemm_q8_detail {
namespace {

// The scalar kernel reads A as the VNNI kernel does (uint8 qa + 128, 8 rows, 4-k groups, the
// row-sum correction), so the driver's side of that path runs, and is tested, on every CPU.
constexpr int kScalarMR = 8;

void micro_scalar(int64_t kq, const uint8_t* A, int64_t lda, const void* Bv, const int32_t* rowsum, const float* sa,
                  const float* sw, float* C, int64_t ldc, int rows, int cols, bool add) {
  const int8_t* B = static_cast<const int8_t*>(Bv);
  int32_t acc[kScalarMR][kQ8Panel] = {};
  for (int i = 0; i < kScalarMR; ++i) {
    const uint8_t* a = A + i * lda;
    for (int64_t g = 0; g < kq; ++g) {
      const int8_t* b = B + g * kQ8Panel * 4;
      for (int j = 0; j < kQ8Panel; ++j)
        for (int t = 0; t < 4; ++t) acc[i][j] += int32_t(a[g * 4 + t]) * int32_t(b[j * 4 + t]);
    }
  }
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) {
      const float v = static_cast<float>(acc[i][j] - 128 * rowsum[j]) * sa[i] * sw[j];
      C[i * ldc + j] = add ? C[i * ldc + j] + v : v;
    }
}

}  // namespace

const Q8Kernel& q8_kernel_scalar() {
  static const Q8Kernel k{"scalar", kScalarMR, 1, 4, true, &micro_scalar, nullptr, nullptr};
  return k;
}

}  // namespace gemm_q8_detail

namespace {

using gemm_detail::EpilogueArgs;
using gemm_detail::GrowBuffer;
using gemm_detail::run_parallel;
using gemm_q8_detail::kQ8Panel;
using gemm_q8_detail::Q8Kernel;
using EpilogueFn = void (*)(const EpilogueArgs&, float*, int64_t, int64_t, int64_t, int, int);

struct Path {
  const Q8Kernel* kn;
  EpilogueFn epilogue;  // the f32 GEMM's epilogue of the same ISA
};

Path select_path(Isa isa) {
  const CpuFeatures& f = cpu_features();
  if (isa == Isa::kAvx512 && f.avx512_vnni)
    return {&gemm_q8_detail::q8_kernel_avx512_vnni(), gemm_detail::kernel_avx512().epilogue};
  if (isa != Isa::kScalar) return {&gemm_q8_detail::q8_kernel_avx2(), gemm_detail::kernel_avx2().epilogue};
  return {&gemm_q8_detail::q8_kernel_scalar(), gemm_detail::kernel_scalar().epilogue};
}

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

thread_local GrowBuffer tl_qa;  // the calling thread's quantized rows of a and their scales

// Quantizes n values of x into q (int8, stride 1) and returns the scale (see the file comment).
float quantize_row(int8_t* q, const float* x, int64_t n) {
  float amax = 0.0f;
  bool nan = false;
  for (int64_t k = 0; k < n; ++k) {
    const float v = std::fabs(x[k]);
    nan |= v != v;
    amax = v > amax ? v : amax;
  }
  if (nan) return std::numeric_limits<float>::quiet_NaN();  // a weight is refused, a row of a gives NaN
  const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
  for (int64_t k = 0; k < n; ++k) {
    float r = std::nearbyint(x[k] * inv);
    r = r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r);  // inf * 0 is NaN: r stays NaN only then
    q[k] = r == r ? static_cast<int8_t>(r) : 0;
  }
  return amax / 127.0f;
}

// The weight's `panel` field: the rows of a panel, times 2 for the k-pair layout (so a weight
// quantized for one kernel is not read by another).
int panel_tag(const Q8Kernel& kn) { return kQ8Panel * (4 / kn.kgroup); }

// Per-task tile of out. MC a multiple of every kernel's mr, NC of the panel.
constexpr int64_t kMC = 64, kNC = 64;

}  // namespace

const char* gemm_q8_kernel_name(Isa isa) { return select_path(isa).kn->name; }

int64_t q8_weight_bytes(int64_t N, int64_t K) {
  const int64_t Np = round_up(std::max<int64_t>(N, 1), kQ8Panel), Kp = round_up(K, 4);
  return 8 * Np + Np * Kp;
}

Status quantize_weight_q8(const Ctx& c, Tensor* out_ptr, Tensor w) {
  if (out_ptr == nullptr) return input_error("quantize_weight: null output");
  ELMO_RETURN_IF_ERROR(check_tensor(w, "quantize_weight w", DType::kF32, {-1, -1}));
  Tensor out = *out_ptr;
  if (out.dtype != DType::kI8 || out.ndim != 2 || out.shape[0] != w.shape[0] || out.shape[1] != w.shape[1])
    return shape_error(strformat("quantize_weight: out %s must be i8 of w's shape %s", out.describe().c_str(),
                                 w.describe().c_str()));
  if (out.device != Device::kCpu || w.device != Device::kCpu)
    return input_error("quantize_weight: tensors must be in CPU memory");
  if (reinterpret_cast<uintptr_t>(out.data) % 64 != 0)
    return input_error("quantize_weight: out's memory must be 64-byte aligned");
  const int64_t N = w.shape[0], K = w.shape[1];
  const int64_t Np = round_up(std::max<int64_t>(N, 1), kQ8Panel), Kp = round_up(K, 4);
  char* base = static_cast<char*>(out.data);
  float* sw = reinterpret_cast<float*>(base);
  int32_t* rowsum = reinterpret_cast<int32_t*>(base + 4 * Np);
  char* panels = base + 8 * Np;
  std::atomic<bool> bad{false};
  const Q8Kernel& kn = *select_path(c.isa).kn;
  const int64_t G = kn.kgroup;
  float (*quantize)(int8_t*, const float*, int64_t) = kn.quantize ? kn.quantize : &quantize_row;
  run_parallel(c, Np / kQ8Panel, [&](int64_t p) {
    int8_t* panel = reinterpret_cast<int8_t*>(panels) + p * kQ8Panel * Kp;
    std::memset(panel, 0, static_cast<size_t>(kQ8Panel * Kp));
    std::vector<int8_t> q(static_cast<size_t>(std::max<int64_t>(K, 1)));
    for (int j = 0; j < kQ8Panel; ++j) {
      const int64_t n = p * kQ8Panel + j;
      if (n >= N) {
        sw[n] = 0.0f;
        rowsum[n] = 0;
        continue;
      }
      const float s = quantize(q.data(), w.f32() + n * K, K);
      if (!std::isfinite(s)) bad = true;  // NaN or infinity in the weight
      sw[n] = s;
      int32_t sum = 0;
      for (int64_t k = 0; k < K; ++k) {
        const int8_t v = q[static_cast<size_t>(k)];
        sum += v;
        panel[(k / G) * kQ8Panel * G + j * G + (k % G)] = v;
      }
      rowsum[n] = sum;
    }
  });
  if (bad) return input_error("quantize_weight: the weight holds NaN or infinity");
  out_ptr->panel = panel_tag(kn);
  return Status::ok();
}

Status gemm_q8(const Ctx& c, Tensor out, Tensor pre_gelu, Tensor a, Tensor b, Tensor bias, Tensor residual,
               GemmOp op, Epilogue ep, bool accumulate) {
  ELMO_RETURN_IF_ERROR(gemm_detail::check_op_and_epilogue(op, ep, accumulate));
  if (op != GemmOp::kNT || a.dtype != DType::kF32 || b.dtype != DType::kI8 || accumulate)
    return dtype_error(strformat("gemm %s: a %s, b %s%s is not supported on the CPU: an int8 b is a quantized weight "
                                 "[N,K] (quantize_weight) with an f32 a, op NT, no accumulate",
                                 gemm_op_name(op), dtype_name(a.dtype), dtype_name(b.dtype),
                                 accumulate ? " (accumulate)" : ""));
  ELMO_RETURN_IF_ERROR(check_tensor(a, "gemm a", DType::kF32, {-1, -1}));
  const Path path = select_path(c.isa);
  const Q8Kernel& kn = *path.kn;
  if (b.ndim != 2 || b.panel != panel_tag(kn) || reinterpret_cast<uintptr_t>(b.data) % 64 != 0)
    return input_error(strformat("gemm: b %s is not a weight quantized for the %s int8 kernel (quantize_weight)",
                                 b.describe().c_str(), kn.name));
  const int64_t M = a.shape[0], K = a.shape[1], N = b.shape[0];
  ELMO_RETURN_IF_ERROR(gemm_detail::check_inner(GemmOp::kNT, a, b, K, b.shape[1]));
  if (K > (int64_t{1} << 16))
    return shape_error(strformat("gemm: K=%lld is over the int8 GEMM's 65536 (its int32 sums must stay exact)",
                                 static_cast<long long>(K)));
  EpilogueArgs e;
  bool residual_in_place = false;
  ELMO_RETURN_IF_ERROR(
      gemm_detail::check_outputs(out, pre_gelu, a, b, bias, residual, ep, M, N, &e, &residual_in_place));
  if (M == 0 || N == 0) return Status::ok();
  const bool any_epilogue = e.bias || e.gelu || e.residual;
  const bool add = residual_in_place;  // out already holds the residual
  float (*quantize)(int8_t*, const float*, int64_t) = kn.quantize ? kn.quantize : &quantize_row;

  const int64_t Np = round_up(N, kQ8Panel), Kp = round_up(K, 4), Mp = round_up(M, kn.mr), elem = kn.a_elem;
  const char* wb = static_cast<const char*>(b.data);
  const float* sw = reinterpret_cast<const float*>(wb);
  const int32_t* rowsum = reinterpret_cast<const int32_t*>(wb + 4 * Np);
  const char* panels = wb + 8 * Np;

  // 1. a's rows, quantized into the kernel's layout (offset by 128 for an a_u8 kernel);
  //    padding rows are zeros.
  const int64_t lda = Kp * elem;
  const int64_t qa_bytes = round_up(Mp * lda, 64);
  char* ws = static_cast<char*>(tl_qa.get(static_cast<size_t>(qa_bytes + Mp * 4)));
  if (ws == nullptr)
    return Status(Code::kOom, strformat("gemm: cannot allocate %lld bytes for the quantized rows of a",
                                        static_cast<long long>(qa_bytes + Mp * 4)));
  uint8_t* qa = reinterpret_cast<uint8_t*>(ws);
  float* sa = reinterpret_cast<float*>(ws + qa_bytes);
  // A few rows are quantized on the calling thread: a parallel job costs more than they do.
  constexpr int64_t kRowsPerTask = 16, kSerialBytes = 1 << 16;
  const auto quantize_rows = [&](int64_t t) {
    for (int64_t m = t * kRowsPerTask; m < std::min(Mp, (t + 1) * kRowsPerTask); ++m) {
      int8_t* q = reinterpret_cast<int8_t*>(qa + m * lda);
      std::memset(q, 0, static_cast<size_t>(lda));
      if (kn.quantize_a) {
        sa[m] = m < M ? kn.quantize_a(q, a.f32() + m * K, K) : 0.0f;
        continue;
      }
      sa[m] = m < M ? quantize(q, a.f32() + m * K, K) : 0.0f;
      if (kn.a_u8)
        for (int64_t k = 0; k < Kp; ++k) qa[m * lda + k] ^= 0x80;  // two's complement + 128
    }
  };
  const int64_t row_tasks = (Mp + kRowsPerTask - 1) / kRowsPerTask;
  if (Mp * lda <= kSerialBytes) {
    for (int64_t t = 0; t < row_tasks; ++t) quantize_rows(t);
  } else {
    run_parallel(c, row_tasks, quantize_rows);
  }

  // 2. One task per kMC x kNC tile; each weight panel meets the tile's rows back to back.
  const int64_t tiles_m = (M + kMC - 1) / kMC, tiles_n = (N + kNC - 1) / kNC;
  float* C = out.f32();
  run_parallel(c, tiles_m * tiles_n, [&](int64_t t) {
    const int64_t m0 = (t % tiles_m) * kMC, n0 = (t / tiles_m) * kNC;
    const int64_t m1 = std::min(M, m0 + kMC), n1 = std::min(N, n0 + kNC);
    for (int64_t jr = n0; jr < n1; jr += kQ8Panel) {
      const int cols = static_cast<int>(std::min<int64_t>(kQ8Panel, n1 - jr));
      const char* bp = panels + jr * Kp;  // panel jr / 16 starts at jr / 16 * 16 * Kp bytes
      for (int64_t ir = m0; ir < m1; ir += kn.mr) {
        const int rows = static_cast<int>(std::min<int64_t>(kn.mr, m1 - ir));
        float* ct = C + ir * N + jr;
        kn.micro(Kp / 4, qa + ir * lda, lda, bp, rowsum + jr, sa + ir, sw + jr, ct, N, rows, cols, add);
        if (any_epilogue) path.epilogue(e, ct, N, ir, jr, rows, cols);
      }
    }
  });
  return Status::ok();
}

}  // namespace elmo::cpu
