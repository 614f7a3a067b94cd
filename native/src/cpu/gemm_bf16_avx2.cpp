// AVX2 + FMA pieces of the bf16-weight GEMM (driver: gemm_bf16.cpp). AVX2 has no bf16
// arithmetic, so bf16 becomes f32 in registers: interleaving a vector of bf16 with zeros
// (vpunpck{l,h}wd) puts each value in the high half of a 32-bit lane, which is its f32. That is
// one shuffle per 8 values, on the shuffle port, off the two FMA ports; the math is fp32 FMA.
//   * a 6x16 micro-kernel over packed panels (12 ymm accumulators, one 32-byte B load widened
//     into two vectors and 6 broadcasts of A per k);
//   * a few-row NT path that reads each weight row once, straight from its bf16 storage;
//   * a packer for B stored [N, K] through 8x8 transposes of 16-bit elements.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu/gemm_bf16_kernels.h"

namespace elmo::cpu::gemm_bf16_detail {
namespace {

constexpr int kMR = 6, kNR = 16;

// bf16 x (16 values) -> f32: words 0-3 and 8-11 of x (low halves of the 128-bit lanes) / words
// 4-7 and 12-15 (high halves).
inline __m256 widen_lo(__m256i x, __m256i zero) { return _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, x)); }
inline __m256 widen_hi(__m256i x, __m256i zero) { return _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, x)); }

// x rounded to bf16 (nearest even; NaN stays a quiet NaN), kept as f32: as f32_to_bf16 in half.h.
inline __m256 round_bf16(__m256 x) {
  const __m256i u = _mm256_castps_si256(x), high = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_and_si256(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), high);
  const __m256i qnan = _mm256_and_si256(_mm256_or_si256(u, _mm256_set1_epi32(0x00400000)), high);
  return _mm256_blendv_ps(_mm256_castsi256_ps(r), _mm256_castsi256_ps(qnan), _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

// ---- packed path ------------------------------------------------------------------------------

// One A micro-panel [K][6] of rounded f32: 8 k of each row rounded in a vector, then laid out.
void pack_a_avx2(void* dst, const float* a, int64_t lda, int64_t K, int rows) {
  float* d = static_cast<float*>(dst);
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    alignas(32) float t[kMR][8];
    for (int i = 0; i < kMR; ++i)
      _mm256_store_ps(t[i], i < rows ? round_bf16(_mm256_loadu_ps(a + i * lda + k)) : _mm256_setzero_ps());
    for (int q = 0; q < 8; ++q)
      for (int i = 0; i < kMR; ++i) d[(k + q) * kMR + i] = t[i][q];
  }
  if (k < K) pack_a_rounded_f32(d + k * kMR, a + k, lda, K - k, rows, kMR);
}

// Position in a packed B row of column j: columns [0-3, 8-11, 4-7, 12-15] are stored in that
// order, so that widen_lo gives columns 0-7 and widen_hi columns 8-15.
constexpr int packed_pos(int j) { return j < 4 || j >= 12 ? j : j < 8 ? j + 4 : j - 4; }

// In-register transpose of an 8x8 block of 16-bit elements: r[j] (row j, 8 k) become r[q] (k = q,
// 8 rows).
inline void transpose8x8_epi16(__m128i r[8]) {
  const __m128i t0 = _mm_unpacklo_epi16(r[0], r[1]), t1 = _mm_unpackhi_epi16(r[0], r[1]);
  const __m128i t2 = _mm_unpacklo_epi16(r[2], r[3]), t3 = _mm_unpackhi_epi16(r[2], r[3]);
  const __m128i t4 = _mm_unpacklo_epi16(r[4], r[5]), t5 = _mm_unpackhi_epi16(r[4], r[5]);
  const __m128i t6 = _mm_unpacklo_epi16(r[6], r[7]), t7 = _mm_unpackhi_epi16(r[6], r[7]);
  const __m128i u0 = _mm_unpacklo_epi32(t0, t2), u1 = _mm_unpackhi_epi32(t0, t2);  // k 0,1 / 2,3 of rows 0-3
  const __m128i u2 = _mm_unpacklo_epi32(t1, t3), u3 = _mm_unpackhi_epi32(t1, t3);  // k 4,5 / 6,7
  const __m128i u4 = _mm_unpacklo_epi32(t4, t6), u5 = _mm_unpackhi_epi32(t4, t6);  // same, rows 4-7
  const __m128i u6 = _mm_unpacklo_epi32(t5, t7), u7 = _mm_unpackhi_epi32(t5, t7);
  r[0] = _mm_unpacklo_epi64(u0, u4);
  r[1] = _mm_unpackhi_epi64(u0, u4);
  r[2] = _mm_unpacklo_epi64(u1, u5);
  r[3] = _mm_unpackhi_epi64(u1, u5);
  r[4] = _mm_unpacklo_epi64(u2, u6);
  r[5] = _mm_unpackhi_epi64(u2, u6);
  r[6] = _mm_unpacklo_epi64(u3, u7);
  r[7] = _mm_unpackhi_epi64(u3, u7);
}

