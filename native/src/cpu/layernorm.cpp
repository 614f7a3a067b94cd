// LayerNorm fused with the residual add, forward and backward.
//
//   x    = inp + residual                      (T, C)   residual optional
//   mean = Σ x / C,  var = Σ (x - mean)² / C   two passes, accumulated in double
//   rstd = 1 / sqrt(var + eps)
//   out  = (x - mean) * rstd * weight + bias   in f32 with the f32-rounded mean and rstd
//
// Backward, with xhat = (x - mean) * rstd and dxhat = dout * weight:
//   dinp    (=)  = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
//   dweight (+=) = Σ_t dout * xhat,   dbias (+=) = Σ_t dout
// Rows are independent, so the forward and dinp parallelize over any row split. dweight and
// dbias are reduced deterministically: each fixed chunk of kRowsPerChunk rows sums its rows
// (in row order) into its own partial, then the partials are added in chunk order in double.
// Aliasing: out / sum_out may be the same memory as inp / residual (each element is read
// before it is written); dinp may be dout or x.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/ops.h"

namespace elmo::cpu {

#define ELMO_DECLARE_LN_ROWS(ns)                                                                            \
  namespace ns {                                                                                            \
  void layernorm_forward_row(float* out, float* sum_out, float* mean_out, float* rstd_out, const float* inp, \
                             const float* res, const float* w, const float* b, int64_t C, float eps);        \
  void layernorm_backward_row(float* dinp, float* dw_part, float* db_part, const float* dout, const float* x, \
                              const float* w, float mean, float rstd, int64_t C);                           \
  }
ELMO_DECLARE_LN_ROWS(avx2)
ELMO_DECLARE_LN_ROWS(avx512)
#undef ELMO_DECLARE_LN_ROWS

namespace {

constexpr int64_t kRowsPerChunk = 32;   // fixed: the reduction order of dweight/dbias
constexpr int64_t kColsPerChunk = 256;  // for combining partials

void forward_row_scalar(float* out, float* sum_out, float* mean_out, float* rstd_out, const float* inp,
                        const float* res, const float* w, const float* b, int64_t C, float eps) {
  double s = 0;
  for (int64_t c = 0; c < C; ++c) s += static_cast<double>(res ? inp[c] + res[c] : inp[c]);
  const double mean = s / static_cast<double>(C);
  double q = 0;
  for (int64_t c = 0; c < C; ++c) {
    const double d = static_cast<double>(res ? inp[c] + res[c] : inp[c]) - mean;
    q += d * d;
  }
  const double var = q / static_cast<double>(C);
  const float mean_f = static_cast<float>(mean);
  const float rstd_f = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
  for (int64_t c = 0; c < C; ++c) {
    const float x = res ? inp[c] + res[c] : inp[c];
    const float y = (x - mean_f) * rstd_f * w[c] + b[c];
    if (sum_out) sum_out[c] = x;
    out[c] = y;
  }
  if (mean_out) *mean_out = mean_f;
  if (rstd_out) *rstd_out = rstd_f;
}

void backward_row_scalar(float* dinp, float* dw_part, float* db_part, const float* dout, const float* x,
                         const float* w, float mean, float rstd, int64_t C) {
  float s1 = 0, s2 = 0;
  for (int64_t c = 0; c < C; ++c) {
    const float xhat = (x[c] - mean) * rstd;
    const float dn = dout[c] * w[c];
    s1 += dn;
    s2 += dn * xhat;
    dw_part[c] += dout[c] * xhat;
    db_part[c] += dout[c];
  }
  const float m1 = s1 / static_cast<float>(C), m2 = s2 / static_cast<float>(C);
  for (int64_t c = 0; c < C; ++c) {
    const float xhat = (x[c] - mean) * rstd;
    const float dn = dout[c] * w[c];
    dinp[c] = rstd * (dn - m1 - xhat * m2);
  }
}

// Grow-only scratch for the per-chunk partials (the calling thread owns it for the call).
float* scratch(size_t n) {
  static thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

}  // namespace

Status layernorm_forward(const Ctx& ctx, Tensor out, Tensor sum_out, Tensor mean, Tensor rstd, Tensor inp,
                         Tensor residual, Tensor weight, Tensor bias, float eps) {
  ELMO_RETURN_IF_ERROR(check_tensor(inp, "layernorm_forward: inp", DType::kF32, {-1, -1}));
  const int64_t T = inp.shape[0], C = inp.shape[1];
  ELMO_CHECK(C >= 1, Code::kShape, "layernorm_forward: C must be at least 1, received %s", inp.describe().c_str());
  ELMO_RETURN_IF_ERROR(check_tensor(out, "layernorm_forward: out", DType::kF32, {T, C}));
  ELMO_RETURN_IF_ERROR(check_optional(sum_out, "layernorm_forward: sum_out", DType::kF32, {T, C}));
  ELMO_RETURN_IF_ERROR(check_optional(mean, "layernorm_forward: mean", DType::kF32, {T}));
  ELMO_RETURN_IF_ERROR(check_optional(rstd, "layernorm_forward: rstd", DType::kF32, {T}));
  ELMO_RETURN_IF_ERROR(check_optional(residual, "layernorm_forward: residual", DType::kF32, {T, C}));
  ELMO_RETURN_IF_ERROR(check_tensor(weight, "layernorm_forward: weight", DType::kF32, {C}));
  ELMO_RETURN_IF_ERROR(check_tensor(bias, "layernorm_forward: bias", DType::kF32, {C}));
  ELMO_CHECK(std::isfinite(eps) && eps >= 0, Code::kInput, "layernorm_forward: eps must be finite and >= 0, received %g",
             static_cast<double>(eps));
  ELMO_CHECK(sum_out.empty() || sum_out.data != out.data, Code::kInput,
             "layernorm_forward: sum_out and out must be different memory");

  auto row = forward_row_scalar;
  if (ctx.isa == Isa::kAvx512) row = avx512::layernorm_forward_row;
  else if (ctx.isa == Isa::kAvx2) row = avx2::layernorm_forward_row;

  const float* in = inp.f32();
  const float* res = residual.empty() ? nullptr : residual.f32();
  const float* w = weight.f32();
  const float* b = bias.f32();
  float* o = out.f32();
  float* so = sum_out.empty() ? nullptr : sum_out.f32();
  float* mu = mean.empty() ? nullptr : mean.f32();
  float* rs = rstd.empty() ? nullptr : rstd.f32();
  // Rows are independent here (only the backward's reductions need kRowsPerChunk), so small
  // batches split finer: at least two tasks per thread, of 4 to kRowsPerChunk rows. A 32-token
  // forward at batch 1 would otherwise run each of its layer norms on one thread.
  const int64_t per_thread = (T + 2 * ctx.pool->threads() - 1) / (2 * ctx.pool->threads());
  const int64_t rows = std::clamp<int64_t>(per_thread, 4, kRowsPerChunk);
  const int64_t nchunks = (T + rows - 1) / rows;
  ctx.pool->parallel_for(nchunks, [&](int64_t k) {
    const int64_t t1 = std::min(T, (k + 1) * rows);
    for (int64_t t = k * rows; t < t1; ++t)
      row(o + t * C, so ? so + t * C : nullptr, mu ? mu + t : nullptr, rs ? rs + t : nullptr, in + t * C,
          res ? res + t * C : nullptr, w, b, C, eps);
  });
  return Status::ok();
}

Status layernorm_backward(const Ctx& ctx, Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout, Tensor x,
                          Tensor weight, Tensor mean, Tensor rstd) {
  ELMO_RETURN_IF_ERROR(check_tensor(dout, "layernorm_backward: dout", DType::kF32, {-1, -1}));
  const int64_t T = dout.shape[0], C = dout.shape[1];
  ELMO_CHECK(C >= 1, Code::kShape, "layernorm_backward: C must be at least 1, received %s", dout.describe().c_str());
  ELMO_RETURN_IF_ERROR(check_tensor(dinp, "layernorm_backward: dinp", DType::kF32, {T, C}));
  ELMO_RETURN_IF_ERROR(check_tensor(dweight, "layernorm_backward: dweight", DType::kF32, {C}));
  ELMO_RETURN_IF_ERROR(check_tensor(dbias, "layernorm_backward: dbias", DType::kF32, {C}));
  ELMO_RETURN_IF_ERROR(check_tensor(x, "layernorm_backward: x", DType::kF32, {T, C}));
  ELMO_RETURN_IF_ERROR(check_tensor(weight, "layernorm_backward: weight", DType::kF32, {C}));
  ELMO_RETURN_IF_ERROR(check_tensor(mean, "layernorm_backward: mean", DType::kF32, {T}));
  ELMO_RETURN_IF_ERROR(check_tensor(rstd, "layernorm_backward: rstd", DType::kF32, {T}));
  if (T == 0) return Status::ok();

  auto row = backward_row_scalar;
  if (ctx.isa == Isa::kAvx512) row = avx512::layernorm_backward_row;
  else if (ctx.isa == Isa::kAvx2) row = avx2::layernorm_backward_row;

  const int64_t nchunks = (T + kRowsPerChunk - 1) / kRowsPerChunk;
  float* part = scratch(static_cast<size_t>(nchunks * 2 * C));  // (nchunks, 2, C): dweight, dbias
  const float* dy = dout.f32();
  const float* xs = x.f32();
  const float* w = weight.f32();
  const float* mu = mean.f32();
  const float* rs = rstd.f32();
  float* dx = dinp.f32();
  ctx.pool->parallel_for(nchunks, [&](int64_t k) {
    float* dw_part = part + k * 2 * C;
    float* db_part = dw_part + C;
    for (int64_t c = 0; c < 2 * C; ++c) dw_part[c] = 0.0f;
    const int64_t t1 = std::min(T, (k + 1) * kRowsPerChunk);
    for (int64_t t = k * kRowsPerChunk; t < t1; ++t)
      row(dx + t * C, dw_part, db_part, dy + t * C, xs + t * C, w, mu[t], rs[t], C);
  });
  float* dw = dweight.f32();
  float* db = dbias.f32();
  ctx.pool->parallel_for((C + kColsPerChunk - 1) / kColsPerChunk, [&](int64_t j) {
    const int64_t c1 = std::min(C, (j + 1) * kColsPerChunk);
    for (int64_t c = j * kColsPerChunk; c < c1; ++c) {
      double sw = dw[c], sb = db[c];
      for (int64_t k = 0; k < nchunks; ++k) {
        sw += part[k * 2 * C + c];
        sb += part[k * 2 * C + C + c];
      }
      dw[c] = static_cast<float>(sw);
      db[c] = static_cast<float>(sb);
    }
  });
  return Status::ok();
}

}  // namespace elmo::cpu
