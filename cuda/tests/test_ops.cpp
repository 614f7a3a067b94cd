// The CUDA backend's non-GEMM ops against a float64 host reference and against the CPU backend
// (make_cpu_backend), on awkward shapes: one-token batches, sequence lengths 1/3/63/65/130
// mixed, head sizes 32/64/128 and 40, odd widths (97). Outputs are poisoned with NaN first, so
// an element left unwritten fails.
//
// Error metric: |got - want| <= tol * max|want| + tol * |want| (tolerance relative to the
// tensor's scale as well as to the element).
//   * f32: 1e-5 (attention 2e-5: f32 online softmax and a different summation order);
//   * bf16 storage or bf16 tensor-core compute: 1e-2 (inputs are bf16-representable; what is
//     left is the rounding of P to bf16 before PV and of the output, about 2^-8 relative).
// The CPU comparison is skipped (and said so) where the CPU backend reports ERR_UNSUPPORTED.
// Dropout masks must be identical to the CPU's / the reference's for the same seed.
//
// Exit code 77 with "SKIP: no CUDA device (...)" when there is no usable device.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "attention.h"
#include "elmo/cuda_backend.h"
#include "elmo/half.h"
#include "elmo/philox.h"
#include "tests/harness.h"

using elmo::Backend;
using elmo::Code;
using elmo::Device;
using elmo::DType;
using elmo::Offsets;
using elmo::Status;
using elmo::Tensor;
using elmo_test::failures;
using elmo_test::make_offsets_vec;
using elmo_test::random_vec;

