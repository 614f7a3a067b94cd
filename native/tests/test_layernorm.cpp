// LayerNorm (fused residual) forward and backward against the float64 reference, on every
// ISA x {1, 2} threads; bit-identical across thread counts; bad input refused untouched.
#include <map>

#include "reference/ops_ref.h"
#include "tests/harness.h"

using namespace elmo;
using namespace elmo_test;

namespace {

Tensor f32(std::vector<float>& v, std::initializer_list<int64_t> d) { return Tensor(v.data(), DType::kF32, d); }

struct Shape {
  int64_t T, C;
};
const Shape kShapes[] = {{1, 1}, {1, 3}, {5, 97}, {67, 769}, {3, 16}, {40, 33}, {33, 8}};

}  // namespace

TEST_CASE(layernorm_forward_matches_reference) {
  for (const Shape& s : kShapes) {
    const int64_t T = s.T, C = s.C;
    for (bool with_res : {false, true}) {
      // An offset mean stresses the two-pass variance.
      auto inp = random_vec(T * C, 1 + C, 2.0, 4.0), res = random_vec(T * C, 2 + C);
      auto w = random_vec(C, 3, 0.5, 1.5), b = random_vec(C, 4);
      const float eps = 1e-5f;
      std::vector<double> ro(T * C), rs(T * C), rm(T), rr(T);
      auto di = to_double(inp), dr = to_double(res), dw = to_double(w), db = to_double(b);
      // the reference sees x exactly as the kernel forms it (inp + res rounded to f32)
      std::vector<double> dx(T * C);
      for (int64_t i = 0; i < T * C; ++i) dx[i] = with_res ? static_cast<float>(inp[i] + res[i]) : inp[i];
      ref::layernorm_forward(ro.data(), rs.data(), rm.data(), rr.data(), dx.data(), nullptr, dw.data(), db.data(), T,
                             C, eps);
      std::map<int, std::vector<float>> first;  // isa -> outputs with 1 thread
      for_each_config([&](Backend& be, const Config& cfg) {
        std::vector<float> out(T * C, -7.f), sum(T * C, -7.f), mean(T, -7.f), rstd(T, -7.f);
        CHECK_OK(be.layernorm_forward(f32(out, {T, C}), f32(sum, {T, C}), f32(mean, {T}), f32(rstd, {T}),
                                      f32(inp, {T, C}), with_res ? f32(res, {T, C}) : Tensor(), f32(w, {C}),
                                      f32(b, {C}), eps));
        all_close("ln out", out.data(), ro.data(), T * C, 1e-6, 1e-6);
        all_close("ln sum_out", sum.data(), dx.data(), T * C, 0, 0);
        all_close("ln mean", mean.data(), rm.data(), T, 1e-7, 1e-6);
        all_close("ln rstd", rstd.data(), rr.data(), T, 0, 1e-6);
        std::vector<float> all = out;
        all.insert(all.end(), mean.begin(), mean.end());
        all.insert(all.end(), rstd.begin(), rstd.end());
        auto it = first.find(static_cast<int>(cfg.isa));
        if (it == first.end()) first[static_cast<int>(cfg.isa)] = all;
        else bit_equal("ln forward threads", all.data(), it->second.data(), static_cast<int64_t>(all.size()));
      });
    }
  }
}

TEST_CASE(layernorm_forward_in_place_residual_stream) {
  // sum_out aliasing residual and out aliasing inp: the usual in-place residual update.
  const int64_t T = 9, C = 50;
  auto inp0 = random_vec(T * C, 11), res0 = random_vec(T * C, 12), w = random_vec(C, 13), b = random_vec(C, 14);
  std::vector<float> want_out(T * C), want_sum(T * C);
  for_each_config([&](Backend& be, const Config&) {
    auto inp = inp0, res = res0;
    std::vector<float> o(T * C), so(T * C);
    CHECK_OK(be.layernorm_forward(f32(o, {T, C}), f32(so, {T, C}), Tensor(), Tensor(), f32(inp, {T, C}),
                                  f32(res, {T, C}), f32(w, {C}), f32(b, {C}), 1e-12f));
    CHECK_OK(be.layernorm_forward(f32(inp, {T, C}), f32(res, {T, C}), Tensor(), Tensor(), f32(inp, {T, C}),
                                  f32(res, {T, C}), f32(w, {C}), f32(b, {C}), 1e-12f));
    bit_equal("ln in-place out", inp.data(), o.data(), T * C);
    bit_equal("ln in-place sum", res.data(), so.data(), T * C);
  });
}

