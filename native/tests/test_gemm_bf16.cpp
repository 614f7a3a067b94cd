// GEMM with a bf16 weight (out = a . bᵀ, a f32, b bf16, op NT) on every kernel path this CPU runs
// (scalar, AVX2, AVX512-BF16) with 1 and 2 threads, against a float64 reference computed on the
// bf16-rounded operands: the contract is that a is rounded to bf16 (nearest even) and the exact
// products are summed in fp32, so only fp32 summation error is allowed. 1 and 2 threads must
// agree bit for bit. The AVX512-BF16 kernel is reported as SKIP on a CPU without it.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "cpu/ops.h"
#include "elmo/half.h"
#include "harness.h"
#include "reference/gemm_ref.h"

using namespace elmo;
using namespace elmo_test;

namespace {

Tensor f32(std::vector<float>& v, std::initializer_list<int64_t> dims) { return Tensor(v.data(), DType::kF32, dims); }
Tensor bf16(std::vector<uint16_t>& v, std::initializer_list<int64_t> dims) {
  return Tensor(v.data(), DType::kBF16, dims);
}

std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = f32_to_bf16(v[i]);
  return out;
}
std::vector<double> bf16_values(const std::vector<float>& v) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_f32(f32_to_bf16(v[i]));
  return out;
}

// The kernel paths: each ISA up to the best; avx512 runs the AVX512-BF16 kernel only where the
// CPU has it (else the AVX2 one, already covered), so it is listed only then.
void for_each_path(const std::function<void(Backend&, const Config&)>& body) {
  for_each_kernel_path([](Isa isa) { return isa != Isa::kAvx512 || cpu_features().avx512_bf16; },
                       &cpu::gemm_bf16_kernel_name, body);
}

struct Variant {
  Epilogue ep;
  bool accumulate;
  bool with_pre;        // pass pre_gelu (kBiasGelu only)
  bool residual_alias;  // residual is out itself
};
const Variant kVariants[] = {
    {Epilogue::kNone, false, false, false},     {Epilogue::kBias, false, false, false},
    {Epilogue::kBiasGelu, false, true, false},  {Epilogue::kBiasGelu, false, false, false},
    {Epilogue::kResidual, false, false, false}, {Epilogue::kBiasResidual, false, false, false},
    {Epilogue::kNone, true, false, false},      {Epilogue::kBiasResidual, false, false, true},
};

struct Shape {
  int64_t M, N, K;
};
// Awkward on purpose: M around the few-row cutoff (32) and the register tiles, N and K not
// multiples of any tile, plus a tall M (B packed once and shared) and K over one K block.
std::vector<Shape> shapes() {
  std::vector<Shape> s;
  for (int64_t M : {1, 5, 31, 33, 100})
    for (int64_t N : {1, 17, 48, 130})
      for (int64_t K : {1, 7, 64, 300}) s.push_back({M, N, K});
  s.push_back({300, 130, 601});
  s.push_back({100, 531, 601});
  s.push_back({20, 531, 601});
  s.push_back({7, 13, 0});
  return s;
}

// fp32 summation error of the products grows like sqrt(K) for random-sign data of unit size.
double atol_for(int64_t K) { return 2e-6 * std::sqrt(static_cast<double>(K) + 1.0); }
constexpr double kRtol = 2e-6;

}  // namespace

TEST_CASE(avx512_bf16_kernel_runs_where_the_cpu_has_it) {
  for_each_path([](Backend&, const Config& c) {
    if (c.threads == 1) std::printf("  kernel path: isa=%s -> %s\n", isa_name(c.isa), cpu::gemm_bf16_kernel_name(c.isa));
  });
  if (!cpu_features().avx512_bf16 || best_isa() != Isa::kAvx512) {
    SKIP_CASE("this CPU has no AVX512_BF16 (best ISA %s): the avx512_bf16 kernel is not run here", isa_name(best_isa()));
    return;
  }
  CHECK(std::string(cpu::gemm_bf16_kernel_name(Isa::kAvx512)) == "avx512_bf16");
}

