// Tests of elmo::cuda::gemm (cuda/src/gemm.cu) against a float64 host reference.
//
// Every GemmOp x operand dtype (f32; bf16, f16, and each mixed with f32) x epilogue (none, bias,
// bias+GELU with pre_gelu f32/bf16/absent, residual, residual aliasing out, bias+residual,
// accumulate) x out dtype (f32, bf16) on awkward shapes, including ones that take the tensor-core
// path with tails in every dimension and ones that fall back to the SIMT kernel (rows not 16-byte
// aligned). Outputs are poisoned with NaN first, so an element left unwritten fails. The NT
// 16-bit cases run again with the Hopper wgmma kernel forced (each block tile) on devices of
// compute capability 9.0.
//
// The reference uses the operands exactly as the GPU sees them (rounded to bf16/f16 where the
// kernel computes in 16 bits), so the error measured is the kernel's own: fp32 accumulation
// order, and the output rounding. Error metric: max |got - ref| / max(max |ref|, 1e-6).
//   * f32 operands (exact SIMT path), f32 out: <= 1e-5.
//   * 16-bit operands, f32 out: <= 1e-4 (fp32 accumulate; tensor-core accumulation order and
//     rounding differ from sequential FFMA).
//   * bf16 out (or bf16 pre_gelu): <= 1e-2 (one bf16 rounding of the result: 2^-9 relative).
//
// Exit code 77 with "SKIP: no CUDA device (...)" when there is no usable device.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <thread>
#include <tuple>
#include <vector>

#include "gemm.h"
#include "tests/harness.h"

using elmo::Code;
using elmo::Device;
using elmo::DType;
using elmo::Epilogue;
using elmo::GemmOp;
using elmo::Status;
using elmo::Tensor;
using elmo_test::context;
using elmo_test::failures;

namespace {

// ---- host helpers ----------------------------------------------------------------------------

uint16_t to_bits(float x, DType t) {
  if (t == DType::kBF16) {
    const __nv_bfloat16_raw r = __float2bfloat16_rn(x);
    return r.x;
  }
  const __half_raw r = __float2half_rn(x);
  return r.x;
}
float from_bits(uint16_t u, DType t) {
  if (t == DType::kBF16) {
    __nv_bfloat16_raw r;
    r.x = u;
    return __bfloat162float(__nv_bfloat16(r));
  }
  __half_raw r;
  r.x = u;
  return __half2float(__half(r));
}
// x as stored in dtype t and read back.
double round_to(float x, DType t) { return t == DType::kF32 ? x : from_bits(to_bits(x, t), t); }

// Host values -> bytes of dtype t.
std::vector<uint8_t> encode(const std::vector<float>& v, DType t) {
  std::vector<uint8_t> out(v.size() * elmo::dtype_size(t));
  if (t == DType::kF32) {
    std::memcpy(out.data(), v.data(), out.size());
  } else {
    for (size_t i = 0; i < v.size(); ++i) {
      const uint16_t u = to_bits(v[i], t);
      std::memcpy(out.data() + 2 * i, &u, 2);
    }
  }
  return out;
}
std::vector<double> decode(const std::vector<uint8_t>& bytes, DType t) {
  const size_t n = bytes.size() / elmo::dtype_size(t);
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) {
    if (t == DType::kF32) {
      float f;
      std::memcpy(&f, bytes.data() + 4 * i, 4);
      out[i] = f;
    } else {
      uint16_t u;
      std::memcpy(&u, bytes.data() + 2 * i, 2);
      out[i] = from_bits(u, t);
    }
  }
  return out;
}

// Device buffer (at least 256 bytes, so empty tensors still have a valid pointer).
struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
  explicit DevBuf(size_t n) : bytes(n) {
    if (cudaMalloc(&p, std::max<size_t>(n, 256)) != cudaSuccess) {
      std::fprintf(stderr, "cudaMalloc(%zu) failed\n", n);
      std::exit(1);
    }
  }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  void upload(const std::vector<uint8_t>& h) { cudaMemcpy(p, h.data(), h.size(), cudaMemcpyHostToDevice); }
  void poison() { cudaMemset(p, 0xFF, std::max<size_t>(bytes, 1)); }  // NaN in f32, bf16 and f16
  std::vector<uint8_t> download() const {
    std::vector<uint8_t> h(bytes);
    cudaMemcpy(h.data(), p, bytes, cudaMemcpyDeviceToHost);
    return h;
  }
};