void pack_b_avx2(uint16_t* dst, const uint16_t* src, int64_t ldb, int64_t kc, int cols) {
  int64_t k = 0;
  if (cols == kNR) {
    for (; k + 8 <= kc; k += 8) {
      __m128i lo[8], hi[8];  // columns 0-7 and 8-15
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        lo[j] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j * ldb + k));
        hi[j] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + (8 + j) * ldb + k));
      }
      transpose8x8_epi16(lo);
      transpose8x8_epi16(hi);
#pragma GCC unroll 8
      for (int q = 0; q < 8; ++q)  // [0-3, 8-11 | 4-7, 12-15]
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (k + q) * kNR),
                            _mm256_set_m128i(_mm_unpackhi_epi64(lo[q], hi[q]), _mm_unpacklo_epi64(lo[q], hi[q])));
    }
  }
  for (; k < kc; ++k)
    for (int j = 0; j < kNR; ++j) dst[k * kNR + packed_pos(j)] = j < cols ? src[j * ldb + k] : 0;
}

void micro_6x16(int64_t kc, const void* Ap, const uint16_t* Bp, float* C, int64_t ldc, int rows, int cols,
                bool add, gemm_detail::Prefetch pf) {
  const float* ap = static_cast<const float*>(Ap);
  const __m256i zero = _mm256_setzero_si256();
  __m256 acc[kMR][2];
#pragma GCC unroll 6
  for (int i = 0; i < kMR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    if (pf.lines > 0) {
      _mm_prefetch(pf.p, _MM_HINT_T0);
      pf.p += 64;
      --pf.lines;
    }
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(Bp));  // B[k, 0:16]
    const __m256 b0 = widen_lo(x, zero), b1 = widen_hi(x, zero);
#pragma GCC unroll 6
    for (int i = 0; i < kMR; ++i) {
      const __m256 a = _mm256_broadcast_ss(ap + i);  // A[i, k]
      acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
    }
    ap += kMR;
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

// ---- few-row path -------------------------------------------------------------------------------

// Rows of a are held rounded, in blocks of 16 k ordered [0-3, 8-11, 4-7, 12-15] to match the
// widening of 16 consecutive weight values, zero-padded to a multiple of 16.
int64_t stream_ld_avx2(int64_t K) { return (K + 15) / 16 * 16; }

void prep_a_avx2(void* dst, const float* a, int64_t lda, int64_t M, int64_t K) {
  const int64_t ld = stream_ld_avx2(K);
  for (int64_t m = 0; m < M; ++m) {
    const float* s = a + m * lda;
    float* d = static_cast<float*>(dst) + m * ld;
    for (int64_t k = 0; k < K; k += 16) {
      alignas(32) float t[16] = {};
      const float* p = s + k;
      if (K - k < 16) {
        std::memcpy(t, p, static_cast<size_t>(K - k) * sizeof(float));
        p = t;
      }
      const __m256 x0 = round_bf16(_mm256_loadu_ps(p)), x1 = round_bf16(_mm256_loadu_ps(p + 8));
      _mm256_storeu_ps(d + k, _mm256_permute2f128_ps(x0, x1, 0x20));      // k 0-3, 8-11
      _mm256_storeu_ps(d + k + 8, _mm256_permute2f128_ps(x0, x1, 0x31));  // k 4-7, 12-15
    }
  }
}

// Sum of the 8 lanes, always in the same order.
inline float hsum8(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// C[0:MB, 0:NB] (ldc) = (add ? C : 0) + a'[0:MB] . b[0:NB]^T over K: 16 k per step, each weight
// row widened into two vectors that meet the matching halves of the prepared rows of a.
// MB x NB = 4 x 2: 8 accumulators, 4 widened weight vectors, a from memory (15 ymm with zero).
template <int MB, int NB>
void dot_tile(const float* a, int64_t lda, const uint16_t* b, int64_t ldb, float* C, int64_t ldc, int64_t K,
              bool add) {
  const __m256i zero = _mm256_setzero_si256();
  __m256 acc[MB][NB];
#pragma GCC unroll 4
  for (int i = 0; i < MB; ++i)
#pragma GCC unroll 2
    for (int j = 0; j < NB; ++j) acc[i][j] = _mm256_setzero_ps();
  constexpr int64_t kAhead = 512;  // weight elements: rows stream from memory, prefetched 1 KiB ahead
  auto step = [&](int64_t k, const __m256i* x) {
    __m256 lo[NB], hi[NB];
#pragma GCC unroll 2
    for (int j = 0; j < NB; ++j) lo[j] = widen_lo(x[j], zero), hi[j] = widen_hi(x[j], zero);
#pragma GCC unroll 4
    for (int i = 0; i < MB; ++i) {
      const __m256 a_lo = _mm256_loadu_ps(a + i * lda + k), a_hi = _mm256_loadu_ps(a + i * lda + k + 8);
#pragma GCC unroll 2
      for (int j = 0; j < NB; ++j) {
        acc[i][j] = _mm256_fmadd_ps(a_lo, lo[j], acc[i][j]);
        acc[i][j] = _mm256_fmadd_ps(a_hi, hi[j], acc[i][j]);
      }
    }
  };
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m256i x[NB];
#pragma GCC unroll 2
    for (int j = 0; j < NB; ++j) {
      if ((k & 31) == 0) _mm_prefetch(reinterpret_cast<const char*>(b + j * ldb + k + kAhead), _MM_HINT_T0);
      x[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + j * ldb + k));
    }
    step(k, x);
  }
  if (k < K) {  // the tail through zero-padded copies (a' is zero-padded already)
    alignas(32) uint16_t t[NB][16] = {};
    __m256i x[NB];
    for (int j = 0; j < NB; ++j) {
      std::memcpy(t[j], b + j * ldb + k, static_cast<size_t>(K - k) * sizeof(uint16_t));
      x[j] = _mm256_load_si256(reinterpret_cast<const __m256i*>(t[j]));
    }
    step(k, x);
  }
#pragma GCC unroll 4
  for (int i = 0; i < MB; ++i)
#pragma GCC unroll 2
    for (int j = 0; j < NB; ++j) {
      const float v = hsum8(acc[i][j]);
      C[i * ldc + j] = add ? C[i * ldc + j] + v : v;
    }
}

