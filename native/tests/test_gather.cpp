// gather_rows / scatter_add_rows against the float64 reference on every ISA x {1, 2}
// threads; repeated indices summed deterministically; bad indices refused untouched.
#include <map>

#include "reference/ops_ref.h"
#include "tests/harness.h"

using namespace elmo;
using namespace elmo_test;

namespace {
Tensor f32(std::vector<float>& v, std::initializer_list<int64_t> d) { return Tensor(v.data(), DType::kF32, d); }
Tensor i32(std::vector<int32_t>& v, std::initializer_list<int64_t> d) { return Tensor(v.data(), DType::kI32, d); }
}  // namespace

TEST_CASE(gather_and_scatter_match_reference) {
  struct S {
    int64_t T, N, C;
  };
  for (S s : {S{1, 1, 1}, S{5, 3, 3}, S{40, 97, 97}, S{17, 9, 769}, S{300, 1000, 16}}) {
    const int64_t T = s.T, N = s.N, C = s.C;
    auto inp = random_vec(T * C, 1 + C), dout = random_vec(N * C, 2 + C), dinp0 = random_vec(T * C, 3 + C);
    std::vector<int32_t> idx(N);
    Rng r(4 + N);
    for (auto& i : idx) i = static_cast<int32_t>(r.randint(T));  // repeats when N > T
    std::vector<double> rout(N * C), rdin = to_double(dinp0), di = to_double(inp), ddo = to_double(dout);
    ref::gather_rows(rout.data(), di.data(), idx.data(), N, C);
    ref::scatter_add_rows(rdin.data(), ddo.data(), idx.data(), N, C);
    std::map<int, std::vector<float>> first;
    for_each_config([&](Backend& be, const Config& cfg) {
      std::vector<float> out(N * C, -7.f), din = dinp0;
      CHECK_OK(be.gather_rows(f32(out, {N, C}), f32(inp, {T, C}), i32(idx, {N})));
      all_close("gather", out.data(), rout.data(), N * C, 0, 0);
      CHECK_OK(be.scatter_add_rows(f32(din, {T, C}), f32(dout, {N, C}), i32(idx, {N})));
      all_close("scatter_add", din.data(), rdin.data(), T * C, 1e-6, 1e-6);
      auto it = first.find(static_cast<int>(cfg.isa));
      if (it == first.end()) first[static_cast<int>(cfg.isa)] = din;
      else bit_equal("scatter_add threads", din.data(), it->second.data(), T * C);
    });
  }
}

TEST_CASE(scatter_add_sums_repeats_in_index_order) {
  // One target row hit many times: the result must equal the sequential f32 sum in index order.
  const int64_t T = 2, N = 5000, C = 600;
  auto dout = random_vec(N * C, 9, -100.0, 100.0);
  std::vector<int32_t> idx(N, 1);
  std::vector<float> want(T * C, 0.f);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t c = 0; c < C; ++c) want[C + c] += dout[i * C + c];
  for_each_config([&](Backend& be, const Config&) {
    std::vector<float> din(T * C, 0.f);
    CHECK_OK(be.scatter_add_rows(f32(din, {T, C}), f32(dout, {N, C}), i32(idx, {N})));
    bit_equal("scatter_add order", din.data(), want.data(), T * C);
  });
}

TEST_CASE(gather_scatter_reject_bad_input_untouched) {
  const int64_t T = 4, N = 3, C = 5;
  auto inp = random_vec(T * C, 1);
  std::vector<float> out(N * C, 5.f), din(T * C, 5.f), dout(N * C, 1.f);
  std::vector<int32_t> bad_hi = {0, 4, 1}, bad_lo = {0, -1, 1}, good = {0, 1, 3};
  std::vector<float> fidx(N, 0.f);
  for_each_config([&](Backend& be, const Config&) {
    CHECK_STATUS(be.gather_rows(f32(out, {N, C}), f32(inp, {T, C}), i32(bad_hi, {N})), Code::kInput);
    CHECK_STATUS(be.gather_rows(f32(out, {N, C}), f32(inp, {T, C}), i32(bad_lo, {N})), Code::kInput);
    CHECK_STATUS(be.gather_rows(f32(out, {N, C + 1}), f32(inp, {T, C}), i32(good, {N})), Code::kShape);
    CHECK_STATUS(be.gather_rows(f32(out, {N, C}), f32(inp, {T, C}), f32(fidx, {N})), Code::kDType);
    CHECK_STATUS(be.gather_rows(Tensor(), f32(inp, {T, C}), i32(good, {N})), Code::kInput);
    CHECK_STATUS(be.scatter_add_rows(f32(din, {T, C}), f32(dout, {N, C}), i32(bad_hi, {N})), Code::kInput);
    CHECK_STATUS(be.scatter_add_rows(f32(din, {T, C}), f32(dout, {N, C}), i32(bad_lo, {N})), Code::kInput);
    CHECK_STATUS(be.scatter_add_rows(f32(din, {T, C}), f32(dout, {N - 1, C}), i32(good, {N})), Code::kShape);
    CHECK_STATUS(be.scatter_add_rows(f32(din, {T, C}), f32(dout, {N, C}), Tensor()), Code::kInput);
    for (float v : out) CHECK(v == 5.f);
    for (float v : din) CHECK(v == 5.f);
  });
}

int main() { return run_all_tests(); }
