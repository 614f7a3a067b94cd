// Float64 references of the non-GEMM ops (test-only). Plain loops, no threads, no tricks:
// the readable statement of each op's math against which every backend is checked.
// Same argument order as the kernels: outputs, then inputs, then dims.
// Parameter gradients accumulate (+=), activation gradients are written (=), as in backend.h.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "elmo/philox.h"

namespace elmo::ref {

// ---- embeddings -----------------------------------------------------------------------------
// out[t] = wte[ids[t]] + wpe[t - offsets[b]] + wtt[type_ids ? type_ids[t] : 0]
inline void embedding_forward(double* out,            // (T, H)
                              const int32_t* ids,     // (T)
                              const int32_t* type_ids,  // (T) or nullptr
                              const int32_t* offsets, int B,  // (B+1)
                              const double* wte, const double* wpe, const double* wtt, int64_t H) {
  for (int b = 0; b < B; ++b)
    for (int64_t t = offsets[b]; t < offsets[b + 1]; ++t) {
      const double* e = wte + ids[t] * H;
      const double* p = wpe + (t - offsets[b]) * H;
      const double* y = wtt + (type_ids ? type_ids[t] : 0) * H;
      for (int64_t h = 0; h < H; ++h) out[t * H + h] = e[h] + p[h] + y[h];
    }
}
inline void embedding_backward(double* dwte, double* dwpe, double* dwtt,  // (V,H) (P,H) (TV,H) +=
                               const double* dout,                          // (T, H)
                               const int32_t* ids, const int32_t* type_ids, const int32_t* offsets, int B,
                               int64_t H) {
  for (int b = 0; b < B; ++b)
    for (int64_t t = offsets[b]; t < offsets[b + 1]; ++t)
      for (int64_t h = 0; h < H; ++h) {
        const double g = dout[t * H + h];
        dwte[ids[t] * H + h] += g;
        dwpe[(t - offsets[b]) * H + h] += g;
        dwtt[(type_ids ? type_ids[t] : 0) * H + h] += g;
      }
}

// ---- layer norm (fused residual) -----------------------------------------------------------
// x = inp + residual; out = (x - mean) / sqrt(var + eps) * w + b, var biased (divide by C).
inline void layernorm_forward(double* out, double* sum_out, double* mean, double* rstd,  // (T,C) (T,C) (T) (T)
                              const double* inp, const double* residual,  // (T, C), residual may be nullptr
                              const double* w, const double* b, int64_t T, int64_t C, double eps) {
  std::vector<double> x(static_cast<size_t>(C));
  for (int64_t t = 0; t < T; ++t) {
    double m = 0;
    for (int64_t c = 0; c < C; ++c) {
      x[c] = inp[t * C + c] + (residual ? residual[t * C + c] : 0.0);
      m += x[c];
    }
    m /= C;
    double v = 0;
    for (int64_t c = 0; c < C; ++c) v += (x[c] - m) * (x[c] - m);
    v /= C;
    const double r = 1.0 / std::sqrt(v + eps);
    for (int64_t c = 0; c < C; ++c) {
      if (sum_out) sum_out[t * C + c] = x[c];
      out[t * C + c] = (x[c] - m) * r * w[c] + b[c];
    }
    if (mean) mean[t] = m;
    if (rstd) rstd[t] = r;
  }
}
// dinp (=) = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dout * w;
// dweight += Σ_t dout * xhat; dbias += Σ_t dout.
inline void layernorm_backward(double* dinp, double* dweight, double* dbias,  // (T,C) (C) (C)
                               const double* dout, const double* x, const double* w,  // (T,C) (T,C) (C)
                               const double* mean, const double* rstd, int64_t T, int64_t C) {
  for (int64_t t = 0; t < T; ++t) {
    const double* dy = dout + t * C;
    const double* xr = x + t * C;
    double s1 = 0, s2 = 0;
    for (int64_t c = 0; c < C; ++c) {
      const double xhat = (xr[c] - mean[t]) * rstd[t];
      s1 += dy[c] * w[c];
      s2 += dy[c] * w[c] * xhat;
      dweight[c] += dy[c] * xhat;
      dbias[c] += dy[c];
    }
    s1 /= C;
    s2 /= C;
    for (int64_t c = 0; c < C; ++c) {
      const double xhat = (xr[c] - mean[t]) * rstd[t];
      dinp[t * C + c] = rstd[t] * (dy[c] * w[c] - s1 - xhat * s2);
    }
  }
}

// ---- elementwise ----------------------------------------------------------------------------
inline double gelu(double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }
inline double gelu_grad(double x) {
  const double pdf = std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
  return 0.5 * std::erfc(-x / std::sqrt(2.0)) + x * pdf;
}
inline void gelu_forward(double* out, const double* inp, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = gelu(inp[i]);
}
inline void gelu_backward(double* dinp, const double* dout, const double* inp, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dinp[i] = dout[i] * gelu_grad(inp[i]);
}
inline void tanh_forward(double* out, const double* inp, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = std::tanh(inp[i]);
}
// Uses the forward's output y = tanh(x): dinp = dout * (1 - y²).
inline void tanh_backward(double* dinp, const double* dout, const double* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dinp[i] = dout[i] * (1.0 - out[i] * out[i]);
}
// Inverted dropout, element e kept when dropout_keep(seed, stream, e, p); kept ones scaled 1/(1-p).
inline void dropout_forward(double* out, const double* inp, int64_t n, float p, uint64_t seed, uint64_t stream) {
  const double scale = 1.0 / (1.0 - static_cast<double>(p));
  for (int64_t e = 0; e < n; ++e)
    out[e] = dropout_keep(seed, stream, static_cast<uint64_t>(e), p) ? inp[e] * scale : 0.0;
}
inline void softmax_forward(double* out, const double* inp, int64_t N, int64_t V) {
  for (int64_t i = 0; i < N; ++i) {
    const double* x = inp + i * V;
    double mx = x[0];
    for (int64_t j = 1; j < V; ++j) mx = std::max(mx, x[j]);
    double s = 0;
    for (int64_t j = 0; j < V; ++j) s += std::exp(x[j] - mx);
    for (int64_t j = 0; j < V; ++j) out[i * V + j] = std::exp(x[j] - mx) / s;
  }
}

// ---- rows -----------------------------------------------------------------------------------
inline void gather_rows(double* out, const double* inp, const int32_t* idx, int64_t N, int64_t C) {
  for (int64_t i = 0; i < N; ++i)
    for (int64_t c = 0; c < C; ++c) out[i * C + c] = inp[idx[i] * C + c];
}
inline void scatter_add_rows(double* dinp, const double* dout, const int32_t* idx, int64_t N, int64_t C) {
  for (int64_t i = 0; i < N; ++i)
    for (int64_t c = 0; c < C; ++c) dinp[idx[i] * C + c] += dout[i * C + c];
}

// ---- losses ---------------------------------------------------------------------------------
// losses[i] = lse_i - logits[i, t_i] (0 where t_i == ignore); lse_i = log Σ_j exp(logits[i, j]).
inline void cross_entropy_forward(double* losses, double* lse, const double* logits, const int32_t* targets,
                                  int64_t N, int64_t V, int ignore_index) {
  for (int64_t i = 0; i < N; ++i) {
    const double* x = logits + i * V;
    double mx = x[0];
    for (int64_t j = 1; j < V; ++j) mx = std::max(mx, x[j]);
    double s = 0;
    for (int64_t j = 0; j < V; ++j) s += std::exp(x[j] - mx);
    lse[i] = mx + std::log(s);
    losses[i] = targets[i] == ignore_index ? 0.0 : lse[i] - x[targets[i]];
  }
}
inline void cross_entropy_backward(double* dlogits, const double* logits, const int32_t* targets, int64_t N,
                                   int64_t V, double scale, int ignore_index) {
  std::vector<double> lse(static_cast<size_t>(N)), loss(static_cast<size_t>(N));
  cross_entropy_forward(loss.data(), lse.data(), logits, targets, N, V, ignore_index);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < V; ++j) {
      const bool ignored = targets[i] == ignore_index;
      const double p = std::exp(logits[i * V + j] - lse[i]);
      dlogits[i * V + j] = ignored ? 0.0 : (p - (j == targets[i] ? 1.0 : 0.0)) * scale;
    }
}
// Multi-label: loss = softplus(x) - x*y = max(x, 0) - x*y + log1p(exp(-|x|)).
inline void bce_forward(double* losses, const double* logits, const double* targets, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double x = logits[i];
    losses[i] = std::max(x, 0.0) - x * targets[i] + std::log1p(std::exp(-std::fabs(x)));
  }
}
inline void bce_backward(double* dlogits, const double* logits, const double* targets, int64_t n, double scale) {
  for (int64_t i = 0; i < n; ++i) dlogits[i] = (1.0 / (1.0 + std::exp(-logits[i])) - targets[i]) * scale;
}

// ---- optimizer ------------------------------------------------------------------------------
// One AdamW step exactly as backend.h states it (bias-corrected, decoupled decay, grad scale).
inline void adamw_update(double* param, double* m, double* v, const double* grad, int64_t n, double lr,
                         double beta1, double beta2, double eps, double weight_decay, int64_t step,
                         double grad_scale) {
  const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  for (int64_t i = 0; i < n; ++i) {
    const double g = grad[i] * grad_scale;
    m[i] = beta1 * m[i] + (1.0 - beta1) * g;
    v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
    param[i] -= lr * ((m[i] / bc1) / (std::sqrt(v[i] / bc2) + eps) + weight_decay * param[i]);
  }
}
inline double sum_squares(const double* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i] * x[i];
  return s;
}

}  // namespace elmo::ref
