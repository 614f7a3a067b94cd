// Fused attention (forward and backward) against the float64 reference on awkward shapes, for
// every ISA x {1, 2} threads; bit-identical across thread counts; the reference's own backward
// against central differences; bad input -> Status codes.
#include <cmath>
#include <string>
#include <vector>

#include "cpu/attention_kernels.h"
#include "reference/attention_ref.h"
#include "tests/harness.h"

using namespace elmo;
using elmo_test::Config;

namespace {

struct Shape {
  std::vector<int> lens;
  int NH, HD;
};

std::vector<Shape> shapes() {
  std::vector<Shape> s = {
      {{1}, 1, 64},                // one sequence of one token
      {{1, 3, 63, 65, 130}, 3, 33},  // lengths around the 64-row tile, odd head dim
      {{65}, 1, 8},
      {{130, 1, 64, 3}, 3, 64},
      {{63, 0, 5}, 1, 1},           // an empty sequence in the middle, HD = 1
      {{70}, 1, 256},               // the largest head dim
      {{2, 129}, 1, 17},
  };
  // Many sequences of mixed lengths.
  elmo_test::Rng r(7);
  Shape many{{}, 3, 8};
  for (int b = 0; b < 23; ++b) many.lens.push_back(1 + static_cast<int>(r.randint(40)));
  s.push_back(many);
  return s;
}

std::string describe(const Shape& s, float p) {
  std::string d = "lens={";
  for (size_t i = 0; i < s.lens.size() && i < 6; ++i) d += (i ? "," : "") + std::to_string(s.lens[i]);
  if (s.lens.size() > 6) d += ",...(" + std::to_string(s.lens.size()) + ")";
  return d + "} NH=" + std::to_string(s.NH) + " HD=" + std::to_string(s.HD) + " p=" + std::to_string(p);
}

struct Problem {
  std::vector<int32_t> offsets;
  int B = 0;
  int64_t T = 0, C = 0;
  int NH = 0, HD = 0;
  std::vector<float> qkv, dout;
  std::vector<double> ref_out, ref_lse, ref_dqkv;
};

Problem make_problem(const Shape& s, float p, uint64_t seed, uint64_t stream) {
  Problem pr;
  pr.offsets = elmo_test::make_offsets_vec(s.lens);
  pr.B = static_cast<int>(s.lens.size());
  pr.T = pr.offsets.back();
  pr.NH = s.NH;
  pr.HD = s.HD;
  pr.C = int64_t(s.NH) * s.HD;
  // Wide enough inputs that the softmax is far from uniform.
  pr.qkv = elmo_test::random_vec(pr.T * 3 * pr.C, 11 + s.lens.size() + s.HD, -2, 2);
  pr.dout = elmo_test::random_vec(pr.T * pr.C, 12 + s.lens.size() + s.HD);
  const std::vector<double> qkv = elmo_test::to_double(pr.qkv), dout = elmo_test::to_double(pr.dout);
  pr.ref_out.assign(size_t(pr.T * pr.C), 0);
  pr.ref_lse.assign(size_t(pr.NH * pr.T), 0);
  pr.ref_dqkv.assign(size_t(pr.T * 3 * pr.C), 0);
  ref::attention_forward_ref(pr.ref_out.data(), pr.ref_lse.data(), qkv.data(), pr.offsets.data(), pr.B, pr.T, pr.NH,
                             pr.HD, p, seed, stream);
  ref::attention_backward_ref(pr.ref_dqkv.data(), dout.data(), qkv.data(), pr.offsets.data(), pr.B, pr.T, pr.NH,
                              pr.HD, p, seed, stream);
  return pr;
}

struct Result {
  std::vector<float> out, lse, dqkv;
};

Result run(Backend& be, Problem& pr, float p, uint64_t seed, uint64_t stream) {
  Result r;
  // Poisoned outputs: every element must be written.
  r.out.assign(size_t(pr.T * pr.C), NAN);
  r.lse.assign(size_t(pr.NH * pr.T), NAN);
  r.dqkv.assign(size_t(pr.T * 3 * pr.C), NAN);
  Offsets o;
  CHECK_OK(make_offsets(&o, pr.offsets.data(), nullptr, pr.B, pr.T));
  Tensor out(r.out.data(), DType::kF32, {pr.T, pr.C}), lse(r.lse.data(), DType::kF32, {pr.NH, pr.T});
  Tensor qkv(pr.qkv.data(), DType::kF32, {pr.T, 3 * pr.C}), dout(pr.dout.data(), DType::kF32, {pr.T, pr.C});
  Tensor dqkv(r.dqkv.data(), DType::kF32, {pr.T, 3 * pr.C});
  CHECK_OK(be.attention_forward(out, lse, qkv, o, pr.NH, pr.HD, p, seed, stream));
  CHECK_OK(be.attention_backward(dqkv, dout, qkv, out, lse, o, pr.NH, pr.HD, p, seed, stream));
  return r;
}

void compare(const Problem& pr, const Result& r) {
  // f32 tiles against float64: sums of up to 130 products of O(1) terms, exp ~1-2 ulp.
  elmo_test::all_close("out", r.out.data(), pr.ref_out.data(), pr.T * pr.C, 5e-6, 5e-5);
  elmo_test::all_close("lse", r.lse.data(), pr.ref_lse.data(), pr.NH * pr.T, 5e-6, 5e-6);
  // The backward chains three GEMMs and a difference (dP - D); scale atol to the gradient size.
  double mx = 0;
  for (double v : pr.ref_dqkv) mx = std::max(mx, std::fabs(v));
  elmo_test::all_close("dqkv", r.dqkv.data(), pr.ref_dqkv.data(), pr.T * 3 * pr.C, 2e-5 * (1 + mx), 1e-4);
}

}  // namespace

