// GELU, tanh, dropout and row softmax against the float64 reference on every ISA x {1, 2}
// threads; bit-identical across thread counts; bad input refused untouched.
#include <map>

#include "reference/ops_ref.h"
#include "tests/harness.h"

using namespace elmo;
using namespace elmo_test;

namespace {

Tensor f32(std::vector<float>& v, std::initializer_list<int64_t> d) { return Tensor(v.data(), DType::kF32, d); }

// Same bits for the same ISA whatever the thread count.
struct SameAcrossThreads {
  std::map<std::string, std::vector<float>> first;
  void check(const char* what, const Config& cfg, const std::vector<float>& v) {
    const std::string key = std::string(what) + isa_name(cfg.isa);
    auto it = first.find(key);
    if (it == first.end()) first[key] = v;
    else bit_equal(what, v.data(), it->second.data(), static_cast<int64_t>(v.size()));
  }
};

const int64_t kSizes[] = {1, 3, 16, 97, 769, 20001};

std::vector<float> gelu_inputs(int64_t n, uint64_t seed) {
  auto x = random_vec(n, seed, -8.0, 8.0);
  const float special[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 20.0f, -20.0f, -0.7518f, 5.5f, -5.5f, -12.0f};
  for (int64_t i = 0; i < n && i < 10; ++i) x[i * 7 % n] = special[i];
  return x;
}

}  // namespace

TEST_CASE(gelu_forward_backward_match_reference) {
  for (int64_t n : kSizes) {
    SameAcrossThreads same;
    auto x = gelu_inputs(n, 100 + n), dout = random_vec(n, 200 + n);
    std::vector<double> ry(n), rdx(n), dx = to_double(x), ddo = to_double(dout);
    ref::gelu_forward(ry.data(), dx.data(), n);
    ref::gelu_backward(rdx.data(), ddo.data(), dx.data(), n);
    for_each_config([&](Backend& be, const Config& cfg) {
      std::vector<float> y(n, -7.f), din(n, -7.f);
      CHECK_OK(be.gelu_forward(f32(y, {n}), f32(x, {n})));
      all_close("gelu", y.data(), ry.data(), n, 1e-7, 1e-5);
      CHECK_OK(be.gelu_backward(f32(din, {n}), f32(dout, {n}), f32(x, {n})));
      all_close("gelu'", din.data(), rdx.data(), n, 1e-6, 1e-5);
      same.check("gelu fwd", cfg, y);
      same.check("gelu bwd", cfg, din);
      // in place: out == inp, dinp == dout
      auto xi = x, gi = dout;
      CHECK_OK(be.gelu_forward(f32(xi, {n}), f32(xi, {n})));
      bit_equal("gelu in place", xi.data(), y.data(), n);
      CHECK_OK(be.gelu_backward(f32(gi, {n}), f32(gi, {n}), f32(x, {n})));
      bit_equal("gelu' in place", gi.data(), din.data(), n);
    });
  }
}

TEST_CASE(tanh_forward_backward_match_reference) {
  for (int64_t n : kSizes) {
    SameAcrossThreads same;
    auto x = random_vec(n, 300 + n, -5.0, 5.0), dout = random_vec(n, 400 + n);
    std::vector<double> ry(n), dx = to_double(x);
    ref::tanh_forward(ry.data(), dx.data(), n);
    for_each_config([&](Backend& be, const Config& cfg) {
      std::vector<float> y(n, -7.f), din(n, -7.f);
      CHECK_OK(be.tanh_forward(f32(y, {n}), f32(x, {n})));
      all_close("tanh", y.data(), ry.data(), n, 1e-7, 1e-6);
      // backward from the kernel's own output, as the model uses it
      std::vector<double> rdx(n), dy = to_double(y), ddo = to_double(dout);
      ref::tanh_backward(rdx.data(), ddo.data(), dy.data(), n);
      CHECK_OK(be.tanh_backward(f32(din, {n}), f32(dout, {n}), f32(y, {n})));
      all_close("tanh'", din.data(), rdx.data(), n, 1e-7, 1e-6);
      same.check("tanh fwd", cfg, y);
      same.check("tanh bwd", cfg, din);
    });
  }
}