namespace {

std::unique_ptr<Backend> g_gpu, g_gpu_bf16, g_cpu;
// The tensor-core attention kernel with 16 and with 32 query rows per warp whatever the default
// (CudaOptions::attention_rows), the second also under bf16 compute.
std::unique_ptr<Backend> g_gpu_rows16, g_gpu_rows32, g_gpu_rows32_bf16;
bool bf16_compute(const Backend& b) { return &b == g_gpu_bf16.get() || &b == g_gpu_rows32_bf16.get(); }
std::set<std::string> g_cpu_missing;

// ---- host helpers ----------------------------------------------------------------------------

float round_bf16(float f) { return elmo::bf16_to_f32(elmo::f32_to_bf16(f)); }
std::vector<float> bf16_vec(std::vector<float> v) {
  for (auto& x : v) x = round_bf16(x);
  return v;
}

// Tensors allocated on one backend, freed together.
struct Arena {
  Backend& b;
  std::vector<Tensor> owned;
  explicit Arena(Backend& be) : b(be) {}
  ~Arena() {
    for (auto& t : owned) b.free(&t);
  }
  Tensor alloc(DType dt, std::initializer_list<int64_t> dims) {
    Tensor t;
    Status s = b.alloc(&t, dt, dims);
    if (!s.is_ok()) {
      std::fprintf(stderr, "alloc failed: %s\n", s.message().c_str());
      std::exit(1);
    }
    owned.push_back(t);
    return t;
  }
  // Host floats stored as dt (f32 or bf16).
  Tensor up(const std::vector<float>& v, std::initializer_list<int64_t> dims, DType dt = DType::kF32) {
    Tensor t = alloc(dt, dims);
    if (dt == DType::kBF16) {
      std::vector<uint16_t> h(v.size());
      for (size_t i = 0; i < v.size(); ++i) h[i] = elmo::f32_to_bf16(v[i]);
      CHECK_OK(b.upload(t, h.data(), h.size() * 2));
    } else {
      CHECK_OK(b.upload(t, v.data(), v.size() * 4));
    }
    return t;
  }
  Tensor upi(const std::vector<int32_t>& v, std::initializer_list<int64_t> dims) {
    Tensor t = alloc(DType::kI32, dims);
    CHECK_OK(b.upload(t, v.data(), v.size() * 4));
    return t;
  }
  // An output poisoned with NaN.
  Tensor out(std::initializer_list<int64_t> dims, DType dt = DType::kF32) {
    Tensor t = alloc(dt, dims);
    CHECK_OK(b.fill(t, NAN));
    return t;
  }
  std::vector<float> down(const Tensor& t) {
    std::vector<float> v(static_cast<size_t>(t.numel()));
    if (t.dtype == DType::kBF16) {
      std::vector<uint16_t> h(v.size());
      CHECK_OK(b.download(h.data(), t, h.size() * 2));
      for (size_t i = 0; i < v.size(); ++i) v[i] = elmo::bf16_to_f32(h[i]);
    } else {
      CHECK_OK(b.download(v.data(), t, v.size() * 4));
    }
    return v;
  }
};

// One run of an op: the outputs it wants compared, downloaded as floats.
using OpFn = std::function<Status(Arena&, std::vector<Tensor>*)>;
struct Result {
  Status st;
  std::vector<std::vector<float>> outs;
};
Result run_on(Backend& b, const OpFn& fn) {
  Arena a(b);
  std::vector<Tensor> outs;
  Result r;
  r.st = fn(a, &outs);
  if (r.st.is_ok()) r.st = b.sync();
  if (r.st.is_ok())
    for (auto& t : outs) r.outs.push_back(a.down(t));
  return r;
}

bool close(const std::string& what, const std::vector<float>& got, const std::vector<double>& want, double tol) {
  if (got.size() != want.size()) {
    ++failures();
    std::fprintf(stderr, "  %s: size %zu vs %zu\n", what.c_str(), got.size(), want.size());
    return false;
  }
  double scale = 0;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  return elmo_test::all_close(what.c_str(), got.data(), want.data(), static_cast<int64_t>(got.size()),
                              tol * std::max(scale, 1e-30), tol);
}

// Runs fn on the CUDA backend (checked against ref) and on the CPU backend (checked against
// the CUDA result where the CPU implements the op).
void compare(const std::string& what, Backend& gpu, const OpFn& fn, const std::vector<std::vector<double>>& ref,
             double tol, bool with_cpu = true) {
  Result g = run_on(gpu, fn);
  CHECK_OK(g.st);
  if (!g.st.is_ok()) {
    std::fprintf(stderr, "  (%s)\n", what.c_str());
    return;
  }
  for (size_t k = 0; k < ref.size() && k < g.outs.size(); ++k)
    close(what + " [out " + std::to_string(k) + " vs f64 reference]", g.outs[k], ref[k], tol);
  if (!with_cpu) return;
  Result c = run_on(*g_cpu, fn);
  if (c.st.code() == Code::kUnsupported) {
    g_cpu_missing.insert(what.substr(0, what.find(' ')));
    return;
  }
  CHECK_OK(c.st);
  if (!c.st.is_ok()) return;
  for (size_t k = 0; k < g.outs.size() && k < c.outs.size(); ++k)
    close(what + " [out " + std::to_string(k) + " vs cpu]", g.outs[k], std::vector<double>(c.outs[k].begin(), c.outs[k].end()),
          tol);
}

const std::vector<std::vector<int>> kLenSets = {{1}, {3}, {1, 3, 63, 65, 130}, {65, 1, 130, 3, 63}, {64, 128}};

std::string lens_str(const std::vector<int>& lens) {
  std::string s = "lens=";
  for (size_t i = 0; i < lens.size(); ++i) s += (i ? "," : "") + std::to_string(lens[i]);
  return s;
}

// ---- references (float64) ----------------------------------------------------------------

void ref_attention(std::vector<double>* out, std::vector<double>* lse, const std::vector<float>& qkv,
                   const std::vector<int32_t>& off, int NH, int HD, float p, uint64_t seed, uint64_t stream) {
  const int64_t T = off.back(), C = static_cast<int64_t>(NH) * HD;
  out->assign(static_cast<size_t>(T * C), 0.0);
  lse->assign(static_cast<size_t>(NH * T), 0.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(HD));
  for (size_t b = 0; b + 1 < off.size(); ++b)
    for (int h = 0; h < NH; ++h)
      for (int64_t i = off[b]; i < off[b + 1]; ++i) {
        std::vector<double> s;
        double m = -1e300;
        for (int64_t j = off[b]; j < off[b + 1]; ++j) {
          double d = 0;
          for (int k = 0; k < HD; ++k) d += double(qkv[i * 3 * C + h * HD + k]) * qkv[j * 3 * C + C + h * HD + k];
          s.push_back(d * scale);
          m = std::max(m, d * scale);
        }
        double l = 0;
        for (double x : s) l += std::exp(x - m);
        const double ls = m + std::log(l);
        (*lse)[h * T + i] = ls;
        for (int64_t j = off[b]; j < off[b + 1]; ++j) {
          double pij = std::exp(s[j - off[b]] - ls);
          if (p > 0) {
            const uint64_t e = (static_cast<uint64_t>(h) * T + i) * T + j;
            pij = elmo::dropout_keep(seed, stream, e, p) ? pij / (1.0 - p) : 0.0;
          }
          for (int k = 0; k < HD; ++k) (*out)[i * C + h * HD + k] += pij * qkv[j * 3 * C + 2 * C + h * HD + k];
        }
      }
}

double gelu_ref(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
double gelu_grad_ref(double x) {
  return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-0.5 * x * x) / 2.5066282746310002;
}

// ---- attention ------------------------------------------------------------------------------

void attention_case(Backend& gpu, const std::vector<int>& lens, int NH, int HD, DType dt, float p, double tol,
                    const char* tag) {
  const auto off = make_offsets_vec(lens);
  const int64_t T = off.back(), C = static_cast<int64_t>(NH) * HD;
  std::vector<float> qkv = random_vec(T * 3 * C, 1000 + HD + T, -2, 2);
  if (dt == DType::kBF16 || bf16_compute(gpu)) qkv = bf16_vec(qkv);
  std::vector<double> ref_out, ref_lse;
  const uint64_t seed = 0x1234567887654321ull, stream = 7;
  ref_attention(&ref_out, &ref_lse, qkv, off, NH, HD, p, seed, stream);
  OpFn fn = [&](Arena& a, std::vector<Tensor>* outs) -> Status {
    Tensor tq = a.up(qkv, {T, 3 * C}, dt);
    Tensor toff = a.upi(off, {static_cast<int64_t>(off.size())});
    Offsets o;
    ELMO_RETURN_IF_ERROR(elmo::make_offsets(&o, off.data(), toff.i32(), static_cast<int>(lens.size()), T));
    Tensor out = a.out({T, C}, dt), lse = a.out({NH, T});
    outs->push_back(out);
    outs->push_back(lse);
    return a.b.attention_forward(out, lse, tq, o, NH, HD, p, seed, stream);
  };
  const std::string what = std::string("attention_forward ") + tag + " " + lens_str(lens) + " NH=" +
                           std::to_string(NH) + " HD=" + std::to_string(HD) + " p=" + std::to_string(p);
  compare(what, gpu, fn, {ref_out, ref_lse}, tol, dt == DType::kF32 && &gpu == g_gpu.get());
}

TEST_CASE(attention_forward_f32) {
  for (const auto& lens : kLenSets)
    for (int HD : {32, 64, 128, 40}) attention_case(*g_gpu, lens, 2, HD, DType::kF32, 0.f, 2e-5, "f32");
  attention_case(*g_gpu, {1, 3, 63, 65, 130}, 3, 256, DType::kF32, 0.f, 2e-5, "f32");
  attention_case(*g_gpu, {5, 17}, 1, 7, DType::kF32, 0.f, 2e-5, "f32");
}

TEST_CASE(attention_forward_bf16_tensor_cores) {
  for (const auto& lens : kLenSets)
    for (int HD : {32, 64, 128, 40}) attention_case(*g_gpu, lens, 2, HD, DType::kBF16, 0.f, 1e-2, "bf16");
  // f32 tensors, bf16 compute: the operands are rounded to bf16, the output stays f32.
  for (int HD : {32, 64, 128}) attention_case(*g_gpu_bf16, {1, 3, 63, 65, 130}, 3, HD, DType::kF32, 0.f, 1e-2, "f32/bf16-compute");
}

TEST_CASE(attention_forward_dropout) {
  // Same Philox element numbering as the CPU: the reference draws the masks itself.
  for (int HD : {64, 40}) {
    attention_case(*g_gpu, {1, 3, 63, 65, 130}, 2, HD, DType::kF32, 0.1f, 2e-5, "f32");
    attention_case(*g_gpu, {1, 3, 63, 65, 130}, 2, HD, DType::kBF16, 0.1f, 1e-2, "bf16");
  }
  attention_case(*g_gpu, {130, 65}, 2, 128, DType::kBF16, 0.3f, 1e-2, "bf16");
}

// Sequences of 256 tokens and more (where the 32-row kernel is chosen by length), with short
// ones and tails in the same batch, on both tile heights; dropout included. Under
// ELMO_TEST_QUICK (compute-sanitizer in scripts/gpu-check.sh) one batch of 256 + 3 tokens.
TEST_CASE(attention_forward_bf16_rows_per_warp) {
  const bool quick = std::getenv("ELMO_TEST_QUICK") != nullptr;
  const std::vector<std::vector<int>> long_sets =
      quick ? std::vector<std::vector<int>>{{256, 3}}
            : std::vector<std::vector<int>>{{511, 1, 300, 257, 64, 129}, {512}, {256, 3}};
  for (Backend* gpu : {g_gpu_rows16.get(), g_gpu_rows32.get()}) {
    const char* tag = gpu == g_gpu_rows16.get() ? "bf16 rows=16" : "bf16 rows=32";
    for (const auto& lens : long_sets)
      for (int HD : {32, 64}) attention_case(*gpu, lens, 2, HD, DType::kBF16, 0.f, 1e-2, tag);
    attention_case(*gpu, long_sets[0], 2, 64, DType::kBF16, 0.1f, 1e-2, tag);
    attention_case(*gpu, {1, 3, 63, 65, 130}, 3, 64, DType::kBF16, 0.f, 1e-2, tag);
  }
  for (int HD : {32, 64, 128})
    attention_case(*g_gpu_rows32_bf16, long_sets[0], 2, HD, DType::kF32, 0.f, 1e-2, "f32/bf16-compute rows=32");
  // What each asks for: 32 only for head sizes <= 64; "auto" (-1) from 256 tokens.
  CHECK(elmo::cuda::attention_rows_per_warp(32, 64, 10) == 32);
  CHECK(elmo::cuda::attention_rows_per_warp(32, 128, 512) == 16);
  CHECK(elmo::cuda::attention_rows_per_warp(16, 64, 512) == 16);
  CHECK(elmo::cuda::attention_rows_per_warp(-1, 64, 255) == 16);
  CHECK(elmo::cuda::attention_rows_per_warp(-1, 64, 256) == 32);
}

TEST_CASE(attention_forward_bad_input) {
  Arena a(*g_gpu);
  const auto off = make_offsets_vec({3, 5});
  Tensor toff = a.upi(off, {3});
  Offsets o;
  CHECK_OK(elmo::make_offsets(&o, off.data(), toff.i32(), 2, 8));
  Tensor qkv = a.alloc(DType::kF32, {8, 3 * 64}), out = a.alloc(DType::kF32, {8, 64}), lse = a.alloc(DType::kF32, {1, 8});
  CHECK_STATUS(g_gpu->attention_forward(out, lse, qkv, o, 1, 63, 0.f, 1, 1), Code::kShape);
  CHECK_STATUS(g_gpu->attention_forward(out, lse, qkv, o, 1, 64, 1.5f, 1, 1), Code::kInput);
  CHECK_STATUS(g_gpu->attention_forward(out, lse, qkv, o, 1, 512, 0.f, 1, 1), Code::kInput);
  Tensor out16 = a.alloc(DType::kBF16, {8, 64});
  CHECK_STATUS(g_gpu->attention_forward(out16, lse, qkv, o, 1, 64, 0.f, 1, 1), Code::kDType);
  Offsets host_only = o;
  host_only.dev = off.data();  // not device memory
  CHECK_STATUS(g_gpu->attention_forward(out, lse, qkv, host_only, 1, 64, 0.f, 1, 1), Code::kInput);
  Tensor host_qkv(const_cast<int32_t*>(off.data()), DType::kF32, {8, 3 * 64});
  CHECK_STATUS(g_gpu->attention_forward(out, lse, host_qkv, o, 1, 64, 0.f, 1, 1), Code::kInput);
}

// ---- layer norm -----------------------------------------------------------------------------

// C = 97 takes the element-wise kernel; 256 and 768 the register-resident one (16-byte vectors:
// 1 and 3 per lane in bf16, 2 and 6 in f32), also in place at 768.
TEST_CASE(layernorm_forward) {
  for (int64_t T : {1, 7, 322})
    for (int64_t C : {97, 256, 768})
      for (bool with_res : {false, true})
        for (DType dt : {DType::kF32, DType::kBF16}) {
          std::vector<float> inp = random_vec(T * C, 11 + T, -3, 3), res = random_vec(T * C, 12 + C, -1, 1);
          std::vector<float> w = random_vec(C, 13, 0.5, 1.5), bias = random_vec(C, 14);
          if (dt == DType::kBF16) {
            inp = bf16_vec(inp);
            res = bf16_vec(res);
          }
          std::vector<double> r_out(T * C), r_sum(T * C), r_mean(T), r_rstd(T);
          for (int64_t t = 0; t < T; ++t) {
            double m = 0, v = 0;
            for (int64_t c = 0; c < C; ++c) {
              double x = double(inp[t * C + c]) + (with_res ? res[t * C + c] : 0.0);
              r_sum[t * C + c] = x;
              m += x;
            }
            m /= C;
            for (int64_t c = 0; c < C; ++c) v += (r_sum[t * C + c] - m) * (r_sum[t * C + c] - m);
            const double rs = 1.0 / std::sqrt(v / C + 1e-12);
            r_mean[t] = m;
            r_rstd[t] = rs;
            for (int64_t c = 0; c < C; ++c) r_out[t * C + c] = (r_sum[t * C + c] - m) * rs * w[c] + bias[c];
          }
          OpFn fn = [&](Arena& a, std::vector<Tensor>* outs) -> Status {
            Tensor ti = a.up(inp, {T, C}, dt), tr = with_res ? a.up(res, {T, C}, dt) : Tensor();
            Tensor tw = a.up(w, {C}), tb = a.up(bias, {C});
            Tensor out = a.out({T, C}, dt), sum = a.out({T, C}, dt), mean = a.out({T}), rstd = a.out({T});
            *outs = {out, sum, mean, rstd};
            return a.b.layernorm_forward(out, sum, mean, rstd, ti, tr, tw, tb, 1e-12f);
          };
          const double tol = dt == DType::kBF16 ? 1e-2 : 1e-5;
          compare(std::string("layernorm_forward ") + (dt == DType::kBF16 ? "bf16" : "f32") + " T=" + std::to_string(T) +
                      " C=" + std::to_string(C) + (with_res ? " residual" : ""),
                  *g_gpu, fn, {r_out, r_sum, r_mean, r_rstd}, tol, dt == DType::kF32);
        }
  // In place on the residual stream: sum_out aliases residual, out aliases inp.
  for (int64_t C : {97, 768}) {
    const int64_t T = 65;
    std::vector<float> inp = random_vec(T * C, 21), res = random_vec(T * C, 22), w = random_vec(C, 23),
                       bias = random_vec(C, 24);
    std::vector<double> r_out(T * C), r_sum(T * C);
    for (int64_t t = 0; t < T; ++t) {
      double m = 0, v = 0;
      for (int64_t c = 0; c < C; ++c) m += (r_sum[t * C + c] = double(inp[t * C + c]) + res[t * C + c]);
      m /= C;
      for (int64_t c = 0; c < C; ++c) v += (r_sum[t * C + c] - m) * (r_sum[t * C + c] - m);
      const double rs = 1.0 / std::sqrt(v / C + 1e-5);
      for (int64_t c = 0; c < C; ++c) r_out[t * C + c] = (r_sum[t * C + c] - m) * rs * w[c] + bias[c];
    }
    OpFn fn = [&](Arena& a, std::vector<Tensor>* outs) -> Status {
      Tensor ti = a.up(inp, {T, C}), tr = a.up(res, {T, C}), tw = a.up(w, {C}), tb = a.up(bias, {C});
      *outs = {ti, tr};
      return a.b.layernorm_forward(ti, tr, Tensor(), Tensor(), ti, tr, tw, tb, 1e-5f);
    };
    compare("layernorm_forward in-place C=" + std::to_string(C), *g_gpu, fn, {r_out, r_sum}, 1e-5);
  }
  Arena a(*g_gpu);
  Tensor x = a.alloc(DType::kF32, {4, 8}), w8 = a.alloc(DType::kF32, {7});
  CHECK_STATUS(g_gpu->layernorm_forward(x, Tensor(), Tensor(), Tensor(), x, Tensor(), w8, w8, 1e-5f), Code::kShape);
  Tensor xi = a.alloc(DType::kI32, {4, 8});
  CHECK_STATUS(g_gpu->layernorm_forward(x, Tensor(), Tensor(), Tensor(), xi, Tensor(), w8, w8, 1e-5f), Code::kDType);
}

TEST_CASE(layernorm_backward) {
  for (int64_t T : {1, 300, 600})
    for (int64_t C : {97, 768}) {
      std::vector<float> x = random_vec(T * C, 31 + T, -2, 2), dout = random_vec(T * C, 32 + C);
      std::vector<float> w = random_vec(C, 33, 0.5, 1.5), dw0 = random_vec(C, 34), db0 = random_vec(C, 35);
      std::vector<float> mean(T), rstd(T);
      for (int64_t t = 0; t < T; ++t) {
        double m = 0, v = 0;
        for (int64_t c = 0; c < C; ++c) m += x[t * C + c];
        m /= C;
        for (int64_t c = 0; c < C; ++c) v += (x[t * C + c] - m) * (x[t * C + c] - m);
        mean[t] = static_cast<float>(m);
        rstd[t] = static_cast<float>(1.0 / std::sqrt(v / C + 1e-5));
      }
      std::vector<double> r_dinp(T * C), r_dw(dw0.begin(), dw0.end()), r_db(db0.begin(), db0.end());
      for (int64_t t = 0; t < T; ++t) {
        double sg = 0, sgx = 0;
        for (int64_t c = 0; c < C; ++c) {
          const double xh = (double(x[t * C + c]) - mean[t]) * rstd[t], g = double(dout[t * C + c]) * w[c];
          sg += g;
          sgx += g * xh;
          r_dw[c] += double(dout[t * C + c]) * xh;
          r_db[c] += dout[t * C + c];
        }
        for (int64_t c = 0; c < C; ++c) {
          const double xh = (double(x[t * C + c]) - mean[t]) * rstd[t];
          r_dinp[t * C + c] = rstd[t] * (double(dout[t * C + c]) * w[c] - sg / C - xh * sgx / C);
        }
      }
      OpFn fn = [&](Arena& a, std::vector<Tensor>* outs) -> Status {
        Tensor tx = a.up(x, {T, C}), td = a.up(dout, {T, C}), tw = a.up(w, {C}), tm = a.up(mean, {T}),
               tr = a.up(rstd, {T});
        Tensor dw = a.up(dw0, {C}), db = a.up(db0, {C}), dinp = a.out({T, C});
        *outs = {dinp, dw, db};
        return a.b.layernorm_backward(dinp, dw, db, td, tx, tw, tm, tr);
      };
      compare("layernorm_backward T=" + std::to_string(T) + " C=" + std::to_string(C), *g_gpu, fn,
              {r_dinp, r_dw, r_db}, 1e-5);
    }
}

// ---- embeddings -----------------------------------------------------------------------------

TEST_CASE(embeddings) {
  const int64_t V = 50, P = 140, TV = 2, H = 97;
  const std::vector<float> wte = random_vec(V * H, 41), wpe = random_vec(P * H, 42), wtt = random_vec(TV * H, 43);
  for (const auto& lens : kLenSets)
    for (bool with_types : {false, true}) {
      const auto off = make_offsets_vec(lens);
      const int64_t T = off.back(), B = static_cast<int64_t>(lens.size());
      std::vector<int32_t> ids(T), types(T);
      elmo_test::Rng r(44 + T);
      for (int64_t t = 0; t < T; ++t) {
        ids[t] = static_cast<int32_t>(r.randint(V));
        types[t] = static_cast<int32_t>(r.randint(TV));
      }
      ids[0] = static_cast<int32_t>(V - 1);  // repeated and extreme ids
      if (T > 2) ids[T - 1] = ids[1];
      std::vector<double> ref(T * H);
      std::vector<float> dout = random_vec(T * H, 45 + T);
      const std::vector<float> dwte0 = random_vec(V * H, 46), dwpe0 = random_vec(P * H, 47), dwtt0 = random_vec(TV * H, 48);
      std::vector<double> r_dwte(dwte0.begin(), dwte0.end()), r_dwpe(dwpe0.begin(), dwpe0.end()),
          r_dwtt(dwtt0.begin(), dwtt0.end());
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = off[b]; t < off[b + 1]; ++t) {
          const int32_t tt = with_types ? types[t] : 0;
          for (int64_t h = 0; h < H; ++h) {
            ref[t * H + h] = double(wte[ids[t] * H + h]) + wpe[(t - off[b]) * H + h] + wtt[tt * H + h];
            r_dwte[ids[t] * H + h] += dout[t * H + h];
            r_dwpe[(t - off[b]) * H + h] += dout[t * H + h];
            r_dwtt[tt * H + h] += dout[t * H + h];
          }
        }
      const std::string tag = lens_str(lens) + (with_types ? " types" : "");
      OpFn fwd = [&](Arena& a, std::vector<Tensor>* outs) -> Status {
        Tensor toff = a.upi(off, {B + 1});
        Offsets o;
        ELMO_RETURN_IF_ERROR(elmo::make_offsets(&o, off.data(), toff.i32(), static_cast<int>(B), T));
        Tensor out = a.out({T, H});
        outs->push_back(out);
        return a.b.embedding_forward(out, a.upi(ids, {T}), with_types ? a.upi(types, {T}) : Tensor(), o,
                                     a.up(wte, {V, H}), a.up(wpe, {P, H}), a.up(wtt, {TV, H}));
      };
      compare("embedding_forward " + tag, *g_gpu, fwd, {ref}, 1e-6);
      OpFn bwd = [&](Arena& a, std::vector<Tensor>* outs) -> Status {
        Tensor toff = a.upi(off, {B + 1});
        Offsets o;
        ELMO_RETURN_IF_ERROR(elmo::make_offsets(&o, off.data(), toff.i32(), static_cast<int>(B), T));
        Tensor dwte = a.up(dwte0, {V, H}), dwpe = a.up(dwpe0, {P, H}), dwtt = a.up(dwtt0, {TV, H});
        *outs = {dwte, dwpe, dwtt};
        return a.b.embedding_backward(dwte, dwpe, dwtt, a.up(dout, {T, H}), a.upi(ids, {T}),
                                      with_types ? a.upi(types, {T}) : Tensor(), o);
      };
      compare("embedding_backward " + tag, *g_gpu, bwd, {r_dwte, r_dwpe, r_dwtt}, 1e-5);
    }
  // Bad ids, a sequence longer than the position table: ERR_INPUT, and the backend still works.
  Arena a(*g_gpu);
  const auto off = make_offsets_vec({3, 2});
  Tensor toff = a.upi(off, {3});
  Offsets o;
  CHECK_OK(elmo::make_offsets(&o, off.data(), toff.i32(), 2, 5));
  Tensor twte = a.up(wte, {V, H}), twpe = a.up(wpe, {P, H}), twtt = a.up(wtt, {TV, H}), out = a.out({5, H});
  CHECK_STATUS(g_gpu->embedding_forward(out, a.upi({1, 2, static_cast<int32_t>(V), 3, 4}, {5}), Tensor(), o, twte, twpe, twtt),
               Code::kInput);
  CHECK_STATUS(g_gpu->embedding_forward(out, a.upi({1, 2, -1, 3, 4}, {5}), Tensor(), o, twte, twpe, twtt), Code::kInput);
  CHECK_STATUS(g_gpu->embedding_forward(out, a.upi({1, 2, 3, 3, 4}, {5}), a.upi({0, 0, 2, 0, 0}, {5}), o, twte, twpe, twtt),
               Code::kInput);
  Tensor short_wpe = a.up(random_vec(2 * H, 3), {2, H});
  CHECK_STATUS(g_gpu->embedding_forward(out, a.upi({1, 2, 3, 3, 4}, {5}), Tensor(), o, twte, short_wpe, twtt), Code::kInput);
  Tensor dwte = a.alloc(DType::kF32, {V, H}), dwpe = a.alloc(DType::kF32, {P, H});
  CHECK_STATUS(g_gpu->embedding_backward(dwte, dwpe, Tensor(), out, a.upi({1, 2, 99, 3, 4}, {5}), Tensor(), o), Code::kInput);
  CHECK_OK(g_gpu->embedding_forward(out, a.upi({1, 2, 3, 3, 4}, {5}), Tensor(), o, twte, twpe, twtt));
  std::vector<float> got = a.down(out);
  CHECK(std::fabs(got[H] - (wte[2 * H] + wpe[H] + wtt[0])) < 1e-6f);
}

