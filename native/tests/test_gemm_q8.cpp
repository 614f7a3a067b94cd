// int8 GEMM (dynamic quantization: Backend::quantize_weight, then gemm with an i8 b) on every
// kernel path this CPU runs (scalar, AVX2, AVX-512 VNNI) with 1 and 2 threads, against a float64
// reference of the quantized math: both operands quantized per row as the contract says
// (symmetric, scale max|x| / 127, round to nearest even), their products summed exactly, the sum
// times both scales, then the epilogue. The int8 sums are exact, so 1 and 2 threads must agree
// bit for bit. The VNNI kernel is reported as SKIP on a CPU without it.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
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

Tensor f32(std::vector<float>& v, std::initializer_list<int64_t> dims) { return Tensor(v.data(), DType::kF32, dims); }

// The contract's quantization of one row, written out independently of the library's.
struct QRow {
  std::vector<int> q;
  float scale;
};
QRow quantize(const float* x, int64_t n) {
  float amax = 0.0f;
  for (int64_t k = 0; k < n; ++k) amax = std::max(amax, std::fabs(x[k]));
  QRow r{std::vector<int>(static_cast<size_t>(n), 0), amax / 127.0f};
  const float inv = amax > 0 ? 127.0f / amax : 0.0f;
  for (int64_t k = 0; k < n; ++k) {
    const float v = std::nearbyint(x[k] * inv);
    r.q[static_cast<size_t>(k)] = static_cast<int>(std::min(127.0f, std::max(-127.0f, v)));
  }
  return r;
}
// x dequantized in float64: q * scale for each row of [rows, n].
std::vector<double> dequantized(const std::vector<float>& x, int64_t rows, int64_t n) {
  std::vector<double> out(static_cast<size_t>(rows * n));
  for (int64_t i = 0; i < rows; ++i) {
    const QRow r = quantize(x.data() + i * n, n);
    for (int64_t k = 0; k < n; ++k) out[static_cast<size_t>(i * n + k)] = r.q[static_cast<size_t>(k)] * double(r.scale);
  }
  return out;
}

// A quantized weight in backend memory (freed with the holder).
struct QWeight {
  Backend* be;
  Tensor buf, w;
  QWeight(Backend& b, std::vector<float>& wf, int64_t N, int64_t K) : be(&b) {
    const int64_t bytes = b.quantized_weight_bytes(N, K);
    CHECK_OK(b.alloc(&buf, DType::kI8, {bytes}));
    w = Tensor(buf.data, DType::kI8, {N, K});
    CHECK_OK(b.quantize_weight(&w, f32(wf, {N, K})));
  }
  ~QWeight() { be->free(&buf); }
};

// avx512 runs the VNNI kernel only where the CPU has it (else the AVX2 one, already covered).
void for_each_path(const std::function<void(Backend&, const Config&)>& body) {
  for_each_kernel_path([](Isa isa) { return isa != Isa::kAvx512 || cpu_features().avx512_vnni; },
                       &cpu::gemm_q8_kernel_name, body);
}

struct Variant {
  Epilogue ep;
  bool with_pre;
  bool residual_alias;
};
const Variant kVariants[] = {
    {Epilogue::kNone, false, false},     {Epilogue::kBias, false, false},         {Epilogue::kBiasGelu, true, false},
    {Epilogue::kResidual, false, false}, {Epilogue::kBiasResidual, false, false}, {Epilogue::kBiasResidual, false, true},
};

struct Shape {
  int64_t M, N, K;
};
// M around every register tile (4, 8) and the task tile (64), N around the 16-row panel and the
// 64-column task tile, K not a multiple of the 4-k group.
std::vector<Shape> shapes() {
  std::vector<Shape> s;
  for (int64_t M : {1, 3, 9, 65})
    for (int64_t N : {1, 17, 64, 130})
      for (int64_t K : {1, 6, 64, 301}) s.push_back({M, N, K});
  s.push_back({130, 200, 768});
  s.push_back({7, 13, 0});
  return s;
}

}  // namespace