Tensor dev_tensor(void* p, DType t, int64_t d0, int64_t d1) { return Tensor(p, t, {d0, d1}, Device::kCuda); }


// C[m][n] = sum_k A[m][k] B[k][n] in double; A [M][K], B [K][N] logical (already rounded).
std::vector<double> reference_product(const std::vector<double>& A, const std::vector<double>& B, int64_t M,
                                      int64_t N, int64_t K) {
  std::vector<double> C(static_cast<size_t>(M * N), 0.0);
  auto rows = [&](int64_t r0, int64_t r1) {
    for (int64_t m = r0; m < r1; ++m) {
      double* c = &C[m * N];
      for (int64_t k = 0; k < K; ++k) {
        const double a = A[m * K + k];
        const double* b = &B[k * N];
        for (int64_t n = 0; n < N; ++n) c[n] += a * b[n];
      }
    }
  };
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(std::thread::hardware_concurrency(), 16));
  if (M * N * K < (int64_t{1} << 22) || threads == 1) {
    rows(0, M);
  } else {
    std::vector<std::thread> pool;
    const int64_t chunk = (M + threads - 1) / threads;
    for (int64_t t = 0; t < threads; ++t) {
      const int64_t r0 = t * chunk, r1 = std::min(M, r0 + chunk);
      if (r0 < r1) pool.emplace_back(rows, r0, r1);
    }
    for (auto& th : pool) th.join();
  }
  return C;
}