TEST_CASE(gemm_bf16_matches_float64_reference_and_is_thread_invariant) {
  const std::vector<Shape> all = shapes();
  std::map<std::string, std::vector<float>> one_thread;
  for_each_path([&](Backend& be, const Config& cfg) {
    const std::string ctx0 = context();
    for (size_t si = 0; si < all.size(); ++si) {
      const int64_t M = all[si].M, N = all[si].N, K = all[si].K;
      for (size_t vi = 0; vi < std::size(kVariants); ++vi) {
        const Variant& v = kVariants[vi];
        const uint64_t seed = si * 100 + vi;
        std::vector<float> a = random_vec(std::max<int64_t>(M * K, 1), seed + 1),
                           w = random_vec(std::max<int64_t>(N * K, 1), seed + 2);
        std::vector<float> bias = random_vec(N, seed + 3), res = random_vec(M * N, seed + 4);
        std::vector<float> out = random_vec(M * N, seed + 5), pre(M * N, std::nanf(""));
        if (!v.accumulate && !v.residual_alias)
          for (float& x : out) x = std::numeric_limits<float>::quiet_NaN();  // must be overwritten
        if (v.residual_alias) out = res;
        std::vector<uint16_t> b = to_bf16(w);

        std::vector<double> want = to_double(v.residual_alias ? std::vector<float>(M * N, 0.0f) : out);
        std::vector<double> want_pre(M * N, 0.0);
        {
          const std::vector<double> da = bf16_values(a), db = bf16_values(w), dbias = to_double(bias),
                                    dres = to_double(res);
          ref::gemm(want.data(), want_pre.data(), da.data(), db.data(), dbias.data(), dres.data(), GemmOp::kNT, v.ep,
                    v.accumulate, M, N, K);
        }
        const bool use_bias = v.ep == Epilogue::kBias || v.ep == Epilogue::kBiasGelu || v.ep == Epilogue::kBiasResidual;
        const bool use_res = v.ep == Epilogue::kResidual || v.ep == Epilogue::kBiasResidual;
        Tensor tout = f32(out, {M, N});
        const Tensor tres = !use_res ? Tensor() : v.residual_alias ? tout : f32(res, {M, N});
        const Tensor tpre = v.with_pre ? f32(pre, {M, N}) : Tensor();
        context() = ctx0 + strformat(" ep=%s acc=%d pre=%d alias=%d M=%lld N=%lld K=%lld", epilogue_name(v.ep),
                                     v.accumulate, v.with_pre, v.residual_alias, (long long)M, (long long)N,
                                     (long long)K);
        CHECK_OK(be.gemm(tout, tpre, f32(a, {M, K}), bf16(b, {N, K}), use_bias ? f32(bias, {N}) : Tensor(), tres,
                         GemmOp::kNT, v.ep, v.accumulate));
        // GELU's vectorized erf has |error| <= 1.5e-7 (scaled by |x|/2 <= a few units here).
        const double atol = atol_for(K) + (v.ep == Epilogue::kBiasGelu ? 1e-6 : 0.0);
        all_close("out", out.data(), want.data(), M * N, atol, kRtol);
        if (v.with_pre) all_close("pre_gelu", pre.data(), want_pre.data(), M * N, atol_for(K), kRtol);

        const std::string key = strformat("%d/%zu/%zu", static_cast<int>(cfg.isa), si, vi);
        if (cfg.threads == 1) {
          one_thread[key] = out;
        } else {
          auto it = one_thread.find(key);
          CHECK(it != one_thread.end());
          if (it != one_thread.end()) bit_equal("out (1 vs 2 threads)", out.data(), it->second.data(), M * N);
        }
      }
    }
    context() = ctx0;
  });
}

