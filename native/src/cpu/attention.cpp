// Fused attention, forward and backward (FlashAttention-style), CPU.
//
//   qkv (T, 3C), C = NH*HD: row t holds [q | k | v], head h at columns h*HD of each part.
//   For each sequence b (rows offsets[b] .. offsets[b+1]) and head h:
//     S = q kᵀ / sqrt(HD) over the sequence's own keys, P = softmax(S) row-wise,
//     Pd = P ⊙ keep / (1-p) with keep = dropout_keep(seed, stream, (h*T + i)*T + j, p),
//     out = Pd v (T, C);  lse (NH, T) = logsumexp of the scaled scores, before dropout.
//   Backward writes dqkv (=), recomputing P tile by tile from qkv and lse, with
//   D_i = dout_i · out_i (still Σ_j P_ij dP_ij when out included the dropout).
//
// Memory: tiles of kTile queries x kTile keys; per-thread scratch grows with HD only, never
// with the sequence length (see attention_kernels.h). Nothing of size (S, S) exists.
// Threads: the forward runs one work item per (sequence, head, query tile); the backward one
// per (sequence, head), which walks its query and key tiles in a fixed order. Each item is
// computed by one thread start to finish, so 1 and N threads give bit-identical results.
// ISA: the tile algorithm (attention_impl.h) is compiled three times, scalar here and AVX2 /
// AVX-512 in attention_avx2.cpp / attention_avx512.cpp; Ctx::isa picks one.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/attention_kernels.h"
#include "cpu/philox_words.h"
#include "cpu/ops.h"
#include "elmo/philox.h"

namespace elmo::cpu::attn {
namespace {

struct VecScalar {
  using R = float;
  static constexpr int W = 1, MR = 4, NR = 4;
  static R zero() { return 0.0f; }
  static R set1(float x) { return x; }
  static R load(const float* p) { return *p; }
  static void store(float* p, R x) { *p = x; }
  static R fma(R a, R b, R c) { return a * b + c; }
  static R mul(R a, R b) { return a * b; }
  static R add(R a, R b) { return a + b; }
  static R sub(R a, R b) { return a - b; }
  static R max(R a, R b) { return a > b ? a : b; }
  static R exp(R x) { return std::exp(x); }
};

}  // namespace
}  // namespace elmo::cpu::attn

#include "cpu/attention_impl.h"

namespace elmo::cpu {
namespace attn {

void forward_item_scalar(const Args& a, int b, int h, int qb, float* scratch) {
  forward_item<VecScalar>(a, b, h, qb, scratch);
}
void backward_item_scalar(const Args& a, int b, int h, float* scratch) { backward_item<VecScalar>(a, b, h, scratch); }

void dropout_tile_t(float* mkt, int ld, int kv, int qv, int cols, int64_t i0, int64_t j0, int h, const Args& a) {
  const float keep_scale = 1.0f / (1.0f - a.p);
  const uint64_t T = static_cast<uint64_t>(a.T);
  uint32_t words[1024];
  for (int i = 0; i < qv; ++i) {
    const uint64_t e0 = (static_cast<uint64_t>(h) * T + static_cast<uint64_t>(i0 + i)) * T + static_cast<uint64_t>(j0);
    for (int j0k = 0; j0k < kv; j0k += 1024) {
      const int n = std::min(1024, kv - j0k);
      philox_words(words, e0 + static_cast<uint64_t>(j0k), n, a.seed, a.stream);
      for (int j = 0; j < n; ++j) {
        // Same decision as dropout_keep(): 24 random bits as a uniform in [0, 1), kept when >= p.
        const float u = static_cast<float>(words[j] >> 8) * (1.0f / 16777216.0f);
        mkt[(j0k + j) * ld + i] = u >= a.p ? keep_scale : 0.0f;
      }
    }
  }
  for (int j = 0; j < kv; ++j)
    for (int i = qv; i < cols; ++i) mkt[j * ld + i] = 0.0f;
}

}  // namespace attn

namespace {

using ForwardFn = void (*)(const attn::Args&, int, int, int, float*);
using BackwardFn = void (*)(const attn::Args&, int, int, float*);

ForwardFn forward_fn(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return attn::forward_item_avx512;
    case Isa::kAvx2: return attn::forward_item_avx2;
    case Isa::kScalar: break;
  }
  return attn::forward_item_scalar;
}
BackwardFn backward_fn(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return attn::backward_item_avx512;
    case Isa::kAvx2: return attn::backward_item_avx2;
    case Isa::kScalar: break;
  }
  return attn::backward_item_scalar;
}