TEST_CASE(avx512_vnni_kernel_runs_where_the_cpu_has_it) {
  if (!cpu_features().avx512_vnni || best_isa() != Isa::kAvx512) {
    SKIP_CASE("this CPU has no AVX512_VNNI (best ISA %s): the avx512_vnni kernel is not run here", isa_name(best_isa()));
    return;
  }
  CHECK(std::string(cpu::gemm_q8_kernel_name(Isa::kAvx512)) == "avx512_vnni");
}

TEST_CASE(quantize_weight_layout_matches_the_contract) {
  for_each_path([&](Backend& be, const Config&) {
    const int64_t N = 19, K = 10;
    std::vector<float> w = random_vec(N * K, 7, -3, 3);
    for (int64_t k = 0; k < K; ++k) w[static_cast<size_t>(5 * K + k)] = 0.0f;  // a zero row
    QWeight qw(be, w, N, K);
    const int64_t Np = 32, Kp = 12;
    CHECK(be.quantized_weight_bytes(N, K) == 8 * Np + Np * Kp);
    // int8 panels of 4-k groups (the VNNI and scalar kernels), or of k pairs (AVX2).
    const int64_t G = qw.w.panel == 16 ? 4 : 2;
    CHECK(qw.w.panel == 16 || qw.w.panel == 32);
    const char* base = static_cast<const char*>(qw.buf.data);
    const float* sw = reinterpret_cast<const float*>(base);
    const int32_t* sums = reinterpret_cast<const int32_t*>(base + 4 * Np);
    const char* panels = base + 8 * Np;
    for (int64_t n = 0; n < Np; ++n) {
      const QRow r = n < N ? quantize(w.data() + n * K, K) : QRow{std::vector<int>(K, 0), 0.0f};
      CHECK(sw[n] == r.scale);
      int32_t sum = 0;
      for (int64_t k = 0; k < Kp; ++k) {
        const int want = k < K ? r.q[static_cast<size_t>(k)] : 0;
        sum += want;
        const int64_t at = (n / 16) * 16 * Kp + (k / G) * 16 * G + (n % 16) * G + k % G;
        CHECK(reinterpret_cast<const int8_t*>(panels)[at] == want);
      }
      CHECK(sums[n] == sum);
    }
    CHECK(sw[5] == 0.0f);
  });
}