TEST_CASE(reference_backward_matches_central_differences) {
  // L = Σ dout ⊙ out; dL/dqkv by central differences of the float64 forward vs the analytic
  // reference backward, with and without dropout (the mask depends on positions only).
  for (float p : {0.0f, 0.3f}) {
    const std::vector<int> lens = {3, 1, 5};
    const int NH = 2, HD = 3, B = 3;
    const std::vector<int32_t> off = elmo_test::make_offsets_vec(lens);
    const int64_t T = off.back(), C = NH * HD;
    std::vector<double> qkv = elmo_test::to_double(elmo_test::random_vec(T * 3 * C, 3, -1.5, 1.5));
    const std::vector<double> dout = elmo_test::to_double(elmo_test::random_vec(T * C, 4));
    std::vector<double> out(size_t(T * C)), lse(size_t(NH * T)), dqkv(size_t(T * 3 * C));
    ref::attention_backward_ref(dqkv.data(), dout.data(), qkv.data(), off.data(), B, T, NH, HD, p, 5, 6);
    auto loss = [&]() {
      ref::attention_forward_ref(out.data(), lse.data(), qkv.data(), off.data(), B, T, NH, HD, p, 5, 6);
      double s = 0;
      for (size_t i = 0; i < out.size(); ++i) s += dout[i] * out[i];
      return s;
    };
    std::vector<double> num(qkv.size());
    const double eps = 1e-5;
    for (size_t i = 0; i < qkv.size(); ++i) {
      const double x = qkv[i];
      qkv[i] = x + eps;
      const double lp = loss();
      qkv[i] = x - eps;
      const double lm = loss();
      qkv[i] = x;
      num[i] = (lp - lm) / (2 * eps);
    }
    std::vector<float> dqkv_f(dqkv.begin(), dqkv.end());
    elmo_test::context() = "[p=" + std::to_string(p) + "]";
    // Double-precision differences: truncation error O(eps²) ~ 1e-10, rounding ~1e-11/eps.
    elmo_test::all_close("ref dqkv vs finite differences", dqkv_f.data(), num.data(), int64_t(num.size()), 1e-6, 1e-5);
    // The dropout mask must matter: some gradient differs from the p=0 one.
    if (p > 0) {
      std::vector<double> d0(dqkv.size());
      ref::attention_backward_ref(d0.data(), dout.data(), qkv.data(), off.data(), B, T, NH, HD, 0.0f, 5, 6);
      double diff = 0;
      for (size_t i = 0; i < d0.size(); ++i) diff = std::max(diff, std::fabs(d0[i] - dqkv[i]));
      CHECK(diff > 1e-3);
    }
    elmo_test::context().clear();
  }
}

TEST_CASE(forward_and_backward_match_reference_and_are_thread_independent) {
  const uint64_t seed = 1234, stream = 99;
  for (const Shape& s : shapes()) {
    for (float p : {0.0f, 0.1f}) {
      Problem pr = make_problem(s, p, seed, stream);
      std::vector<Result> by_isa(3);
      for (const Config& c : elmo_test::all_configs()) {
        auto be = elmo_test::make_backend(c);
        elmo_test::context() = "[isa=" + std::string(isa_name(c.isa)) + " threads=" + std::to_string(c.threads) +
                               " " + describe(s, p) + "]";
        Result r = run(*be, pr, p, seed, stream);
        compare(pr, r);
        Result& first = by_isa[static_cast<int>(c.isa)];
        if (c.threads == 1) {
          first = std::move(r);
        } else {
          elmo_test::bit_equal("out 1 vs 2 threads", first.out.data(), r.out.data(), int64_t(r.out.size()));
          elmo_test::bit_equal("lse 1 vs 2 threads", first.lse.data(), r.lse.data(), int64_t(r.lse.size()));
          elmo_test::bit_equal("dqkv 1 vs 2 threads", first.dqkv.data(), r.dqkv.data(), int64_t(r.dqkv.size()));
        }
      }
    }
  }
  elmo_test::context().clear();
}

