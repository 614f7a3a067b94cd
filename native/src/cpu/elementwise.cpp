// Elementwise ops: GELU (erf form), tanh, inverted dropout, row softmax.
//
//   gelu(x)  = x Φ(x) = x (1 + erf(x / sqrt 2)) / 2        gelu'(x) = Φ(x) + x φ(x)
//   tanh     : backward uses the forward output y:         dinp = dout (1 - y²)
//   dropout  : element e (flat index) kept when dropout_keep(seed, stream, e, p), then scaled
//              by 1/(1-p) computed in f32; dropped ones are 0. p == 0 copies. The backward
//              applies the same mask and scale to dout. p must be in [0, 1).
//   softmax  : out[i, :] = exp(x - max) / Σ exp(x - max) over each row
// Work is split into fixed chunks of kChunk elements (or kRowsPerChunk rows); every element
// depends only on its own inputs, so any thread count gives the same bits. Activation
// gradients are written (=). out may alias inp and dinp may alias dout throughout.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/ops.h"
#include "cpu/philox_words.h"
#include "elmo/philox.h"

namespace elmo::cpu {

#define ELMO_DECLARE_ELEMENTWISE(ns)                                                     \
  namespace ns {                                                                         \
  void gelu_forward_span(float* out, const float* inp, int64_t n);                       \
  void gelu_backward_span(float* dinp, const float* dout, const float* inp, int64_t n);  \
  void softmax_row(float* out, const float* x, int64_t V);                               \
  }
ELMO_DECLARE_ELEMENTWISE(avx2)
ELMO_DECLARE_ELEMENTWISE(avx512)
#undef ELMO_DECLARE_ELEMENTWISE

namespace {

constexpr int64_t kChunk = 8192;  // elements per task (a multiple of the 4 words of a Philox block)

// Both tensors f32, present, same shape.
Status check_pair(const char* op, const char* out_name, const Tensor& out, const char* in_name, const Tensor& in) {
  ELMO_CHECK(!in.empty(), Code::kInput, "%s: %s is missing (null data)", op, in_name);
  ELMO_CHECK(!out.empty(), Code::kInput, "%s: %s is missing (null data)", op, out_name);
  ELMO_CHECK(in.dtype == DType::kF32, Code::kDType, "%s: expected dtype f32 for %s but received %s", op, in_name,
             dtype_name(in.dtype));
  ELMO_CHECK(out.dtype == DType::kF32, Code::kDType, "%s: expected dtype f32 for %s but received %s", op, out_name,
             dtype_name(out.dtype));
  bool same = out.ndim == in.ndim;
  for (int i = 0; same && i < in.ndim; ++i) same = out.shape[i] == in.shape[i] && in.shape[i] >= 0;
  ELMO_CHECK(same, Code::kShape, "%s: %s %s must have the shape of %s %s", op, out_name, out.describe().c_str(),
             in_name, in.describe().c_str());
  return Status::ok();
}

// Runs fn(begin, end) over [0, n) in fixed chunks.
template <typename F>
void for_chunks(const Ctx& ctx, int64_t n, const F& fn) {
  ctx.pool->parallel_for((n + kChunk - 1) / kChunk, [&](int64_t k) { fn(k * kChunk, std::min(n, (k + 1) * kChunk)); });
}

inline float normal_cdf(float x) { return 0.5f * std::erfc(x * -0.70710678118654752f); }
inline float normal_pdf(float x) { return std::exp(-0.5f * x * x) * 0.39894228040143268f; }

void gelu_forward_scalar(float* out, const float* inp, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = inp[i] * normal_cdf(inp[i]);
}
void gelu_backward_scalar(float* dinp, const float* dout, const float* inp, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float x = inp[i];
    dinp[i] = dout[i] * (normal_cdf(x) + x * normal_pdf(x));
  }
}
void softmax_row_scalar(float* out, const float* x, int64_t V) {
  float mx = x[0];
  for (int64_t j = 1; j < V; ++j) mx = std::max(mx, x[j]);
  double s = 0;
  for (int64_t j = 0; j < V; ++j) {
    out[j] = std::exp(x[j] - mx);
    s += out[j];
  }
  const float inv = static_cast<float>(1.0 / s);
  for (int64_t j = 0; j < V; ++j) out[j] *= inv;
}

// out[e] = keep(e) ? in[e] * scale : 0 for e in [begin, end). One Philox block gives the words
// of 4 consecutive elements; the decision is philox_uniform's (24 high bits vs p), exactly
// dropout_keep(seed, stream, e, p) as every backend draws it.
void dropout_span(float* out, const float* in, int64_t begin, int64_t end, float p, float scale, uint64_t seed,
                  uint64_t stream) {
  uint32_t words[1024];
  for (int64_t e0 = begin; e0 < end; e0 += 1024) {
    const int64_t n = std::min<int64_t>(1024, end - e0);
    philox_words(words, static_cast<uint64_t>(e0), n, seed, stream);
    for (int64_t k = 0; k < n; ++k) {
      const float u = static_cast<float>(words[k] >> 8) * (1.0f / 16777216.0f);  // as dropout_keep()
      out[e0 + k] = u >= p ? in[e0 + k] * scale : 0.0f;
    }
  }
}

Status dropout_apply(const Ctx& ctx, const char* op, const char* out_name, Tensor out, const char* in_name,
                     Tensor in, float p, uint64_t seed, uint64_t stream) {
  ELMO_RETURN_IF_ERROR(check_pair(op, out_name, out, in_name, in));
  ELMO_CHECK(p >= 0.0f && p < 1.0f, Code::kInput, "%s: p must be in [0, 1), received %g", op, static_cast<double>(p));
  const int64_t n = in.numel();
  if (p == 0.0f) {
    if (out.data != in.data) std::memmove(out.data, in.data, static_cast<size_t>(n) * sizeof(float));
    return Status::ok();
  }
  const float scale = 1.0f / (1.0f - p);
  float* o = out.f32();
  const float* x = in.f32();
  for_chunks(ctx, n, [&](int64_t b, int64_t e) { dropout_span(o, x, b, e, p, scale, seed, stream); });
  return Status::ok();
}

}  // namespace

