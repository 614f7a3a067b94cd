// AVX2 + FMA pieces of the CPU GEMM (driver: gemm.cpp): a 6x16 micro-kernel (12 ymm
// accumulators, 2 B loads and 6 broadcasts of A per k), the vectorized epilogue with an erf
// GELU, and an 8x8-transpose packer for B stored [N, K].
#include <immintrin.h>

#include <cstdint>

#include "cpu/gemm_kernels.h"

namespace elmo::cpu::gemm_detail {
namespace {

constexpr int kMR = 6, kNR = 16;

void micro_6x16(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, int rows, int cols,
                bool add) {
  __m256 acc[kMR][2];
#pragma GCC unroll 6
  for (int i = 0; i < kMR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(Bp), b1 = _mm256_load_ps(Bp + 8);  // B[k, 0:16]
#pragma GCC unroll 6
    for (int i = 0; i < kMR; ++i) {
      const __m256 a = _mm256_broadcast_ss(Ap + i);  // A[i, k]
      acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
    }
    Ap += kMR;
    Bp += kNR;
  }
  if (rows == kMR && cols == kNR) {
#pragma GCC unroll 6
    for (int i = 0; i < kMR; ++i) {
      float* c = C + i * ldc;
      if (add) {
        acc[i][0] = _mm256_add_ps(_mm256_loadu_ps(c), acc[i][0]);
        acc[i][1] = _mm256_add_ps(_mm256_loadu_ps(c + 8), acc[i][1]);
      }
      _mm256_storeu_ps(c, acc[i][0]);
      _mm256_storeu_ps(c + 8, acc[i][1]);
    }
    return;
  }
  alignas(32) float tile[kMR][kNR];
#pragma GCC unroll 6
  for (int i = 0; i < kMR; ++i) {
    _mm256_store_ps(tile[i], acc[i][0]);
    _mm256_store_ps(tile[i] + 8, acc[i][1]);
  }
  for (int i = 0; i < rows; ++i) {
    float* c = C + i * ldc;
    for (int j = 0; j < cols; ++j) c[j] = add ? c[j] + tile[i][j] : tile[i][j];
  }
}

// exp(x) for x in [-88, 0]: x = n ln2 + r, |r| <= ln2/2, exp(r) by its degree-7 Taylor
// polynomial (truncation error < 1e-8), times 2^n built in the exponent bits.
inline __m256 exp_neg(__m256 x) {
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);  // ln2 split in two parts
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// erf(z) by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7):
// erf(a) = 1 - t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(-a^2), t = 1 / (1 + p a), a = |z|.
inline __m256 erf8(__m256 z) {
  const __m256 sign = _mm256_and_ps(z, _mm256_set1_ps(-0.0f));
  const __m256 a = _mm256_min_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), z), _mm256_set1_ps(6.0f));
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), a, one));
  __m256 p = _mm256_set1_ps(1.061405429f);
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
  p = _mm256_mul_ps(p, t);
  const __m256 y = _mm256_fnmadd_ps(p, exp_neg(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(a, a))), one);
  return _mm256_or_ps(y, sign);
}

// 8 output columns: v = c (+ bias); pre = v, v = gelu(v); v += residual.
inline __m256 epilogue8(const EpilogueArgs& e, __m256 v, const float* bias, float* pre, const float* res) {
  if (e.bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias));
  if (e.gelu) {
    if (e.pre_gelu) _mm256_storeu_ps(pre, v);
    const __m256 cdf = _mm256_fmadd_ps(erf8(_mm256_mul_ps(v, _mm256_set1_ps(0.70710678118654752f))),
                                       _mm256_set1_ps(0.5f), _mm256_set1_ps(0.5f));
    v = _mm256_mul_ps(v, cdf);
  }
  if (e.residual) v = _mm256_add_ps(v, _mm256_loadu_ps(res));
  return v;
}

void epilogue_avx2(const EpilogueArgs& e, float* C, int64_t ldc, int64_t m0, int64_t n0, int rows, int cols) {
  const float* bias = e.bias ? e.bias + n0 : nullptr;
  for (int i = 0; i < rows; ++i) {
    float* c = C + i * ldc;
    float* pre = e.pre_gelu ? e.pre_gelu + (m0 + i) * e.ld_pre + n0 : nullptr;
    const float* res = e.residual ? e.residual + (m0 + i) * e.ld_res + n0 : nullptr;
    int j = 0;
    for (; j + 8 <= cols; j += 8)
      _mm256_storeu_ps(c + j, epilogue8(e, _mm256_loadu_ps(c + j), bias ? bias + j : nullptr,
                                        pre ? pre + j : nullptr, res ? res + j : nullptr));
    if (j < cols) {  // tail: through zero-padded buffers, same arithmetic as full vectors
      const int n = cols - j;
      alignas(32) float cv[8] = {}, bv[8] = {}, pv[8] = {}, rv[8] = {};
      for (int q = 0; q < n; ++q) {
        cv[q] = c[j + q];
        if (bias) bv[q] = bias[j + q];
        if (res) rv[q] = res[j + q];
      }
      _mm256_store_ps(cv, epilogue8(e, _mm256_load_ps(cv), bv, pv, rv));
      for (int q = 0; q < n; ++q) {
        c[j + q] = cv[q];
        if (pre) pre[j + q] = pv[q];
      }
    }
  }
}

// In-register transpose of an 8x8 block: rows r[0..7] become columns.
inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

void pack_b_nt_avx2(float* dst, const float* src, int64_t ldb, int64_t K, int cols) {
  if (cols < kNR) {
    pack_b_nt_scalar(dst, src, ldb, K, cols, kNR);
    return;
  }
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    for (int h = 0; h < 2; ++h) {  // two 8-column halves of the 16-wide panel
      __m256 r[8];
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(src + (h * 8 + j) * ldb + k);
      transpose8(r);
#pragma GCC unroll 8
      for (int q = 0; q < 8; ++q) _mm256_store_ps(dst + (k + q) * kNR + h * 8, r[q]);
    }
  }
  for (; k < K; ++k)
    for (int j = 0; j < kNR; ++j) dst[k * kNR + j] = src[j * ldb + k];
}

}  // namespace

const Kernel& kernel_avx2() {
  static const Kernel k{kMR, kNR, 256, 72, 256, &micro_6x16, &epilogue_avx2, &pack_b_nt_avx2};
  return k;
}

}  // namespace elmo::cpu::gemm_detail