// Per-thread scratch, 64-byte aligned, grown on demand and reused across calls.
float* thread_scratch(size_t floats) {
  thread_local std::vector<float> buf;
  if (buf.size() < floats + 16) buf.resize(floats + 16);
  const uintptr_t p = reinterpret_cast<uintptr_t>(buf.data());
  return reinterpret_cast<float*>((p + 63) & ~uintptr_t(63));
}

// Prefetches the rows [row0, row0 + kTile) of sequence b, head h, part 0 (q), 1 (k) or 2 (v).
void prefetch_tile(const attn::Args& a, int b, int h, int row0, int part) {
  const int64_t C = int64_t(a.NH) * a.HD, ld = 3 * C;
  const int rows = std::min(attn::kTile, a.offsets[b + 1] - a.offsets[b] - row0);
  const float* base = a.qkv + (a.offsets[b] + row0) * ld + part * C + int64_t(h) * a.HD;
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < a.HD; c += 16) __builtin_prefetch(base + r * ld + c);
    __builtin_prefetch(base + r * ld + a.HD - 1);
  }
}

constexpr int kMaxHeadDim = 1024;

Status check_common(const char* op, const Tensor& qkv, const Offsets& o, int NH, int HD, float p) {
  ELMO_CHECK(NH >= 1, Code::kInput, "%s: Expected NH >= 1 but received %d", op, NH);
  ELMO_CHECK(HD >= 1 && HD <= kMaxHeadDim, Code::kInput, "%s: Expected 1 <= HD <= %d but received %d", op,
             kMaxHeadDim, HD);
  ELMO_CHECK(p >= 0.0f && p < 1.0f, Code::kInput, "%s: Expected dropout_p in [0, 1) but received %g", op,
             static_cast<double>(p));
  ELMO_RETURN_IF_ERROR(check_tensor(qkv, "attention qkv", DType::kF32, {-1, -1}));
  const int64_t C = int64_t(NH) * HD;
  ELMO_CHECK(qkv.shape[1] == 3 * C, Code::kShape, "%s: qkv has %lld columns but 3*NH*HD = 3*%d*%d = %lld", op,
             (long long)qkv.shape[1], NH, HD, (long long)(3 * C));
  ELMO_CHECK(o.T == qkv.shape[0], Code::kShape, "%s: offsets describe T = %lld rows but qkv has %lld", op,
             (long long)o.T, (long long)qkv.shape[0]);
  ELMO_CHECK(o.host != nullptr, Code::kInput, "%s: offsets missing", op);
  // Offsets may have been built by hand: validate them again (O(B)) before indexing with them.
  Offsets checked;
  Status s = make_offsets(&checked, o.host, o.dev, o.B, o.T);
  if (!s.is_ok()) return Status(s.code(), std::string(op) + ": " + s.message());
  return Status::ok();
}

Status check_cpu(const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    ELMO_CHECK(t->device == Device::kCpu, Code::kInput, "%s: Expected CPU tensors but received a device tensor", op);
  return Status::ok();
}

}  // namespace

