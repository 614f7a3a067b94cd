// A thin vector layer for the ISA translation units (*_avx2.cpp, *_avx512.cpp) only.
// Kernels written once against these names (`*_vec.h`) compile to AVX2+FMA (8 lanes) or
// AVX-512 (16 lanes) depending on the flags of the including file. Everything here lives
// in namespace elmo::cpu::ELMO_ISA_NS::simd with internal linkage, so the two builds never
// meet at link time (an AVX-512 body must never be picked for the AVX2 path).
//
// Reductions (hsum, hmax) combine lanes in a fixed order, so results depend only on the
// data and the ISA, never on threads.
#pragma once

#if !defined(ELMO_ISA_NS)
#error "define ELMO_ISA_NS (avx2 or avx512) before including cpu/simd.h"
#endif

// GCC 12 reports its own _mm512_undefined_*() (`__m512 __Y = __Y;`) as uninitialized when
// AVX-512 intrinsics are inlined; the state at the intrinsic header's lines is what counts.
#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>

namespace elmo::cpu::ELMO_ISA_NS::simd {
namespace {

#if defined(__AVX512F__)
constexpr int W = 16;
using Vf = __m512;
using Vd = __m512d;  // W/2 doubles
using Mask = __mmask16;

inline Vf loadu(const float* p) { return _mm512_loadu_ps(p); }
inline void storeu(float* p, Vf v) { _mm512_storeu_ps(p, v); }
inline __mmask16 first_n(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
// Lanes [0, n) from p, the rest zero; never reads past p + n.
inline Vf load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(first_n(n), p); }
inline void store_n(float* p, Vf v, int n) { _mm512_mask_storeu_ps(p, first_n(n), v); }
// Lanes >= n replaced by fill.
inline Vf keep_n(Vf v, int n, float fill) { return _mm512_mask_mov_ps(_mm512_set1_ps(fill), first_n(n), v); }
inline Vf set1(float x) { return _mm512_set1_ps(x); }
inline Vf add(Vf a, Vf b) { return _mm512_add_ps(a, b); }
inline Vf sub(Vf a, Vf b) { return _mm512_sub_ps(a, b); }
inline Vf mul(Vf a, Vf b) { return _mm512_mul_ps(a, b); }
inline Vf div(Vf a, Vf b) { return _mm512_div_ps(a, b); }
inline Vf fma(Vf a, Vf b, Vf c) { return _mm512_fmadd_ps(a, b, c); }   // a*b + c
inline Vf fnma(Vf a, Vf b, Vf c) { return _mm512_fnmadd_ps(a, b, c); } // c - a*b
inline Vf max(Vf a, Vf b) { return _mm512_max_ps(a, b); }
inline Vf min(Vf a, Vf b) { return _mm512_min_ps(a, b); }
inline Vf sqrt(Vf a) { return _mm512_sqrt_ps(a); }
inline Vf abs(Vf a) { return _mm512_abs_ps(a); }
inline Vf round(Vf a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline Mask lt(Vf a, Vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
inline Mask ge(Vf a, Vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
inline Vf select(Mask m, Vf a, Vf b) { return _mm512_mask_mov_ps(b, m, a); }  // m ? a : b
// 2^n for integral n in [-126, 127] held as floats.
inline Vf pow2i(Vf n) {
  __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
  return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
}
inline float hsum(Vf v) {
  __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  b = _mm_add_ps(b, _mm_movehl_ps(b, b));
  b = _mm_add_ss(b, _mm_movehdup_ps(b));
  return _mm_cvtss_f32(b);
}
inline float hmax(Vf v) {
  __m256 a = _mm256_max_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 b = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  b = _mm_max_ps(b, _mm_movehl_ps(b, b));
  b = _mm_max_ss(b, _mm_movehdup_ps(b));
  return _mm_cvtss_f32(b);
}
inline Vd zero_pd() { return _mm512_setzero_pd(); }
inline Vd lo_pd(Vf v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
inline Vd hi_pd(Vf v) { return _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)); }
inline Vd add_pd(Vd a, Vd b) { return _mm512_add_pd(a, b); }
inline Vd sub_pd(Vd a, Vd b) { return _mm512_sub_pd(a, b); }
inline Vd fma_pd(Vd a, Vd b, Vd c) { return _mm512_fmadd_pd(a, b, c); }
inline Vd set1_pd(double x) { return _mm512_set1_pd(x); }
inline double hsum_pd(Vd v) {
  __m256d a = _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd(v, 1));
  __m128d b = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
  return _mm_cvtsd_f64(_mm_add_sd(b, _mm_unpackhi_pd(b, b)));
}
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int W = 8;
using Vf = __m256;
using Vd = __m256d;
using Mask = __m256;

inline Vf loadu(const float* p) { return _mm256_loadu_ps(p); }
inline void storeu(float* p, Vf v) { _mm256_storeu_ps(p, v); }
inline __m256i first_n(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline Vf load_n(const float* p, int n) { return _mm256_maskload_ps(p, first_n(n)); }
inline void store_n(float* p, Vf v, int n) { _mm256_maskstore_ps(p, first_n(n), v); }
inline Vf keep_n(Vf v, int n, float fill) {
  return _mm256_blendv_ps(_mm256_set1_ps(fill), v, _mm256_castsi256_ps(first_n(n)));
}
inline Vf set1(float x) { return _mm256_set1_ps(x); }
inline Vf add(Vf a, Vf b) { return _mm256_add_ps(a, b); }
inline Vf sub(Vf a, Vf b) { return _mm256_sub_ps(a, b); }
inline Vf mul(Vf a, Vf b) { return _mm256_mul_ps(a, b); }
inline Vf div(Vf a, Vf b) { return _mm256_div_ps(a, b); }
inline Vf fma(Vf a, Vf b, Vf c) { return _mm256_fmadd_ps(a, b, c); }
inline Vf fnma(Vf a, Vf b, Vf c) { return _mm256_fnmadd_ps(a, b, c); }
inline Vf max(Vf a, Vf b) { return _mm256_max_ps(a, b); }
inline Vf min(Vf a, Vf b) { return _mm256_min_ps(a, b); }
inline Vf sqrt(Vf a) { return _mm256_sqrt_ps(a); }
inline Vf abs(Vf a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
inline Vf round(Vf a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline Mask lt(Vf a, Vf b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
inline Mask ge(Vf a, Vf b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
inline Vf select(Mask m, Vf a, Vf b) { return _mm256_blendv_ps(b, a, m); }
inline Vf pow2i(Vf n) {
  __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
  return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}
inline float hsum(Vf v) {
  __m128 b = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  b = _mm_add_ps(b, _mm_movehl_ps(b, b));
  b = _mm_add_ss(b, _mm_movehdup_ps(b));
  return _mm_cvtss_f32(b);
}
inline float hmax(Vf v) {
  __m128 b = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  b = _mm_max_ps(b, _mm_movehl_ps(b, b));
  b = _mm_max_ss(b, _mm_movehdup_ps(b));
  return _mm_cvtss_f32(b);
}
inline Vd zero_pd() { return _mm256_setzero_pd(); }
inline Vd lo_pd(Vf v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
inline Vd hi_pd(Vf v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }
inline Vd add_pd(Vd a, Vd b) { return _mm256_add_pd(a, b); }
inline Vd sub_pd(Vd a, Vd b) { return _mm256_sub_pd(a, b); }
inline Vd fma_pd(Vd a, Vd b, Vd c) { return _mm256_fmadd_pd(a, b, c); }
inline Vd set1_pd(double x) { return _mm256_set1_pd(x); }
inline double hsum_pd(Vd v) {
  __m128d b = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(b, _mm_unpackhi_pd(b, b)));
}
#else
#error "cpu/simd.h needs AVX2+FMA or AVX-512 flags"
#endif

// exp(x) in f32, ~1 ulp on the normal range: n = round(x / ln 2), r = x - n ln 2 (Cody-Waite
// split of ln 2), exp(r) by its degree-7 Taylor polynomial (|r| <= 0.347: truncation < 1e-8
// relative), times 2^n. Arguments below -87.3 give 0 (no denormals); above 88 are clamped.
inline Vf exp(Vf x) {
  const Vf lo = set1(-87.3f);
  const Mask tiny = lt(x, lo);
  x = min(max(x, lo), set1(88.0f));
  const Vf n = round(mul(x, set1(1.44269504088896341f)));
  Vf r = fnma(n, set1(0.693359375f), x);
  r = fnma(n, set1(-2.12194440e-4f), r);
  Vf p = set1(1.0f / 5040.0f);
  p = fma(p, r, set1(1.0f / 720.0f));
  p = fma(p, r, set1(1.0f / 120.0f));
  p = fma(p, r, set1(1.0f / 24.0f));
  p = fma(p, r, set1(1.0f / 6.0f));
  p = fma(p, r, set1(0.5f));
  p = fma(p, r, set1(1.0f));
  p = fma(p, r, set1(1.0f));
  return select(tiny, set1(0.0f), mul(p, pow2i(n)));
}

// Row maximum and Σ exp(x - max) of x (V), V >= 1, lanes summed in a fixed order.
// When e_out is given it receives exp(x - max) (e_out may be x).
inline void row_max_sumexp(float* e_out, const float* x, int64_t V, float* max_out, float* sum_out) {
  const int64_t Vv = V / W * W;
  const int tail = static_cast<int>(V - Vv);
  Vf m = set1(-__builtin_inff());
  for (int64_t j = 0; j < Vv; j += W) m = max(m, loadu(x + j));
  if (tail) m = max(m, keep_n(load_n(x + Vv, tail), tail, -__builtin_inff()));
  const float mx = hmax(m);
  const Vf mv = set1(mx);
  Vf s0 = set1(0.0f), s1 = set1(0.0f);
  int64_t j = 0;
  for (; j + 2 * W <= Vv; j += 2 * W) {
    const Vf e0 = exp(sub(loadu(x + j), mv)), e1 = exp(sub(loadu(x + j + W), mv));
    if (e_out) storeu(e_out + j, e0), storeu(e_out + j + W, e1);
    s0 = add(s0, e0);
    s1 = add(s1, e1);
  }
  for (; j < Vv; j += W) {
    const Vf e0 = exp(sub(loadu(x + j), mv));
    if (e_out) storeu(e_out + j, e0);
    s0 = add(s0, e0);
  }
  if (tail) {
    const Vf e0 = keep_n(exp(sub(load_n(x + Vv, tail), mv)), tail, 0.0f);
    if (e_out) store_n(e_out + Vv, e0, tail);
    s1 = add(s1, e0);
  }
  *max_out = mx;
  *sum_out = hsum(add(s0, s1));
}

}  // namespace
}  // namespace elmo::cpu::ELMO_ISA_NS::simd
