// AVX-512 helpers shared by the fp32 and bf16 GEMM kernels (gemm_avx512.cpp,
// gemm_bf16_avx512bf16.cpp): tile column masks, the erf GELU, the epilogue on a tile's
// accumulators and their store, the micro-kernel dispatch, and a 16x16 in-register transpose.
// Include only from translation units compiled with AVX-512 flags; everything here has internal
// linkage, so no other translation unit can end up calling a copy built with these instructions.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "cpu/gemm_kernels.h"

namespace elmo::cpu::gemm_detail {
namespace {

// k steps (k pairs for bf16) of the packed A a micro-kernel prefetches ahead: a tall problem's
// A streams from L2/L3, and each new line of it otherwise stalls the broadcasts (+3-7% on
// 1024-row BERT-base products, one thread).
constexpr int kAAhead = 16;

// Column masks of a tile `cols` wide: the two 16-lane halves of the 32-column panel.
inline __mmask16 lo_mask(int cols) { return cols >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << cols) - 1); }
inline __mmask16 hi_mask(int cols) {
  return cols >= 32 ? 0xFFFF : cols <= 16 ? 0 : static_cast<__mmask16>((1u << (cols - 16)) - 1);
}

// exp(x) for x in [-88, 0]: x = n ln2 + r, |r| <= ln2/2, exp(r) by its degree-7 Taylor
// polynomial (truncation error < 1e-8), times 2^n via scalef.
inline __m512 exp_neg(__m512 x) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);  // ln2 split in two parts
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// erf(z) by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7):
// erf(a) = 1 - t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(-a^2), t = 1 / (1 + p a), a = |z|.
// t comes from the 14-bit reciprocal refined by one Newton step (relative error ~1e-8): a
// divide's latency and throughput would dominate GELU over the FFN's widest activation.
inline __m512 erf16(__m512 z) {
  const __m512 a = _mm512_min_ps(_mm512_abs_ps(z), _mm512_set1_ps(6.0f));
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 d = _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), a, one);  // in [1, 3]
  __m512 t = _mm512_rcp14_ps(d);
  t = _mm512_mul_ps(t, _mm512_fnmadd_ps(d, t, _mm512_set1_ps(2.0f)));  // t (2 - d t)
  __m512 p = _mm512_set1_ps(1.061405429f);
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
  p = _mm512_mul_ps(p, t);
  const __m512 y = _mm512_fnmadd_ps(p, exp_neg(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(a, a))), one);
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32(static_cast<int>(0x80000000u)));
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(y), sign));
}

inline __m512 gelu16(__m512 v) {
  const __m512 cdf = _mm512_fmadd_ps(erf16(_mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f))),
                                     _mm512_set1_ps(0.5f), _mm512_set1_ps(0.5f));
  return _mm512_mul_ps(v, cdf);
}

// The epilogue on the first `rows` rows of a tile's accumulators (v = C + product when adding),
// in the order of epilogue_avx512: + bias; pre_gelu = v, v = gelu(v); + residual. Masked loads
// and stores make partial tiles (cols < 32) take the same path; GELU runs over all 2R vectors
// as straight-line code so their long dependency chains interleave.
template <int R>
inline void epilogue_regs(const EpilogueArgs& e, __m512 (&v)[R][2], int rows, __mmask16 m0, __mmask16 m1,
                          int64_t r0, int64_t c0) {
  if (e.bias) {
    const __m512 b0 = _mm512_maskz_loadu_ps(m0, e.bias + c0), b1 = _mm512_maskz_loadu_ps(m1, e.bias + c0 + 16);
#pragma GCC unroll 12
    for (int i = 0; i < R; ++i) {
      v[i][0] = _mm512_add_ps(v[i][0], b0);
      v[i][1] = _mm512_add_ps(v[i][1], b1);
    }
  }
  if (e.gelu) {
    if (e.pre_gelu)
#pragma GCC unroll 12
      for (int i = 0; i < R; ++i) {
        if (i >= rows) break;
        float* pre = e.pre_gelu + (r0 + i) * e.ld_pre + c0;
        _mm512_mask_storeu_ps(pre, m0, v[i][0]);
        _mm512_mask_storeu_ps(pre + 16, m1, v[i][1]);
      }
#pragma GCC unroll 12
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) v[i][h] = gelu16(v[i][h]);
  }
  if (e.residual)
#pragma GCC unroll 12
    for (int i = 0; i < R; ++i) {
      if (i >= rows) break;
      const float* res = e.residual + (r0 + i) * e.ld_res + c0;
      v[i][0] = _mm512_add_ps(v[i][0], _mm512_maskz_loadu_ps(m0, res));
      v[i][1] = _mm512_add_ps(v[i][1], _mm512_maskz_loadu_ps(m1, res + 16));
    }
}