// ---- elementwise ----------------------------------------------------------------------------

TEST_CASE(gelu_tanh) {
  for (int64_t n : {1, 97, 100003})
    for (DType dt : {DType::kF32, DType::kBF16}) {
      std::vector<float> x = random_vec(n, 51 + n, -5, 5), d = random_vec(n, 52 + n);
      if (dt == DType::kBF16) {
        x = bf16_vec(x);
        d = bf16_vec(d);
      }
      std::vector<double> g(n), gb(n), t(n), tb(n);
      for (int64_t i = 0; i < n; ++i) {
        g[i] = gelu_ref(x[i]);
        gb[i] = d[i] * gelu_grad_ref(x[i]);
        t[i] = std::tanh(double(x[i]));
        const double y = dt == DType::kBF16 ? round_bf16(static_cast<float>(t[i])) : static_cast<float>(t[i]);
        tb[i] = d[i] * (1 - y * y);
      }
      const double tol = dt == DType::kBF16 ? 1e-2 : 1e-5;
      const std::string tag = std::string(dt == DType::kBF16 ? "bf16" : "f32") + " n=" + std::to_string(n);
      compare("gelu_forward " + tag, *g_gpu,
              [&](Arena& a, std::vector<Tensor>* o) {
                Tensor out = a.out({n}, dt);
                o->push_back(out);
                return a.b.gelu_forward(out, a.up(x, {n}, dt));
              },
              {g}, tol, dt == DType::kF32);
      compare("gelu_backward " + tag, *g_gpu,
              [&](Arena& a, std::vector<Tensor>* o) {
                Tensor dd = a.up(d, {n}, dt);  // dinp aliases dout
                o->push_back(dd);
                return a.b.gelu_backward(dd, dd, a.up(x, {n}, dt));
              },
              {gb}, tol, dt == DType::kF32);
      compare("tanh_forward " + tag, *g_gpu,
              [&](Arena& a, std::vector<Tensor>* o) {
                Tensor out = a.out({n}, dt);
                o->push_back(out);
                return a.b.tanh_forward(out, a.up(x, {n}, dt));
              },
              {t}, tol, dt == DType::kF32);
      std::vector<float> tf(n);
      for (int64_t i = 0; i < n; ++i) tf[i] = static_cast<float>(t[i]);
      compare("tanh_backward " + tag, *g_gpu,
              [&](Arena& a, std::vector<Tensor>* o) {
                Tensor out = a.out({n}, dt);
                o->push_back(out);
                return a.b.tanh_backward(out, a.up(d, {n}, dt), a.up(tf, {n}, dt));
              },
              {tb}, tol, dt == DType::kF32);
    }
}

