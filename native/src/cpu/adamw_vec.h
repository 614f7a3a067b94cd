// AdamW span kernel written once against cpu/simd.h, compiled per ISA by adamw_avx2.cpp and
// adamw_avx512.cpp. It performs exactly the scalar sequence of adamw.cpp, operation by
// operation and without fused multiply-adds, so every ISA produces the same bits.
#pragma once

#include <cstdint>

#include "cpu/simd.h"

namespace elmo::cpu::ELMO_ISA_NS {

// k holds the step's constants: {grad_scale, beta1, 1-beta1, beta2, 1-beta2, bc1, bc2, eps, wd, lr}.
void adamw_span(float* param, float* m, float* v, const float* grad, int64_t n, const float* k) {
  using namespace simd;
  const Vf gs = set1(k[0]), b1 = set1(k[1]), c1 = set1(k[2]), b2 = set1(k[3]), c2 = set1(k[4]), bc1 = set1(k[5]),
           bc2 = set1(k[6]), eps = set1(k[7]), wd = set1(k[8]), lr = set1(k[9]);
  auto step = [&](Vf p, Vf mv, Vf vv, Vf g, Vf* po, Vf* mo, Vf* vo) {
    g = mul(g, gs);
    mv = add(mul(b1, mv), mul(c1, g));
    vv = add(mul(b2, vv), mul(mul(c2, g), g));
    const Vf u = add(div(div(mv, bc1), add(sqrt(div(vv, bc2)), eps)), mul(wd, p));
    *po = sub(p, mul(lr, u));
    *mo = mv;
    *vo = vv;
  };
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    Vf po, mo, vo;
    step(loadu(param + i), loadu(m + i), loadu(v + i), loadu(grad + i), &po, &mo, &vo);
    storeu(param + i, po);
    storeu(m + i, mo);
    storeu(v + i, vo);
  }
  if (i < n) {
    const int r = static_cast<int>(n - i);
    Vf po, mo, vo;
    step(load_n(param + i, r), load_n(m + i, r), load_n(v + i, r), load_n(grad + i, r), &po, &mo, &vo);
    store_n(param + i, po, r);
    store_n(m + i, mo, r);
    store_n(v + i, vo, r);
  }
}

}  // namespace elmo::cpu::ELMO_ISA_NS