double gelu(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

// max |got - ref| / max(max|ref|, 1e-6), with NaN (an unwritten, poisoned element) -> inf.
double rel_error(const std::vector<double>& got, const std::vector<double>& ref, int64_t* worst) {
  double ref_max = 1e-6, err_max = 0.0;
  *worst = -1;
  for (double r : ref) ref_max = std::max(ref_max, std::fabs(r));
  for (size_t i = 0; i < ref.size(); ++i) {
    const double e = std::isnan(got[i]) ? INFINITY : std::fabs(got[i] - ref[i]);
    if (e > err_max || (*worst < 0 && e > 0)) {
      err_max = std::max(err_max, e);
      *worst = static_cast<int64_t>(i);
    }
  }
  return err_max / ref_max;
}

bool expect_close(const char* what, const std::vector<double>& got, const std::vector<double>& ref, double tol) {
  int64_t worst = -1;
  const double err = rel_error(got, ref, &worst);
  if (!(err <= tol)) {
    ++failures();
    std::fprintf(stderr, "  %s: rel error %.3g > %.1g at %lld (got %.9g want %.9g) %s\n", what, err, tol,
                 static_cast<long long>(worst), worst >= 0 ? got[worst] : 0.0, worst >= 0 ? ref[worst] : 0.0,
                 context().c_str());
    return false;
  }
  return true;
}

struct Shape {
  int64_t M, N, K;
};
// Awkward shapes: single elements; odd sizes (SIMT fallback for 16-bit where rows are not
// 16-byte aligned); multiples of 8 that are not multiples of any tile (tensor cores with tails
// in M, N and K); K = 0; BERT-sized; and one large enough to select the 128x128 tile (on GPUs
// with up to 132 SMs; smaller shapes take the 64x128 and 64x64 tiles).
// 300x264x1032 has more 64-wide K steps (17) than the wgmma kernel has stages, so its ring of
// shared-memory stages wraps around several times.
const Shape kShapes[] = {{1, 1, 1},       {17, 33, 65},   {127, 129, 200},  {1, 768, 768},
                         {72, 200, 264},  {264, 136, 40}, {5, 9, 0},        {8, 8, 8},
                         {512, 3072, 768}, {2056, 1032, 24}, {300, 264, 1032}};

struct Variant {
  Epilogue ep;
  bool accumulate;
  bool alias_residual;  // residual is out itself
  DType pre;            // pre_gelu dtype; kI32 = not given
};
const Variant kVariants[] = {
    {Epilogue::kNone, false, false, DType::kI32},       {Epilogue::kNone, true, false, DType::kI32},
    {Epilogue::kBias, false, false, DType::kI32},       {Epilogue::kBiasGelu, false, false, DType::kF32},
    {Epilogue::kBiasGelu, false, false, DType::kBF16},  {Epilogue::kBiasGelu, false, false, DType::kI32},
    {Epilogue::kResidual, false, false, DType::kI32},   {Epilogue::kResidual, false, true, DType::kI32},
    {Epilogue::kBiasResidual, false, false, DType::kI32},
};

// Runs every variant for one op and compute type `t` (f32, bf16 or f16) on every shape, with
// the tensor-core kernel chosen by `kernel`. A persistent wgmma kernel runs on a grid of 3
// blocks, so that every block walks several tiles whatever the GPU's size (and the ring's
// phases carry over from tile to tile in every shape with more than 3 tiles).
// Under ELMO_TEST_QUICK (compute-sanitizer in scripts/gpu-check.sh) the three shapes over 2^24
// multiply-adds are left out: the sanitizer slows every kernel by one to two orders of
// magnitude, and the small shapes already have every kind of tail (the stage ring's wrap-around
// is still run by gemm_wgmma_operand_layout).
void run_op(GemmOp op, DType t, elmo::cuda::GemmKernel kernel = elmo::cuda::GemmKernel::kAuto) {
  const bool quick = std::getenv("ELMO_TEST_QUICK") != nullptr;
  for (const Shape& s : kShapes) {
    const int64_t M = s.M, N = s.N, K = s.K;
    if (quick && M * N * K > (int64_t{1} << 24)) continue;
    const uint64_t seed = static_cast<uint64_t>(M * 1000003 + N * 1009 + K * 7 + static_cast<int>(op));
    // Operands in stored layout; logical views for the reference, rounded to the compute type.
    const int64_t a_rows = op == GemmOp::kTN ? K : M, a_cols = op == GemmOp::kTN ? M : K;
    const int64_t b_rows = op == GemmOp::kNT ? N : K, b_cols = op == GemmOp::kNT ? K : N;
    const std::vector<float> a_st = elmo_test::random_vec(a_rows * a_cols, seed + 1);
    const std::vector<float> b_st = elmo_test::random_vec(b_rows * b_cols, seed + 2);
    std::vector<double> A(static_cast<size_t>(M * K)), B(static_cast<size_t>(K * N));
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k)
        A[m * K + k] = round_to(op == GemmOp::kTN ? a_st[k * M + m] : a_st[m * K + k], t);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t n = 0; n < N; ++n)
        B[k * N + n] = round_to(op == GemmOp::kNT ? b_st[n * K + k] : b_st[k * N + n], t);
    const std::vector<double> C = reference_product(A, B, M, N, K);
    const std::vector<float> bias = elmo_test::random_vec(N, seed + 3);
    const std::vector<float> resid = elmo_test::random_vec(M * N, seed + 4, -4, 4);
    const std::vector<float> init = elmo_test::random_vec(M * N, seed + 5, -4, 4);

    // Operand storage combinations for this compute type.
    std::vector<std::pair<DType, DType>> storages;
    if (t == DType::kF32)
      storages = {{DType::kF32, DType::kF32}};
    else
      storages = {{t, t}, {DType::kF32, t}, {t, DType::kF32}};

    for (const auto& st : storages) {
      DevBuf da(a_st.size() * elmo::dtype_size(st.first)), db(b_st.size() * elmo::dtype_size(st.second));
      da.upload(encode(a_st, st.first));
      db.upload(encode(b_st, st.second));
      DevBuf dbias(bias.size() * 4);
      dbias.upload(encode(bias, DType::kF32));
      const Tensor ta = dev_tensor(da.p, st.first, a_rows, a_cols);
      const Tensor tb = dev_tensor(db.p, st.second, b_rows, b_cols);
      const size_t ws_bytes = elmo::cuda::gemm_workspace_bytes(ta, tb);
      // A workspace is needed exactly when a non-empty f32 operand meets a 16-bit one.
      const size_t f32_elems = st.first == DType::kF32 ? a_st.size() : b_st.size();
      CHECK((ws_bytes > 0) == (st.first != st.second && f32_elems > 0));
      DevBuf ws(ws_bytes);
      elmo::cuda::GemmConfig cfg;
      cfg.kernel = kernel;
      cfg.max_blocks = 3;
      cfg.workspace = ws_bytes ? ws.p : nullptr;
      cfg.workspace_bytes = ws_bytes;

      for (DType tout : {DType::kF32, DType::kBF16}) {
        for (const Variant& v : kVariants) {
          char ctx[256];
          std::snprintf(ctx, sizeof ctx, "[%s op=%s a=%s b=%s out=%s ep=%s%s%s pre=%s M=%lld N=%lld K=%lld]",
                        elmo::cuda::gemm_kernel_name(kernel), elmo::gemm_op_name(op), elmo::dtype_name(st.first),
                        elmo::dtype_name(st.second), elmo::dtype_name(tout), elmo::epilogue_name(v.ep),
                        v.accumulate ? "+accumulate" : "",
                        v.alias_residual ? "(aliased)" : "", v.pre == DType::kI32 ? "-" : elmo::dtype_name(v.pre),
                        static_cast<long long>(M), static_cast<long long>(N), static_cast<long long>(K));
          context() = ctx;
          const size_t osz = elmo::dtype_size(tout);
          DevBuf dout(M * N * osz), dres(M * N * osz), dpre(M * N * 4);
          const bool has_res = v.ep == Epilogue::kResidual || v.ep == Epilogue::kBiasResidual;
          const bool has_bias = v.ep == Epilogue::kBias || v.ep == Epilogue::kBiasGelu || v.ep == Epilogue::kBiasResidual;
          const bool has_pre = v.pre != DType::kI32;
          // Initial out: the values to accumulate onto, the residual itself, or NaN poison.
          if (v.accumulate)
            dout.upload(encode(init, tout));
          else if (v.alias_residual)
            dout.upload(encode(resid, tout));
          else
            dout.poison();
          if (has_res && !v.alias_residual) dres.upload(encode(resid, tout));
          dpre.poison();

          const Tensor tout_t = dev_tensor(dout.p, tout, M, N);
          const Tensor tres = has_res ? (v.alias_residual ? tout_t : dev_tensor(dres.p, tout, M, N)) : Tensor();
          const Tensor tpre = has_pre ? dev_tensor(dpre.p, v.pre, M, N) : Tensor();
          const Tensor tbias = has_bias ? Tensor(dbias.p, DType::kF32, {N}, Device::kCuda) : Tensor();
          const Status st_run = elmo::cuda::gemm(nullptr, cfg, tout_t, tpre, ta, tb, tbias, tres, op, v.ep,
                                                 v.accumulate);
          CHECK_OK(st_run);
          const cudaError_t sync = cudaDeviceSynchronize();
          if (sync != cudaSuccess) {
            std::fprintf(stderr, "  cudaDeviceSynchronize: %s %s\n", cudaGetErrorString(sync), ctx);
            std::exit(1);  // the context is gone; nothing further can be trusted
          }
          if (!st_run.is_ok()) continue;

          // Reference epilogue, in the order of backend.h.
          std::vector<double> ref(static_cast<size_t>(M * N)), ref_pre(has_pre ? M * N : 0);
          for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < N; ++n) {
              const size_t i = static_cast<size_t>(m * N + n);
              double x = C[i];
              if (has_bias) x += bias[n];
              if (v.ep == Epilogue::kBiasGelu) {
                if (has_pre) ref_pre[i] = x;
                x = gelu(x);
              }
              if (has_res) x += round_to(resid[i], tout);
              if (v.accumulate) x += round_to(init[i], tout);
              ref[i] = x;
            }
          const bool tc = t != DType::kF32;
          const double tol = tout == DType::kBF16 ? 1e-2 : tc ? 1e-4 : 1e-5;
          expect_close("out", decode(dout.download(), tout), ref, tol);
          if (has_pre) {
            const double tol_pre = v.pre == DType::kBF16 ? 1e-2 : tc ? 1e-4 : 1e-5;
            std::vector<uint8_t> pre_bytes = dpre.download();
            pre_bytes.resize(static_cast<size_t>(M * N) * elmo::dtype_size(v.pre));
            expect_close("pre_gelu", decode(pre_bytes, v.pre), ref_pre, tol_pre);
          }
        }
      }
    }
  }
  context().clear();
}

}  // namespace

