// Losses: softmax cross-entropy with an ignore index, and multi-label BCE with logits.
//
// Cross-entropy, per row i of logits (N, V), target t_i:
//   lse_i    = m_i + log Σ_j exp(x_ij - m_i),  m_i = max_j x_ij      (stable; lse saved)
//   loss_i   = lse_i - x_i,t_i        (0 where t_i == ignore_index; lse_i is still written)
//   dlogits  = (exp(x_ij - lse_i) - [j == t_i]) * scale   (=; zero rows where ignored)
// BCE with logits, elementwise over (N, L), targets y in [0, 1]:
//   loss     = softplus(x) - x y = max(x, 0) - x y + log1p(exp(-|x|))
//   dlogits  = (sigmoid(x) - y) * scale, formed over 1 + exp(-|x|) so nothing overflows or cancels
// Targets are checked before anything is written (ERR_INPUT). Rows (CE) and fixed element
// chunks (BCE) are independent, so any thread count gives the same bits. dlogits may alias
// logits.
#include <algorithm>
#include <cmath>

#include "cpu/ops.h"

namespace elmo::cpu {

#define ELMO_DECLARE_CE_ROWS(ns)                                                                  \
  namespace ns {                                                                                  \
  float ce_row_lse(const float* x, int64_t V);                                                    \
  void ce_row_backward(float* dx, const float* x, int64_t V, float lse, int32_t target, float scale); \
  }
ELMO_DECLARE_CE_ROWS(avx2)
ELMO_DECLARE_CE_ROWS(avx512)
#undef ELMO_DECLARE_CE_ROWS

namespace {

constexpr int64_t kChunk = 8192;  // elements per task (BCE) / target elements per task (CE rows)

float ce_row_lse_scalar(const float* x, int64_t V) {
  float mx = x[0];
  for (int64_t j = 1; j < V; ++j) mx = std::max(mx, x[j]);
  double s = 0;
  for (int64_t j = 0; j < V; ++j) s += std::exp(x[j] - mx);
  return mx + static_cast<float>(std::log(s));
}

void ce_row_backward_scalar(float* dx, const float* x, int64_t V, float lse, int32_t target, float scale) {
  const float pt = std::exp(x[target] - lse);
  for (int64_t j = 0; j < V; ++j) dx[j] = std::exp(x[j] - lse) * scale;
  dx[target] = (pt - 1.0f) * scale;
}

// Runs fn(i) for every row, rows grouped into tasks of about kChunk elements.
template <typename F>
void for_rows(const Ctx& ctx, int64_t N, int64_t V, const F& fn) {
  const int64_t rows = std::max<int64_t>(1, kChunk / std::max<int64_t>(V, 1));
  ctx.pool->parallel_for((N + rows - 1) / rows, [&](int64_t k) {
    const int64_t i1 = std::min(N, (k + 1) * rows);
    for (int64_t i = k * rows; i < i1; ++i) fn(i);
  });
}

Status check_targets(const char* op, const int32_t* t, int64_t N, int64_t V, int ignore_index) {
  for (int64_t i = 0; i < N; ++i)
    ELMO_CHECK(t[i] == ignore_index || (t[i] >= 0 && t[i] < V), Code::kInput,
               "%s: targets[%lld] = %d is outside [0, %lld) and is not ignore_index (%d)", op,
               static_cast<long long>(i), t[i], static_cast<long long>(V), ignore_index);
  return Status::ok();
}

Status check_ce(const char* op, const Tensor& logits, const Tensor& targets, int64_t* N, int64_t* V) {
  std::string what = std::string(op) + ": logits";
  ELMO_RETURN_IF_ERROR(check_tensor(logits, what.c_str(), DType::kF32, {-1, -1}));
  *N = logits.shape[0];
  *V = logits.shape[1];
  ELMO_CHECK(*V >= 1, Code::kShape, "%s: logits need V >= 1, received %s", op, logits.describe().c_str());
  what = std::string(op) + ": targets";
  return check_tensor(targets, what.c_str(), DType::kI32, {*N});
}

Status check_bce(const char* op, const Tensor& out, const char* out_name, const Tensor& logits,
                 const Tensor& targets) {
  std::string what = std::string(op) + ": logits";
  ELMO_RETURN_IF_ERROR(check_tensor(logits, what.c_str(), DType::kF32, {-1, -1}));
  const int64_t N = logits.shape[0], L = logits.shape[1];
  what = std::string(op) + ": targets";
  ELMO_RETURN_IF_ERROR(check_tensor(targets, what.c_str(), DType::kF32, {N, L}));
  what = std::string(op) + ": " + out_name;
  ELMO_RETURN_IF_ERROR(check_tensor(out, what.c_str(), DType::kF32, {N, L}));
  const float* y = targets.f32();
  for (int64_t i = 0; i < N * L; ++i)
    ELMO_CHECK(y[i] >= 0.0f && y[i] <= 1.0f, Code::kInput, "%s: targets[%lld] = %g is outside [0, 1]", op,
               static_cast<long long>(i), static_cast<double>(y[i]));
  return Status::ok();
}

}  // namespace

Status cross_entropy_forward(const Ctx& ctx, Tensor losses, Tensor lse, Tensor logits, Tensor targets,
                             int ignore_index) {
  int64_t N, V;
  ELMO_RETURN_IF_ERROR(check_ce("cross_entropy_forward", logits, targets, &N, &V));
  ELMO_RETURN_IF_ERROR(check_tensor(losses, "cross_entropy_forward: losses", DType::kF32, {N}));
  ELMO_RETURN_IF_ERROR(check_tensor(lse, "cross_entropy_forward: lse", DType::kF32, {N}));
  ELMO_RETURN_IF_ERROR(check_targets("cross_entropy_forward", targets.i32(), N, V, ignore_index));
  auto row_lse = ce_row_lse_scalar;
  if (ctx.isa == Isa::kAvx512) row_lse = avx512::ce_row_lse;
  else if (ctx.isa == Isa::kAvx2) row_lse = avx2::ce_row_lse;
  const float* x = logits.f32();
  const int32_t* t = targets.i32();
  float* lo = losses.f32();
  float* ls = lse.f32();
  for_rows(ctx, N, V, [&](int64_t i) {
    const float l = row_lse(x + i * V, V);
    ls[i] = l;
    lo[i] = t[i] == ignore_index ? 0.0f : l - x[i * V + t[i]];
  });
  return Status::ok();
}

Status cross_entropy_backward(const Ctx& ctx, Tensor dlogits, Tensor logits, Tensor lse, Tensor targets, float scale,
                              int ignore_index) {
  int64_t N, V;
  ELMO_RETURN_IF_ERROR(check_ce("cross_entropy_backward", logits, targets, &N, &V));
  ELMO_RETURN_IF_ERROR(check_tensor(dlogits, "cross_entropy_backward: dlogits", DType::kF32, {N, V}));
  ELMO_RETURN_IF_ERROR(check_tensor(lse, "cross_entropy_backward: lse", DType::kF32, {N}));
  ELMO_CHECK(std::isfinite(scale), Code::kInput, "cross_entropy_backward: scale must be finite, received %g",
             static_cast<double>(scale));
  ELMO_RETURN_IF_ERROR(check_targets("cross_entropy_backward", targets.i32(), N, V, ignore_index));
  auto row = ce_row_backward_scalar;
  if (ctx.isa == Isa::kAvx512) row = avx512::ce_row_backward;
  else if (ctx.isa == Isa::kAvx2) row = avx2::ce_row_backward;
  const float* x = logits.f32();
  const int32_t* t = targets.i32();
  const float* ls = lse.f32();
  float* dx = dlogits.f32();
  for_rows(ctx, N, V, [&](int64_t i) {
    if (t[i] == ignore_index) std::fill(dx + i * V, dx + (i + 1) * V, 0.0f);
    else row(dx + i * V, x + i * V, V, ls[i], t[i], scale);
  });
  return Status::ok();
}

Status bce_forward(const Ctx& ctx, Tensor losses, Tensor logits, Tensor targets) {
  ELMO_RETURN_IF_ERROR(check_bce("bce_forward", losses, "losses", logits, targets));
  const float* x = logits.f32();
  const float* y = targets.f32();
  float* lo = losses.f32();
  const int64_t n = logits.numel();
  ctx.pool->parallel_for((n + kChunk - 1) / kChunk, [&](int64_t k) {
    const int64_t e = std::min(n, (k + 1) * kChunk);
    for (int64_t i = k * kChunk; i < e; ++i)
      lo[i] = std::max(x[i], 0.0f) - x[i] * y[i] + std::log1p(std::exp(-std::fabs(x[i])));
  });
  return Status::ok();
}

Status bce_backward(const Ctx& ctx, Tensor dlogits, Tensor logits, Tensor targets, float scale) {
  ELMO_RETURN_IF_ERROR(check_bce("bce_backward", dlogits, "dlogits", logits, targets));
  ELMO_CHECK(std::isfinite(scale), Code::kInput, "bce_backward: scale must be finite, received %g",
             static_cast<double>(scale));
  const float* x = logits.f32();
  const float* y = targets.f32();
  float* dx = dlogits.f32();
  const int64_t n = logits.numel();
  ctx.pool->parallel_for((n + kChunk - 1) / kChunk, [&](int64_t k) {
    const int64_t e = std::min(n, (k + 1) * kChunk);
    for (int64_t i = k * kChunk; i < e; ++i) {
      // sigmoid(x) - y over a common denominator, z = exp(-|x|) in (0, 1]: no cancellation
      // against 1 when y is a hard 0/1 label (1 - y is exact for y in [0.5, 1]).
      const float z = std::exp(-std::fabs(x[i]));
      const float yi = y[i];
      const float num = x[i] >= 0.0f ? (1.0f - yi) - yi * z : z * (1.0f - yi) - yi;
      dx[i] = num / (1.0f + z) * scale;
    }
  });
  return Status::ok();
}

}  // namespace elmo::cpu
