// GELU and row-softmax kernels written once against cpu/simd.h, compiled per ISA by
// elementwise_avx2.cpp and elementwise_avx512.cpp.
//
// GELU (erf form) via the complementary error function, so both tails keep relative accuracy:
//   h = erfc(|x| / sqrt 2) / 2,  Φ(x) = x >= 0 ? 1 - h : h,  gelu = x Φ(x),
//   gelu' = Φ(x) + x φ(x),  φ(x) = exp(-x²/2) / sqrt(2π).
// erfc(z), z >= 0, is the Chebyshev fit of Numerical Recipes (erfcc): t = 1 / (1 + z/2),
// erfc = t exp(-z² - 1.26551223 + t P(t)), fractional error < 1.2e-7 for every z.
#pragma once

#include <cstdint>

#include "cpu/simd.h"

namespace elmo::cpu::ELMO_ISA_NS {
namespace {

using namespace simd;

// Φ(x) and, when want_pdf, φ(x) for one vector.
inline Vf normal_cdf(Vf x, Vf* pdf) {
  const Vf z = mul(abs(x), set1(0.70710678118654752f));
  const Vf t = div(set1(1.0f), fma(z, set1(0.5f), set1(1.0f)));
  Vf p = set1(0.17087277f);
  p = fma(p, t, set1(-0.82215223f));
  p = fma(p, t, set1(1.48851587f));
  p = fma(p, t, set1(-1.13520398f));
  p = fma(p, t, set1(0.27886807f));
  p = fma(p, t, set1(-0.18628806f));
  p = fma(p, t, set1(0.09678418f));
  p = fma(p, t, set1(0.37409196f));
  p = fma(p, t, set1(1.00002368f));
  p = fma(p, t, set1(-1.26551223f));
  const Vf z2 = mul(z, z);
  const Vf h = mul(mul(set1(0.5f), t), exp(sub(p, z2)));
  if (pdf) *pdf = mul(exp(sub(set1(0.0f), z2)), set1(0.39894228040143268f));
  return select(ge(x, set1(0.0f)), sub(set1(1.0f), h), h);
}

inline Vf gelu_v(Vf x) { return mul(x, normal_cdf(x, nullptr)); }
inline Vf gelu_grad_v(Vf x) {
  Vf pdf;
  const Vf cdf = normal_cdf(x, &pdf);
  return fma(x, pdf, cdf);
}

}  // namespace

// out (n) = gelu(inp); out may be inp.
void gelu_forward_span(float* out, const float* inp, int64_t n) {
  int64_t i = 0;
  for (; i + W <= n; i += W) storeu(out + i, gelu_v(loadu(inp + i)));
  if (i < n) store_n(out + i, gelu_v(load_n(inp + i, static_cast<int>(n - i))), static_cast<int>(n - i));
}

// dinp (n) = dout * gelu'(inp); dinp may be dout.
void gelu_backward_span(float* dinp, const float* dout, const float* inp, int64_t n) {
  int64_t i = 0;
  for (; i + W <= n; i += W) storeu(dinp + i, mul(loadu(dout + i), gelu_grad_v(loadu(inp + i))));
  if (i < n) {
    const int k = static_cast<int>(n - i);
    store_n(dinp + i, mul(load_n(dout + i, k), gelu_grad_v(load_n(inp + i, k))), k);
  }
}

// out (V) = softmax(x (V)); out may be x.
void softmax_row(float* out, const float* x, int64_t V) {
  float mx, s;
  row_max_sumexp(out, x, V, &mx, &s);
  const Vf inv = set1(1.0f / s);
  int64_t j = 0;
  for (; j + W <= V; j += W) storeu(out + j, mul(loadu(out + j), inv));
  if (j < V) {
    const int k = static_cast<int>(V - j);
    store_n(out + j, mul(load_n(out + j, k), inv), k);
  }
}

}  // namespace elmo::cpu::ELMO_ISA_NS
