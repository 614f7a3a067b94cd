// AdamW over several steps against the float64 reference (weight decay on and off, grad
// scale), bit-identical across ISAs and thread counts; sum_squares in double, deterministic;
// clip_factor; bad input refused untouched.
#include "reference/ops_ref.h"
#include "tests/harness.h"

using namespace elmo;
using namespace elmo_test;

namespace {
Tensor f32(std::vector<float>& v, std::initializer_list<int64_t> d) { return Tensor(v.data(), DType::kF32, d); }
}  // namespace

TEST_CASE(adamw_steps_match_reference) {
  for (int64_t n : {1, 3, 97, 769, 20001}) {
    for (float wd : {0.0f, 0.01f}) {
      for (float gs : {1.0f, 0.37f}) {
        AdamWParams p;
        p.lr = 1e-2f;
        p.beta1 = 0.9f;
        p.beta2 = 0.999f;
        p.eps = 1e-8f;
        p.weight_decay = wd;
        p.grad_scale = gs;
        auto w0 = random_vec(n, 1 + n);
        std::vector<double> rw = to_double(w0), rm(n, 0.0), rv(n, 0.0);
        const int steps = 5;
        std::vector<std::vector<float>> grads;
        for (int s = 0; s < steps; ++s) grads.push_back(random_vec(n, 100 + s + n, -2.0, 2.0));
        // the reference runs in double with the f32 hyperparameters
        for (int s = 0; s < steps; ++s) {
          auto g = to_double(grads[s]);
          ref::adamw_update(rw.data(), rm.data(), rv.data(), g.data(), n, p.lr, p.beta1, p.beta2, p.eps, wd, s + 1, gs);
        }
        std::vector<float> first;
        for_each_config([&](Backend& be, const Config&) {
          auto w = w0;
          std::vector<float> m(n, 0.f), v(n, 0.f);
          for (int s = 0; s < steps; ++s) {
            p.step = s + 1;
            CHECK_OK(be.adamw_update(f32(w, {n}), f32(grads[s], {n}), f32(m, {n}), f32(v, {n}), p));
          }
          // 5 steps of lr 1e-2: f32 rounding of each update (~1e-9) and of m/v
          all_close("adamw param", w.data(), rw.data(), n, 2e-6, 1e-5);
          std::vector<double> rmf(rm.begin(), rm.end()), rvf(rv.begin(), rv.end());
          all_close("adamw m", m.data(), rmf.data(), n, 1e-6, 1e-5);
          all_close("adamw v", v.data(), rvf.data(), n, 1e-7, 1e-5);
          if (first.empty()) first = w;
          else bit_equal("adamw bits across ISAs and threads", w.data(), first.data(), n);
        });
      }
    }
  }
}

TEST_CASE(adamw_no_decay_tensor_differs_only_by_decay) {
  // weight_decay = 0 (bias / LayerNorm) must leave a zero-gradient parameter untouched, and
  // decay must pull it toward zero by exactly lr * wd * param.
  const int64_t n = 33;
  auto w0 = random_vec(n, 5);
  std::vector<float> g(n, 0.f);
  for_each_config([&](Backend& be, const Config&) {
    AdamWParams p;
    p.lr = 0.1f;
    p.weight_decay = 0.0f;
    auto w = w0;
    std::vector<float> m(n, 0.f), v(n, 0.f);
    CHECK_OK(be.adamw_update(f32(w, {n}), f32(g, {n}), f32(m, {n}), f32(v, {n}), p));
    bit_equal("no decay, no grad: unchanged", w.data(), w0.data(), n);
    p.weight_decay = 0.5f;
    CHECK_OK(be.adamw_update(f32(w, {n}), f32(g, {n}), f32(m, {n}), f32(v, {n}), p));
    for (int64_t i = 0; i < n; ++i) CHECK(w[i] == w0[i] - 0.1f * (0.0f + 0.5f * w0[i]));
  });
}

TEST_CASE(sum_squares_is_double_and_deterministic) {
  for (int64_t n : {1, 3, 769, 100003}) {
    auto x = random_vec(n, 7 + n, -3.0, 3.0);
    auto dx = to_double(x);
    const double want = ref::sum_squares(dx.data(), n);
    double first = -1;
    for_each_config([&](Backend& be, const Config&) {
      double acc = 2.5;  // accumulates
      CHECK_OK(be.sum_squares(&acc, f32(x, {n})));
      CHECK(std::fabs((acc - 2.5) - want) <= 1e-12 * want);
      if (first < 0) first = acc;
      else CHECK(std::memcmp(&acc, &first, sizeof(double)) == 0);
    });
  }
}

