// Row gather and its adjoint, for masked-LM positions and [CLS] rows.
//
//   gather_rows:      out[i, :] = inp[idx[i], :]             out (N, C), inp (T, C), idx i32 (N)
//   scatter_add_rows: dinp[idx[i], :] += dout[i, :]           dinp (T, C) +=, dout (N, C)
// Every index is checked against [0, T) before anything is written (ERR_INPUT).
// The scatter is deterministic for repeated indices: work is split over fixed chunks of
// kColsPerChunk columns and each chunk walks i = 0..N-1 in order, so every element of dinp
// receives its additions in index order whatever the thread count.
#include <algorithm>
#include <cstring>

#include "cpu/ops.h"

namespace elmo::cpu {
namespace {

constexpr int64_t kColsPerChunk = 256;
constexpr int64_t kRowsPerChunk = 64;

Status check_indices(const char* op, const int32_t* idx, int64_t N, int64_t T) {
  for (int64_t i = 0; i < N; ++i)
    ELMO_CHECK(idx[i] >= 0 && idx[i] < T, Code::kInput, "%s: idx[%lld] = %d is outside [0, %lld)", op,
               static_cast<long long>(i), idx[i], static_cast<long long>(T));
  return Status::ok();
}

}  // namespace

Status gather_rows(const Ctx& ctx, Tensor out, Tensor inp, Tensor idx) {
  ELMO_RETURN_IF_ERROR(check_tensor(inp, "gather_rows: inp", DType::kF32, {-1, -1}));
  const int64_t T = inp.shape[0], C = inp.shape[1];
  ELMO_RETURN_IF_ERROR(check_tensor(idx, "gather_rows: idx", DType::kI32, {-1}));
  const int64_t N = idx.shape[0];
  ELMO_RETURN_IF_ERROR(check_tensor(out, "gather_rows: out", DType::kF32, {N, C}));
  ELMO_RETURN_IF_ERROR(check_indices("gather_rows", idx.i32(), N, T));
  const int32_t* ix = idx.i32();
  const float* x = inp.f32();
  float* o = out.f32();
  ctx.pool->parallel_for((N + kRowsPerChunk - 1) / kRowsPerChunk, [&](int64_t k) {
    const int64_t i1 = std::min(N, (k + 1) * kRowsPerChunk);
    for (int64_t i = k * kRowsPerChunk; i < i1; ++i)
      std::memmove(o + i * C, x + static_cast<int64_t>(ix[i]) * C, static_cast<size_t>(C) * sizeof(float));
  });
  return Status::ok();
}

Status scatter_add_rows(const Ctx& ctx, Tensor dinp, Tensor dout, Tensor idx) {
  ELMO_RETURN_IF_ERROR(check_tensor(dinp, "scatter_add_rows: dinp", DType::kF32, {-1, -1}));
  const int64_t T = dinp.shape[0], C = dinp.shape[1];
  ELMO_RETURN_IF_ERROR(check_tensor(idx, "scatter_add_rows: idx", DType::kI32, {-1}));
  const int64_t N = idx.shape[0];
  ELMO_RETURN_IF_ERROR(check_tensor(dout, "scatter_add_rows: dout", DType::kF32, {N, C}));
  ELMO_RETURN_IF_ERROR(check_indices("scatter_add_rows", idx.i32(), N, T));
  const int32_t* ix = idx.i32();
  const float* dy = dout.f32();
  float* dx = dinp.f32();
  ctx.pool->parallel_for((C + kColsPerChunk - 1) / kColsPerChunk, [&](int64_t k) {
    const int64_t c0 = k * kColsPerChunk, c1 = std::min(C, c0 + kColsPerChunk);
    for (int64_t i = 0; i < N; ++i) {
      float* d = dx + static_cast<int64_t>(ix[i]) * C;
      const float* g = dy + i * C;
      for (int64_t c = c0; c < c1; ++c) d[c] += g[c];
    }
  });
  return Status::ok();
}

}  // namespace elmo::cpu
