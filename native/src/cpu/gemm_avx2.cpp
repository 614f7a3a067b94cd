// AVX2 + FMA pieces of the CPU GEMM (driver: gemm.cpp): a 6x16 micro-kernel (12 ymm
// accumulators, 2 B loads and 6 broadcasts of A per k), the vectorized epilogue with an erf
// GELU, and an 8x8-transpose packer for B stored [N, K].
#include <immintrin.h>

#include <cstdint>

#include "cpu/gemm_kernels.h"

namespace elmo::cpu::gemm_detail {
namespace {

constexpr int kMR = 6, kNR = 16;

void epilogue_avx2(const EpilogueArgs& e, float* C, int64_t ldc, int64_t m0, int64_t n0, int rows, int cols);
inline __m256 gelu8(__m256 v);

// The epilogue on a full tile's accumulators (v = C + product when adding), in the order of
// epilogue_avx2: + bias; pre_gelu = v, v = gelu(v); + residual. GELU runs over all 2R vectors as
// straight-line code so their long dependency chains interleave.
template <int R>
inline void epilogue_regs(const EpilogueArgs& e, __m256 (&v)[R][2], int64_t m0, int64_t n0) {
  if (e.bias) {
    const __m256 b0 = _mm256_loadu_ps(e.bias + n0), b1 = _mm256_loadu_ps(e.bias + n0 + 8);
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      v[i][0] = _mm256_add_ps(v[i][0], b0);
      v[i][1] = _mm256_add_ps(v[i][1], b1);
    }
  }
  if (e.gelu) {
    if (e.pre_gelu)
#pragma GCC unroll 6
      for (int i = 0; i < R; ++i) {
        float* pre = e.pre_gelu + (m0 + i) * e.ld_pre + n0;
        _mm256_storeu_ps(pre, v[i][0]);
        _mm256_storeu_ps(pre + 8, v[i][1]);
      }
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) v[i][h] = gelu8(v[i][h]);
  }
  if (e.residual)
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      const float* res = e.residual + (m0 + i) * e.ld_res + n0;
      v[i][0] = _mm256_add_ps(v[i][0], _mm256_loadu_ps(res));
      v[i][1] = _mm256_add_ps(v[i][1], _mm256_loadu_ps(res + 8));
    }
}

// C[rows, cols] (+)= A[kc][kMR] . B[kc][kNR] over the first R rows of the A panel, then the
// epilogue `ep` (null: none) on the finished tile. R < kMR serves a panel's short tail (a
// 32-row batch is five full panels and one of 2 rows) at the cost of its own rows, not six.
template <int R>
void micro_rows(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, int rows, int cols, bool add,
                const EpilogueArgs* ep, int64_t m0, int64_t n0, Prefetch pf) {
  __m256 acc[R][2];
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    if (pf.lines > 0) {
      _mm_prefetch(pf.p, _MM_HINT_T0);
      pf.p += 64;
      --pf.lines;
    }
    const __m256 b0 = _mm256_load_ps(Bp), b1 = _mm256_load_ps(Bp + 8);  // B[k, 0:16]
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      const __m256 a = _mm256_broadcast_ss(Ap + i);  // A[i, k]
      acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
    }
    Ap += kMR;
    Bp += kNR;
  }
  if (rows == R && cols == kNR) {
    if (add)
#pragma GCC unroll 6
      for (int i = 0; i < R; ++i) {
        acc[i][0] = _mm256_add_ps(_mm256_loadu_ps(C + i * ldc), acc[i][0]);
        acc[i][1] = _mm256_add_ps(_mm256_loadu_ps(C + i * ldc + 8), acc[i][1]);
      }
    if (ep) epilogue_regs<R>(*ep, acc, m0, n0);
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      _mm256_storeu_ps(C + i * ldc, acc[i][0]);
      _mm256_storeu_ps(C + i * ldc + 8, acc[i][1]);
    }
    return;
  }
  alignas(32) float tile[R][kNR];
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    _mm256_store_ps(tile[i], acc[i][0]);
    _mm256_store_ps(tile[i] + 8, acc[i][1]);
  }
  for (int i = 0; i < rows; ++i) {
    float* c = C + i * ldc;
    for (int j = 0; j < cols; ++j) c[j] = add ? c[j] + tile[i][j] : tile[i][j];
  }
  if (ep) epilogue_avx2(*ep, C, ldc, m0, n0, rows, cols);
}

template <typename... Args>
void micro_dispatch(int rows, Args... args) {
  if (rows <= 2) return micro_rows<2>(args...);
  if (rows <= 4) return micro_rows<4>(args...);
  micro_rows<kMR>(args...);
}