TEST_CASE(gemm_nn_f32) { run_op(GemmOp::kNN, DType::kF32); }
TEST_CASE(gemm_nt_f32) { run_op(GemmOp::kNT, DType::kF32); }
TEST_CASE(gemm_tn_f32) { run_op(GemmOp::kTN, DType::kF32); }
TEST_CASE(gemm_nn_bf16) { run_op(GemmOp::kNN, DType::kBF16); }
TEST_CASE(gemm_nt_bf16) { run_op(GemmOp::kNT, DType::kBF16); }
TEST_CASE(gemm_tn_bf16) { run_op(GemmOp::kTN, DType::kBF16); }
TEST_CASE(gemm_nn_f16) { run_op(GemmOp::kNN, DType::kF16); }
TEST_CASE(gemm_nt_f16) { run_op(GemmOp::kNT, DType::kF16); }
TEST_CASE(gemm_tn_f16) { run_op(GemmOp::kTN, DType::kF16); }

// The Hopper wgmma kernel (gemm_sm90a.cu), forced for every NT product the tensor-core path
// takes, with each block tile; on other devices forcing it is ERR_UNSUPPORTED, and the case
// says it skipped.
bool wgmma_device() {
  int dev = 0, major = 0, minor = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  if (major == 9 && minor == 0) return true;
  DevBuf a(64 * 64 * 2), b(64 * 64 * 2), out(64 * 64 * 4);
  elmo::cuda::GemmConfig cfg;
  cfg.kernel = elmo::cuda::GemmKernel::kWgmma128;
  CHECK_STATUS(elmo::cuda::gemm(nullptr, cfg, dev_tensor(out.p, DType::kF32, 64, 64), Tensor(),
                                dev_tensor(a.p, DType::kBF16, 64, 64), dev_tensor(b.p, DType::kBF16, 64, 64), Tensor(),
                                Tensor(), GemmOp::kNT, Epilogue::kNone, false),
               Code::kUnsupported);
  SKIP_CASE("the wgmma kernel needs compute capability 9.0 (this device is sm_%d%d); ERR_UNSUPPORTED checked", major, minor);
  return false;
}
// The forced wgmma kernels the wgmma cases run: all of them; under ELMO_TEST_QUICK
// (compute-sanitizer) the first and the last (one block per tile; persistent with two blocks
// per SM); with ELMO_TEST_WGMMA=<name> only that one (scripts/gpu-check.sh runs each kernel in
// its own process, so that one that brings the context down leaves the others' results), and
// with ELMO_TEST_WGMMA=none none. Any other value fails the case.
std::vector<elmo::cuda::GemmKernel> wgmma_kernels() {
  using elmo::cuda::GemmKernel;
  const char* only = std::getenv("ELMO_TEST_WGMMA");
  if (only != nullptr) {
    GemmKernel k = GemmKernel::kAuto;
    if (elmo::cuda::gemm_kernel_by_name(only, &k) && elmo::cuda::wgmma_variant(k).columns > 0) return {k};
    if (std::strcmp(only, "none") == 0) {
      std::printf("  ELMO_TEST_WGMMA=none: no wgmma kernel in this run\n");
    } else {
      ++failures();
      std::fprintf(stderr, "  ELMO_TEST_WGMMA=%s names no wgmma kernel\n", only);
    }
    return {};
  }
  const auto& all = elmo::cuda::kWgmmaKernels;
  if (std::getenv("ELMO_TEST_QUICK") != nullptr) return {all[0], all[std::size(all) - 1]};
  return std::vector<GemmKernel>(std::begin(all), std::end(all));
}
TEST_CASE(gemm_nt_bf16_wgmma) {
  if (!wgmma_device()) return;
  for (elmo::cuda::GemmKernel k : wgmma_kernels()) run_op(GemmOp::kNT, DType::kBF16, k);
}
TEST_CASE(gemm_nt_f16_wgmma) {
  if (!wgmma_device()) return;
  for (elmo::cuda::GemmKernel k : wgmma_kernels()) run_op(GemmOp::kNT, DType::kF16, k);
}