Status attention_forward(const Ctx& c, Tensor out, Tensor lse, Tensor qkv, const Offsets& o, int NH, int HD,
                         float dropout_p, uint64_t seed, uint64_t stream) {
  const char* op = "attention_forward";
  ELMO_RETURN_IF_ERROR(check_common(op, qkv, o, NH, HD, dropout_p));
  const int64_t T = qkv.shape[0], C = int64_t(NH) * HD;
  ELMO_RETURN_IF_ERROR(check_tensor(out, "attention out", DType::kF32, {T, C}));
  ELMO_RETURN_IF_ERROR(check_tensor(lse, "attention lse", DType::kF32, {NH, T}));
  ELMO_RETURN_IF_ERROR(check_cpu(op, {&out, &lse, &qkv}));

  attn::Args a;
  a.out = out.f32();
  a.lse = lse.f32();
  a.qkv = qkv.f32();
  a.offsets = o.host;
  a.B = o.B;
  a.T = T;
  a.NH = NH;
  a.HD = HD;
  a.p = dropout_p;
  a.seed = seed;
  a.stream = stream;

  // Work items: (sequence, head, query tile), each of at most kTile queries. The query tiles
  // of one (sequence, head) are consecutive so that its keys and values stay in cache.
  struct Item {
    int32_t b, h, qb;
  };
  // The work list lives in a grow-once buffer of the calling thread (no allocation per step);
  // `items` is a reference, so the workers read the caller's list.
  static thread_local std::vector<Item> items_buf;
  std::vector<Item>& items = items_buf;
  items.clear();
  for (int b = 0; b < o.B; ++b) {
    const int len = o.host[b + 1] - o.host[b];
    for (int h = 0; h < NH; ++h)
      for (int qb = 0; qb * attn::kTile < len; ++qb) items.push_back({b, h, qb});
  }
  const ForwardFn fn = forward_fn(c.isa);
  const size_t floats = attn::forward_scratch_floats(HD);
  c.pool->parallel_for(static_cast<int64_t>(items.size()), [&](int64_t w) {
    const Item& it = items[static_cast<size_t>(w)];
    // Items are claimed in order: start bringing the next one's queries (and, when it starts
    // a new (sequence, head), its first keys and values) in while this one computes.
    if (static_cast<size_t>(w) + 1 < items.size()) {
      const Item& nx = items[static_cast<size_t>(w) + 1];
      prefetch_tile(a, nx.b, nx.h, nx.qb * attn::kTile, 0);
      if (nx.qb == 0) {
        prefetch_tile(a, nx.b, nx.h, 0, 1);
        prefetch_tile(a, nx.b, nx.h, 0, 2);
      }
    }
    fn(a, it.b, it.h, it.qb, thread_scratch(floats));
  });
  return Status::ok();
}

Status attention_backward(const Ctx& c, Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                          const Offsets& o, int NH, int HD, float dropout_p, uint64_t seed, uint64_t stream) {
  const char* op = "attention_backward";
  ELMO_RETURN_IF_ERROR(check_common(op, qkv, o, NH, HD, dropout_p));
  const int64_t T = qkv.shape[0], C = int64_t(NH) * HD;
  ELMO_RETURN_IF_ERROR(check_tensor(dqkv, "attention dqkv", DType::kF32, {T, 3 * C}));
  ELMO_RETURN_IF_ERROR(check_tensor(dout, "attention dout", DType::kF32, {T, C}));
  ELMO_RETURN_IF_ERROR(check_tensor(out, "attention out", DType::kF32, {T, C}));
  ELMO_RETURN_IF_ERROR(check_tensor(lse, "attention lse", DType::kF32, {NH, T}));
  ELMO_RETURN_IF_ERROR(check_cpu(op, {&dqkv, &dout, &qkv, &out, &lse}));
  ELMO_CHECK(dqkv.data != qkv.data, Code::kInput, "%s: dqkv must not alias qkv", op);

  attn::Args a;
  a.dqkv = dqkv.f32();
  a.qkv = qkv.f32();
  a.dout = dout.f32();
  a.o = out.f32();
  a.lse_in = lse.f32();
  a.offsets = o.host;
  a.B = o.B;
  a.T = T;
  a.NH = NH;
  a.HD = HD;
  a.p = dropout_p;
  a.seed = seed;
  a.stream = stream;

  // Work items: (sequence, head), longest sequences first so the last items to finish are short.
  static thread_local std::vector<int32_t> order_buf;  // grow-once, as in the forward
  std::vector<int32_t>& order = order_buf;
  order.clear();
  for (int b = 0; b < o.B; ++b)
    if (o.host[b + 1] > o.host[b]) order.push_back(b);
  // Longest first, ties by index: the stable order without stable_sort's temporary buffer.
  std::sort(order.begin(), order.end(), [&](int32_t x, int32_t y) {
    const int32_t lx = o.host[x + 1] - o.host[x], ly = o.host[y + 1] - o.host[y];
    return lx != ly ? lx > ly : x < y;
  });
  const BackwardFn fn = backward_fn(c.isa);
  const size_t floats = attn::backward_scratch_floats(HD);
  c.pool->parallel_for(static_cast<int64_t>(order.size()) * NH, [&](int64_t w) {
    fn(a, order[static_cast<size_t>(w / NH)], static_cast<int>(w % NH), thread_scratch(floats));
  });
  return Status::ok();
}

}  // namespace elmo::cpu
