// GEMM, bias_backward and the raw sgemm against the float64 reference (reference/gemm_ref.h),
// on every ISA with 1 and 2 threads; 1 and 2 threads must agree bit for bit.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "cpu/ops.h"
#include "harness.h"
#include "reference/gemm_ref.h"

using namespace elmo;
using namespace elmo_test;

namespace {

struct Shape {
  int64_t M, N, K;
};
// Awkward on purpose: no dimension a multiple of any register tile (4x8, 6x16, 12x32) or of a
// task tile (64/72/96 x 256) or of a K block (192/256), plus degenerate and tall/flat cases.
const std::vector<Shape> kShapes = {
    {1, 1, 1},   {17, 33, 65},  {1, 768, 3},   {3, 5, 7},    {1, 100, 300}, {300, 5, 17},
    {5, 300, 2}, {64, 48, 256}, {100, 70, 513}, {150, 530, 200}, {13, 1, 9},  {2, 40, 0},
};


// fp32 summation error grows like sqrt(K) for random-sign data of unit size.
double atol_for(int64_t K) { return 2e-6 * std::sqrt(static_cast<double>(K) + 1.0); }
constexpr double kRtol = 2e-6;

Tensor f32(std::vector<float>& v, std::initializer_list<int64_t> dims) { return Tensor(v.data(), DType::kF32, dims); }

struct Variant {
  GemmOp op;
  Epilogue ep;
  bool accumulate;
  bool with_pre;        // pass pre_gelu (kBiasGelu only)
  bool residual_alias;  // residual is out itself
};

std::vector<Variant> all_variants() {
  std::vector<Variant> v;
  for (GemmOp op : {GemmOp::kNN, GemmOp::kNT, GemmOp::kTN}) {
    for (Epilogue ep : {Epilogue::kNone, Epilogue::kBias, Epilogue::kBiasGelu, Epilogue::kResidual,
                        Epilogue::kBiasResidual})
      v.push_back({op, ep, false, ep == Epilogue::kBiasGelu, false});
    v.push_back({op, Epilogue::kNone, true, false, false});
    v.push_back({op, Epilogue::kBiasGelu, false, false, false});
    v.push_back({op, Epilogue::kResidual, false, false, true});
    v.push_back({op, Epilogue::kBiasResidual, false, false, true});
  }
  return v;
}

}  // namespace