// Each wgmma kernel gets the blocks per SM it is built for: one, or two for wgmma128x2(p), whose
// point is that one block computes while the other writes its tile out.
TEST_CASE(gemm_wgmma_occupancy) {
  if (!wgmma_device()) return;
  for (elmo::cuda::GemmKernel k : wgmma_kernels()) {
    const elmo::cuda::WgmmaVariant v = elmo::cuda::wgmma_variant(k);
    for (DType t : {DType::kBF16, DType::kF16}) {
      int blocks = -1;
      CHECK_OK(elmo::cuda::gemm_blocks_per_sm(k, t, &blocks));
      std::printf("  %s %s: %d block(s) per SM\n", elmo::cuda::gemm_kernel_name(k), elmo::dtype_name(t), blocks);
      CHECK(blocks == v.blocks_per_sm);
    }
  }
}

// Where each output of the wgmma kernel takes its operands from, exactly. Row m of A is one-hot
// at k(m) = (m * 37 + 5) % K, spread over every K step; B holds small integers (exact in bf16),
// once as b[n][k] = n and once as b[n][k] = k. So out[m][n] must be n in the first run and k(m)
// in the second, and any other value names the (n', k') the kernel actually read: a swizzle,
// descriptor or fragment-layout mistake shows up as a pattern in the printed mismatches rather
// than as a bare error norm.
TEST_CASE(gemm_wgmma_operand_layout) {
  if (!wgmma_device()) return;
  using elmo::cuda::GemmKernel;
  for (GemmKernel kernel : wgmma_kernels()) {
    const int bn = elmo::cuda::wgmma_variant(kernel).columns;
    const int64_t M = 384, N = 2 * bn;  // 6 tiles: a persistent kernel's 3 blocks take two each
    for (int64_t K : {64, 576}) {
      std::vector<float> a(static_cast<size_t>(M * K), 0.0f), b_n(static_cast<size_t>(N * K)), b_k(b_n.size());
      std::vector<int64_t> km(static_cast<size_t>(M));
      for (int64_t m = 0; m < M; ++m) {
        km[m] = (m * 37 + 5) % K;
        a[m * K + km[m]] = 1.0f;
      }
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k) {
          b_n[n * K + k] = static_cast<float>(n % 256);  // integers to 256 are exact in bf16
          b_k[n * K + k] = static_cast<float>(k % 256);
        }
      DevBuf da(a.size() * 2), dbn(b_n.size() * 2), dbk(b_k.size() * 2), dout(static_cast<size_t>(M * N) * 4);
      da.upload(encode(a, DType::kBF16));
      dbn.upload(encode(b_n, DType::kBF16));
      dbk.upload(encode(b_k, DType::kBF16));
      elmo::cuda::GemmConfig cfg;
      cfg.kernel = kernel;
      cfg.max_blocks = 3;
      std::vector<double> got_n, got_k;
      for (int pass = 0; pass < 2; ++pass) {
        dout.poison();
        CHECK_OK(elmo::cuda::gemm(nullptr, cfg, dev_tensor(dout.p, DType::kF32, M, N), Tensor(),
                                  dev_tensor(da.p, DType::kBF16, M, K),
                                  dev_tensor(pass == 0 ? dbn.p : dbk.p, DType::kBF16, N, K), Tensor(), Tensor(),
                                  GemmOp::kNT, Epilogue::kNone, false));
        CHECK(cudaDeviceSynchronize() == cudaSuccess);
        (pass == 0 ? got_n : got_k) = decode(dout.download(), DType::kF32);
      }
      int64_t bad = 0;
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
          const double want_n = static_cast<double>(n % 256), want_k = static_cast<double>(km[m] % 256);
          const size_t i = static_cast<size_t>(m * N + n);
          if (got_n[i] == want_n && got_k[i] == want_k) continue;
          if (bad++ < 8)
            std::fprintf(stderr,
                         "  %s K=%lld out[%lld][%lld]: read b[n'=%g][k'=%g], want b[%g][%g] (k(m)=%lld)\n",
                         elmo::cuda::gemm_kernel_name(kernel), static_cast<long long>(K),
                         static_cast<long long>(m), static_cast<long long>(n), got_n[i], got_k[i], want_n, want_k,
                         static_cast<long long>(km[m]));
        }
      if (bad > 0) {
        ++failures();
        std::fprintf(stderr, "  wgmma operand layout: %lld of %lld outputs wrong\n", static_cast<long long>(bad),
                     static_cast<long long>(M * N));
      }
    }
  }
}