// The 6x16 micro-kernel: 12 ymm accumulators, 2 B loads and 6 broadcasts of A per k.
void micro_6x16(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, int rows, int cols,
                bool add, Prefetch pf) {
  micro_dispatch(rows, kc, Ap, Bp, C, ldc, rows, cols, add, static_cast<const EpilogueArgs*>(nullptr), int64_t(0),
                 int64_t(0), pf);
}

void micro_ep_6x16(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, int rows, int cols, bool add,
                   const EpilogueArgs& e, int64_t m0, int64_t n0, Prefetch pf) {
  micro_dispatch(rows, kc, Ap, Bp, C, ldc, rows, cols, add, &e, m0, n0, pf);
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
// t comes from the approximate reciprocal refined by one Newton step (relative error ~1e-7,
// inside the formula's own): a divide has a long latency and a low throughput on every x86
// core, and GELU evaluates this for every element of the FFN's widest activation.
inline __m256 erf8(__m256 z) {
  const __m256 sign = _mm256_and_ps(z, _mm256_set1_ps(-0.0f));
  const __m256 a = _mm256_min_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), z), _mm256_set1_ps(6.0f));
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 d = _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), a, one);  // in [1, 3]
  __m256 t = _mm256_rcp_ps(d);
  t = _mm256_mul_ps(t, _mm256_fnmadd_ps(d, t, _mm256_set1_ps(2.0f)));  // t (2 - d t)
  __m256 p = _mm256_set1_ps(1.061405429f);
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
  p = _mm256_mul_ps(p, t);
  const __m256 y = _mm256_fnmadd_ps(p, exp_neg(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(a, a))), one);
  return _mm256_or_ps(y, sign);
}

__m256 gelu8(__m256 v) {
  const __m256 cdf = _mm256_fmadd_ps(erf8(_mm256_mul_ps(v, _mm256_set1_ps(0.70710678118654752f))),
                                     _mm256_set1_ps(0.5f), _mm256_set1_ps(0.5f));
  return _mm256_mul_ps(v, cdf);
}

// One row of the epilogue over 8-column vectors, `kGroup` vectors at a time: GELU is a long
// dependency chain per vector, so independent vectors are interleaved to fill the pipes.
// The steps are template flags, so the inner loop carries no tests.
template <bool kBias, bool kGelu, bool kPre, bool kRes>
void epilogue_row(float* c, const float* bias, float* pre, const float* res, int cols) {
  constexpr int kGroup = 4;
  auto step = [&](int j, __m256 v) {
    if (kBias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + j));
    if (kGelu) {
      if (kPre) _mm256_storeu_ps(pre + j, v);
      v = gelu8(v);
    }
    if (kRes) v = _mm256_add_ps(v, _mm256_loadu_ps(res + j));
    return v;
  };
  int j = 0;
  for (; j + 8 * kGroup <= cols; j += 8 * kGroup) {
    __m256 v[kGroup];
#pragma GCC unroll 4
    for (int q = 0; q < kGroup; ++q) v[q] = step(j + 8 * q, _mm256_loadu_ps(c + j + 8 * q));
#pragma GCC unroll 4
    for (int q = 0; q < kGroup; ++q) _mm256_storeu_ps(c + j + 8 * q, v[q]);
  }
  for (; j + 8 <= cols; j += 8) _mm256_storeu_ps(c + j, step(j, _mm256_loadu_ps(c + j)));
  if (j < cols) {  // tail: through zero-padded buffers, same arithmetic as full vectors
    const int n = cols - j;
    alignas(32) float cv[8] = {}, bv[8] = {}, pv[8] = {}, rv[8] = {};
    for (int q = 0; q < n; ++q) {
      cv[q] = c[j + q];
      if (kBias) bv[q] = bias[j + q];
      if (kRes) rv[q] = res[j + q];
    }
    __m256 v = _mm256_load_ps(cv);
    if (kBias) v = _mm256_add_ps(v, _mm256_load_ps(bv));
    if (kGelu) {
      _mm256_store_ps(pv, v);
      v = gelu8(v);
    }
    if (kRes) v = _mm256_add_ps(v, _mm256_load_ps(rv));
    _mm256_store_ps(cv, v);
    for (int q = 0; q < n; ++q) {
      c[j + q] = cv[q];
      if (kPre) pre[j + q] = pv[q];
    }
  }
}