// a is rounded to bf16 with ties to even before the product: 1 + 2^-8 lies halfway between 1 and
// 1 + 2^-7 and rounds down to 1 (even); 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6
// and rounds up to 1 + 2^-6 (even). Exact results, on every path and in both regimes of M.
TEST_CASE(gemm_bf16_rounds_a_to_nearest_even) {
  const float lo = 1.0f + std::ldexp(1.0f, -8), hi = 1.0f + 3 * std::ldexp(1.0f, -8);
  for_each_path([&](Backend& be, const Config&) {
    for (int64_t M : {2, 40}) {
      const int64_t N = 3, K = 1;
      std::vector<float> a(M * K), out(M * N);
      for (int64_t m = 0; m < M; ++m) a[m] = m % 2 ? hi : lo;
      std::vector<uint16_t> b(N * K, f32_to_bf16(1.0f));
      CHECK_OK(be.gemm(f32(out, {M, N}), Tensor(), f32(a, {M, K}), bf16(b, {N, K}), Tensor(), Tensor(), GemmOp::kNT,
                       Epilogue::kNone, false));
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) CHECK(out[m * N + n] == (m % 2 ? 1.0f + std::ldexp(1.0f, -6) : 1.0f));
    }
  });
}

TEST_CASE(gemm_bf16_propagates_nan_and_inf) {
  for_each_path([&](Backend& be, const Config&) {
    for (int64_t M : {3, 40}) {
      const int64_t N = 5, K = 9;
      std::vector<float> a = random_vec(M * K, 3), out(M * N);
      a[0] = std::numeric_limits<float>::quiet_NaN();  // row 0
      a[K + 2] = std::numeric_limits<float>::infinity();  // row 1
      std::vector<float> w = random_vec(N * K, 4);
      for (int64_t n = 0; n < N; ++n) w[n * K + 2] = 0.5f;  // inf * 0.5 = inf in every column
      std::vector<uint16_t> b = to_bf16(w);
      CHECK_OK(be.gemm(f32(out, {M, N}), Tensor(), f32(a, {M, K}), bf16(b, {N, K}), Tensor(), Tensor(), GemmOp::kNT,
                       Epilogue::kNone, false));
      for (int64_t n = 0; n < N; ++n) {
        CHECK(std::isnan(out[n]));
        CHECK(std::isinf(out[N + n]) && out[N + n] > 0);
        CHECK(std::isfinite(out[2 * N + n]));
      }
    }
  });
}

TEST_CASE(gemm_bf16_rejects_unsupported_combinations) {
  const int64_t M = 4, N = 5, K = 3;
  std::vector<float> a = random_vec(M * K, 1), w = random_vec(N * K, 2), out(M * N, 7.0f);
  std::vector<uint16_t> b = to_bf16(w), a16 = to_bf16(a), out16(M * N);
  std::vector<float> bt = random_vec(K * N, 3);
  std::vector<uint16_t> b_kn = to_bf16(bt);
  auto be = make_backend({best_isa(), 2});
  const Tensor tout = f32(out, {M, N});
  // op other than NT with a bf16 b
  CHECK_STATUS(be->gemm(tout, Tensor(), f32(a, {M, K}), bf16(b_kn, {K, N}), Tensor(), Tensor(), GemmOp::kNN,
                        Epilogue::kNone, false),
               Code::kDType);
  CHECK_STATUS(be->gemm(tout, Tensor(), f32(a, {K, M}), bf16(b_kn, {K, N}), Tensor(), Tensor(), GemmOp::kTN,
                        Epilogue::kNone, false),
               Code::kDType);
  // bf16 a (with an f32 or a bf16 b), f16 b, bf16 out
  CHECK_STATUS(be->gemm(tout, Tensor(), bf16(a16, {M, K}), f32(w, {N, K}), Tensor(), Tensor(), GemmOp::kNT,
                        Epilogue::kNone, false),
               Code::kDType);
  CHECK_STATUS(be->gemm(tout, Tensor(), bf16(a16, {M, K}), bf16(b, {N, K}), Tensor(), Tensor(), GemmOp::kNT,
                        Epilogue::kNone, false),
               Code::kDType);
  CHECK_STATUS(be->gemm(tout, Tensor(), f32(a, {M, K}), Tensor(b.data(), DType::kF16, {N, K}), Tensor(), Tensor(),
                        GemmOp::kNT, Epilogue::kNone, false),
               Code::kDType);
  CHECK_STATUS(be->gemm(bf16(out16, {M, N}), Tensor(), f32(a, {M, K}), bf16(b, {N, K}), Tensor(), Tensor(),
                        GemmOp::kNT, Epilogue::kNone, false),
               Code::kDType);
  // shapes, bias dtype, a bad combination of options
  CHECK_STATUS(be->gemm(tout, Tensor(), f32(a, {M, K}), bf16(b, {K, N}), Tensor(), Tensor(), GemmOp::kNT,
                        Epilogue::kNone, false),
               Code::kShape);
  CHECK_STATUS(be->gemm(f32(out, {M, N - 1}), Tensor(), f32(a, {M, K}), bf16(b, {N, K}), Tensor(), Tensor(),
                        GemmOp::kNT, Epilogue::kNone, false),
               Code::kShape);
  CHECK_STATUS(be->gemm(tout, Tensor(), f32(a, {M, K}), bf16(b, {N, K}), bf16(b, {N}), Tensor(), GemmOp::kNT,
                        Epilogue::kBias, false),
               Code::kDType);
  CHECK_STATUS(be->gemm(tout, Tensor(), f32(a, {M, K}), bf16(b, {N, K}), f32(w, {N}), Tensor(), GemmOp::kNT,
                        Epilogue::kBias, true),
               Code::kInput);
  for (float x : out) CHECK(x == 7.0f);  // nothing was written
}

