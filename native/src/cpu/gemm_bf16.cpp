// CPU GEMM with a bf16 weight: out[M,N] = a[M,K] . b[N,K]^T, a f32 (activations), b bf16 (a
// linear layer's weight copy), op NT only, with the epilogues of elmo/backend.h:
//   v = acc (+ bias[n]); pre_gelu = v, v = gelu_erf(v); v += residual[m,n]; out = v
//   accumulate (kNone only): out += acc
//
// Numerics, the same on every ISA path: each element of a is rounded to bf16 (round to nearest
// even, NaN stays NaN) before it is multiplied; a product of two bf16 values is exact in fp32;
// products are summed in fp32. So the result is the f32 GEMM of the bf16-rounded operands, and
// the paths differ only in the order of the fp32 sums (and on AVX512-BF16, whose vdpbf16ps treats
// subnormal inputs and results as zero).
//
// Kernels, chosen at run time: AVX512-BF16 (vdpbf16ps, k pairs, fp32 accumulate) when the CPU
// has it and the backend runs the avx512 path; else AVX2+FMA (bf16 widened to f32 in registers,
// fp32 FMA); else scalar. The epilogues are those of the f32 GEMM (gemm_kernels.h).
//
// Algorithm: as gemm.cpp. Up to kStreamM rows of a, each task streams a band of weight rows
// once, straight from their bf16 storage (half the bytes of the f32 weight), against the rounded
// rows of a held in cache. Taller a: BLIS-style packing (A rounded into micro-panels once per
// call, B packed per task for short M or once and shared for tall M), MC x NC tiles, one task
// each, K walked in KC blocks. Every output element is summed over K in an order fixed by the
// shape, never split across threads: 1 and N threads give bit-identical results.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <new>

#include "cpu/gemm_bf16_kernels.h"
#include "cpu/gemm_driver.h"
#include "cpu/gemm_kernels.h"
#include "cpu/ops.h"
#include "elmo/half.h"