TEST_CASE(many_threads_are_bit_identical_too) {
  // More threads than work items on one shape, and more work items than threads on another.
  for (const Shape& s : {Shape{{200, 7, 64}, 3, 64}, Shape{{5}, 1, 16}}) {
    Problem pr = make_problem(s, 0.1f, 3, 4);
    Result base;
    for (int threads : {1, 3, 7}) {
      auto be = elmo_test::make_backend(Config{best_isa(), threads});
      elmo_test::context() = "[threads=" + std::to_string(threads) + " " + describe(s, 0.1f) + "]";
      Result r = run(*be, pr, 0.1f, 3, 4);
      if (threads == 1) {
        compare(pr, r);
        base = std::move(r);
      } else {
        elmo_test::bit_equal("out", base.out.data(), r.out.data(), int64_t(r.out.size()));
        elmo_test::bit_equal("dqkv", base.dqkv.data(), r.dqkv.data(), int64_t(r.dqkv.size()));
      }
    }
  }
  elmo_test::context().clear();
}

TEST_CASE(dropout_depends_on_seed_and_stream) {
  const Shape s{{40, 9}, 2, 8};
  Problem pr = make_problem(s, 0.1f, 1, 2);
  auto be = elmo_test::make_backend(Config{best_isa(), 2});
  const Result a = run(*be, pr, 0.1f, 1, 2), b = run(*be, pr, 0.1f, 1, 3), c = run(*be, pr, 0.1f, 2, 2);
  int differ_stream = 0, differ_seed = 0;
  for (size_t i = 0; i < a.out.size(); ++i) {
    differ_stream += a.out[i] != b.out[i];
    differ_seed += a.out[i] != c.out[i];
  }
  CHECK(differ_stream > int(a.out.size()) / 2);
  CHECK(differ_seed > int(a.out.size()) / 2);
}

TEST_CASE(scratch_does_not_grow_with_sequence_length) {
  // The per-thread scratch is a function of HD alone; a 64-token tile of 64 queries x 64 keys.
  CHECK(cpu::attn::forward_scratch_floats(64) < size_t(64) * 1024);
  CHECK(cpu::attn::backward_scratch_floats(64) < size_t(64) * 1024);
  CHECK(cpu::attn::backward_scratch_floats(256) > cpu::attn::backward_scratch_floats(64));
  // And a long sequence runs (S = 1500: a (S, S) f32 matrix per head would be 9 MB).
  const Shape s{{1500}, 1, 16};
  Problem pr = make_problem(s, 0.0f, 0, 0);
  auto be = elmo_test::make_backend(Config{best_isa(), 2});
  compare(pr, run(*be, pr, 0.0f, 0, 0));
}

