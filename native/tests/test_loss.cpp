// Cross-entropy (with ignore_index) and BCE-with-logits, forward and backward, against the
// float64 reference on every ISA x {1, 2} threads; bad targets refused untouched.
#include <map>

#include "reference/ops_ref.h"
#include "tests/harness.h"

using namespace elmo;
using namespace elmo_test;

namespace {
Tensor f32(std::vector<float>& v, std::initializer_list<int64_t> d) { return Tensor(v.data(), DType::kF32, d); }
Tensor i32(std::vector<int32_t>& v, std::initializer_list<int64_t> d) { return Tensor(v.data(), DType::kI32, d); }

struct SameAcrossThreads {
  std::map<std::string, std::vector<float>> first;
  void check(const char* what, const Config& cfg, const std::vector<float>& v) {
    const std::string key = std::string(what) + isa_name(cfg.isa);
    auto it = first.find(key);
    if (it == first.end()) first[key] = v;
    else bit_equal(what, v.data(), it->second.data(), static_cast<int64_t>(v.size()));
  }
};
}  // namespace

TEST_CASE(cross_entropy_matches_reference) {
  const int ignore = -100;
  struct S {
    int64_t N, V;
    double spread;
  };
  for (S s : {S{1, 1, 1}, S{1, 3, 5}, S{6, 97, 10}, S{4, 769, 3}, S{3, 16, 1}, S{5, 30523, 8}, S{2, 50, 200}}) {
    const int64_t N = s.N, V = s.V;
    auto logits = random_vec(N * V, 1 + V, -s.spread, s.spread);
    std::vector<int32_t> targets(N);
    Rng r(2 + V);
    for (int64_t i = 0; i < N; ++i) targets[i] = (i % 3 == 1) ? ignore : static_cast<int32_t>(r.randint(V));
    if (N == 1) targets[0] = static_cast<int32_t>(V - 1);
    const float scale = 1.0f / 3.0f;
    std::vector<double> rloss(N), rlse(N), rdx(N * V), dl = to_double(logits);
    ref::cross_entropy_forward(rloss.data(), rlse.data(), dl.data(), targets.data(), N, V, ignore);
    ref::cross_entropy_backward(rdx.data(), dl.data(), targets.data(), N, V, scale, ignore);
    SameAcrossThreads same;
    for_each_config([&](Backend& be, const Config& cfg) {
      std::vector<float> loss(N, -7.f), lse(N, -7.f), dx(N * V, -7.f);
      CHECK_OK(be.cross_entropy_forward(f32(loss, {N}), f32(lse, {N}), f32(logits, {N, V}), i32(targets, {N}),
                                        ignore));
      all_close("ce lse", lse.data(), rlse.data(), N, 1e-5, 1e-6);
      all_close("ce loss", loss.data(), rloss.data(), N, 1e-5, 1e-6);
      for (int64_t i = 0; i < N; ++i)
        if (targets[i] == ignore) CHECK(loss[i] == 0.0f);
      CHECK_OK(be.cross_entropy_backward(f32(dx, {N, V}), f32(logits, {N, V}), f32(lse, {N}), i32(targets, {N}),
                                         scale, ignore));
      all_close("ce dlogits", dx.data(), rdx.data(), N * V, 1e-8, 2e-5);
      for (int64_t i = 0; i < N; ++i)
        if (targets[i] == ignore)
          for (int64_t j = 0; j < V; ++j) CHECK(dx[i * V + j] == 0.0f);
      same.check("ce loss", cfg, loss);
      same.check("ce dlogits", cfg, dx);
      auto inplace = logits;  // dlogits aliasing logits
      CHECK_OK(be.cross_entropy_backward(f32(inplace, {N, V}), f32(inplace, {N, V}), f32(lse, {N}),
                                         i32(targets, {N}), scale, ignore));
      bit_equal("ce dlogits in place", inplace.data(), dx.data(), N * V);
    });
  }
}

TEST_CASE(cross_entropy_is_stable_for_huge_logits) {
  const int64_t N = 2, V = 40;
  std::vector<float> logits(N * V, 0.f);
  for (int64_t j = 0; j < V; ++j) logits[j] = 1000.0f + j, logits[V + j] = -1000.0f - j;
  std::vector<int32_t> targets = {5, 0};
  std::vector<double> rloss(N), rlse(N), dl = to_double(logits);
  ref::cross_entropy_forward(rloss.data(), rlse.data(), dl.data(), targets.data(), N, V, -1);
  for_each_config([&](Backend& be, const Config&) {
    std::vector<float> loss(N), lse(N), dx(N * V);
    CHECK_OK(be.cross_entropy_forward(f32(loss, {N}), f32(lse, {N}), f32(logits, {N, V}), i32(targets, {N}), -1));
    all_close("ce huge loss", loss.data(), rloss.data(), N, 1e-4, 1e-6);
    CHECK_OK(be.cross_entropy_backward(f32(dx, {N, V}), f32(logits, {N, V}), f32(lse, {N}), i32(targets, {N}), 1.f,
                                       -1));
    for (float g : dx) CHECK(std::isfinite(g));
  });
}