template <bool kBias, bool kGelu, bool kPre, bool kRes>
void epilogue_tile(const EpilogueArgs& e, float* C, int64_t ldc, int64_t m0, int64_t n0, int rows, int cols) {
  const float* bias = kBias ? e.bias + n0 : nullptr;
  if (kGelu && rows == kMR && cols == kNR) {
    // A whole micro-tile: its 12 vectors go through GELU as one block (epilogue_regs), so the
    // compiler interleaves 12 independent chains instead of 2 per row.
    __m256 v[kMR][2];
#pragma GCC unroll 6
    for (int i = 0; i < kMR; ++i) {
      v[i][0] = _mm256_loadu_ps(C + i * ldc);
      v[i][1] = _mm256_loadu_ps(C + i * ldc + 8);
    }
    epilogue_regs<kMR>(e, v, m0, n0);
#pragma GCC unroll 6
    for (int i = 0; i < kMR; ++i) {
      _mm256_storeu_ps(C + i * ldc, v[i][0]);
      _mm256_storeu_ps(C + i * ldc + 8, v[i][1]);
    }
    return;
  }
  for (int i = 0; i < rows; ++i) {
    float* pre = kPre ? e.pre_gelu + (m0 + i) * e.ld_pre + n0 : nullptr;
    const float* res = kRes ? e.residual + (m0 + i) * e.ld_res + n0 : nullptr;
    epilogue_row<kBias, kGelu, kPre, kRes>(C + i * ldc, bias, pre, res, cols);
  }
}

void epilogue_avx2(const EpilogueArgs& e, float* C, int64_t ldc, int64_t m0, int64_t n0, int rows, int cols) {
  using Fn = void (*)(const EpilogueArgs&, float*, int64_t, int64_t, int64_t, int, int);
  // Indexed by bias | gelu << 1 | pre << 2 | residual << 3 (pre only with gelu).
  static constexpr Fn kTable[16] = {
      epilogue_tile<false, false, false, false>, epilogue_tile<true, false, false, false>,
      epilogue_tile<false, true, false, false>,  epilogue_tile<true, true, false, false>,
      nullptr,                                   nullptr,
      epilogue_tile<false, true, true, false>,   epilogue_tile<true, true, true, false>,
      epilogue_tile<false, false, false, true>,  epilogue_tile<true, false, false, true>,
      epilogue_tile<false, true, false, true>,   epilogue_tile<true, true, false, true>,
      nullptr,                                   nullptr,
      epilogue_tile<false, true, true, true>,    epilogue_tile<true, true, true, true>,
  };
  const bool pre = e.gelu && e.pre_gelu != nullptr;
  const int idx = (e.bias ? 1 : 0) | (e.gelu ? 2 : 0) | (pre ? 4 : 0) | (e.residual ? 8 : 0);
  kTable[idx](e, C, ldc, m0, n0, rows, cols);
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

// One A micro-panel [K][6] from `rows` <= 6 rows of a row-major source: 8 k at a time, the
// rows (two zero rows as padding) transposed in registers, then 6 floats stored per k.
void pack_a_avx2(float* dst, const float* src, int64_t lda, int64_t K, int rows) {
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 r[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) r[i] = i < rows && i < kMR ? _mm256_loadu_ps(src + i * lda + k) : _mm256_setzero_ps();
    transpose8(r);
#pragma GCC unroll 8
    for (int q = 0; q < 8; ++q) {
      float* d = dst + (k + q) * kMR;
      _mm_storeu_ps(d, _mm256_castps256_ps128(r[q]));
      _mm_storel_pi(reinterpret_cast<__m64*>(d + 4), _mm256_extractf128_ps(r[q], 1));
    }
  }
  for (; k < K; ++k)
    for (int i = 0; i < kMR; ++i) dst[k * kMR + i] = i < rows ? src[i * lda + k] : 0.0f;
}

