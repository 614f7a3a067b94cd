// Embedding forward/backward against the float64 reference on packed, mixed-length batches
// (including an empty sequence), every ISA x {1, 2} threads, deterministic scatter, and
// bad ids / offsets refused before anything is written.
#include <map>

#include "reference/ops_ref.h"
#include "tests/harness.h"

using namespace elmo;
using namespace elmo_test;

namespace {
Tensor f32(std::vector<float>& v, std::initializer_list<int64_t> d) { return Tensor(v.data(), DType::kF32, d); }
Tensor i32(std::vector<int32_t>& v, std::initializer_list<int64_t> d) { return Tensor(v.data(), DType::kI32, d); }

struct Batch {
  std::vector<int32_t> off, ids, types;
  Offsets o;
  int64_t T;
};
Batch make_batch(const std::vector<int>& lens, int64_t V, int64_t TV, uint64_t seed) {
  Batch b;
  b.off = make_offsets_vec(lens);
  b.T = b.off.back();
  Rng r(seed);
  for (int64_t t = 0; t < b.T; ++t) {
    b.ids.push_back(static_cast<int32_t>(r.randint(V)));
    b.types.push_back(static_cast<int32_t>(r.randint(TV)));
  }
  if (b.T > 3) b.ids[1] = b.ids[3] = b.ids[0];  // repeated ids
  Status s = make_offsets(&b.o, b.off.data(), nullptr, static_cast<int>(lens.size()), b.T);
  if (!s.is_ok()) std::abort();
  return b;
}
}  // namespace

TEST_CASE(embedding_forward_backward_match_reference) {
  const int64_t V = 37, P = 20, TV = 2;
  const std::vector<std::vector<int>> batches = {{1}, {5, 1, 0, 17, 3}, {20, 20}, {2, 9, 1, 1, 13}};
  for (int64_t H : {1, 3, 97, 769}) {
    for (const auto& lens : batches) {
      for (bool with_types : {false, true}) {
        Batch bt = make_batch(lens, V, TV, 10 + H);
        const int64_t T = bt.T;
        auto wte = random_vec(V * H, 1 + H), wpe = random_vec(P * H, 2 + H), wtt = random_vec(TV * H, 3 + H);
        auto dout = random_vec(T * H, 4 + H);
        auto dwte0 = random_vec(V * H, 5), dwpe0 = random_vec(P * H, 6), dwtt0 = random_vec(TV * H, 7);
        const int32_t* types = with_types ? bt.types.data() : nullptr;
        std::vector<double> rout(T * H), rdwte = to_double(dwte0), rdwpe = to_double(dwpe0), rdwtt = to_double(dwtt0);
        auto de = to_double(wte), dp = to_double(wpe), dy = to_double(wtt), ddo = to_double(dout);
        const int B = static_cast<int>(lens.size());
        ref::embedding_forward(rout.data(), bt.ids.data(), types, bt.off.data(), B, de.data(), dp.data(), dy.data(), H);
        ref::embedding_backward(rdwte.data(), rdwpe.data(), rdwtt.data(), ddo.data(), bt.ids.data(), types,
                                bt.off.data(), B, H);
        std::map<int, std::vector<float>> first;
        for_each_config([&](Backend& be, const Config& cfg) {
          std::vector<float> out(T * H, -7.f), dwte = dwte0, dwpe = dwpe0, dwtt = dwtt0;
          Tensor tt = with_types ? i32(bt.types, {T}) : Tensor();
          CHECK_OK(be.embedding_forward(f32(out, {T, H}), i32(bt.ids, {T}), tt, bt.o, f32(wte, {V, H}),
                                        f32(wpe, {P, H}), f32(wtt, {TV, H})));
          all_close("embedding out", out.data(), rout.data(), T * H, 1e-7, 1e-6);
          CHECK_OK(be.embedding_backward(f32(dwte, {V, H}), f32(dwpe, {P, H}), f32(dwtt, {TV, H}), f32(dout, {T, H}),
                                         i32(bt.ids, {T}), tt, bt.o));
          // f32 sums of up to T = 54 terms |g| < 1 (plus the initial value): a few 1e-6 of rounding
          all_close("dwte", dwte.data(), rdwte.data(), V * H, 1e-5, 1e-6);
          all_close("dwpe", dwpe.data(), rdwpe.data(), P * H, 1e-5, 1e-6);
          all_close("dwtt", dwtt.data(), rdwtt.data(), TV * H, 1e-5, 1e-6);
          std::vector<float> all = out;
          for (auto* v : {&dwte, &dwpe, &dwtt}) all.insert(all.end(), v->begin(), v->end());
          auto it = first.find(static_cast<int>(cfg.isa));
          if (it == first.end()) first[static_cast<int>(cfg.isa)] = all;
          else bit_equal("embedding threads", all.data(), it->second.data(), static_cast<int64_t>(all.size()));
        });
      }
    }
  }
}