TEST_CASE(dropout_masks) {
  for (int64_t n : {1, 97, 100003})
    for (float p : {0.f, 0.1f, 0.5f}) {
      const std::vector<float> x = random_vec(n, 61 + n, 0.5, 2);  // nonzero, so zeros mark drops
      const uint64_t seed = 0xC0FFEEull + n, stream = 3;
      std::vector<double> ref(n);
      for (int64_t i = 0; i < n; ++i)
        ref[i] = p == 0.f ? x[i] : (elmo::dropout_keep(seed, stream, i, p) ? x[i] / (1.0 - p) : 0.0);
      for (int dir = 0; dir < 2; ++dir) {
        OpFn fn = [&](Arena& a, std::vector<Tensor>* o) -> Status {
          Tensor out = a.out({n});
          o->push_back(out);
          return dir == 0 ? a.b.dropout_forward(out, a.up(x, {n}), p, seed, stream)
                          : a.b.dropout_backward(out, a.up(x, {n}), p, seed, stream);
        };
        const std::string what = std::string(dir == 0 ? "dropout_forward" : "dropout_backward") + " n=" +
                                 std::to_string(n) + " p=" + std::to_string(p);
        compare(what, *g_gpu, fn, {ref}, 1e-6);
        Result g = run_on(*g_gpu, fn), c = run_on(*g_cpu, fn);
        if (g.st.is_ok() && c.st.is_ok()) {
          int64_t differ = 0;
          for (int64_t i = 0; i < n; ++i) differ += (g.outs[0][i] == 0.f) != (c.outs[0][i] == 0.f);
          if (differ) {
            ++failures();
            std::fprintf(stderr, "  %s: %lld mask entries differ from the CPU's\n", what.c_str(), (long long)differ);
          }
        }
      }
    }
  Arena a(*g_gpu);
  Tensor t = a.alloc(DType::kF32, {8});
  CHECK_STATUS(g_gpu->dropout_forward(t, t, 1.0f, 1, 1), Code::kInput);
  CHECK_STATUS(g_gpu->dropout_forward(t, a.alloc(DType::kF32, {9}), 0.1f, 1, 1), Code::kShape);
}