TEST_CASE(layernorm_backward_matches_reference) {
  for (const Shape& s : kShapes) {
    const int64_t T = s.T, C = s.C;
    auto x = random_vec(T * C, 21 + C, -2.0, 3.0), w = random_vec(C, 22, 0.5, 1.5), dout = random_vec(T * C, 23);
    auto dw0 = random_vec(C, 24), db0 = random_vec(C, 25);
    std::vector<float> mean(T), rstd(T);
    {  // statistics as the forward saves them (f32)
      std::vector<double> o(T * C), m(T), r(T), dx = to_double(x), one(C, 1.0), zero(C, 0.0);
      ref::layernorm_forward(o.data(), nullptr, m.data(), r.data(), dx.data(), nullptr, one.data(), zero.data(), T,
                             C, 1e-5);
      for (int64_t t = 0; t < T; ++t) mean[t] = static_cast<float>(m[t]), rstd[t] = static_cast<float>(r[t]);
    }
    std::vector<double> rdin(T * C), rdw = to_double(dw0), rdb = to_double(db0);
    auto dx = to_double(x), ddw = to_double(w), ddo = to_double(dout), dm = to_double(mean), dr = to_double(rstd);
    ref::layernorm_backward(rdin.data(), rdw.data(), rdb.data(), ddo.data(), dx.data(), ddw.data(), dm.data(),
                            dr.data(), T, C);
    std::map<int, std::vector<float>> first;
    for_each_config([&](Backend& be, const Config& cfg) {
      std::vector<float> din(T * C, -7.f), dw = dw0, db = db0;
      CHECK_OK(be.layernorm_backward(f32(din, {T, C}), f32(dw, {C}), f32(db, {C}), f32(dout, {T, C}),
                                     f32(x, {T, C}), f32(w, {C}), f32(mean, {T}), f32(rstd, {T})));
      all_close("ln dinp", din.data(), rdin.data(), T * C, 1e-5, 1e-5);
      all_close("ln dweight", dw.data(), rdw.data(), C, 1e-5, 1e-5);
      all_close("ln dbias", db.data(), rdb.data(), C, 1e-5, 1e-5);
      std::vector<float> all = din;
      all.insert(all.end(), dw.begin(), dw.end());
      all.insert(all.end(), db.begin(), db.end());
      auto it = first.find(static_cast<int>(cfg.isa));
      if (it == first.end()) first[static_cast<int>(cfg.isa)] = all;
      else bit_equal("ln backward threads", all.data(), it->second.data(), static_cast<int64_t>(all.size()));
      // dinp may alias dout
      std::vector<float> g = dout, dw2 = dw0, db2 = db0;
      CHECK_OK(be.layernorm_backward(f32(g, {T, C}), f32(dw2, {C}), f32(db2, {C}), f32(g, {T, C}), f32(x, {T, C}),
                                     f32(w, {C}), f32(mean, {T}), f32(rstd, {T})));
      bit_equal("ln dinp aliasing dout", g.data(), din.data(), T * C);
    });
  }
}

TEST_CASE(layernorm_rejects_bad_input_untouched) {
  const int64_t T = 4, C = 6;
  auto inp = random_vec(T * C, 31), w = random_vec(C, 32), b = random_vec(C, 33);
  std::vector<float> out(T * C, 5.f), mean(T, 5.f), rstd(T, 5.f), wshort(C - 1, 1.f);
  std::vector<int32_t> ibuf(T * C);
  auto untouched = [&] {
    for (float v : out) CHECK(v == 5.f);
    for (float v : mean) CHECK(v == 5.f);
  };
  for_each_config([&](Backend& be, const Config&) {
    Tensor o = f32(out, {T, C}), m = f32(mean, {T}), r = f32(rstd, {T}), i = f32(inp, {T, C}), tw = f32(w, {C}),
           tb = f32(b, {C});
    CHECK_STATUS(be.layernorm_forward(o, Tensor(), m, r, i, Tensor(), f32(wshort, {C - 1}), tb, 1e-5f), Code::kShape);
    CHECK_STATUS(be.layernorm_forward(o, Tensor(), m, r, i, f32(out, {T, C + 1}), tw, tb, 1e-5f), Code::kShape);
    CHECK_STATUS(be.layernorm_forward(o, Tensor(), m, f32(rstd, {T - 1}), i, Tensor(), tw, tb, 1e-5f), Code::kShape);
    CHECK_STATUS(be.layernorm_forward(o, Tensor(), m, r, Tensor(ibuf.data(), DType::kI32, {T, C}), Tensor(), tw, tb,
                                      1e-5f),
                 Code::kDType);
    CHECK_STATUS(be.layernorm_forward(Tensor(), Tensor(), m, r, i, Tensor(), tw, tb, 1e-5f), Code::kInput);
    CHECK_STATUS(be.layernorm_forward(o, Tensor(), m, r, i, Tensor(), tw, tb, -1.f), Code::kInput);
    CHECK_STATUS(be.layernorm_forward(o, Tensor(), m, r, i, Tensor(), tw, tb, NAN), Code::kInput);
    CHECK_STATUS(be.layernorm_forward(o, o, m, r, i, Tensor(), tw, tb, 1e-5f), Code::kInput);
    CHECK_STATUS(be.layernorm_forward(o, Tensor(), m, r, f32(inp, {T, 0}), Tensor(), f32(w, {0}), f32(b, {0}), 1e-5f),
                 Code::kShape);
    untouched();
    std::vector<float> dw(C, 5.f), db(C, 5.f);
    Tensor tdw = f32(dw, {C}), tdb = f32(db, {C});
    CHECK_STATUS(be.layernorm_backward(o, tdw, tdb, i, i, tw, m, f32(rstd, {T + 1})), Code::kShape);
    CHECK_STATUS(be.layernorm_backward(o, tdw, f32(db, {C - 1}), i, i, tw, m, r), Code::kShape);
    CHECK_STATUS(be.layernorm_backward(o, tdw, tdb, i, Tensor(ibuf.data(), DType::kI32, {T, C}), tw, m, r),
                 Code::kDType);
    CHECK_STATUS(be.layernorm_backward(o, Tensor(), tdb, i, i, tw, m, r), Code::kInput);
    untouched();
    for (float v : dw) CHECK(v == 5.f);
    for (float v : db) CHECK(v == 5.f);
  });
}

int main() { return run_all_tests(); }