// A finished micro-tile's accumulators (the first `rows` rows, `cols` columns) into C: + C when
// adding, then the epilogue `ep` (null: none) on the registers, then one masked store per row.
template <int R>
inline void store_tile(__m512 (&acc)[R][2], float* C, int64_t ldc, int rows, int cols, bool add,
                       const EpilogueArgs* ep, int64_t r0, int64_t c0) {
  const __mmask16 m0 = lo_mask(cols), m1 = hi_mask(cols);
  if (add)
#pragma GCC unroll 12
    for (int i = 0; i < R; ++i) {
      if (i >= rows) break;
      acc[i][0] = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, C + i * ldc), acc[i][0]);
      acc[i][1] = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, C + i * ldc + 16), acc[i][1]);
    }
  if (ep) epilogue_regs<R>(*ep, acc, rows, m0, m1, r0, c0);
#pragma GCC unroll 12
  for (int i = 0; i < R; ++i) {
    if (i >= rows) break;
    _mm512_mask_storeu_ps(C + i * ldc, m0, acc[i][0]);
    _mm512_mask_storeu_ps(C + i * ldc + 16, m1, acc[i][1]);
  }
}

// The micro-kernel entry points of an AVX-512 kernel whose register tile is 12 rows:
// `Rows::run<R, kPf>` is its loop over the first R rows of a panel, prefetching (kPf) or not.
// A panel's tail runs the 4- or 8-row variant, and a call with nothing to prefetch (a task's
// own packed B block, a tile's last slice) runs a k loop without the check, which by itself
// cost 4% on BERT-base bf16 at 4096 tokens when no call there prefetched.
template <class Rows, class A, class B>
inline void micro_dispatch(int64_t kc, A Ap, B Bp, float* C, int64_t ldc, int rows, int cols, bool add,
                           const EpilogueArgs* ep, int64_t r0, int64_t c0, Prefetch pf) {
  static constexpr decltype(&Rows::template run<4, false>) kVariants[3][2] = {
      {&Rows::template run<4, false>, &Rows::template run<4, true>},
      {&Rows::template run<8, false>, &Rows::template run<8, true>},
      {&Rows::template run<12, false>, &Rows::template run<12, true>}};
  kVariants[rows <= 4 ? 0 : rows <= 8 ? 1 : 2][pf.lines > 0](kc, Ap, Bp, C, ldc, rows, cols, add, ep, r0, c0, pf);
}

// Kernel::micro: C (+)= A . B over kc.
template <class Rows, class A, class B>
void micro_tile(int64_t kc, A Ap, B Bp, float* C, int64_t ldc, int rows, int cols, bool add, Prefetch pf) {
  micro_dispatch<Rows>(kc, Ap, Bp, C, ldc, rows, cols, add, nullptr, 0, 0, pf);
}

// Kernel::micro_ep: the last K block, the epilogue applied to the accumulators.
template <class Rows, class A, class B>
void micro_tile_ep(int64_t kc, A Ap, B Bp, float* C, int64_t ldc, int rows, int cols, bool add, const EpilogueArgs& e,
                   int64_t m0, int64_t n0, Prefetch pf) {
  micro_dispatch<Rows>(kc, Ap, Bp, C, ldc, rows, cols, add, &e, m0, n0, pf);
}

// In-register transpose of a 16x16 block: rows r[0..15] become columns.
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // t[4q+0..3] now hold 2x2 blocks; combine pairs of 64-bit elements.
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
    const __m512d a0 = _mm512_castps_pd(t[4 * q]), a1 = _mm512_castps_pd(t[4 * q + 1]);
    const __m512d a2 = _mm512_castps_pd(t[4 * q + 2]), a3 = _mm512_castps_pd(t[4 * q + 3]);
    r[4 * q] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
    r[4 * q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
    r[4 * q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
    r[4 * q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
  }
  // r[4q+s] holds, in each 128-bit lane L, row group q's column 4L+s... combine 128-bit lanes.
#pragma GCC unroll 4
  for (int s = 0; s < 4; ++s) {
    const __m512 x0 = r[s], x1 = r[4 + s], x2 = r[8 + s], x3 = r[12 + s];
    const __m512 y0 = _mm512_shuffle_f32x4(x0, x1, 0x88), y1 = _mm512_shuffle_f32x4(x0, x1, 0xDD);
    const __m512 y2 = _mm512_shuffle_f32x4(x2, x3, 0x88), y3 = _mm512_shuffle_f32x4(x2, x3, 0xDD);
    t[s] = _mm512_shuffle_f32x4(y0, y2, 0x88);
    t[8 + s] = _mm512_shuffle_f32x4(y0, y2, 0xDD);
    t[4 + s] = _mm512_shuffle_f32x4(y1, y3, 0x88);
    t[12 + s] = _mm512_shuffle_f32x4(y1, y3, 0xDD);
  }
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

}  // namespace
}  // namespace elmo::cpu::gemm_detail
