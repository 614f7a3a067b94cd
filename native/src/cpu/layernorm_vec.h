// LayerNorm row kernels, written once against cpu/simd.h and compiled per ISA by
// layernorm_avx2.cpp and layernorm_avx512.cpp. Same math and same rounding steps as the
// scalar rows in layernorm.cpp (statistics accumulated in double, normalization in f32);
// only the order of the double sums differs.
#pragma once

#include <cstdint>

#include "cpu/simd.h"

namespace elmo::cpu::ELMO_ISA_NS {

// One row: x = inp + res; stats; out = (x - mean) * rstd * w + b.
// out, sum_out, inp, res: (C); sum_out and res may be null; mean_out/rstd_out may be null.
void layernorm_forward_row(float* out, float* sum_out, float* mean_out, float* rstd_out, const float* inp,
                           const float* res, const float* w, const float* b, int64_t C, float eps) {
  using namespace simd;
  const int64_t Cv = C / W * W;
  const int tail = static_cast<int>(C - Cv);
  auto load_x = [&](int64_t c) { return res ? add(loadu(inp + c), loadu(res + c)) : loadu(inp + c); };
  auto load_x_n = [&](int64_t c) { return res ? add(load_n(inp + c, tail), load_n(res + c, tail)) : load_n(inp + c, tail); };
  // pass 1: mean (double lanes; tail lanes are zero)
  Vd s0 = zero_pd(), s1 = zero_pd();
  for (int64_t c = 0; c < Cv; c += W) {
    const Vf x = load_x(c);
    s0 = add_pd(s0, lo_pd(x));
    s1 = add_pd(s1, hi_pd(x));
  }
  if (tail) {
    const Vf x = load_x_n(Cv);
    s0 = add_pd(s0, lo_pd(x));
    s1 = add_pd(s1, hi_pd(x));
  }
  const double mean = hsum_pd(add_pd(s0, s1)) / static_cast<double>(C);
  // pass 2: variance about the mean
  const Vd m = set1_pd(mean);
  Vd q0 = zero_pd(), q1 = zero_pd();
  for (int64_t c = 0; c < Cv; c += W) {
    const Vf x = load_x(c);
    const Vd d0 = sub_pd(lo_pd(x), m), d1 = sub_pd(hi_pd(x), m);
    q0 = fma_pd(d0, d0, q0);
    q1 = fma_pd(d1, d1, q1);
  }
  double qt = 0;  // tail in plain double
  for (int64_t c = Cv; c < C; ++c) {
    const double d = static_cast<double>(res ? inp[c] + res[c] : inp[c]) - mean;
    qt += d * d;
  }
  const double var = (hsum_pd(add_pd(q0, q1)) + qt) / static_cast<double>(C);
  const float mean_f = static_cast<float>(mean);
  const float rstd_f = static_cast<float>(1.0 / __builtin_sqrt(var + static_cast<double>(eps)));
  // pass 3: normalize in f32 (x is read before out/sum_out are written: exact aliasing is fine)
  const Vf mf = set1(mean_f), rf = set1(rstd_f);
  for (int64_t c = 0; c < Cv; c += W) {
    const Vf x = load_x(c);
    const Vf y = add(mul(mul(sub(x, mf), rf), loadu(w + c)), loadu(b + c));
    if (sum_out) storeu(sum_out + c, x);
    storeu(out + c, y);
  }
  if (tail) {
    const Vf x = load_x_n(Cv);
    const Vf y = add(mul(mul(sub(x, mf), rf), load_n(w + Cv, tail)), load_n(b + Cv, tail));
    if (sum_out) store_n(sum_out + Cv, x, tail);
    store_n(out + Cv, y, tail);
  }
  if (mean_out) *mean_out = mean_f;
  if (rstd_out) *rstd_out = rstd_f;
}

// One row of the backward: dinp (=); dw_part, db_part (C) += this row's dout*xhat and dout.
void layernorm_backward_row(float* dinp, float* dw_part, float* db_part, const float* dout, const float* x,
                            const float* w, float mean, float rstd, int64_t C) {
  using namespace simd;
  const int64_t Cv = C / W * W;
  const int tail = static_cast<int>(C - Cv);
  const Vf mv = set1(mean), rv = set1(rstd);
  Vf s1 = set1(0.0f), s2 = set1(0.0f);
  for (int64_t c = 0; c < Cv; c += W) {
    const Vf dy = loadu(dout + c);
    const Vf xhat = mul(sub(loadu(x + c), mv), rv);
    const Vf dn = mul(dy, loadu(w + c));
    s1 = add(s1, dn);
    s2 = add(s2, mul(dn, xhat));
    storeu(dw_part + c, add(loadu(dw_part + c), mul(dy, xhat)));
    storeu(db_part + c, add(loadu(db_part + c), dy));
  }
  if (tail) {  // zero lanes add nothing
    const Vf dy = load_n(dout + Cv, tail);
    const Vf xhat = mul(sub(load_n(x + Cv, tail), mv), rv);
    const Vf dn = mul(dy, load_n(w + Cv, tail));
    s1 = add(s1, dn);
    s2 = add(s2, mul(dn, xhat));
    store_n(dw_part + Cv, add(load_n(dw_part + Cv, tail), mul(dy, xhat)), tail);
    store_n(db_part + Cv, add(load_n(db_part + Cv, tail), dy), tail);
  }
  const Vf m1 = set1(hsum(s1) / static_cast<float>(C)), m2 = set1(hsum(s2) / static_cast<float>(C));
  for (int64_t c = 0; c < Cv; c += W) {
    const Vf xhat = mul(sub(loadu(x + c), mv), rv);
    const Vf dn = mul(loadu(dout + c), loadu(w + c));
    storeu(dinp + c, mul(rv, sub(sub(dn, m1), mul(xhat, m2))));
  }
  if (tail) {
    const Vf xhat = mul(sub(load_n(x + Cv, tail), mv), rv);
    const Vf dn = mul(load_n(dout + Cv, tail), load_n(w + Cv, tail));
    store_n(dinp + Cv, mul(rv, sub(sub(dn, m1), mul(xhat, m2))), tail);
  }
}

}  // namespace elmo::cpu::ELMO_ISA_NS