// Sum of the 8 lanes, always in the same order.
inline float hsum8(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));  // 4
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));                                  // 2
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// C[0:MB, 0:NB] (ldc) = (add ? C : 0) + a[0:MB, 0:K] . b[0:NB, 0:K]^T: MB x NB dot products with
// 8-lane accumulators, K tail through a masked load (zeros), lanes summed at the end.
// pf: `pf_lines` cache lines to prefetch (one per k step), the next b rows this thread reads:
// spread over the row blocks so the weight streams at an even rate instead of in bursts.
template <int MB, int NB>
void dot_tile(const float* a, int64_t lda, const float* b, int64_t ldb, float* C, int64_t ldc, int64_t K, bool add,
              const float* pf, int64_t pf_lines) {
  __m256 acc[MB][NB];
#pragma GCC unroll 4
  for (int i = 0; i < MB; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) acc[i][j] = _mm256_setzero_ps();
  constexpr int64_t kAhead = 256;  // floats: b rows stream from memory, prefetched this far ahead
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    if ((k & 15) == 0)
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) _mm_prefetch(reinterpret_cast<const char*>(b + j * ldb + k + kAhead), _MM_HINT_T0);
    if (pf_lines > 0) {
      _mm_prefetch(reinterpret_cast<const char*>(pf), _MM_HINT_T0);
      pf += 16;
      --pf_lines;
    }
    __m256 bv[NB];
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) bv[j] = _mm256_loadu_ps(b + j * ldb + k);
#pragma GCC unroll 4
    for (int i = 0; i < MB; ++i) {
      const __m256 av = _mm256_loadu_ps(a + i * lda + k);
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) acc[i][j] = _mm256_fmadd_ps(av, bv[j], acc[i][j]);
    }
  }
  if (k < K) {
    alignas(32) int32_t lanes[8];
    for (int q = 0; q < 8; ++q) lanes[q] = k + q < K ? -1 : 0;
    const __m256i mask = _mm256_load_si256(reinterpret_cast<const __m256i*>(lanes));
    __m256 bv[NB];
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) bv[j] = _mm256_maskload_ps(b + j * ldb + k, mask);
#pragma GCC unroll 4
    for (int i = 0; i < MB; ++i) {
      const __m256 av = _mm256_maskload_ps(a + i * lda + k, mask);
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) acc[i][j] = _mm256_fmadd_ps(av, bv[j], acc[i][j]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < MB; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) {
      const float v = hsum8(acc[i][j]);
      C[i * ldc + j] = add ? C[i * ldc + j] + v : v;
    }
}

// Rows in blocks of 4, columns in blocks of 3 (12 accumulators + 3 b vectors + 1 a vector):
// for each 3 rows of b (the weight), every row block of a runs while those rows sit in L1/L2.
// pf_end: end of the next b rows to prefetch (from b + NB * ldb), null for none.
template <int NB>
void dot_rows(const float* a, int64_t lda, const float* b, int64_t ldb, float* C, int64_t ldc, int64_t M, int64_t K,
              bool add, const float* pf_end) {
  const float* pf = b + NB * ldb;
  const int64_t lines = pf_end ? (pf_end - pf + 15) / 16 : 0, blocks = (M + 3) / 4;
  const int64_t per_block = (lines + blocks - 1) / blocks;
  int64_t m = 0;
  for (; m + 4 <= M; m += 4, pf += per_block * 16)
    dot_tile<4, NB>(a + m * lda, lda, b, ldb, C + m * ldc, ldc, K, add, pf, per_block);
  switch (M - m) {
    case 3: dot_tile<3, NB>(a + m * lda, lda, b, ldb, C + m * ldc, ldc, K, add, pf, per_block); break;
    case 2: dot_tile<2, NB>(a + m * lda, lda, b, ldb, C + m * ldc, ldc, K, add, pf, per_block); break;
    case 1: dot_tile<1, NB>(a + m * lda, lda, b, ldb, C + m * ldc, ldc, K, add, pf, per_block); break;
    default: break;
  }
}

void nt_stream_avx2(const float* a, int64_t lda, const float* b, int64_t ldb, float* C, int64_t ldc, int64_t M,
                    int64_t n0, int64_t n1, int64_t K, bool add) {
  int64_t n = n0;
  // Prefetch hints only (never dereferenced): they stay inside this call's rows of b.
  auto next_end = [&](int64_t next) {  // end of the next 3-row block, null past n1
    return next < n1 ? b + ((next + 3 < n1 ? next + 3 : n1) - 1) * ldb + K : nullptr;
  };
  for (; n + 3 <= n1; n += 3) dot_rows<3>(a, lda, b + n * ldb, ldb, C + n, ldc, M, K, add, next_end(n + 3));
  if (n1 - n == 2) dot_rows<2>(a, lda, b + n * ldb, ldb, C + n, ldc, M, K, add, nullptr);
  if (n1 - n == 1) dot_rows<1>(a, lda, b + n * ldb, ldb, C + n, ldc, M, K, add, nullptr);
}

}  // namespace

const Kernel& kernel_avx2() {
  static const Kernel k{kMR, kNR, 256, 72, 256, &micro_6x16, &epilogue_avx2, &pack_b_nt_avx2, &nt_stream_avx2,
                        &micro_ep_6x16, &pack_a_avx2};
  return k;
}

}  // namespace elmo::cpu::gemm_detail