TEST_CASE(gemm_q8_matches_float64_reference_of_the_quantized_math_and_is_thread_invariant) {
  const std::vector<Shape> all = shapes();
  std::map<std::string, std::vector<float>> one_thread;
  for_each_path([&](Backend& be, const Config& cfg) {
    const std::string ctx0 = context();
    for (size_t si = 0; si < all.size(); ++si) {
      const int64_t M = all[si].M, N = all[si].N, K = all[si].K;
      for (size_t vi = 0; vi < std::size(kVariants); ++vi) {
        const Variant& v = kVariants[vi];
        const uint64_t seed = si * 100 + vi;
        std::vector<float> a = random_vec(std::max<int64_t>(M * K, 1), seed + 1, -2, 2),
                           w = random_vec(std::max<int64_t>(N * K, 1), seed + 2, -0.5, 0.5);
        std::vector<float> bias = random_vec(N, seed + 3), res = random_vec(M * N, seed + 4);
        std::vector<float> out(M * N, std::numeric_limits<float>::quiet_NaN()), pre(M * N, std::nanf(""));
        if (v.residual_alias) out = res;
        QWeight qw(be, w, N, K);

        std::vector<double> want(M * N, 0.0), want_pre(M * N, 0.0);
        {
          const std::vector<double> da = dequantized(a, M, K), db = dequantized(w, N, K), dbias = to_double(bias),
                                    dres = to_double(res);
          ref::gemm(want.data(), want_pre.data(), da.data(), db.data(), dbias.data(), dres.data(), GemmOp::kNT, v.ep,
                    false, M, N, K);
        }
        const bool use_bias = v.ep == Epilogue::kBias || v.ep == Epilogue::kBiasGelu || v.ep == Epilogue::kBiasResidual;
        const bool use_res = v.ep == Epilogue::kResidual || v.ep == Epilogue::kBiasResidual;
        Tensor tout = f32(out, {M, N});
        const Tensor tres = !use_res ? Tensor() : v.residual_alias ? tout : f32(res, {M, N});
        const Tensor tpre = v.with_pre ? f32(pre, {M, N}) : Tensor();
        context() = ctx0 + strformat(" ep=%s pre=%d alias=%d M=%lld N=%lld K=%lld", epilogue_name(v.ep), v.with_pre,
                                     v.residual_alias, (long long)M, (long long)N, (long long)K);
        CHECK_OK(be.gemm(tout, tpre, f32(a, {M, K}), qw.w, use_bias ? f32(bias, {N}) : Tensor(), tres, GemmOp::kNT,
                         v.ep, false));
        // The exact integer sum, then at most three f32 roundings (to float, two products) and
        // the f32 epilogue; GELU's vectorized erf adds up to 1.5e-7 |x|.
        const double atol = 1e-6 * std::sqrt(static_cast<double>(K) + 1.0) + (v.ep == Epilogue::kBiasGelu ? 1e-6 : 0);
        all_close("out", out.data(), want.data(), M * N, atol, 1e-6);
        if (v.with_pre) all_close("pre_gelu", pre.data(), want_pre.data(), M * N, atol, 1e-6);

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

// Every path forms the same integer sums, so without an epilogue the outputs of all paths are the
// same bits (the two scale products are done in the same order everywhere).
TEST_CASE(gemm_q8_paths_agree_bit_for_bit) {
  const int64_t M = 37, N = 70, K = 200;
  std::vector<float> a = random_vec(M * K, 11, -4, 4), w = random_vec(N * K, 12, -0.1, 0.1);
  std::vector<float> first;
  for_each_path([&](Backend& be, const Config&) {
    QWeight qw(be, w, N, K);
    std::vector<float> out(M * N);
    CHECK_OK(be.gemm(f32(out, {M, N}), Tensor(), f32(a, {M, K}), qw.w, Tensor(), Tensor(), GemmOp::kNT,
                     Epilogue::kNone, false));
    if (first.empty()) first = out;
    else bit_equal("out (path vs scalar)", out.data(), first.data(), M * N);
  });
}

// Quantization error against the f32 product: per-row int8 keeps a BERT-sized product within a
// few percent of its typical size (a check that the scales are applied the right way round).
TEST_CASE(gemm_q8_is_close_to_the_f32_product) {
  const int64_t M = 16, N = 96, K = 768;
  std::vector<float> a = random_vec(M * K, 21, -1, 1), w = random_vec(N * K, 22, -0.05, 0.05);
  std::vector<double> exact(M * N, 0.0), tmp(M * N, 0.0);
  const std::vector<double> da = to_double(a), dw = to_double(w);
  ref::gemm(exact.data(), tmp.data(), da.data(), dw.data(), nullptr, nullptr, GemmOp::kNT, Epilogue::kNone, false, M,
            N, K);
  double rms = 0;
  for (double x : exact) rms += x * x;
  rms = std::sqrt(rms / static_cast<double>(M * N));
  for_each_path([&](Backend& be, const Config&) {
    QWeight qw(be, w, N, K);
    std::vector<float> out(M * N);
    CHECK_OK(be.gemm(f32(out, {M, N}), Tensor(), f32(a, {M, K}), qw.w, Tensor(), Tensor(), GemmOp::kNT,
                     Epilogue::kNone, false));
    double err = 0;
    for (int64_t i = 0; i < M * N; ++i) err = std::max(err, std::fabs(out[i] - exact[i]));
    CHECK(err < 0.03 * rms);
    CHECK(err > 0);  // it did quantize
  });
}

// A row of zeros gives zeros (scale 0); a NaN or an infinity in a row makes that row NaN and no
// other.
TEST_CASE(gemm_q8_zero_nan_and_inf_rows) {
  const int64_t M = 5, N = 20, K = 9;
  std::vector<float> w = random_vec(N * K, 31);
  std::vector<float> a = random_vec(M * K, 32);
  for (int64_t k = 0; k < K; ++k) a[static_cast<size_t>(1 * K + k)] = 0.0f;
  a[static_cast<size_t>(2 * K + 3)] = std::nanf("");
  a[static_cast<size_t>(3 * K + 4)] = std::numeric_limits<float>::infinity();
  for_each_path([&](Backend& be, const Config&) {
    QWeight qw(be, w, N, K);
    std::vector<float> out(M * N);
    CHECK_OK(be.gemm(f32(out, {M, N}), Tensor(), f32(a, {M, K}), qw.w, Tensor(), Tensor(), GemmOp::kNT,
                     Epilogue::kNone, false));
    for (int64_t n = 0; n < N; ++n) {
      CHECK(out[static_cast<size_t>(1 * N + n)] == 0.0f);
      CHECK(std::isnan(out[static_cast<size_t>(2 * N + n)]));
      CHECK(std::isnan(out[static_cast<size_t>(3 * N + n)]));
      CHECK(std::isfinite(out[static_cast<size_t>(0 * N + n)]) && std::isfinite(out[static_cast<size_t>(4 * N + n)]));
    }
  });
}

TEST_CASE(gemm_q8_rejects_what_it_does_not_do) {
  auto be = make_backend({best_isa(), 1});
  const int64_t M = 3, N = 16, K = 8;
  std::vector<float> a = random_vec(M * K, 41), w = random_vec(N * K, 42), out(M * N), a2 = random_vec(M * 5, 43);
  QWeight qw(*be, w, N, K);
  const Tensor ta = f32(a, {M, K}), tout = f32(out, {M, N});
  // accumulate, and ops other than NT
  CHECK_STATUS(be->gemm(tout, Tensor(), ta, qw.w, Tensor(), Tensor(), GemmOp::kNT, Epilogue::kNone, true),
               Code::kDType);
  CHECK_STATUS(be->gemm(tout, Tensor(), ta, qw.w, Tensor(), Tensor(), GemmOp::kNN, Epilogue::kNone, false),
               Code::kDType);
  // an i8 tensor that was never quantized (no panel)
  Tensor raw = qw.w;
  raw.panel = 0;
  CHECK_STATUS(be->gemm(tout, Tensor(), ta, raw, Tensor(), Tensor(), GemmOp::kNT, Epilogue::kNone, false),
               Code::kInput);
  // K differs
  CHECK_STATUS(be->gemm(tout, Tensor(), f32(a2, {M, 5}), qw.w, Tensor(), Tensor(), GemmOp::kNT, Epilogue::kNone, false),
               Code::kShape);
  // a weight with NaN or infinity cannot be quantized
  std::vector<float> bad = w;
  bad[3] = std::numeric_limits<float>::infinity();
  Tensor buf;
  CHECK_OK(be->alloc(&buf, DType::kI8, {be->quantized_weight_bytes(N, K)}));
  Tensor q(buf.data, DType::kI8, {N, K});
  CHECK_STATUS(be->quantize_weight(&q, f32(bad, {N, K})), Code::kInput);
  // out of the wrong shape
  Tensor q2(buf.data, DType::kI8, {N, K + 1});
  CHECK_STATUS(be->quantize_weight(&q2, f32(w, {N, K})), Code::kShape);
  be->free(&buf);
}

int main() { return run_all_tests(); }
