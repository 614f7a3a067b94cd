// Fused AdamW over one parameter tensor, and the sum of squares for global-norm clipping.
//
//   g = grad * grad_scale
//   m = beta1 m + (1 - beta1) g                     v = beta2 v + (1 - beta2) g²
//   param -= lr * ( (m / bc1) / (sqrt(v / bc2) + eps) + weight_decay * param )
//   bc1 = 1 - beta1^step, bc2 = 1 - beta2^step (computed in double, used in f32)
// Decay is decoupled (applied to the parameter, not through the gradient); the caller passes
// weight_decay = 0 for biases and LayerNorm. Every ISA runs the same f32 operation sequence
// with no fused multiply-add, so results are bit-identical across ISAs and thread counts.
//
// sum_squares: *result += Σ x² in double. Fixed chunks of kSumChunk elements each produce a
// double partial; the partials are added in chunk order, so the sum never depends on threads.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/ops.h"

namespace elmo::cpu {

namespace avx2 {
void adamw_span(float* param, float* m, float* v, const float* grad, int64_t n, const float* k);
}
namespace avx512 {
void adamw_span(float* param, float* m, float* v, const float* grad, int64_t n, const float* k);
}

namespace {

constexpr int64_t kChunk = 8192;
constexpr int64_t kSumChunk = 16384;

void adamw_span_scalar(float* param, float* m, float* v, const float* grad, int64_t n, const float* k) {
  const float gs = k[0], b1 = k[1], c1 = k[2], b2 = k[3], c2 = k[4], bc1 = k[5], bc2 = k[6], eps = k[7], wd = k[8],
              lr = k[9];
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i] * gs;
    const float mv = b1 * m[i] + c1 * g;
    const float vv = b2 * v[i] + c2 * g * g;
    const float u = (mv / bc1) / (std::sqrt(vv / bc2) + eps) + wd * param[i];
    param[i] = param[i] - lr * u;
    m[i] = mv;
    v[i] = vv;
  }
}

Status check_like(const char* what, const Tensor& t, const Tensor& param) {
  ELMO_CHECK(!t.empty(), Code::kInput, "adamw_update: %s is missing (null data)", what);
  ELMO_CHECK(t.dtype == DType::kF32, Code::kDType, "adamw_update: expected dtype f32 for %s but received %s", what,
             dtype_name(t.dtype));
  bool same = t.ndim == param.ndim;
  for (int i = 0; same && i < t.ndim; ++i) same = t.shape[i] == param.shape[i] && t.shape[i] >= 0;
  ELMO_CHECK(same, Code::kShape, "adamw_update: %s %s must have the shape of param %s", what, t.describe().c_str(),
             param.describe().c_str());
  return Status::ok();
}

}  // namespace

Status adamw_update(const Ctx& ctx, Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWParams& p) {
  ELMO_RETURN_IF_ERROR(check_like("param", param, param));
  ELMO_RETURN_IF_ERROR(check_like("grad", grad, param));
  ELMO_RETURN_IF_ERROR(check_like("m", m, param));
  ELMO_RETURN_IF_ERROR(check_like("v", v, param));
  ELMO_CHECK(std::isfinite(p.lr) && p.lr >= 0, Code::kInput, "adamw_update: lr must be finite and >= 0, received %g",
             static_cast<double>(p.lr));
  ELMO_CHECK(p.beta1 >= 0 && p.beta1 < 1, Code::kInput, "adamw_update: beta1 must be in [0, 1), received %g",
             static_cast<double>(p.beta1));
  ELMO_CHECK(p.beta2 >= 0 && p.beta2 < 1, Code::kInput, "adamw_update: beta2 must be in [0, 1), received %g",
             static_cast<double>(p.beta2));
  ELMO_CHECK(std::isfinite(p.eps) && p.eps > 0, Code::kInput, "adamw_update: eps must be finite and > 0, received %g",
             static_cast<double>(p.eps));
  ELMO_CHECK(std::isfinite(p.weight_decay) && p.weight_decay >= 0, Code::kInput,
             "adamw_update: weight_decay must be finite and >= 0, received %g", static_cast<double>(p.weight_decay));
  ELMO_CHECK(std::isfinite(p.grad_scale), Code::kInput, "adamw_update: grad_scale must be finite, received %g",
             static_cast<double>(p.grad_scale));
  ELMO_CHECK(p.step >= 1, Code::kInput, "adamw_update: step is 1-based, received %lld",
             static_cast<long long>(p.step));
  ELMO_CHECK(param.data != grad.data && param.data != m.data && param.data != v.data && m.data != v.data &&
                 grad.data != m.data && grad.data != v.data,
             Code::kInput, "adamw_update: param, grad, m and v must be distinct memory");

  const double t = static_cast<double>(p.step);
  const float k[10] = {p.grad_scale,
                       p.beta1,
                       1.0f - p.beta1,
                       p.beta2,
                       1.0f - p.beta2,
                       static_cast<float>(1.0 - std::pow(static_cast<double>(p.beta1), t)),
                       static_cast<float>(1.0 - std::pow(static_cast<double>(p.beta2), t)),
                       p.eps,
                       p.weight_decay,
                       p.lr};
  auto span = adamw_span_scalar;
  if (ctx.isa == Isa::kAvx512) span = avx512::adamw_span;
  else if (ctx.isa == Isa::kAvx2) span = avx2::adamw_span;
  float* w = param.f32();
  float* mm = m.f32();
  float* vv = v.f32();
  const float* g = grad.f32();
  const int64_t n = param.numel();
  ctx.pool->parallel_for((n + kChunk - 1) / kChunk, [&](int64_t c) {
    const int64_t b = c * kChunk, e = std::min(n, b + kChunk);
    span(w + b, mm + b, vv + b, g + b, e - b, k);
  });
  return Status::ok();
}

Status sum_squares(const Ctx& ctx, double* result, Tensor x) {
  ELMO_CHECK(result != nullptr, Code::kInput, "sum_squares: result is missing (null)");
  ELMO_CHECK(!x.empty(), Code::kInput, "sum_squares: x is missing (null data)");
  ELMO_CHECK(x.dtype == DType::kF32, Code::kDType, "sum_squares: expected dtype f32 for x but received %s",
             dtype_name(x.dtype));
  const int64_t n = x.numel();
  const int64_t nchunks = (n + kSumChunk - 1) / kSumChunk;
  // Per-chunk partials; the buffer is kept per calling thread and only grows, so a training
  // step's clipping allocates nothing after the first step.
  // (The workers write through `part`, a pointer: naming the thread_local inside the lambda
  // would give each worker its own vector.)
  static thread_local std::vector<double> buf;
  buf.assign(static_cast<size_t>(nchunks), 0.0);
  double* part = buf.data();
  const float* xs = x.f32();
  ctx.pool->parallel_for(nchunks, [&](int64_t c) {
    const int64_t b = c * kSumChunk, e = std::min(n, b + kSumChunk);
    double s[4] = {0, 0, 0, 0};  // four fixed interleaved lanes, combined in a fixed order
    int64_t i = b;
    for (; i + 4 <= e; i += 4)
      for (int l = 0; l < 4; ++l) s[l] += static_cast<double>(xs[i + l]) * xs[i + l];
    for (; i < e; ++i) s[0] += static_cast<double>(xs[i]) * xs[i];
    part[c] = (s[0] + s[1]) + (s[2] + s[3]);
  });
  double total = 0;
  for (int64_t c = 0; c < nchunks; ++c) total += part[c];
  *result += total;
  return Status::ok();
}

}  // namespace elmo::cpu
