// Softmax cross-entropy row kernels written once against cpu/simd.h, compiled per ISA by
// loss_avx2.cpp and loss_avx512.cpp. See loss.cpp for the math.
#pragma once

#include <cstdint>

#include "cpu/simd.h"

namespace elmo::cpu::ELMO_ISA_NS {

// log Σ_j exp(x[j]) of one row x (V), max-subtracted.
float ce_row_lse(const float* x, int64_t V) {
  float mx, s;
  simd::row_max_sumexp(nullptr, x, V, &mx, &s);
  return mx + __builtin_logf(s);
}

// dx (V) = (exp(x - lse) - onehot(target)) * scale; dx may be x.
void ce_row_backward(float* dx, const float* x, int64_t V, float lse, int32_t target, float scale) {
  using namespace simd;
  float lanes[W];  // p at the target, taken before x may be overwritten
  storeu(lanes, exp(set1(x[target] - lse)));
  const float pt = lanes[0];
  const Vf l = set1(lse), sc = set1(scale);
  int64_t j = 0;
  for (; j + W <= V; j += W) storeu(dx + j, mul(exp(sub(loadu(x + j), l)), sc));
  if (j < V) {
    const int k = static_cast<int>(V - j);
    store_n(dx + j, mul(exp(sub(load_n(x + j, k), l)), sc), k);
  }
  dx[target] = (pt - 1.0f) * scale;
}

}  // namespace elmo::cpu::ELMO_ISA_NS