namespace elmo::cpu {
namespace gemm_bf16_detail {

void round_to_bf16(float* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(f32_to_bf16(src[i]));
}

void round_to_bf16_bits(uint16_t* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

void pack_a_rounded_f32(float* dst, const float* a, int64_t lda, int64_t K, int rows, int mr) {
  // Gathers mr rows; blocks of k keep the rows' cache lines hot.
  constexpr int64_t kBlock = 64;
  for (int64_t k0 = 0; k0 < K; k0 += kBlock) {
    const int64_t k1 = std::min(K, k0 + kBlock);
    for (int i = 0; i < mr; ++i) {
      const float* s = a + i * lda;
      for (int64_t k = k0; k < k1; ++k) dst[k * mr + i] = i < rows ? bf16_to_f32(f32_to_bf16(s[k])) : 0.0f;
    }
  }
}

// ---- scalar kernel (the reference-quality path; CPUs without AVX2) ---------------------------

namespace {

constexpr int kScalarMR = 4, kScalarNR = 8;

void pack_a_scalar(void* dst, const float* a, int64_t lda, int64_t K, int rows) {
  pack_a_rounded_f32(static_cast<float*>(dst), a, lda, K, rows, kScalarMR);
}

void pack_b_scalar(uint16_t* dst, const uint16_t* src, int64_t ldb, int64_t kc, int cols) {
  for (int j = 0; j < kScalarNR; ++j)
    for (int64_t k = 0; k < kc; ++k) dst[k * kScalarNR + j] = j < cols ? src[j * ldb + k] : 0;
}

void micro_scalar(int64_t kc, const void* Ap, const uint16_t* Bp, float* C, int64_t ldc, int rows, int cols,
                  bool add, gemm_detail::Prefetch pf) {
  for (int64_t q = 0; q < pf.lines; ++q) __builtin_prefetch(pf.p + q * 64, 0, 3);
  const float* ap = static_cast<const float*>(Ap);
  float acc[kScalarMR][kScalarNR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    const float* a = ap + k * kScalarMR;  // (MR)
    float b[kScalarNR];
    for (int j = 0; j < kScalarNR; ++j) b[j] = bf16_to_f32(Bp[k * kScalarNR + j]);
    for (int i = 0; i < kScalarMR; ++i)
      for (int j = 0; j < kScalarNR; ++j) acc[i][j] += a[i] * b[j];
  }
  for (int i = 0; i < rows; ++i) {
    float* c = C + i * ldc;
    for (int j = 0; j < cols; ++j) c[j] = add ? c[j] + acc[i][j] : acc[i][j];
  }
}

}  // namespace

const Bf16Kernel& bf16_kernel_scalar() {
  static const Bf16Kernel k{"scalar",      kScalarMR,      kScalarNR,     256,     64,      256,
                            1,             4,              &pack_a_scalar, &pack_b_scalar, &micro_scalar,
                            nullptr,       nullptr,        nullptr,        nullptr};
  return k;
}

}  // namespace gemm_bf16_detail

namespace {

using gemm_bf16_detail::Bf16Kernel;
using gemm_detail::EpilogueArgs;
using EpilogueFn = void (*)(const EpilogueArgs&, float*, int64_t, int64_t, int64_t, int, int);

// A kernel and the f32 GEMM epilogue of the same ISA.
struct Path {
  const Bf16Kernel* kn;
  EpilogueFn epilogue;
};

Path select_path(Isa isa) {
  if (isa == Isa::kAvx512 && cpu_features().avx512_bf16)
    return {&gemm_bf16_detail::bf16_kernel_avx512_bf16(), gemm_detail::kernel_avx512().epilogue};
  if (isa != Isa::kScalar) return {&gemm_bf16_detail::bf16_kernel_avx2(), gemm_detail::kernel_avx2().epilogue};
  return {&gemm_bf16_detail::bf16_kernel_scalar(), gemm_detail::kernel_scalar().epilogue};
}

using gemm_detail::GrowBuffer;
using gemm_detail::run_parallel;

thread_local GrowBuffer tl_workspace;  // rounded/packed A (and shared packed B) of the calling thread
thread_local GrowBuffer tl_block;      // a task's B block (short M), per running thread

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

struct Problem {
  int64_t M, N, K;
  const float* A;     // [M, K]
  const uint16_t* B;  // [N, K] bf16
  bool add;           // C is added to (accumulate, or the residual already in out)
  float* C;           // [M, N]
  const EpilogueArgs* ep;  // null: none
  const uint16_t* Bpanels = nullptr;  // B kept packed (pack_weight_bf16): N / NR full-K panels
};

using gemm_detail::kShortM;
using gemm_detail::kShortNC;
using gemm_detail::kStreamM;
using gemm_detail::kStreamNC;

Status run_stream(const Ctx& c, const Path& path, const Problem& p) {
  const Bf16Kernel& kn = *path.kn;
  const int64_t ld = kn.stream_ld(p.K);
  void* a = tl_workspace.get(static_cast<size_t>(p.M * ld * kn.a_bytes));
  if (a == nullptr)
    return Status(Code::kOom, strformat("gemm: cannot allocate %lld bytes for the rounded rows of a",
                                        static_cast<long long>(p.M * ld * kn.a_bytes)));
  kn.prep_a(a, p.A, p.K, p.M, p.K);
  run_parallel(c, (p.N + kStreamNC - 1) / kStreamNC, [&](int64_t t) {
    const int64_t n0 = t * kStreamNC, n1 = std::min(p.N, n0 + kStreamNC);
    kn.nt_stream(a, p.B, p.K, p.C, p.N, p.M, n0, n1, p.K, p.add);
    if (p.ep) path.epilogue(*p.ep, p.C + n0, p.N, 0, n0, static_cast<int>(p.M), static_cast<int>(n1 - n0));
  });
  return Status::ok();
}

Status run_packed(const Ctx& c, const Path& path, const Problem& p) {
  const Bf16Kernel& kn = *path.kn;
  const int MR = kn.mr, NR = kn.nr;
  const int64_t K = p.K, KC = kn.kc, Kp = round_up(K, kn.kstep);
  const int64_t lda = K, ldb = K, ldc = p.N;
  const bool short_m = p.M <= kShortM;
  const int64_t m_panels = (p.M + MR - 1) / MR, n_panels = (p.N + NR - 1) / NR;
  const int64_t NC = short_m ? kShortNC : kn.nc;
  const int64_t MC = short_m ? gemm_detail::short_tile_rows(m_panels, p.N, MR) : kn.mc;
  const int64_t a_panel = MR * Kp * kn.a_bytes;  // bytes per full-K A micro-panel
  const int64_t b_panel = NR * Kp;               // bf16 elements per full-K B micro-panel
  // Shared B panels first; both regions rounded to 64 bytes so every panel start stays aligned.
  const bool prepacked = p.Bpanels != nullptr;
  const int64_t b_bytes = (short_m || prepacked) ? 0 : round_up(n_panels * b_panel * 2, 64);
  const int64_t a_bytes = round_up(m_panels * a_panel, 64);
  char* ws = static_cast<char*>(tl_workspace.get(static_cast<size_t>(a_bytes + b_bytes + 64)));
  if (ws == nullptr)
    return Status(Code::kOom, strformat("gemm: cannot allocate %lld bytes of packing workspace",
                                        static_cast<long long>(a_bytes + b_bytes)));
  const uint16_t* Bp = prepacked ? p.Bpanels : reinterpret_cast<uint16_t*>(ws);
  char* Ap = ws + b_bytes;

  // 1. Pack (and round) A, and B when shared, a fixed number of panels per task: A 2 per task,
  //    so that a problem of a few panels still spreads over the threads. Short problems skip
  //    this: their compute tasks pack A as they go (gemm_detail::LazyPanels).
  constexpr int64_t kPanelsPerTask = 8, kAPanelsPerTask = 2;
  const int64_t b_tasks = (short_m || prepacked) ? 0 : (n_panels + kPanelsPerTask - 1) / kPanelsPerTask;
  const int64_t a_tasks = (m_panels + kAPanelsPerTask - 1) / kAPanelsPerTask;
  const auto pack_a = [&](int64_t q) {
    kn.pack_a(Ap + q * a_panel, p.A + q * MR * lda, lda, K, static_cast<int>(std::min<int64_t>(MR, p.M - q * MR)));
  };
  const bool lazy_a = short_m && K > 0;
  gemm_detail::LazyPanels a_lazy(lazy_a ? m_panels : 0);
  if (K > 0 && !lazy_a) {
    run_parallel(c, a_tasks + b_tasks, [&](int64_t t) {
      const bool is_b = t < b_tasks;
      const int64_t per = is_b ? kPanelsPerTask : kAPanelsPerTask;
      const int64_t first = (is_b ? t : t - b_tasks) * per;
      const int64_t last = std::min(is_b ? n_panels : m_panels, first + per);
      for (int64_t q = first; q < last; ++q) {
        if (is_b)
          kn.pack_b(reinterpret_cast<uint16_t*>(ws) + q * b_panel, p.B + q * NR * ldb, ldb, K,
                    static_cast<int>(std::min<int64_t>(NR, p.N - q * NR)));
        else
          pack_a(q);
      }
    });
  }

  // 2. Compute, one task per MC x NC tile of C; tiles sharing columns run back to back.
  const int64_t tiles_m = (p.M + MC - 1) / MC, tiles_n = (p.N + NC - 1) / NC;
  std::atomic<bool> oom{false};
  const bool rows_outer = gemm_detail::walk_rows_outer(short_m, ldc);
  run_parallel(c, tiles_m * tiles_n, [&](int64_t t) {
    const int64_t m0 = (t % tiles_m) * MC, n0 = (t / tiles_m) * NC;
    const int64_t m1 = std::min(p.M, m0 + MC), n1 = std::min(p.N, n0 + NC);
    uint16_t* bt = nullptr;  // this task's B block (short M): panels [kc][NR] for columns n0..n1
    if (short_m && !prepacked && K > 0) {
      bt = reinterpret_cast<uint16_t*>(tl_block.get(static_cast<size_t>(std::min(KC, Kp) * NC * 2)));
      if (bt == nullptr) {
        oom = true;
        return;
      }
    }
    for (int64_t pc = 0;; pc += KC) {
      const int64_t kc = std::min(KC, K - pc), kcp = round_up(kc, kn.kstep);
      const bool last = pc + kc >= K;
      const bool add = pc > 0 || p.add;
      if (bt)
        for (int64_t jr = n0; jr < n1; jr += NR)
          kn.pack_b(bt + (jr - n0) / NR * NR * kcp, p.B + jr * ldb + pc, ldb, kc,
                    static_cast<int>(std::min<int64_t>(NR, p.N - jr)));
      // One micro-tile: rows [ir, ir + MR) x columns [jr, jr + NR) over this K block.
      const auto micro = [&](int64_t ir, int64_t jr, gemm_detail::Prefetch pf) {
        const int rows = static_cast<int>(std::min<int64_t>(MR, m1 - ir));
        const int cols = static_cast<int>(std::min<int64_t>(NR, n1 - jr));
        const char* a = Ap + ir / MR * a_panel + pc * MR * kn.a_bytes;
        const uint16_t* b = bt ? bt + (jr - n0) / NR * NR * kcp : Bp + jr / NR * b_panel + pc * NR;
        float* ct = p.C + ir * ldc + jr;
        if (last && p.ep && kn.micro_ep) {
          kn.micro_ep(kc, a, b, ct, ldc, rows, cols, add, *p.ep, ir, jr, pf);
        } else {
          kn.micro(kc, a, b, ct, ldc, rows, cols, add, pf);
          if (last && p.ep) path.epilogue(*p.ep, ct, ldc, ir, jr, rows, cols);
        }
      };
      const auto first = [&](int64_t ir) {
        if (lazy_a && pc == 0) a_lazy.ensure(ir / MR, pack_a);
      };
      const gemm_detail::TileWalk w{m0, m1, n0, n1, pc, KC, K, MR, NR, kn.kstep, rows_outer, lazy_a && (t & 1)};
      gemm_detail::walk_tile(w, bt ? nullptr : Bp, b_panel, first, micro);
      if (last) break;
    }
  });
  if (oom) return Status(Code::kOom, "gemm: cannot allocate the per-thread B block");
  return Status::ok();
}

}  // namespace

const char* gemm_bf16_kernel_name(Isa isa) { return select_path(isa).kn->name; }

int gemm_bf16_weight_panel(const Ctx& c) { return select_path(c.isa).kn->nr; }

// Packs a bf16 weight in place into the bf16 kernel's full-K B panels: each group of NR rows
// (NR x K elements) is exactly the memory of its panel when K is a multiple of the kernel's k
// step, so one group-sized copy is the only extra memory. The panel order is the kernel's own,
// so there is no way back: a packed copy is remade from its f32 master instead.
Status pack_weight_bf16(const Ctx& c, Tensor* w, bool packed) {
  Tensor rows = *w;
  rows.panel = 0;
  ELMO_RETURN_IF_ERROR(check_tensor(rows, "pack_weight w", DType::kBF16, {-1, -1}));
  if (w->device != Device::kCpu) return input_error("pack_weight: tensor must be in CPU memory");
  const Bf16Kernel& kn = *select_path(c.isa).kn;
  if (!packed) {
    if (w->panel == 0) return Status::ok();
    return Status(Code::kUnsupported, "pack_weight: a packed bf16 weight cannot be unpacked; remake it from f32");
  }
  if (w->panel == kn.nr) return Status::ok();
  if (w->panel != 0) return input_error("pack_weight: the bf16 weight is packed for another kernel");
  if (reinterpret_cast<uintptr_t>(w->data) % 64 != 0)
    return input_error("pack_weight: the weight's memory must be 64-byte aligned");
  const int64_t N = w->shape[0], K = w->shape[1];
  if (N % kn.nr != 0 || K % kn.kstep != 0)
    return shape_error(strformat("pack_weight: %s is not a whole number of %d-row panels of %d-element k steps",
                                 w->describe().c_str(), kn.nr, kn.kstep));
  const int nr = kn.nr;
  uint16_t* base = w->u16();
  std::atomic<bool> oom{false};
  run_parallel(c, N / nr, [&](int64_t g) {
    std::unique_ptr<uint16_t[]> tmp(new (std::nothrow) uint16_t[static_cast<size_t>(nr * K)]);
    if (!tmp) {
      oom = true;
      return;
    }
    uint16_t* group = base + g * nr * K;
    std::memcpy(tmp.get(), group, static_cast<size_t>(nr * K) * 2);
    kn.pack_b(group, tmp.get(), K, K, nr);
  });
  if (oom) return Status(Code::kOom, "pack_weight: cannot allocate a panel-sized buffer");
  w->panel = nr;
  return Status::ok();
}

// Argument checks shared with gemm.cpp's gemm() (gemm_kernels.h), for this operand combination.
Status gemm_bf16(const Ctx& c, Tensor out, Tensor pre_gelu, Tensor a, Tensor b, Tensor bias, Tensor residual,
                 GemmOp op, Epilogue ep, bool accumulate) {
  ELMO_RETURN_IF_ERROR(gemm_detail::check_op_and_epilogue(op, ep, accumulate));
  if (op != GemmOp::kNT || a.dtype != DType::kF32 || b.dtype != DType::kBF16)
    return dtype_error(strformat("gemm %s: a %s, b %s is not supported on the CPU: bf16 is taken for b only (a "
                                 "weight [N,K], op NT) with an f32 a",
                                 gemm_op_name(op), dtype_name(a.dtype), dtype_name(b.dtype)));
  ELMO_RETURN_IF_ERROR(check_tensor(a, "gemm a", DType::kF32, {-1, -1}));
  Tensor b_rows = b;  // b may be kept packed by pack_weight_bf16 (its panels are used as they are)
  b_rows.panel = 0;
  ELMO_RETURN_IF_ERROR(check_tensor(b_rows, "gemm b", DType::kBF16, {-1, -1}));
  const Path path = select_path(c.isa);
  if (b.panel != 0 && (b.panel != path.kn->nr || b.shape[0] % b.panel != 0 || b.shape[1] % path.kn->kstep != 0 ||
                       reinterpret_cast<uintptr_t>(b.data) % 64 != 0))
    return input_error(strformat("gemm: b %s is not packed for the %s bf16 kernel (%d-row panels)",
                                 b.describe().c_str(), path.kn->name, path.kn->nr));
  const int64_t M = a.shape[0], K = a.shape[1], N = b.shape[0];
  ELMO_RETURN_IF_ERROR(gemm_detail::check_inner(GemmOp::kNT, a, b, K, b.shape[1]));
  EpilogueArgs e;
  bool residual_in_place = false;
  ELMO_RETURN_IF_ERROR(
      gemm_detail::check_outputs(out, pre_gelu, a, b, bias, residual, ep, M, N, &e, &residual_in_place));
  const bool any_epilogue = e.bias || e.gelu || e.residual;
  // In-place residual: out already holds the residual, so the product is added to it.
  Problem p{M, N, K, a.f32(), b.u16(), accumulate || residual_in_place, out.f32(), any_epilogue ? &e : nullptr};
  if (b.panel != 0) p.Bpanels = b.u16();
  if (M == 0 || N == 0) return Status::ok();
  if (!p.Bpanels && path.kn->nt_stream && M <= kStreamM && K > 0) return run_stream(c, path, p);
  return run_packed(c, path, p);
}

}  // namespace elmo::cpu