TEST_CASE(bce_matches_reference) {
  for (int64_t L : {1, 3, 7, 97}) {
    const int64_t N = L == 97 ? 130 : 5;  // 130 x 97 spans several chunks
    auto x = random_vec(N * L, 10 + L, -30.0, 30.0), y = random_vec(N * L, 11 + L, 0.0, 1.0);
    for (int64_t i = 0; i < N * L; i += 5) y[i] = (i / 5) % 2 ? 1.0f : 0.0f;  // hard labels too
    const float scale = 0.25f;
    std::vector<double> rl(N * L), rd(N * L), dx = to_double(x), dy = to_double(y);
    ref::bce_forward(rl.data(), dx.data(), dy.data(), N * L);
    ref::bce_backward(rd.data(), dx.data(), dy.data(), N * L, scale);
    SameAcrossThreads same;
    for_each_config([&](Backend& be, const Config& cfg) {
      std::vector<float> loss(N * L, -7.f), d(N * L, -7.f);
      CHECK_OK(be.bce_forward(f32(loss, {N, L}), f32(x, {N, L}), f32(y, {N, L})));
      all_close("bce loss", loss.data(), rl.data(), N * L, 1e-6, 1e-5);
      CHECK_OK(be.bce_backward(f32(d, {N, L}), f32(x, {N, L}), f32(y, {N, L}), scale));
      all_close("bce dlogits", d.data(), rd.data(), N * L, 1e-8, 1e-5);
      same.check("bce loss", cfg, loss);
      same.check("bce dlogits", cfg, d);
    });
  }
}

TEST_CASE(losses_reject_bad_input_untouched) {
  const int64_t N = 3, V = 5;
  auto logits = random_vec(N * V, 1);
  std::vector<float> loss(N, 5.f), lse(N, 5.f), dx(N * V, 5.f), y(N * V, 0.5f);
  std::vector<int32_t> t_hi = {0, 5, 1}, t_lo = {0, -2, 1}, good = {0, -1, 4};
  for_each_config([&](Backend& be, const Config&) {
    CHECK_STATUS(be.cross_entropy_forward(f32(loss, {N}), f32(lse, {N}), f32(logits, {N, V}), i32(t_hi, {N}), -1),
                 Code::kInput);
    CHECK_STATUS(be.cross_entropy_forward(f32(loss, {N}), f32(lse, {N}), f32(logits, {N, V}), i32(t_lo, {N}), -1),
                 Code::kInput);
    CHECK_STATUS(be.cross_entropy_forward(f32(loss, {N}), f32(lse, {N - 1}), f32(logits, {N, V}), i32(good, {N}), -1),
                 Code::kShape);
    CHECK_STATUS(be.cross_entropy_forward(f32(loss, {N}), f32(lse, {N}), f32(logits, {N, V}), f32(loss, {N}), -1),
                 Code::kDType);
    CHECK_STATUS(be.cross_entropy_forward(f32(loss, {N}), f32(lse, {N}), f32(logits, {N, 0}), i32(good, {N}), -1),
                 Code::kShape);
    CHECK_STATUS(be.cross_entropy_forward(Tensor(), f32(lse, {N}), f32(logits, {N, V}), i32(good, {N}), -1),
                 Code::kInput);
    CHECK_STATUS(be.cross_entropy_backward(f32(dx, {N, V}), f32(logits, {N, V}), f32(lse, {N}), i32(t_hi, {N}), 1.f,
                                           -1),
                 Code::kInput);
    CHECK_STATUS(be.cross_entropy_backward(f32(dx, {N, V - 1}), f32(logits, {N, V}), f32(lse, {N}), i32(good, {N}),
                                           1.f, -1),
                 Code::kShape);
    CHECK_STATUS(be.cross_entropy_backward(f32(dx, {N, V}), f32(logits, {N, V}), f32(lse, {N}), i32(good, {N}), NAN,
                                           -1),
                 Code::kInput);
    for (float v : loss) CHECK(v == 5.f);
    for (float v : lse) CHECK(v == 5.f);
    for (float v : dx) CHECK(v == 5.f);
    auto ybad = y;
    ybad[7] = 1.5f;
    CHECK_STATUS(be.bce_forward(f32(dx, {N, V}), f32(logits, {N, V}), f32(ybad, {N, V})), Code::kInput);
    ybad[7] = NAN;
    CHECK_STATUS(be.bce_backward(f32(dx, {N, V}), f32(logits, {N, V}), f32(ybad, {N, V}), 1.f), Code::kInput);
    CHECK_STATUS(be.bce_forward(f32(dx, {N, V}), f32(logits, {N, V}), f32(y, {V, N})), Code::kShape);
    CHECK_STATUS(be.bce_forward(f32(dx, {N, V}), f32(logits, {N, V}), i32(t_hi, {N, 1})), Code::kDType);
    CHECK_STATUS(be.bce_backward(f32(dx, {N, V}), f32(logits, {N, V}), f32(y, {N, V}), INFINITY), Code::kInput);
    for (float v : dx) CHECK(v == 5.f);
  });
}

int main() { return run_all_tests(); }