TEST_CASE(bad_input_returns_status) {
  auto be = elmo_test::make_backend(Config{Isa::kScalar, 1});
  const int NH = 2, HD = 4;
  const int64_t T = 5, C = NH * HD;
  std::vector<float> qkv(T * 3 * C, 0.5f), out(T * C), lse(NH * T), dqkv(T * 3 * C), dout(T * C, 1.0f);
  std::vector<int32_t> off = {0, 2, 5};
  Offsets o;
  CHECK_OK(make_offsets(&o, off.data(), nullptr, 2, T));
  Tensor tq(qkv.data(), DType::kF32, {T, 3 * C}), to(out.data(), DType::kF32, {T, C});
  Tensor tl(lse.data(), DType::kF32, {NH, T}), td(dqkv.data(), DType::kF32, {T, 3 * C});
  Tensor tg(dout.data(), DType::kF32, {T, C});
  CHECK_OK(be->attention_forward(to, tl, tq, o, NH, HD, 0.0f, 1, 2));
  CHECK_OK(be->attention_backward(td, tg, tq, to, tl, o, NH, HD, 0.0f, 1, 2));

  // Wrong qkv width; NH*HD disagreeing with the tensors.
  Tensor narrow(qkv.data(), DType::kF32, {T, 3 * C - 1});
  CHECK_STATUS(be->attention_forward(to, tl, narrow, o, NH, HD, 0.0f, 1, 2), Code::kShape);
  CHECK_STATUS(be->attention_forward(to, tl, tq, o, NH, HD + 1, 0.0f, 1, 2), Code::kShape);
  CHECK_STATUS(be->attention_forward(to, tl, tq, o, 1, HD, 0.0f, 1, 2), Code::kShape);
  CHECK_STATUS(be->attention_backward(td, tg, tq, to, tl, o, NH + 1, HD, 0.0f, 1, 2), Code::kShape);
  CHECK_STATUS(be->attention_forward(to, tl, tq, o, 0, HD, 0.0f, 1, 2), Code::kInput);
  CHECK_STATUS(be->attention_forward(to, tl, tq, o, NH, 0, 0.0f, 1, 2), Code::kInput);
  // lse / out / dout / dqkv shapes, dtypes, missing tensors.
  Tensor lse_t(lse.data(), DType::kF32, {T, NH});
  CHECK_STATUS(be->attention_forward(to, lse_t, tq, o, NH, HD, 0.0f, 1, 2), Code::kShape);
  CHECK_STATUS(be->attention_backward(td, tg, tq, to, lse_t, o, NH, HD, 0.0f, 1, 2), Code::kShape);
  Tensor out_short(out.data(), DType::kF32, {T - 1, C});
  CHECK_STATUS(be->attention_forward(out_short, tl, tq, o, NH, HD, 0.0f, 1, 2), Code::kShape);
  CHECK_STATUS(be->attention_backward(td, out_short, tq, to, tl, o, NH, HD, 0.0f, 1, 2), Code::kShape);
  Tensor dq_short(dqkv.data(), DType::kF32, {T, C});
  CHECK_STATUS(be->attention_backward(dq_short, tg, tq, to, tl, o, NH, HD, 0.0f, 1, 2), Code::kShape);
  Tensor q_i32(qkv.data(), DType::kI32, {T, 3 * C});
  CHECK_STATUS(be->attention_forward(to, tl, q_i32, o, NH, HD, 0.0f, 1, 2), Code::kDType);
  CHECK_STATUS(be->attention_forward(Tensor(), tl, tq, o, NH, HD, 0.0f, 1, 2), Code::kInput);
  CHECK_STATUS(be->attention_backward(td, tg, tq, to, Tensor(), o, NH, HD, 0.0f, 1, 2), Code::kInput);
  CHECK_STATUS(be->attention_backward(tq, tg, tq, to, tl, o, NH, HD, 0.0f, 1, 2), Code::kInput);  // dqkv aliases qkv
  // Bad offsets (built by hand, bypassing make_offsets): decreasing, not starting at 0, wrong T.
  std::vector<int32_t> dec = {0, 4, 3, 5}, nonzero = {1, 5}, past = {0, 2, 9};
  Offsets bad;
  bad.host = bad.dev = dec.data();
  bad.B = 3;
  bad.T = T;
  CHECK_STATUS(be->attention_forward(to, tl, tq, bad, NH, HD, 0.0f, 1, 2), Code::kInput);
  CHECK_STATUS(be->attention_backward(td, tg, tq, to, tl, bad, NH, HD, 0.0f, 1, 2), Code::kInput);
  bad.host = bad.dev = nonzero.data();
  bad.B = 1;
  CHECK_STATUS(be->attention_forward(to, tl, tq, bad, NH, HD, 0.0f, 1, 2), Code::kInput);
  bad.host = bad.dev = past.data();
  bad.B = 2;
  CHECK_STATUS(be->attention_forward(to, tl, tq, bad, NH, HD, 0.0f, 1, 2), Code::kShape);
  bad.host = bad.dev = nullptr;
  CHECK_STATUS(be->attention_forward(to, tl, tq, bad, NH, HD, 0.0f, 1, 2), Code::kInput);
  Offsets o_other;
  CHECK_OK(make_offsets(&o_other, off.data(), nullptr, 1, 2));  // T = 2 rows, qkv has 5
  CHECK_STATUS(be->attention_forward(to, tl, tq, o_other, NH, HD, 0.0f, 1, 2), Code::kShape);
  // Dropout probability outside [0, 1).
  for (float p : {-0.1f, 1.0f, 1.5f, NAN})
    CHECK_STATUS(be->attention_forward(to, tl, tq, o, NH, HD, p, 1, 2), Code::kInput);
  CHECK_STATUS(be->attention_backward(td, tg, tq, to, tl, o, NH, HD, 1.0f, 1, 2), Code::kInput);
}

int main() { return elmo_test::run_all_tests(); }