// A bf16 weight kept packed (Backend::pack_weight, as a bf16 model does with its copies): the
// same result as the row-major weight, bit for bit where both take the packed path (M > 32), and
// the reference's on every path and thread count; unpacking is refused, odd shapes stay
// row-major (ERR_SHAPE), a packed b of the wrong shape for the kernel is refused.
TEST_CASE(gemm_bf16_with_packed_weight) {
  struct Aligned {
    explicit Aligned(int64_t n) : p(static_cast<uint16_t*>(std::aligned_alloc(64, static_cast<size_t>((n * 2 + 63) / 64 * 64)))) {}
    ~Aligned() { std::free(p); }
    uint16_t* p;
  };
  for_each_path([&](Backend& be, const Config& cfg) {
    const int nr = cpu::gemm_bf16_weight_panel(cpu::Ctx{nullptr, cfg.isa});
    for (int64_t M : {1, 5, 31, 33, 100, 300})
      for (int64_t N : {int64_t(nr), int64_t(3 * nr)})
        for (int64_t K : {2, 64, 300})
          for (Epilogue ep : {Epilogue::kBias, Epilogue::kBiasGelu, Epilogue::kBiasResidual}) {
            const uint64_t seed = static_cast<uint64_t>(M * 10000 + N * 10 + K) * 4 + static_cast<uint64_t>(ep);
            std::vector<float> a = random_vec(M * K, seed + 1), w = random_vec(N * K, seed + 2);
            std::vector<float> bias = random_vec(N, seed + 3), res = random_vec(M * N, seed + 4);
            std::vector<float> out(M * N, std::nanf("")), out_rows(M * N, std::nanf(""));
            std::vector<uint16_t> b = to_bf16(w);
            Aligned bp(N * K);
            std::copy(b.begin(), b.end(), bp.p);
            Tensor tb(bp.p, DType::kBF16, {N, K});
            context() = strformat("[isa=%s threads=%d] packed bf16 ep=%s M=%lld N=%lld K=%lld", isa_name(cfg.isa),
                                  cfg.threads, epilogue_name(ep), (long long)M, (long long)N, (long long)K);
            const Tensor tres = ep == Epilogue::kBiasResidual ? f32(res, {M, N}) : Tensor();
            CHECK_OK(be.gemm(f32(out_rows, {M, N}), Tensor(), f32(a, {M, K}), tb, f32(bias, {N}), tres, GemmOp::kNT,
                             ep, false));
            CHECK_OK(be.pack_weight(&tb, true));
            CHECK(tb.panel == nr);
            CHECK_OK(be.gemm(f32(out, {M, N}), Tensor(), f32(a, {M, K}), tb, f32(bias, {N}), tres, GemmOp::kNT, ep,
                             false));
            std::vector<double> want(M * N, 0.0), want_pre(M * N, 0.0);
            const std::vector<double> da = bf16_values(a), db = bf16_values(w), dbias = to_double(bias),
                                      dres = to_double(res);
            ref::gemm(want.data(), want_pre.data(), da.data(), db.data(), dbias.data(), dres.data(), GemmOp::kNT, ep,
                      false, M, N, K);
            all_close("out", out.data(), want.data(), M * N, atol_for(K) + (ep == Epilogue::kBiasGelu ? 1e-6 : 0.0),
                      kRtol);
            if (M > 32) bit_equal("packed vs row-major b", out.data(), out_rows.data(), M * N);
            CHECK_STATUS(be.pack_weight(&tb, false), Code::kUnsupported);
          }
    context() = strformat("[isa=%s threads=%d] packed bf16 misuse", isa_name(cfg.isa), cfg.threads);
    Aligned bp(4 * nr * 64);
    Tensor odd(bp.p, DType::kBF16, {nr + 1, 64});
    CHECK_STATUS(be.pack_weight(&odd, true), Code::kShape);
    Tensor wrong(bp.p, DType::kBF16, {2 * nr, 64});
    wrong.panel = nr == 16 ? 32 : 16;  // packed for another kernel
    std::vector<float> x(4 * 64, 1.0f), out(4 * 2 * nr);
    CHECK_STATUS(be.gemm(f32(out, {4, 2 * nr}), Tensor(), f32(x, {4, 64}), wrong, Tensor(), Tensor(), GemmOp::kNT,
                         Epilogue::kNone, false), Code::kInput);
  });
  context().clear();
}