Status gelu_forward(const Ctx& ctx, Tensor out, Tensor inp) {
  ELMO_RETURN_IF_ERROR(check_pair("gelu_forward", "out", out, "inp", inp));
  auto span = gelu_forward_scalar;
  if (ctx.isa == Isa::kAvx512) span = avx512::gelu_forward_span;
  else if (ctx.isa == Isa::kAvx2) span = avx2::gelu_forward_span;
  float* o = out.f32();
  const float* x = inp.f32();
  for_chunks(ctx, inp.numel(), [&](int64_t b, int64_t e) { span(o + b, x + b, e - b); });
  return Status::ok();
}

Status gelu_backward(const Ctx& ctx, Tensor dinp, Tensor dout, Tensor inp) {
  ELMO_RETURN_IF_ERROR(check_pair("gelu_backward", "dinp", dinp, "inp", inp));
  ELMO_RETURN_IF_ERROR(check_pair("gelu_backward", "dout", dout, "inp", inp));
  auto span = gelu_backward_scalar;
  if (ctx.isa == Isa::kAvx512) span = avx512::gelu_backward_span;
  else if (ctx.isa == Isa::kAvx2) span = avx2::gelu_backward_span;
  float* dx = dinp.f32();
  const float* dy = dout.f32();
  const float* x = inp.f32();
  for_chunks(ctx, inp.numel(), [&](int64_t b, int64_t e) { span(dx + b, dy + b, x + b, e - b); });
  return Status::ok();
}

Status tanh_forward(const Ctx& ctx, Tensor out, Tensor inp) {
  ELMO_RETURN_IF_ERROR(check_pair("tanh_forward", "out", out, "inp", inp));
  float* o = out.f32();
  const float* x = inp.f32();
  for_chunks(ctx, inp.numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) o[i] = std::tanh(x[i]);
  });
  return Status::ok();
}

Status tanh_backward(const Ctx& ctx, Tensor dinp, Tensor dout, Tensor out) {
  ELMO_RETURN_IF_ERROR(check_pair("tanh_backward", "dinp", dinp, "out", out));
  ELMO_RETURN_IF_ERROR(check_pair("tanh_backward", "dout", dout, "out", out));
  float* dx = dinp.f32();
  const float* dy = dout.f32();
  const float* y = out.f32();
  for_chunks(ctx, out.numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
  });
  return Status::ok();
}

Status dropout_forward(const Ctx& ctx, Tensor out, Tensor inp, float p, uint64_t seed, uint64_t stream) {
  return dropout_apply(ctx, "dropout_forward", "out", out, "inp", inp, p, seed, stream);
}

Status dropout_backward(const Ctx& ctx, Tensor dinp, Tensor dout, float p, uint64_t seed, uint64_t stream) {
  return dropout_apply(ctx, "dropout_backward", "dinp", dinp, "dout", dout, p, seed, stream);
}

Status softmax_forward(const Ctx& ctx, Tensor out, Tensor inp) {
  ELMO_CHECK(inp.empty() || inp.ndim == 2, Code::kShape, "softmax_forward: inp must be [N, V], received %s",
             inp.describe().c_str());
  ELMO_RETURN_IF_ERROR(check_pair("softmax_forward", "out", out, "inp", inp));
  const int64_t N = inp.shape[0], V = inp.shape[1];
  ELMO_CHECK(V >= 1 || N == 0, Code::kShape, "softmax_forward: V must be at least 1, received %s",
             inp.describe().c_str());
  auto row = softmax_row_scalar;
  if (ctx.isa == Isa::kAvx512) row = avx512::softmax_row;
  else if (ctx.isa == Isa::kAvx2) row = avx2::softmax_row;
  float* o = out.f32();
  const float* x = inp.f32();
  const int64_t rows_per_task = std::max<int64_t>(1, kChunk / std::max<int64_t>(V, 1));
  ctx.pool->parallel_for((N + rows_per_task - 1) / rows_per_task, [&](int64_t k) {
    const int64_t i1 = std::min(N, (k + 1) * rows_per_task);
    for (int64_t i = k * rows_per_task; i < i1; ++i) row(o + i * V, x + i * V, V);
  });
  return Status::ok();
}

}  // namespace elmo::cpu