TEST_CASE(softmax) {
  for (int64_t N : {1, 5, 33})
    for (int64_t V : {1, 97, 3001}) {
      const std::vector<float> x = random_vec(N * V, 71 + N * V, -8, 8);
      std::vector<double> ref(N * V);
      for (int64_t i = 0; i < N; ++i) {
        double m = -1e300, s = 0;
        for (int64_t j = 0; j < V; ++j) m = std::max(m, double(x[i * V + j]));
        for (int64_t j = 0; j < V; ++j) s += std::exp(x[i * V + j] - m);
        for (int64_t j = 0; j < V; ++j) ref[i * V + j] = std::exp(x[i * V + j] - m) / s;
      }
      compare("softmax_forward N=" + std::to_string(N) + " V=" + std::to_string(V), *g_gpu,
              [&](Arena& a, std::vector<Tensor>* o) {
                Tensor out = a.out({N, V});
                o->push_back(out);
                return a.b.softmax_forward(out, a.up(x, {N, V}));
              },
              {ref}, 1e-5);
    }
}

TEST_CASE(bias_backward) {
  for (int64_t M : {1, 333, 1000})
    for (int64_t N : {1, 97, 768}) {
      const std::vector<float> d = random_vec(M * N, 81 + M), b0 = random_vec(N, 82);
      std::vector<double> ref(b0.begin(), b0.end());
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) ref[n] += d[m * N + n];
      compare("bias_backward M=" + std::to_string(M) + " N=" + std::to_string(N), *g_gpu,
              [&](Arena& a, std::vector<Tensor>* o) {
                Tensor db = a.up(b0, {N});
                o->push_back(db);
                return a.b.bias_backward(db, a.up(d, {M, N}));
              },
              {ref}, 1e-5);
    }
}