// Tall products whose C rows are 4 KiB apart (N = 1024) walk row panels outer
// (gemm_detail::walk_rows_outer), others column panels outer; the walk must not change a bit:
// the first 1024 columns of the same product with N = 1056 are the reference, row-major and
// packed weight alike.
TEST_CASE(gemm_bf16_tall_rows_4kib_apart_same_bits) {
  const int64_t M = 389, N = 1024, Nw = 1056, K = 602;  // K even: the packed weight's k steps
  std::vector<float> a = random_vec(M * K, 41), w = random_vec(Nw * K, 42), bias_w = random_vec(Nw, 43);
  std::vector<uint16_t> bw = to_bf16(w);
  std::vector<float> bias(bias_w.begin(), bias_w.begin() + N);
  uint16_t* bp = static_cast<uint16_t*>(std::aligned_alloc(64, static_cast<size_t>(N * K * 2 + 63) / 64 * 64));
  std::vector<double> want(M * N), want_pre(M * N);
  {
    const std::vector<double> da = bf16_values(a), dw = bf16_values(std::vector<float>(w.begin(), w.begin() + N * K)),
                              dbias = to_double(bias);
    ref::gemm(want.data(), want_pre.data(), da.data(), dw.data(), dbias.data(), nullptr, GemmOp::kNT,
              Epilogue::kBiasGelu, false, M, N, K);
  }
  for_each_path([&](Backend& be, const Config&) {
    std::vector<float> wide(M * Nw), out(M * N, std::nanf("")), cut(M * N);
    CHECK_OK(be.gemm(f32(wide, {M, Nw}), Tensor(), f32(a, {M, K}), bf16(bw, {Nw, K}), f32(bias_w, {Nw}), Tensor(),
                     GemmOp::kNT, Epilogue::kBiasGelu, false));
    for (int64_t i = 0; i < M; ++i) std::copy_n(wide.begin() + i * Nw, N, cut.begin() + i * N);
    for (const bool packed : {false, true}) {
      std::copy(bw.begin(), bw.begin() + N * K, bp);
      Tensor tb(bp, DType::kBF16, {N, K});
      if (packed) CHECK_OK(be.pack_weight(&tb, true));
      CHECK_OK(be.gemm(f32(out, {M, N}), Tensor(), f32(a, {M, K}), tb, f32(bias, {N}), Tensor(), GemmOp::kNT,
                       Epilogue::kBiasGelu, false));
      all_close(packed ? "out (packed weight)" : "out", out.data(), want.data(), M * N, atol_for(K) + 1e-6, kRtol);
      bit_equal(packed ? "row walk vs column walk (packed weight)" : "row walk vs column walk", out.data(), cut.data(),
                M * N);
    }
  });
  std::free(bp);
}

int main() { return run_all_tests(); }