TEST_CASE(clip_factor_caps_the_global_norm) {
  double norm = -1;
  CHECK(clip_factor(9.0, 1.0f, &norm) < 1.0f);
  CHECK(std::fabs(norm - 3.0) < 1e-12);
  CHECK(std::fabs(clip_factor(9.0, 1.0f, nullptr) * 3.0 - 1.0) < 1e-5);  // scaled norm ~ max_norm
  CHECK(clip_factor(0.25, 1.0f, &norm) == 1.0f);                          // below the cap
  CHECK(std::fabs(norm - 0.5) < 1e-12);
  CHECK(clip_factor(0.0, 1.0f, &norm) == 1.0f && norm == 0.0);
  CHECK(clip_factor(100.0, 0.0f, &norm) == 1.0f);  // max_norm <= 0: clipping off
  // the factor applied through grad_scale brings a gradient's norm to max_norm
  std::vector<float> g = {3.0f, 4.0f};
  const float f = clip_factor(25.0, 2.0f, nullptr);
  CHECK(std::fabs(std::sqrt((g[0] * f) * (g[0] * f) + (g[1] * f) * (g[1] * f)) - 2.0) < 1e-5);
}

TEST_CASE(adamw_rejects_bad_input_untouched) {
  const int64_t n = 8;
  std::vector<float> w(n, 5.f), g(n, 1.f), m(n, 5.f), v(n, 5.f);
  std::vector<int32_t> ibuf(n);
  for_each_config([&](Backend& be, const Config&) {
    AdamWParams p;
    CHECK_STATUS(be.adamw_update(f32(w, {n}), f32(g, {n - 1}), f32(m, {n}), f32(v, {n}), p), Code::kShape);
    CHECK_STATUS(be.adamw_update(f32(w, {n}), f32(g, {n}), f32(m, {2, 4}), f32(v, {n}), p), Code::kShape);
    CHECK_STATUS(be.adamw_update(f32(w, {n}), Tensor(ibuf.data(), DType::kI32, {n}), f32(m, {n}), f32(v, {n}), p),
                 Code::kDType);
    CHECK_STATUS(be.adamw_update(f32(w, {n}), f32(g, {n}), Tensor(), f32(v, {n}), p), Code::kInput);
    CHECK_STATUS(be.adamw_update(f32(w, {n}), f32(g, {n}), f32(m, {n}), f32(m, {n}), p), Code::kInput);  // m == v
    AdamWParams bad = p;
    bad.step = 0;
    CHECK_STATUS(be.adamw_update(f32(w, {n}), f32(g, {n}), f32(m, {n}), f32(v, {n}), bad), Code::kInput);
    bad = p;
    bad.beta1 = 1.0f;
    CHECK_STATUS(be.adamw_update(f32(w, {n}), f32(g, {n}), f32(m, {n}), f32(v, {n}), bad), Code::kInput);
    bad = p;
    bad.lr = NAN;
    CHECK_STATUS(be.adamw_update(f32(w, {n}), f32(g, {n}), f32(m, {n}), f32(v, {n}), bad), Code::kInput);
    bad = p;
    bad.grad_scale = INFINITY;
    CHECK_STATUS(be.adamw_update(f32(w, {n}), f32(g, {n}), f32(m, {n}), f32(v, {n}), bad), Code::kInput);
    bad = p;
    bad.eps = 0.0f;
    CHECK_STATUS(be.adamw_update(f32(w, {n}), f32(g, {n}), f32(m, {n}), f32(v, {n}), bad), Code::kInput);
    for (auto* t : {&w, &m, &v})
      for (float x : *t) CHECK(x == 5.f);
    CHECK_STATUS(be.sum_squares(nullptr, f32(w, {n})), Code::kInput);
    double acc = 1.0;
    CHECK_STATUS(be.sum_squares(&acc, Tensor(ibuf.data(), DType::kI32, {n})), Code::kDType);
    CHECK_STATUS(be.sum_squares(&acc, Tensor()), Code::kInput);
    CHECK(acc == 1.0);
  });
}

int main() { return run_all_tests(); }