// ---- gather / scatter -----------------------------------------------------------------------

TEST_CASE(gather_scatter_rows) {
  for (int64_t C : {1, 97, 768}) {
    const int64_t T = 130;
    const std::vector<int32_t> idx = {0, 129, 5, 5, 64, 0, 5, 17};  // repeats
    const int64_t N = static_cast<int64_t>(idx.size());
    const std::vector<float> inp = random_vec(T * C, 91 + C), dout = random_vec(N * C, 92 + C), d0 = random_vec(T * C, 93);
    std::vector<double> g(N * C), s(d0.begin(), d0.end());
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) {
        g[n * C + c] = inp[idx[n] * C + c];
        s[idx[n] * C + c] += dout[n * C + c];
      }
    compare("gather_rows C=" + std::to_string(C), *g_gpu,
            [&](Arena& a, std::vector<Tensor>* o) {
              Tensor out = a.out({N, C});
              o->push_back(out);
              return a.b.gather_rows(out, a.up(inp, {T, C}), a.upi(idx, {N}));
            },
            {g}, 0);
    compare("scatter_add_rows C=" + std::to_string(C), *g_gpu,
            [&](Arena& a, std::vector<Tensor>* o) {
              Tensor dinp = a.up(d0, {T, C});
              o->push_back(dinp);
              return a.b.scatter_add_rows(dinp, a.up(dout, {N, C}), a.upi(idx, {N}));
            },
            {s}, 1e-6);
  }
  Arena a(*g_gpu);
  Tensor inp = a.alloc(DType::kF32, {4, 3}), out = a.alloc(DType::kF32, {2, 3});
  CHECK_STATUS(g_gpu->gather_rows(out, inp, a.upi({1, 4}, {2})), Code::kInput);
  CHECK_STATUS(g_gpu->scatter_add_rows(inp, out, a.upi({-1, 0}, {2})), Code::kInput);
  CHECK_STATUS(g_gpu->gather_rows(a.alloc(DType::kF32, {2, 4}), inp, a.upi({1, 2}, {2})), Code::kShape);
}

// ---- losses ---------------------------------------------------------------------------------

