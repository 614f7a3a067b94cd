// BERT embeddings: word + position + token type, and the scatter-add backward.
//
//   out[t, :] = wte[ids[t], :] + wpe[t - offsets[b], :] + wtt[type_ids[t], :]   (summed in this order)
//   out (T, H); ids, type_ids i32 (T) (type_ids optional: type 0); wte (V, H); wpe (P, H); wtt (TV, H)
//   t in [offsets[b], offsets[b+1]): the position restarts at 0 for every packed sequence.
// Backward: dwte, dwpe, dwtt (+=) receive dout rows at the same indices. Deterministic: the
// work is split over fixed chunks of kColsPerChunk columns of H and each chunk walks the
// tokens in order, so every table row sums its tokens in token order for any thread count.
// Offsets, ids, type ids and sequence lengths are all checked before anything is written:
// an id outside its table or a sequence longer than P is ERR_INPUT.
#include <algorithm>

#include "cpu/ops.h"

namespace elmo::cpu {
namespace {

constexpr int64_t kRowsPerChunk = 32;
constexpr int64_t kColsPerChunk = 64;

Status check_offsets_for(const char* op, const Offsets& o, int64_t T, int64_t P) {
  ELMO_CHECK(o.host != nullptr, Code::kInput, "%s: offsets are missing", op);
  ELMO_CHECK(o.B >= 1, Code::kShape, "%s: need at least one sequence, received B=%d", op, o.B);
  ELMO_CHECK(o.T == T, Code::kShape, "%s: offsets describe T=%lld tokens but the tensors have %lld", op,
             static_cast<long long>(o.T), static_cast<long long>(T));
  ELMO_CHECK(o.host[0] == 0, Code::kInput, "%s: offsets[0] must be 0, received %d", op, o.host[0]);
  ELMO_CHECK(o.host[o.B] == T, Code::kShape, "%s: offsets[B] = %d but T = %lld", op, o.host[o.B],
             static_cast<long long>(T));
  for (int b = 0; b < o.B; ++b) {
    const int64_t len = static_cast<int64_t>(o.host[b + 1]) - o.host[b];
    ELMO_CHECK(len >= 0, Code::kInput, "%s: offsets decrease at %d (%d > %d)", op, b, o.host[b], o.host[b + 1]);
    ELMO_CHECK(len <= P, Code::kInput, "%s: sequence %d has %lld tokens but the position table has %lld rows", op,
               b, static_cast<long long>(len), static_cast<long long>(P));
  }
  return Status::ok();
}

Status check_ids(const char* op, const char* what, const int32_t* ids, int64_t T, int64_t V) {
  for (int64_t t = 0; t < T; ++t)
    ELMO_CHECK(ids[t] >= 0 && ids[t] < V, Code::kInput, "%s: %s[%lld] = %d is outside [0, %lld)", op, what,
               static_cast<long long>(t), ids[t], static_cast<long long>(V));
  return Status::ok();
}

// Index of the sequence holding token t (offsets non-decreasing; empty sequences skipped).
int seq_of(const Offsets& o, int64_t t) {
  const int32_t* end = o.host + o.B + 1;
  return static_cast<int>(std::upper_bound(o.host, end, static_cast<int32_t>(t)) - o.host) - 1;
}

}  // namespace

Status embedding_forward(const Ctx& ctx, Tensor out, Tensor ids, Tensor type_ids, const Offsets& o, Tensor wte,
                         Tensor wpe, Tensor wtt) {
  const char* op = "embedding_forward";
  ELMO_RETURN_IF_ERROR(check_tensor(wte, "embedding_forward: wte", DType::kF32, {-1, -1}));
  const int64_t V = wte.shape[0], H = wte.shape[1];
  ELMO_RETURN_IF_ERROR(check_tensor(wpe, "embedding_forward: wpe", DType::kF32, {-1, H}));
  ELMO_RETURN_IF_ERROR(check_tensor(wtt, "embedding_forward: wtt", DType::kF32, {-1, H}));
  const int64_t P = wpe.shape[0], TV = wtt.shape[0];
  ELMO_CHECK(TV >= 1, Code::kShape, "embedding_forward: wtt needs at least one row, received %s",
             wtt.describe().c_str());
  ELMO_RETURN_IF_ERROR(check_tensor(ids, "embedding_forward: ids", DType::kI32, {-1}));
  const int64_t T = ids.shape[0];
  ELMO_RETURN_IF_ERROR(check_optional(type_ids, "embedding_forward: type_ids", DType::kI32, {T}));
  ELMO_RETURN_IF_ERROR(check_tensor(out, "embedding_forward: out", DType::kF32, {T, H}));
  ELMO_RETURN_IF_ERROR(check_offsets_for(op, o, T, P));
  ELMO_RETURN_IF_ERROR(check_ids(op, "ids", ids.i32(), T, V));
  if (!type_ids.empty()) ELMO_RETURN_IF_ERROR(check_ids(op, "type_ids", type_ids.i32(), T, TV));

  const int32_t* id = ids.i32();
  const int32_t* ty = type_ids.empty() ? nullptr : type_ids.i32();
  const float* e = wte.f32();
  const float* p = wpe.f32();
  const float* y = wtt.f32();
  float* dst = out.f32();
  ctx.pool->parallel_for((T + kRowsPerChunk - 1) / kRowsPerChunk, [&](int64_t k) {
    const int64_t t0 = k * kRowsPerChunk, t1 = std::min(T, t0 + kRowsPerChunk);
    int b = seq_of(o, t0);
    for (int64_t t = t0; t < t1; ++t) {
      while (t >= o.host[b + 1]) ++b;
      const float* er = e + static_cast<int64_t>(id[t]) * H;
      const float* pr = p + (t - o.host[b]) * H;
      const float* yr = y + (ty ? static_cast<int64_t>(ty[t]) : 0) * H;
      float* orow = dst + t * H;
      for (int64_t h = 0; h < H; ++h) orow[h] = er[h] + pr[h] + yr[h];
    }
  });
  return Status::ok();
}

Status embedding_backward(const Ctx& ctx, Tensor dwte, Tensor dwpe, Tensor dwtt, Tensor dout, Tensor ids,
                          Tensor type_ids, const Offsets& o) {
  const char* op = "embedding_backward";
  ELMO_RETURN_IF_ERROR(check_tensor(dwte, "embedding_backward: dwte", DType::kF32, {-1, -1}));
  const int64_t V = dwte.shape[0], H = dwte.shape[1];
  ELMO_RETURN_IF_ERROR(check_tensor(dwpe, "embedding_backward: dwpe", DType::kF32, {-1, H}));
  ELMO_RETURN_IF_ERROR(check_tensor(dwtt, "embedding_backward: dwtt", DType::kF32, {-1, H}));
  const int64_t P = dwpe.shape[0], TV = dwtt.shape[0];
  ELMO_CHECK(TV >= 1, Code::kShape, "embedding_backward: dwtt needs at least one row, received %s",
             dwtt.describe().c_str());
  ELMO_RETURN_IF_ERROR(check_tensor(ids, "embedding_backward: ids", DType::kI32, {-1}));
  const int64_t T = ids.shape[0];
  ELMO_RETURN_IF_ERROR(check_optional(type_ids, "embedding_backward: type_ids", DType::kI32, {T}));
  ELMO_RETURN_IF_ERROR(check_tensor(dout, "embedding_backward: dout", DType::kF32, {T, H}));
  ELMO_RETURN_IF_ERROR(check_offsets_for(op, o, T, P));
  ELMO_RETURN_IF_ERROR(check_ids(op, "ids", ids.i32(), T, V));
  if (!type_ids.empty()) ELMO_RETURN_IF_ERROR(check_ids(op, "type_ids", type_ids.i32(), T, TV));

  const int32_t* id = ids.i32();
  const int32_t* ty = type_ids.empty() ? nullptr : type_ids.i32();
  const float* g = dout.f32();
  float* de = dwte.f32();
  float* dp = dwpe.f32();
  float* dy = dwtt.f32();
  ctx.pool->parallel_for((H + kColsPerChunk - 1) / kColsPerChunk, [&](int64_t k) {
    const int64_t h0 = k * kColsPerChunk, h1 = std::min(H, h0 + kColsPerChunk);
    for (int b = 0; b < o.B; ++b)
      for (int64_t t = o.host[b]; t < o.host[b + 1]; ++t) {
        const float* gr = g + t * H;
        float* er = de + static_cast<int64_t>(id[t]) * H;
        float* pr = dp + (t - o.host[b]) * H;
        float* yr = dy + (ty ? static_cast<int64_t>(ty[t]) : 0) * H;
        for (int64_t h = h0; h < h1; ++h) {
          er[h] += gr[h];
          pr[h] += gr[h];
          yr[h] += gr[h];
        }
      }
  });
  return Status::ok();
}

}  // namespace elmo::cpu