// Operands that are 16-bit with aligned sizes but a base pointer off by one element take the
// SIMT fallback, and still give the right answer.
TEST_CASE(gemm_unaligned_pointer_falls_back) {
  const int64_t M = 40, N = 48, K = 64;
  const std::vector<float> av = elmo_test::random_vec(M * K, 11), bv = elmo_test::random_vec(N * K, 12);
  DevBuf da((M * K + 1) * 2), db((N * K + 1) * 2), dout(M * N * 4);
  std::vector<uint8_t> ab = encode(av, DType::kBF16), bb = encode(bv, DType::kBF16);
  ab.insert(ab.begin(), 2, 0);
  bb.insert(bb.begin(), 2, 0);
  da.upload(ab);
  db.upload(bb);
  dout.poison();
  const Tensor ta = dev_tensor(static_cast<uint16_t*>(da.p) + 1, DType::kBF16, M, K);
  const Tensor tb = dev_tensor(static_cast<uint16_t*>(db.p) + 1, DType::kBF16, N, K);
  CHECK_OK(elmo::cuda::gemm(nullptr, {}, dev_tensor(dout.p, DType::kF32, M, N), Tensor(), ta, tb, Tensor(), Tensor(),
                            GemmOp::kNT, Epilogue::kNone, false));
  CHECK(cudaDeviceSynchronize() == cudaSuccess);
  std::vector<double> A(M * K), B(K * N);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) A[m * K + k] = round_to(av[m * K + k], DType::kBF16);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) B[k * N + n] = round_to(bv[n * K + k], DType::kBF16);
  expect_close("out", decode(dout.download(), DType::kF32), reference_product(A, B, M, N, K), 1e-4);
}