TEST_CASE(losses) {
  const int ignore = -100;
  for (int64_t N : {1, 7, 40})
    for (int64_t V : {2, 97, 3001}) {
      const std::vector<float> logits = random_vec(N * V, 101 + N * V, -6, 6);
      std::vector<int32_t> tgt(N);
      elmo_test::Rng r(102);
      for (int64_t i = 0; i < N; ++i) tgt[i] = i % 3 == 2 ? ignore : static_cast<int32_t>(r.randint(V));
      const float scale = 1.0f / 3;
      std::vector<double> loss(N), lse(N), dl(N * V);
      std::vector<float> lse_f(N);
      for (int64_t i = 0; i < N; ++i) {
        double m = -1e300, s = 0;
        for (int64_t j = 0; j < V; ++j) m = std::max(m, double(logits[i * V + j]));
        for (int64_t j = 0; j < V; ++j) s += std::exp(logits[i * V + j] - m);
        lse[i] = m + std::log(s);
        lse_f[i] = static_cast<float>(lse[i]);
        loss[i] = tgt[i] == ignore ? 0.0 : lse[i] - logits[i * V + tgt[i]];
        for (int64_t j = 0; j < V; ++j)
          dl[i * V + j] = tgt[i] == ignore ? 0.0 : (std::exp(logits[i * V + j] - lse[i]) - (j == tgt[i])) * scale;
      }
      const std::string tag = " N=" + std::to_string(N) + " V=" + std::to_string(V);
      compare("cross_entropy_forward" + tag, *g_gpu,
              [&](Arena& a, std::vector<Tensor>* o) {
                Tensor l = a.out({N}), ls = a.out({N});
                *o = {l, ls};
                return a.b.cross_entropy_forward(l, ls, a.up(logits, {N, V}), a.upi(tgt, {N}), ignore);
              },
              {loss, lse}, 1e-5);
      compare("cross_entropy_backward" + tag, *g_gpu,
              [&](Arena& a, std::vector<Tensor>* o) {
                Tensor x = a.up(logits, {N, V});  // dlogits aliases logits
                o->push_back(x);
                return a.b.cross_entropy_backward(x, x, a.up(lse_f, {N}), a.upi(tgt, {N}), scale, ignore);
              },
              {dl}, 1e-5);
      // Multi-label.
      std::vector<float> y = random_vec(N * V, 103, 0, 1);
      std::vector<double> bl(N * V), bd(N * V);
      for (int64_t i = 0; i < N * V; ++i) {
        const double x = logits[i];
        bl[i] = std::max(x, 0.0) - x * y[i] + std::log1p(std::exp(-std::fabs(x)));
        bd[i] = (1.0 / (1.0 + std::exp(-x)) - y[i]) * scale;
      }
      compare("bce_forward" + tag, *g_gpu,
              [&](Arena& a, std::vector<Tensor>* o) {
                Tensor l = a.out({N, V});
                o->push_back(l);
                return a.b.bce_forward(l, a.up(logits, {N, V}), a.up(y, {N, V}));
              },
              {bl}, 1e-5);
      compare("bce_backward" + tag, *g_gpu,
              [&](Arena& a, std::vector<Tensor>* o) {
                Tensor d = a.out({N, V});
                o->push_back(d);
                return a.b.bce_backward(d, a.up(logits, {N, V}), a.up(y, {N, V}), scale);
              },
              {bd}, 1e-5);
    }
  Arena a(*g_gpu);
  Tensor lg = a.up(random_vec(12, 1), {3, 4}), l = a.alloc(DType::kF32, {3}), ls = a.alloc(DType::kF32, {3});
  CHECK_STATUS(g_gpu->cross_entropy_forward(l, ls, lg, a.upi({0, 4, 1}, {3}), ignore), Code::kInput);
  CHECK_STATUS(g_gpu->cross_entropy_backward(lg, lg, ls, a.upi({0, -2, 1}, {3}), 1.f, ignore), Code::kInput);
  CHECK_STATUS(g_gpu->cross_entropy_forward(l, ls, lg, a.upi({0, 1}, {2}), ignore), Code::kShape);
  CHECK_OK(g_gpu->cross_entropy_forward(l, ls, lg, a.upi({0, ignore, 3}, {3}), ignore));
}

// ---- optimizer ------------------------------------------------------------------------------

TEST_CASE(adamw_and_sum_squares) {
  for (int64_t n : {1, 1001, 100003}) {
    const std::vector<float> p0 = random_vec(n, 111), g = random_vec(n, 112), m0 = random_vec(n, 113, -0.1, 0.1),
                             v0 = random_vec(n, 114, 0, 0.01);
    elmo::AdamWParams hp;
    hp.lr = 1e-3f;
    hp.weight_decay = 0.01f;
    hp.step = 7;
    hp.grad_scale = 0.5f;
    std::vector<double> rp(n), rm(n), rv(n);
    const double bc1 = 1 - std::pow(double(hp.beta1), 7.0), bc2 = 1 - std::pow(double(hp.beta2), 7.0);
    for (int64_t i = 0; i < n; ++i) {
      const double gi = double(g[i]) * hp.grad_scale;
      rm[i] = hp.beta1 * double(m0[i]) + (1 - double(hp.beta1)) * gi;
      rv[i] = hp.beta2 * double(v0[i]) + (1 - double(hp.beta2)) * gi * gi;
      rp[i] = p0[i] - hp.lr * ((rm[i] / bc1) / (std::sqrt(rv[i] / bc2) + hp.eps) + hp.weight_decay * double(p0[i]));
    }
    compare("adamw_update n=" + std::to_string(n), *g_gpu,
            [&](Arena& a, std::vector<Tensor>* o) {
              Tensor p = a.up(p0, {n}), m = a.up(m0, {n}), v = a.up(v0, {n});
              *o = {p, m, v};
              return a.b.adamw_update(p, a.up(g, {n}), m, v, hp);
            },
            {rp, rm, rv}, 1e-5);
    // sum_squares: double accumulation, deterministic, adds to *result.
    double ref = 0.25;
    for (float x : g) ref += double(x) * x;
    Arena a(*g_gpu);
    Tensor tg = a.up(g, {n});
    double r1 = 0.25, r2 = 0.25;
    CHECK_OK(g_gpu->sum_squares(&r1, tg));
    CHECK_OK(g_gpu->sum_squares(&r2, tg));
    CHECK(std::fabs(r1 - ref) <= 1e-12 * ref);
    CHECK(std::memcmp(&r1, &r2, sizeof(double)) == 0);
    double rc = 0.25;
    Arena ac(*g_cpu);
    Status sc = g_cpu->sum_squares(&rc, ac.up(g, {n}));
    if (sc.is_ok()) CHECK(std::fabs(r1 - rc) <= 1e-12 * ref);
  }
}