TEST_CASE(embedding_rejects_bad_input_untouched) {
  const int64_t V = 10, P = 4, TV = 2, H = 6;
  Batch bt = make_batch({3, 4}, V, TV, 1);
  const int64_t T = bt.T;
  auto wte = random_vec(V * H, 1), wpe = random_vec(P * H, 2), wtt = random_vec(TV * H, 3), dout = random_vec(T * H, 4);
  std::vector<float> out(T * H, 5.f), dwte(V * H, 5.f), dwpe(P * H, 5.f), dwtt(TV * H, 5.f);
  for_each_config([&](Backend& be, const Config&) {
    auto fwd = [&](std::vector<int32_t>& ids, std::vector<int32_t>* types, const Offsets& o, int64_t p_rows) {
      return be.embedding_forward(f32(out, {T, H}), i32(ids, {T}), types ? i32(*types, {T}) : Tensor(), o,
                                  f32(wte, {V, H}), f32(wpe, {p_rows, H}), f32(wtt, {TV, H}));
    };
    auto bwd = [&](std::vector<int32_t>& ids, std::vector<int32_t>* types, const Offsets& o, int64_t p_rows) {
      return be.embedding_backward(f32(dwte, {V, H}), f32(dwpe, {p_rows, H}), f32(dwtt, {TV, H}), f32(dout, {T, H}),
                                   i32(ids, {T}), types ? i32(*types, {T}) : Tensor(), o);
    };
    std::vector<int32_t> ids = bt.ids, types = bt.types;
    ids[T - 1] = static_cast<int32_t>(V);  // id past the table, in the last row
    CHECK_STATUS(fwd(ids, &types, bt.o, P), Code::kInput);
    CHECK_STATUS(bwd(ids, &types, bt.o, P), Code::kInput);
    ids[T - 1] = -1;
    CHECK_STATUS(fwd(ids, &types, bt.o, P), Code::kInput);
    ids = bt.ids;
    types[2] = 2;  // type past wtt
    CHECK_STATUS(fwd(ids, &types, bt.o, P), Code::kInput);
    CHECK_STATUS(bwd(ids, &types, bt.o, P), Code::kInput);
    types = bt.types;
    CHECK_STATUS(fwd(ids, &types, bt.o, 3), Code::kInput);  // a 4-token sequence, 3 positions
    CHECK_STATUS(bwd(ids, &types, bt.o, 3), Code::kInput);
    Offsets wrong = bt.o;
    wrong.T = T + 1;
    CHECK_STATUS(fwd(ids, &types, wrong, P), Code::kShape);
    Offsets none;
    CHECK_STATUS(fwd(ids, nullptr, none, P), Code::kInput);
    CHECK_STATUS(be.embedding_forward(f32(out, {T, H}), Tensor(wte.data(), DType::kF32, {T}), Tensor(), bt.o,
                                      f32(wte, {V, H}), f32(wpe, {P, H}), f32(wtt, {TV, H})),
                 Code::kDType);
    CHECK_STATUS(be.embedding_forward(f32(out, {T, H}), i32(ids, {T}), Tensor(), bt.o, f32(wte, {V, H}),
                                      f32(wpe, {P, H - 1}), f32(wtt, {TV, H})),
                 Code::kShape);
    CHECK_STATUS(be.embedding_backward(f32(dwte, {V, H}), f32(dwpe, {P, H}), f32(dwtt, {TV, H}),
                                       f32(dout, {T - 1, H}), i32(ids, {T}), Tensor(), bt.o),
                 Code::kShape);
    CHECK_STATUS(be.embedding_backward(Tensor(), f32(dwpe, {P, H}), f32(dwtt, {TV, H}), f32(dout, {T, H}),
                                       i32(ids, {T}), Tensor(), bt.o),
                 Code::kInput);
    for (auto* v : {&out, &dwte, &dwpe, &dwtt})
      for (float x : *v) CHECK(x == 5.f);
  });
}

int main() { return run_all_tests(); }