TEST_CASE(dropout_matches_philox_mask) {
  for (int64_t n : kSizes) {
    for (float p : {0.0f, 0.1f, 0.5f, 0.9f}) {
      SameAcrossThreads same;
      auto x = random_vec(n, 500 + n, 0.5, 1.5), dout = random_vec(n, 600 + n, 0.5, 1.5);
      const uint64_t seed = 0x1234567890ull + static_cast<uint64_t>(n), stream = 3;
      std::vector<double> ry(n), rdx(n), dx = to_double(x), ddo = to_double(dout);
      ref::dropout_forward(ry.data(), dx.data(), n, p, seed, stream);
      ref::dropout_forward(rdx.data(), ddo.data(), n, p, seed, stream);
      for_each_config([&](Backend& be, const Config& cfg) {
        std::vector<float> y(n, -7.f), din(n, -7.f);
        CHECK_OK(be.dropout_forward(f32(y, {n}), f32(x, {n}), p, seed, stream));
        CHECK_OK(be.dropout_backward(f32(din, {n}), f32(dout, {n}), p, seed, stream));
        all_close("dropout", y.data(), ry.data(), n, 0, 1e-6);
        all_close("dropout bwd", din.data(), rdx.data(), n, 0, 1e-6);
        int64_t kept = 0;
        for (int64_t e = 0; e < n; ++e) {
          const bool keep = dropout_keep(seed, stream, static_cast<uint64_t>(e), p);
          CHECK((y[e] != 0.0f) == keep);
          CHECK((din[e] != 0.0f) == keep);
          kept += keep;
        }
        if (p == 0.0f) bit_equal("dropout p=0 copies", y.data(), x.data(), n);
        if (n > 10000) CHECK(std::fabs(static_cast<double>(kept) / n - (1.0 - p)) < 0.02);
        same.check("dropout", cfg, y);
        auto xi = x;  // in place
        CHECK_OK(be.dropout_forward(f32(xi, {n}), f32(xi, {n}), p, seed, stream));
        bit_equal("dropout in place", xi.data(), y.data(), n);
        // a different stream draws a different mask
        if (n > 100 && p > 0) {
          std::vector<float> y2(n);
          CHECK_OK(be.dropout_forward(f32(y2, {n}), f32(x, {n}), p, seed, stream + 1));
          CHECK(std::memcmp(y2.data(), y.data(), sizeof(float) * n) != 0);
        }
      });
    }
  }
}

TEST_CASE(softmax_matches_reference) {
  struct S {
    int64_t N, V;
  };
  for (S s : {S{1, 1}, S{1, 3}, S{3, 97}, S{5, 769}, S{2, 16}, S{7, 1001}, S{3, 30523}}) {
    const int64_t N = s.N, V = s.V;
    SameAcrossThreads same;
    auto x = random_vec(N * V, 700 + V, -30.0, 30.0);
    std::vector<double> ry(N * V), dx = to_double(x);
    ref::softmax_forward(ry.data(), dx.data(), N, V);
    for_each_config([&](Backend& be, const Config& cfg) {
      std::vector<float> y(N * V, -7.f);
      CHECK_OK(be.softmax_forward(f32(y, {N, V}), f32(x, {N, V})));
      all_close("softmax", y.data(), ry.data(), N * V, 1e-9, 1e-5);
      same.check("softmax", cfg, y);
      auto xi = x;
      CHECK_OK(be.softmax_forward(f32(xi, {N, V}), f32(xi, {N, V})));
      bit_equal("softmax in place", xi.data(), y.data(), N * V);
    });
  }
}

TEST_CASE(elementwise_rejects_bad_input_untouched) {
  const int64_t n = 12;
  auto x = random_vec(n, 1);
  std::vector<float> out(n, 5.f);
  std::vector<int32_t> ibuf(n);
  Tensor ti(ibuf.data(), DType::kI32, {n});
  for_each_config([&](Backend& be, const Config&) {
    Tensor o = f32(out, {n}), in = f32(x, {n}), wrong = f32(out, {n - 1}), o2 = f32(out, {3, 4}), in2 = f32(x, {4, 3});
    CHECK_STATUS(be.gelu_forward(wrong, in), Code::kShape);
    CHECK_STATUS(be.gelu_forward(o, ti), Code::kDType);
    CHECK_STATUS(be.gelu_forward(Tensor(), in), Code::kInput);
    CHECK_STATUS(be.gelu_backward(o, wrong, in), Code::kShape);
    CHECK_STATUS(be.gelu_backward(o, in, Tensor()), Code::kInput);
    CHECK_STATUS(be.tanh_forward(o2, in2), Code::kShape);
    CHECK_STATUS(be.tanh_backward(o, ti, in), Code::kDType);
    CHECK_STATUS(be.dropout_forward(o, in, 1.0f, 1, 0), Code::kInput);
    CHECK_STATUS(be.dropout_forward(o, in, -0.1f, 1, 0), Code::kInput);
    CHECK_STATUS(be.dropout_forward(o, in, NAN, 1, 0), Code::kInput);
    CHECK_STATUS(be.dropout_backward(wrong, in, 0.1f, 1, 0), Code::kShape);
    CHECK_STATUS(be.softmax_forward(o, in), Code::kShape);  // not [N, V]
    CHECK_STATUS(be.softmax_forward(o2, in2), Code::kShape);
    CHECK_STATUS(be.softmax_forward(f32(out, {n, 0}), f32(x, {n, 0})), Code::kShape);
    CHECK_STATUS(be.softmax_forward(Tensor(ibuf.data(), DType::kI32, {3, 4}), in2), Code::kDType);
    for (float v : out) CHECK(v == 5.f);
  });
}

int main() { return run_all_tests(); }