// ---- memory, backend, errors ----------------------------------------------------------------

TEST_CASE(memory_and_errors) {
  std::vector<elmo::CudaDeviceInfo> devs;
  std::string reason;
  CHECK_OK(elmo::cuda_devices(&devs, &reason));
  CHECK(!devs.empty() && devs[0].total_bytes > 0 && devs[0].sm_count > 0);
  CHECK(g_gpu->device() == Device::kCuda);
  CHECK(g_gpu->name().find("cuda:0") == 0);
  // An absurd allocation fails with ERR_OOM naming the bytes, and the backend keeps working.
  // Under compute-sanitizer (ELMO_TEST_QUICK, scripts/gpu-check.sh) the failed cudaMalloc is
  // reported as an API error, so the case is left out there.
  if (std::getenv("ELMO_TEST_QUICK") == nullptr) {
    Tensor huge;
    Status s = g_gpu->alloc(&huge, DType::kF32, {int64_t(1) << 22, int64_t(1) << 22});
    CHECK(s.code() == Code::kOom);
    CHECK(s.message().find("bytes") != std::string::npos);
    CHECK(huge.empty());
  }
  Arena a(*g_gpu);
  std::vector<float> v = random_vec(1000, 5);
  Tensor t = a.up(v, {1000});
  std::vector<float> back = a.down(t);
  CHECK(std::memcmp(back.data(), v.data(), 4000) == 0);
  // fill / convert round trip: f32 -> bf16 -> f32 equals host rounding.
  Tensor h = a.alloc(DType::kBF16, {1000}), f = a.alloc(DType::kF32, {1000});
  CHECK_OK(g_gpu->convert(h, t));
  CHECK_OK(g_gpu->convert(f, h));
  back = a.down(f);
  bool same = true;
  for (int i = 0; i < 1000; ++i) same = same && back[i] == round_bf16(v[i]);
  CHECK(same);
  Tensor ti = a.alloc(DType::kI32, {5});
  CHECK_OK(g_gpu->fill(ti, 42.f));
  int32_t iv[5];
  CHECK_OK(g_gpu->download(iv, ti, sizeof(iv)));
  CHECK(iv[0] == 42 && iv[4] == 42);
  CHECK_STATUS(g_gpu->download(iv, ti, 100), Code::kShape);
  CHECK_STATUS(g_gpu->convert(ti, t), Code::kShape);
  // Several GiB in one piece: the staging buffer is chunked.
  std::vector<float> big = random_vec(5'000'000, 6);
  Tensor tb = a.up(big, {5'000'000});
  std::vector<float> bigback = a.down(tb);
  CHECK(std::memcmp(big.data(), bigback.data(), big.size() * 4) == 0);
  // gemm forwards to the CUDA GEMM (NT linear layer with bias), f32 parity and bf16 compute.
  const int64_t M = 37, N = 19, K = 45;
  const std::vector<float> x = bf16_vec(random_vec(M * K, 7)), w = bf16_vec(random_vec(N * K, 8)), bias = random_vec(N, 9);
  std::vector<double> ref(M * N);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = bias[n];
      for (int64_t k = 0; k < K; ++k) acc += double(x[m * K + k]) * w[n * K + k];
      ref[m * N + n] = acc;
    }
  OpFn fn = [&](Arena& ar, std::vector<Tensor>* o) -> Status {
    Tensor out = ar.out({M, N});
    o->push_back(out);
    return ar.b.gemm(out, Tensor(), ar.up(x, {M, K}), ar.up(w, {N, K}), ar.up(bias, {N}), Tensor(), elmo::GemmOp::kNT,
                     elmo::Epilogue::kBias, false);
  };
  compare("gemm f32", *g_gpu, fn, {ref}, 1e-5);
  compare("gemm bf16-compute", *g_gpu_bf16, fn, {ref}, 1e-3, false);
}

}  // namespace

int main() {
  std::vector<elmo::CudaDeviceInfo> devs;
  std::string reason;
  Status s = elmo::cuda_devices(&devs, &reason);
  if (!s.is_ok() || devs.empty()) {
    std::printf("SKIP: no CUDA device (%s)\n", s.is_ok() ? reason.c_str() : s.message().c_str());
    return 77;
  }
  elmo::CudaOptions o;
  s = elmo::make_cuda_backend(&g_gpu, o);
  if (s.is_ok()) {
    o.compute = DType::kBF16;
    s = elmo::make_cuda_backend(&g_gpu_bf16, o);
  }
  elmo::CudaOptions rows;
  rows.attention_rows = 16;
  if (s.is_ok()) s = elmo::make_cuda_backend(&g_gpu_rows16, rows);
  rows.attention_rows = 32;
  if (s.is_ok()) s = elmo::make_cuda_backend(&g_gpu_rows32, rows);
  rows.compute = DType::kBF16;
  if (s.is_ok()) s = elmo::make_cuda_backend(&g_gpu_rows32_bf16, rows);
  if (s.is_ok()) {
    rows.attention_rows = 24;  // not a tile height
    std::unique_ptr<Backend> bad;
    const Status r = elmo::make_cuda_backend(&bad, rows);
    if (r.code() != Code::kInput) {
      std::printf("FAIL setup: attention_rows = 24 gave %s, expected ERR_INPUT\n", elmo::code_name(r.code()));
      return 1;
    }
  }
  if (s.is_ok()) s = elmo::make_cpu_backend(&g_cpu);
  if (!s.is_ok()) {
    std::printf("FAIL setup: %s: %s\n", elmo::code_name(s.code()), s.message().c_str());
    return 1;
  }
  std::printf("device: %s (%s), cpu: %s\n", g_gpu->name().c_str(), devs[0].name.c_str(), g_cpu->name().c_str());
  const int rc = elmo_test::run_all_tests();
  if (!g_cpu_missing.empty()) {
    std::printf("note: compared with the f64 reference only (the CPU backend lacks):");
    for (const auto& m : g_cpu_missing) std::printf(" %s", m.c_str());
    std::printf("\n");
  }
  g_gpu.reset();
  g_gpu_bf16.reset();
  g_gpu_rows16.reset();
  g_gpu_rows32.reset();
  g_gpu_rows32_bf16.reset();
  return rc;
}