// Bad arguments return the documented Status codes and write nothing.
TEST_CASE(gemm_bad_input) {
  const int64_t M = 8, N = 16, K = 24;
  DevBuf a(M * K * 4), b(N * K * 4), out(M * N * 4), bias(N * 4), ws(4096);
  out.poison();
  const Tensor ta = dev_tensor(a.p, DType::kF32, M, K), tb_nt = dev_tensor(b.p, DType::kF32, N, K);
  const Tensor tout = dev_tensor(out.p, DType::kF32, M, N);
  const Tensor tbias(bias.p, DType::kF32, {N}, Device::kCuda);
  const elmo::cuda::GemmConfig cfg;
  auto run = [&](Tensor o, Tensor pre, Tensor x, Tensor y, Tensor bi, Tensor r, GemmOp op, Epilogue ep, bool acc) {
    return elmo::cuda::gemm(nullptr, cfg, o, pre, x, y, bi, r, op, ep, acc);
  };
  // Shapes: K disagrees; out's N disagrees; NN where b should be [K,N]; 3-D out.
  CHECK_STATUS(run(tout, {}, ta, dev_tensor(b.p, DType::kF32, N, K + 1), {}, {}, GemmOp::kNT, Epilogue::kNone, false),
               Code::kShape);
  CHECK_STATUS(run(dev_tensor(out.p, DType::kF32, M, N - 1), {}, ta, tb_nt, {}, {}, GemmOp::kNT, Epilogue::kNone, false),
               Code::kShape);
  CHECK_STATUS(run(tout, {}, ta, tb_nt, {}, {}, GemmOp::kNN, Epilogue::kNone, false), Code::kShape);
  CHECK_STATUS(run(Tensor(out.p, DType::kF32, {M, N, 1}, Device::kCuda), {}, ta, tb_nt, {}, {}, GemmOp::kNT,
                   Epilogue::kNone, false),
               Code::kShape);
  // Dtypes: f16 out, i32 operand, bf16 with f16.
  CHECK_STATUS(run(dev_tensor(out.p, DType::kF16, M, N), {}, ta, tb_nt, {}, {}, GemmOp::kNT, Epilogue::kNone, false),
               Code::kDType);
  CHECK_STATUS(run(tout, {}, dev_tensor(a.p, DType::kI32, M, K), tb_nt, {}, {}, GemmOp::kNT, Epilogue::kNone, false),
               Code::kDType);
  CHECK_STATUS(run(tout, {}, dev_tensor(a.p, DType::kBF16, M, K), dev_tensor(b.p, DType::kF16, N, K), {}, {},
                   GemmOp::kNT, Epilogue::kNone, false),
               Code::kDType);
  // Epilogue arguments: bias missing, bias of the wrong size or dtype, residual of the wrong
  // dtype, pre_gelu of the wrong shape, accumulate with an epilogue.
  CHECK_STATUS(run(tout, {}, ta, tb_nt, {}, {}, GemmOp::kNT, Epilogue::kBias, false), Code::kInput);
  CHECK_STATUS(run(tout, {}, ta, tb_nt, Tensor(bias.p, DType::kF32, {N - 1}, Device::kCuda), {}, GemmOp::kNT,
                   Epilogue::kBias, false),
               Code::kShape);
  CHECK_STATUS(run(tout, {}, ta, tb_nt, Tensor(bias.p, DType::kBF16, {N}, Device::kCuda), {}, GemmOp::kNT,
                   Epilogue::kBias, false),
               Code::kDType);
  CHECK_STATUS(run(tout, {}, ta, tb_nt, {}, dev_tensor(out.p, DType::kBF16, M, N), GemmOp::kNT, Epilogue::kResidual,
                   false),
               Code::kDType);
  CHECK_STATUS(run(tout, {}, ta, tb_nt, {}, {}, GemmOp::kNT, Epilogue::kResidual, false), Code::kInput);
  CHECK_STATUS(run(tout, dev_tensor(b.p, DType::kF32, M, N + 1), ta, tb_nt, tbias, {}, GemmOp::kNT,
                   Epilogue::kBiasGelu, false),
               Code::kShape);
  CHECK_STATUS(run(tout, {}, ta, tb_nt, tbias, {}, GemmOp::kNT, Epilogue::kBias, true), Code::kInput);
  elmo::cuda::GemmConfig bad_kernel;
  bad_kernel.kernel = static_cast<elmo::cuda::GemmKernel>(99);
  CHECK_STATUS(elmo::cuda::gemm(nullptr, bad_kernel, tout, {}, ta, tb_nt, {}, {}, GemmOp::kNT, Epilogue::kNone, false),
               Code::kInput);
  elmo::cuda::GemmConfig bad_grid;
  bad_grid.max_blocks = -1;
  CHECK_STATUS(elmo::cuda::gemm(nullptr, bad_grid, tout, {}, ta, tb_nt, {}, {}, GemmOp::kNT, Epilogue::kNone, false),
               Code::kInput);
  // Host tensors are refused.
  CHECK_STATUS(run(tout, {}, Tensor(a.p, DType::kF32, {M, K}), tb_nt, {}, {}, GemmOp::kNT, Epilogue::kNone, false),
               Code::kInput);
  // Mixed dtypes without (or with too small) a workspace.
  const Tensor ta16 = dev_tensor(a.p, DType::kBF16, M, K);
  CHECK(elmo::cuda::gemm_workspace_bytes(ta16, tb_nt) >= static_cast<size_t>(N * K * 2));
  CHECK(elmo::cuda::gemm_workspace_bytes(ta, tb_nt) == 0);
  CHECK_STATUS(run(tout, {}, ta16, tb_nt, {}, {}, GemmOp::kNT, Epilogue::kNone, false), Code::kInput);
  elmo::cuda::GemmConfig small;
  small.workspace = ws.p;
  small.workspace_bytes = 16;
  CHECK_STATUS(elmo::cuda::gemm(nullptr, small, tout, {}, ta16, tb_nt, {}, {}, GemmOp::kNT, Epilogue::kNone, false),
               Code::kInput);
  // Nothing was written.
  CHECK(cudaDeviceSynchronize() == cudaSuccess);
  const std::vector<double> o = decode(out.download(), DType::kF32);
  CHECK(std::all_of(o.begin(), o.end(), [](double x) { return std::isnan(x); }));
}

int main() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    std::printf("SKIP: no CUDA device (cudaGetDeviceCount -> %s)\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
    return 77;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
    std::printf("device 0: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
  return elmo_test::run_all_tests();
}