// For each NB weight rows, every 4-row block of a runs while those rows sit in L1.
template <int NB>
void dot_rows(const float* a, int64_t lda, const uint16_t* b, int64_t ldb, float* C, int64_t ldc, int64_t M,
              int64_t K, bool add) {
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) dot_tile<4, NB>(a + m * lda, lda, b, ldb, C + m * ldc, ldc, K, add);
  switch (M - m) {
    case 3: dot_tile<3, NB>(a + m * lda, lda, b, ldb, C + m * ldc, ldc, K, add); break;
    case 2: dot_tile<2, NB>(a + m * lda, lda, b, ldb, C + m * ldc, ldc, K, add); break;
    case 1: dot_tile<1, NB>(a + m * lda, lda, b, ldb, C + m * ldc, ldc, K, add); break;
    default: break;
  }
}

void nt_stream_avx2(const void* a, const uint16_t* b, int64_t ldb, float* C, int64_t ldc, int64_t M, int64_t n0,
                    int64_t n1, int64_t K, bool add) {
  const float* ap = static_cast<const float*>(a);
  const int64_t lda = stream_ld_avx2(K);
  int64_t n = n0;
  for (; n + 2 <= n1; n += 2) dot_rows<2>(ap, lda, b + n * ldb, ldb, C + n, ldc, M, K, add);
  if (n < n1) dot_rows<1>(ap, lda, b + n * ldb, ldb, C + n, ldc, M, K, add);
}

}  // namespace

const Bf16Kernel& bf16_kernel_avx2() {
  static const Bf16Kernel k{"avx2",         kMR,           kNR,           256,           72,
                            256,            1,             4,             &pack_a_avx2,  &pack_b_avx2,
                            &micro_6x16,    &stream_ld_avx2, &prep_a_avx2, &nt_stream_avx2,
                            nullptr};
  return k;
}

}  // namespace elmo::cpu::gemm_bf16_detail