TEST_CASE(gemm_matches_float64_reference_and_is_thread_invariant) {
  const std::vector<Variant> variants = all_variants();
  // last result per (ISA, shape, variant) with 1 thread, to compare against 2 threads
  std::map<std::string, std::vector<float>> one_thread;
  for_each_config([&](Backend& be, const Config& cfg) {
    const std::string ctx0 = context();
    for (size_t si = 0; si < kShapes.size(); ++si) {
      const Shape s = kShapes[si];
      const int64_t M = s.M, N = s.N, K = s.K;
      for (size_t vi = 0; vi < variants.size(); ++vi) {
        const Variant& v = variants[vi];
        const uint64_t seed = si * 1000 + vi;
        // (at least one element, so that K == 0 still has non-null data)
        std::vector<float> a = random_vec(std::max<int64_t>(M * K, 1), seed + 1),
                           b = random_vec(std::max<int64_t>(K * N, 1), seed + 2);
        std::vector<float> bias = random_vec(N, seed + 3), res = random_vec(M * N, seed + 4);
        std::vector<float> out = random_vec(M * N, seed + 5), pre(M * N, std::nanf(""));
        if (!v.accumulate && !v.residual_alias)
          for (float& x : out) x = std::numeric_limits<float>::quiet_NaN();  // must be overwritten
        if (v.residual_alias) out = res;

        std::vector<double> want = to_double(v.residual_alias ? std::vector<float>(M * N, 0.0f) : out);
        std::vector<double> want_pre(M * N, 0.0);
        {
          const std::vector<double> da = to_double(a), db = to_double(b), dbias = to_double(bias),
                                    dres = to_double(res);
          ref::gemm(want.data(), want_pre.data(), da.data(), db.data(), dbias.data(), dres.data(), v.op, v.ep,
                    v.accumulate, M, N, K);
        }

        const Tensor ta = v.op == GemmOp::kTN ? f32(a, {K, M}) : f32(a, {M, K});
        const Tensor tb = v.op == GemmOp::kNT ? f32(b, {N, K}) : f32(b, {K, N});
        const bool use_bias = v.ep == Epilogue::kBias || v.ep == Epilogue::kBiasGelu || v.ep == Epilogue::kBiasResidual;
        const bool use_res = v.ep == Epilogue::kResidual || v.ep == Epilogue::kBiasResidual;
        Tensor tout = f32(out, {M, N});
        const Tensor tres = !use_res ? Tensor() : v.residual_alias ? tout : f32(res, {M, N});
        const Tensor tpre = v.with_pre ? f32(pre, {M, N}) : Tensor();
        context() = ctx0 + strformat(" %s ep=%s acc=%d pre=%d alias=%d M=%lld N=%lld K=%lld", elmo::gemm_op_name(v.op),
                                     elmo::epilogue_name(v.ep), v.accumulate, v.with_pre, v.residual_alias, (long long)M,
                                     (long long)N, (long long)K);
        CHECK_OK(be.gemm(tout, tpre, ta, tb, use_bias ? f32(bias, {N}) : Tensor(), tres, v.op, v.ep, v.accumulate));
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

// Larger than one task tile in every direction and more than one K block with a remainder, so
// tiles, K blocks and epilogues meet at odd places; runs NT (the linear layer) and TN, with a
// short M (all rows in one task, B packed per task) and a tall M (B packed once, shared).
TEST_CASE(gemm_multi_tile_multi_k_block) {
  for (int64_t M : {203, 389}) {
    const int64_t N = 531, K = 601;
    std::vector<float> a = random_vec(M * K, 11), b = random_vec(K * N, 12), bias = random_vec(N, 13);
    std::map<int, std::vector<float>> one_thread;
    for (GemmOp op : {GemmOp::kNT, GemmOp::kTN}) {
      std::vector<double> want(M * N), want_pre(M * N);
      const std::vector<double> da = to_double(a), db = to_double(b), dbias = to_double(bias);
      ref::gemm(want.data(), want_pre.data(), da.data(), db.data(), dbias.data(), nullptr, op, Epilogue::kBiasGelu,
                false, M, N, K);
      for_each_config([&](Backend& be, const Config& cfg) {
        context() += strformat(" %s M=%lld", elmo::gemm_op_name(op), (long long)M);
        std::vector<float> out(M * N), pre(M * N);
        const Tensor ta = op == GemmOp::kTN ? f32(a, {K, M}) : f32(a, {M, K});
        const Tensor tb = op == GemmOp::kNT ? f32(b, {N, K}) : f32(b, {K, N});
        CHECK_OK(be.gemm(f32(out, {M, N}), f32(pre, {M, N}), ta, tb, f32(bias, {N}), Tensor(), op,
                         Epilogue::kBiasGelu, false));
        all_close("out", out.data(), want.data(), M * N, atol_for(K) + 1e-6, kRtol);
        all_close("pre_gelu", pre.data(), want_pre.data(), M * N, atol_for(K), kRtol);
        const int key = static_cast<int>(cfg.isa) * 8 + static_cast<int>(op);
        if (cfg.threads == 1) one_thread[key] = out;
        else bit_equal("1 vs 2 threads", out.data(), one_thread[key].data(), M * N);
      });
    }
  }
}

// Taller than the row block every kernel runs at a time (16 MC tiles: 1024 to 1536 rows), so a
// problem is cut into blocks with a short last one; residual and pre_gelu rows follow the block.
// Tall products whose C rows are a multiple of 4 KiB apart (N = 1024 floats) walk their tiles
// row panel by row panel (gemm.cpp, rows_outer); every other product column panel by column
// panel. The walk must not change a bit: the first 1024 columns of the same product with
// N = 1056 (rows 4224 bytes apart) are the reference, for a row-major and a packed weight.
TEST_CASE(gemm_tall_rows_4kib_apart_same_bits) {
  const int64_t M = 389, N = 1024, Nw = 1056, K = 601;
  std::vector<float> a = random_vec(M * K, 31), bw = random_vec(Nw * K, 32), bias_w = random_vec(Nw, 33),
                     res_w = random_vec(M * Nw, 34);
  std::vector<float> b(bw.begin(), bw.begin() + N * K), bias(bias_w.begin(), bias_w.begin() + N), res(M * N);
  for (int64_t i = 0; i < M; ++i) std::copy_n(res_w.begin() + i * Nw, N, res.begin() + i * N);
  float* bp = static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>(N * K * 4 + 63) / 64 * 64));
  std::copy(b.begin(), b.end(), bp);
  for (Epilogue ep : {Epilogue::kBiasGelu, Epilogue::kBiasResidual}) {
    std::vector<double> want(M * N), want_pre(M * N);
    const std::vector<double> da = to_double(a), db = to_double(b), dbias = to_double(bias), dres = to_double(res);
    ref::gemm(want.data(), want_pre.data(), da.data(), db.data(), dbias.data(), dres.data(), GemmOp::kNT, ep, false,
              M, N, K);
    for_each_config([&](Backend& be, const Config&) {
      context() += strformat(" ep=%s", elmo::epilogue_name(ep));
      const bool gelu = ep == Epilogue::kBiasGelu;
      std::vector<float> wide(M * Nw), wide_pre(M * Nw), out(M * N, std::nanf("")), pre(M * N, std::nanf(""));
      CHECK_OK(be.gemm(f32(wide, {M, Nw}), gelu ? f32(wide_pre, {M, Nw}) : Tensor(), f32(a, {M, K}), f32(bw, {Nw, K}),
                       f32(bias_w, {Nw}), gelu ? Tensor() : f32(res_w, {M, Nw}), GemmOp::kNT, ep, false));
      std::vector<float> cut(M * N), cut_pre(M * N);
      for (int64_t i = 0; i < M; ++i) {
        std::copy_n(wide.begin() + i * Nw, N, cut.begin() + i * N);
        std::copy_n(wide_pre.begin() + i * Nw, N, cut_pre.begin() + i * N);
      }
      for (const bool packed : {false, true}) {
        Tensor tw(bp, DType::kF32, {N, K});
        if (packed) CHECK_OK(be.pack_weight(&tw, true));
        CHECK_OK(be.gemm(f32(out, {M, N}), gelu ? f32(pre, {M, N}) : Tensor(), f32(a, {M, K}), tw, f32(bias, {N}),
                         gelu ? Tensor() : f32(res, {M, N}), GemmOp::kNT, ep, false));
        if (packed) CHECK_OK(be.pack_weight(&tw, false));
        all_close(packed ? "out (packed weight)" : "out", out.data(), want.data(), M * N,
                  atol_for(K) + (gelu ? 1e-6 : 0.0), kRtol);
        bit_equal(packed ? "row walk vs column walk (packed weight)" : "row walk vs column walk", out.data(),
                  cut.data(), M * N);
        if (gelu) bit_equal("pre_gelu, row walk vs column walk", pre.data(), cut_pre.data(), M * N);
      }
    });
  }
  std::free(bp);
}

TEST_CASE(gemm_row_blocks) {
  const int64_t M = 1700, N = 40, K = 70;
  std::vector<float> a = random_vec(M * K, 21), b = random_vec(K * N, 22), bias = random_vec(N, 23),
                     res = random_vec(M * N, 24);
  std::map<std::string, std::vector<float>> one_thread;
  for (GemmOp op : {GemmOp::kNN, GemmOp::kNT, GemmOp::kTN})
    for (Epilogue ep : {Epilogue::kBiasGelu, Epilogue::kBiasResidual}) {
      std::vector<double> want(M * N), want_pre(M * N);
      const std::vector<double> da = to_double(a), db = to_double(b), dbias = to_double(bias), dres = to_double(res);
      ref::gemm(want.data(), want_pre.data(), da.data(), db.data(), dbias.data(), dres.data(), op, ep, false, M, N, K);
      for_each_config([&](Backend& be, const Config& cfg) {
        context() += strformat(" %s ep=%s M=%lld", elmo::gemm_op_name(op), elmo::epilogue_name(ep), (long long)M);
        std::vector<float> out(M * N, std::nanf("")), pre(M * N, std::nanf(""));
        const Tensor ta = op == GemmOp::kTN ? f32(a, {K, M}) : f32(a, {M, K});
        const Tensor tb = op == GemmOp::kNT ? f32(b, {N, K}) : f32(b, {K, N});
        const bool gelu = ep == Epilogue::kBiasGelu;
        CHECK_OK(be.gemm(f32(out, {M, N}), gelu ? f32(pre, {M, N}) : Tensor(), ta, tb, f32(bias, {N}),
                         gelu ? Tensor() : f32(res, {M, N}), op, ep, false));
        all_close("out", out.data(), want.data(), M * N, atol_for(K) + 1e-6, kRtol);
        if (gelu) all_close("pre_gelu", pre.data(), want_pre.data(), M * N, atol_for(K), kRtol);
        const std::string key = strformat("%d/%d/%d", static_cast<int>(cfg.isa), static_cast<int>(op), static_cast<int>(ep));
        if (cfg.threads == 1) one_thread[key] = out;
        else bit_equal("1 vs 2 threads", out.data(), one_thread[key].data(), M * N);
      });
    }
}

TEST_CASE(gemm_gelu_epilogue_over_wide_range) {
  // Drive the pre-activations across [-12, 12] (erf saturation, sign handling, exp range).
  const int64_t M = 9, N = 37, K = 1;
  std::vector<float> a(M), b(N), bias(N, 0.0f);
  for (int64_t m = 0; m < M; ++m) a[m] = static_cast<float>(m - 4) * 0.75f;
  for (int64_t n = 0; n < N; ++n) b[n] = static_cast<float>(n - 18) / 4.5f;
  std::vector<double> want(M * N), want_pre(M * N);
  const std::vector<double> da = to_double(a), db = to_double(b), dbias = to_double(bias);
  ref::gemm(want.data(), want_pre.data(), da.data(), db.data(), dbias.data(), nullptr, GemmOp::kNN,
            Epilogue::kBiasGelu, false, M, N, K);
  for_each_config([&](Backend& be, const Config&) {
    std::vector<float> out(M * N);
    CHECK_OK(be.gemm(f32(out, {M, N}), Tensor(), f32(a, {M, K}), f32(b, {K, N}), f32(bias, {N}), Tensor(),
                     GemmOp::kNN, Epilogue::kBiasGelu, false));
    all_close("gelu", out.data(), want.data(), M * N, 2e-6, 2e-6);
  });
}

TEST_CASE(gemm_rejects_bad_input_without_touching_memory) {
  const int64_t M = 4, N = 5, K = 3;
  std::vector<float> a = random_vec(M * K, 1), b = random_vec(K * N, 2), bias = random_vec(N, 3);
  std::vector<float> res = random_vec(M * N, 4), out(M * N, 7.0f), pre(M * N, 7.0f), big(4 * M * N, 7.0f);
  std::vector<uint16_t> half(M * K);
  auto be = make_backend({best_isa(), 2});
  const Tensor ta = f32(a, {M, K}), tb = f32(b, {K, N}), tout = f32(out, {M, N}), tbias = f32(bias, {N});
  const Tensor tres = f32(res, {M, N}), tpre = f32(pre, {M, N});
  const GemmOp NN = GemmOp::kNN;
  // shapes
  CHECK_STATUS(be->gemm(tout, Tensor(), f32(a, {M, K}), f32(b, {K + 1, N - 1}), Tensor(), Tensor(), NN,
                        Epilogue::kNone, false),
               Code::kShape);
  CHECK_STATUS(be->gemm(tout, Tensor(), ta, tb, Tensor(), Tensor(), GemmOp::kNT, Epilogue::kNone, false),
               Code::kShape);  // b is [K,N], not [N,K]
  CHECK_STATUS(be->gemm(f32(out, {M, N - 1}), Tensor(), ta, tb, Tensor(), Tensor(), NN, Epilogue::kNone, false),
               Code::kShape);
  CHECK_STATUS(be->gemm(f32(out, {M * N}), Tensor(), ta, tb, Tensor(), Tensor(), NN, Epilogue::kNone, false),
               Code::kShape);
  CHECK_STATUS(be->gemm(tout, Tensor(), ta, tb, f32(bias, {N - 1}), Tensor(), NN, Epilogue::kBias, false),
               Code::kShape);
  CHECK_STATUS(be->gemm(tout, Tensor(), ta, tb, Tensor(), f32(res, {M, N - 1}), NN, Epilogue::kResidual, false),
               Code::kShape);
  CHECK_STATUS(be->gemm(tout, f32(pre, {N, M}), ta, tb, tbias, Tensor(), NN, Epilogue::kBiasGelu, false),
               Code::kShape);
  // dtypes
  CHECK_STATUS(be->gemm(tout, Tensor(), Tensor(half.data(), DType::kBF16, {M, K}), tb, Tensor(), Tensor(), NN,
                        Epilogue::kNone, false),
               Code::kDType);
  CHECK_STATUS(be->gemm(tout, Tensor(), ta, tb, Tensor(half.data(), DType::kF16, {N}), Tensor(), NN,
                        Epilogue::kBias, false),
               Code::kDType);
  // missing tensors, bad combinations, overlaps
  CHECK_STATUS(be->gemm(tout, Tensor(), Tensor(), tb, Tensor(), Tensor(), NN, Epilogue::kNone, false), Code::kInput);
  CHECK_STATUS(be->gemm(Tensor(), Tensor(), ta, tb, Tensor(), Tensor(), NN, Epilogue::kNone, false), Code::kInput);
  CHECK_STATUS(be->gemm(tout, Tensor(), ta, tb, Tensor(), Tensor(), NN, Epilogue::kBias, false), Code::kInput);
  CHECK_STATUS(be->gemm(tout, Tensor(), ta, tb, tbias, Tensor(), NN, Epilogue::kBiasResidual, false), Code::kInput);
  CHECK_STATUS(be->gemm(tout, Tensor(), ta, tb, tbias, Tensor(), NN, Epilogue::kBias, true), Code::kInput);
  CHECK_STATUS(be->gemm(tout, tpre, ta, tb, tbias, Tensor(), NN, Epilogue::kBiasGelu, true), Code::kInput);
  CHECK_STATUS(be->gemm(tout, Tensor(), ta, tb, Tensor(), tres, NN, Epilogue::kResidual, true), Code::kInput);
  CHECK_STATUS(be->gemm(tout, Tensor(), ta, tb, Tensor(), Tensor(), static_cast<GemmOp>(7), Epilogue::kNone, false),
               Code::kInput);
  CHECK_STATUS(be->gemm(tout, Tensor(), ta, tb, Tensor(), Tensor(), NN, static_cast<Epilogue>(9), false),
               Code::kInput);
  CHECK_STATUS(be->gemm(tout, tout, ta, tb, tbias, Tensor(), NN, Epilogue::kBiasGelu, false), Code::kInput);
  CHECK_STATUS(be->gemm(f32(big, {M, N}), Tensor(), ta, tb, Tensor(), Tensor(big.data() + 1, DType::kF32, {M, N}),
                        NN, Epilogue::kResidual, false),
               Code::kInput);  // residual partly overlaps out
  CHECK_STATUS(be->gemm(Tensor(big.data(), DType::kF32, {M, K}), Tensor(), Tensor(big.data(), DType::kF32, {M, K}),
                        f32(b, {K, K}), Tensor(), Tensor(), NN, Epilogue::kNone, false),
               Code::kInput);  // out is a
  CHECK_STATUS(be->gemm(tout, Tensor(), ta, Tensor(b.data(), DType::kF32, {K, N}, Device::kCuda), Tensor(), Tensor(),
                        NN, Epilogue::kNone, false),
               Code::kInput);
  for (float x : out) CHECK(x == 7.0f);
  for (float x : pre) CHECK(x == 7.0f);
  for (float x : big) CHECK(x == 7.0f);
}

TEST_CASE(bias_backward_accumulates_column_sums) {
  for (Shape s : std::vector<Shape>{{1, 1, 0}, {7, 3, 0}, {300, 131, 0}, {4096, 65, 0}, {0, 9, 0}}) {
    const int64_t M = s.M, N = s.N;
    std::vector<float> dout = random_vec(std::max<int64_t>(M * N, 1), M + N), dbias0 = random_vec(N, 5);
    std::vector<double> want = to_double(dbias0);
    ref::bias_backward(want.data(), to_double(dout).data(), M, N);
    std::map<int, std::vector<float>> one_thread;
    for_each_config([&](Backend& be, const Config& cfg) {
      std::vector<float> dbias = dbias0;
      CHECK_OK(be.bias_backward(f32(dbias, {N}), f32(dout, {M, N})));
      all_close("dbias", dbias.data(), want.data(), N, 1e-6, 1e-6);
      if (cfg.threads == 1) one_thread[static_cast<int>(cfg.isa)] = dbias;
      else bit_equal("dbias 1 vs 2 threads", dbias.data(), one_thread[static_cast<int>(cfg.isa)].data(), N);
    });
  }
  auto be = make_backend({Isa::kScalar, 1});
  std::vector<float> dout(12, 1.0f), dbias(4, 7.0f);
  std::vector<int32_t> ints(4);
  CHECK_STATUS(be->bias_backward(f32(dbias, {3}), f32(dout, {3, 4})), Code::kShape);
  CHECK_STATUS(be->bias_backward(f32(dbias, {4}), f32(dout, {12})), Code::kShape);
  CHECK_STATUS(be->bias_backward(Tensor(ints.data(), DType::kI32, {4}), f32(dout, {3, 4})), Code::kDType);
  CHECK_STATUS(be->bias_backward(Tensor(), f32(dout, {3, 4})), Code::kInput);
  CHECK_STATUS(be->bias_backward(f32(dout, {4}), f32(dout, {3, 4})), Code::kInput);  // aliasing
  for (float x : dbias) CHECK(x == 7.0f);
  for (float x : dout) CHECK(x == 1.0f);
}

// sgemm: alpha, beta, leading dimensions larger than the rows, pool-less (serial) context.
TEST_CASE(sgemm_alpha_beta_leading_dims) {
  struct Case {
    float alpha, beta;
  };
  const std::vector<Case> cases = {{1.0f, 0.0f}, {-2.0f, 1.0f}, {0.5f, 0.25f}, {0.0f, -1.5f}, {1.0f, 1.0f}};
  std::map<std::string, std::vector<float>> one_thread;
  for (const Config& cfg : all_configs()) {
    ThreadPool pool(cfg.threads);
    for (bool use_pool : {true, false}) {
      const cpu::Ctx ctx{use_pool ? &pool : nullptr, cfg.isa};
      for (GemmOp op : {GemmOp::kNN, GemmOp::kNT, GemmOp::kTN}) {
        for (Shape s : std::vector<Shape>{{19, 37, 41}, {1, 3, 300}, {80, 17, 5}}) {
          for (size_t ci = 0; ci < cases.size(); ++ci) {
            const int64_t M = s.M, N = s.N, K = s.K;
            const int64_t ar = op == GemmOp::kTN ? K : M, ac = op == GemmOp::kTN ? M : K;
            const int64_t br = op == GemmOp::kNT ? N : K, bc = op == GemmOp::kNT ? K : N;
            const int64_t lda = ac + 3, ldb = bc + 5, ldc = N + 2;
            std::vector<float> A = random_vec(ar * lda, 21 + ci), B = random_vec(br * ldb, 22 + ci);
            std::vector<float> Cm = random_vec(M * ldc, 23 + ci);
            if (cases[ci].beta == 0.0f)
              for (int64_t m = 0; m < M; ++m)
                for (int64_t n = 0; n < N; ++n) Cm[m * ldc + n] = std::nanf("");  // not read
            std::vector<double> want = to_double(Cm);
            ref::sgemm(op, M, N, K, cases[ci].alpha, A.data(), lda, B.data(), ldb, cases[ci].beta, want.data(), ldc);
            context() = strformat("[isa=%s threads=%d pool=%d] %s M=%lld N=%lld K=%lld alpha=%g beta=%g",
                                  isa_name(cfg.isa), cfg.threads, use_pool, elmo::gemm_op_name(op), (long long)M, (long long)N,
                                  (long long)K, cases[ci].alpha, cases[ci].beta);
            cpu::sgemm(ctx, op, M, N, K, cases[ci].alpha, A.data(), lda, B.data(), ldb, cases[ci].beta, Cm.data(),
                       ldc);
            // padding columns between rows of C must be untouched, so compare the whole buffer
            all_close("C", Cm.data(), want.data(), M * ldc, 2.0 * atol_for(K), kRtol);
            const std::string key = strformat("%d/%d/%lld/%zu", static_cast<int>(cfg.isa), static_cast<int>(op),
                                              (long long)(M * 1000000 + N * 1000 + K), ci);
            if (cfg.threads == 1 && use_pool) one_thread[key] = Cm;
            else bit_equal("C vs 1 thread", Cm.data(), one_thread[key].data(), M * ldc);
          }
        }
      }
    }
  }
  context().clear();
}

// Few-row NT (x . W^T with M <= 32) runs without packing on AVX2: every row tail (M mod 4),
// column tail (N mod 3, task width 48), K tail (K mod 8, K < 8) and the 32-row boundary, through
// sgemm with padded leading dimensions and beta 0 / 1, and through gemm with every epilogue.
TEST_CASE(gemm_nt_few_rows_tails) {
  std::map<std::string, std::vector<float>> one_thread;
  for (const Config& cfg : all_configs()) {
    ThreadPool pool(cfg.threads);
    const cpu::Ctx ctx{&pool, cfg.isa};
    for (int64_t M : {1, 2, 3, 4, 5, 6, 7, 31, 32, 33})
      for (int64_t N : {1, 2, 4, 47, 49, 98})
        for (int64_t K : {1, 7, 8, 9, 77})
          for (float beta : {0.0f, 1.0f}) {
            const int64_t lda = K + 3, ldb = K + 5, ldc = N + 2;
            const uint64_t seed = static_cast<uint64_t>(M * 100000 + N * 100 + K) * 2 + (beta != 0.0f);
            std::vector<float> A = random_vec(M * lda, seed + 1), B = random_vec(N * ldb, seed + 2);
            std::vector<float> Cm = random_vec(M * ldc, seed + 3);
            if (beta == 0.0f)
              for (int64_t m = 0; m < M; ++m)
                for (int64_t n = 0; n < N; ++n) Cm[m * ldc + n] = std::nanf("");  // not read
            std::vector<double> want = to_double(Cm);
            ref::sgemm(GemmOp::kNT, M, N, K, 1.0f, A.data(), lda, B.data(), ldb, beta, want.data(), ldc);
            context() = strformat("[isa=%s threads=%d] NT M=%lld N=%lld K=%lld beta=%g", isa_name(cfg.isa),
                                  cfg.threads, (long long)M, (long long)N, (long long)K, beta);
            cpu::sgemm(ctx, GemmOp::kNT, M, N, K, 1.0f, A.data(), lda, B.data(), ldb, beta, Cm.data(), ldc);
            all_close("C", Cm.data(), want.data(), M * ldc, atol_for(K), kRtol);  // padding untouched too
            const std::string key = strformat("%d/%lld/%g", static_cast<int>(cfg.isa), (long long)seed, beta);
            if (cfg.threads == 1) one_thread[key] = Cm;
            else bit_equal("C vs 1 thread", Cm.data(), one_thread[key].data(), M * ldc);
          }
  }
  for_each_config([&](Backend& be, const Config& cfg) {
    const int64_t M = 29, N = 101, K = 333;  // 7 row blocks + 1, 2 tasks + 5 columns, K mod 8 = 5
    for (Epilogue ep : {Epilogue::kBias, Epilogue::kBiasGelu, Epilogue::kResidual, Epilogue::kBiasResidual}) {
      std::vector<float> a = random_vec(M * K, 31), b = random_vec(N * K, 32), bias = random_vec(N, 33),
                         res = random_vec(M * N, 34), out(M * N, std::nanf("")), pre(M * N, std::nanf(""));
      std::vector<double> want(M * N, 0.0), want_pre(M * N, 0.0);
      const std::vector<double> da = to_double(a), db = to_double(b), dbias = to_double(bias), dres = to_double(res);
      ref::gemm(want.data(), want_pre.data(), da.data(), db.data(), dbias.data(), dres.data(), GemmOp::kNT, ep,
                false, M, N, K);
      const bool use_res = ep == Epilogue::kResidual || ep == Epilogue::kBiasResidual;
      const bool gelu = ep == Epilogue::kBiasGelu;
      context() = strformat("[isa=%s threads=%d] NT ep=%s", isa_name(cfg.isa), cfg.threads, elmo::epilogue_name(ep));
      CHECK_OK(be.gemm(f32(out, {M, N}), gelu ? f32(pre, {M, N}) : Tensor(), f32(a, {M, K}), f32(b, {N, K}),
                       ep == Epilogue::kResidual ? Tensor() : f32(bias, {N}), use_res ? f32(res, {M, N}) : Tensor(),
                       GemmOp::kNT, ep, false));
      all_close("out", out.data(), want.data(), M * N, atol_for(K) + (gelu ? 1e-6 : 0.0), kRtol);
      if (gelu) all_close("pre_gelu", pre.data(), want_pre.data(), M * N, atol_for(K), kRtol);
    }
  });
  context().clear();
}

// Weights kept packed (Backend::pack_weight): packing is in place and undone bit for bit; a
// packed b gives the float64 reference's result on every ISA and thread count, bit-identical to
// the row-major b where both take the packed path (M > 32), and every epilogue applies; any
// op that reads a packed tensor as rows refuses it.
TEST_CASE(gemm_with_packed_weight) {
  struct Aligned {  // packed panels are read with aligned vector loads: 64-byte aligned memory
    explicit Aligned(int64_t n) : p(static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>((n * 4 + 63) / 64 * 64)))), n(n) {}
    ~Aligned() { std::free(p); }
    float* p;
    int64_t n;
  };
  std::map<std::string, std::vector<float>> one_thread;
  for_each_config([&](Backend& be, const Config& cfg) {
    const int nr = be.weight_panel();
    CHECK(nr > 0);
    for (int64_t M : {1, 5, 31, 33, 100, 300})
      for (int64_t N : {int64_t(nr), int64_t(3 * nr), int64_t(5 * nr)})
        for (int64_t K : {1, 7, 64, 300})
          for (Epilogue ep : {Epilogue::kNone, Epilogue::kBias, Epilogue::kBiasGelu, Epilogue::kBiasResidual}) {
            const uint64_t seed = static_cast<uint64_t>(M * 100000 + N * 100 + K) * 8 + static_cast<uint64_t>(ep);
            std::vector<float> a = random_vec(M * K, seed + 1), w = random_vec(N * K, seed + 2);
            std::vector<float> bias = random_vec(N, seed + 3), res = random_vec(M * N, seed + 4);
            std::vector<float> out(M * N, std::nanf("")), out_rows(M * N, std::nanf(""));
            Aligned wp(N * K);
            std::copy(w.begin(), w.end(), wp.p);
            Tensor tw(wp.p, DType::kF32, {N, K});
            context() = strformat("[isa=%s threads=%d] packed NT ep=%s M=%lld N=%lld K=%lld", isa_name(cfg.isa),
                                  cfg.threads, elmo::epilogue_name(ep), (long long)M, (long long)N, (long long)K);
            const bool use_bias = ep != Epilogue::kNone, use_res = ep == Epilogue::kBiasResidual;
            const Tensor tbias = use_bias ? f32(bias, {N}) : Tensor(), tres = use_res ? f32(res, {M, N}) : Tensor();
            CHECK_OK(be.gemm(f32(out_rows, {M, N}), Tensor(), f32(a, {M, K}), tw, tbias, tres, GemmOp::kNT, ep, false));
            CHECK_OK(be.pack_weight(&tw, true));
            CHECK(tw.panel == nr);
            CHECK_OK(be.gemm(f32(out, {M, N}), Tensor(), f32(a, {M, K}), tw, tbias, tres, GemmOp::kNT, ep, false));
            std::vector<double> want(M * N, 0.0), want_pre(M * N, 0.0);
            const std::vector<double> da = to_double(a), dw = to_double(w), dbias = to_double(bias),
                                      dres = to_double(res);
            ref::gemm(want.data(), want_pre.data(), da.data(), dw.data(), dbias.data(), dres.data(), GemmOp::kNT, ep,
                      false, M, N, K);
            all_close("out", out.data(), want.data(), M * N, atol_for(K) + (ep == Epilogue::kBiasGelu ? 1e-6 : 0.0),
                      kRtol);
            if (M > 32) bit_equal("packed vs row-major b", out.data(), out_rows.data(), M * N);
            const std::string key = strformat("%d/%lld", static_cast<int>(cfg.isa), (long long)seed);
            if (cfg.threads == 1) one_thread[key] = out;
            else bit_equal("out vs 1 thread", out.data(), one_thread[key].data(), M * N);
            CHECK_OK(be.pack_weight(&tw, false));
            CHECK(tw.panel == 0);
            bit_equal("unpacked weight", wp.p, w.data(), N * K);
          }
    // Misuse: a packed b with another op, a packed tensor anywhere else, unpackable shapes.
    context() = strformat("[isa=%s threads=%d] packed misuse", isa_name(cfg.isa), cfg.threads);
    const int64_t N = 2 * nr, K = 8;
    Aligned wp(N * K + 16);
    std::vector<float> w = random_vec(N * K, 5), x = random_vec(4 * K, 6), out(4 * N), y(N * K);
    std::copy(w.begin(), w.end(), wp.p);
    Tensor tw(wp.p, DType::kF32, {N, K});
    CHECK_OK(be.pack_weight(&tw, true));
    Tensor tw_nn = tw;
    tw_nn.shape[0] = K;
    tw_nn.shape[1] = N;
    CHECK_STATUS(be.gemm(f32(out, {4, N}), Tensor(), f32(x, {4, K}), tw_nn, Tensor(), Tensor(), GemmOp::kNN,
                         Epilogue::kNone, false), Code::kInput);
    std::vector<int32_t> idx{0, 1};  // an op that reads rows refuses the packed layout
    CHECK_STATUS(be.gather_rows(f32(y, {2, K}), tw, Tensor(idx.data(), DType::kI32, {2})), Code::kInput);
    Tensor other = tw;
    other.panel = nr == 8 ? 16 : 8;  // packed for another kernel
    CHECK_STATUS(be.gemm(f32(out, {4, N}), Tensor(), f32(x, {4, K}), other, Tensor(), Tensor(), GemmOp::kNT,
                         Epilogue::kNone, false), Code::kInput);
    Tensor odd(wp.p, DType::kF32, {N - 1, K});
    CHECK_STATUS(be.pack_weight(&odd, true), Code::kShape);
    Tensor misaligned(wp.p + 1, DType::kF32, {N, K});
    CHECK_STATUS(be.pack_weight(&misaligned, true), Code::kInput);
    CHECK_OK(be.pack_weight(&tw, false));
    bit_equal("unpacked after misuse", wp.p, w.data(), N * K);
  });
  context().clear();
}

int main() { return run_all_tests(); }
