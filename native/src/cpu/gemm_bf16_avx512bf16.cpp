// AVX512-BF16 pieces of the bf16-weight GEMM (driver: gemm_bf16.cpp). vdpbf16ps multiplies
// pairs of bf16 (k, k+1) from each operand and adds both products into one fp32 lane, so A and B
// are packed as k pairs: A [Kp/2][12][2] (a rounded by vcvtneps2bf16, nearest even), B
// [Kp/2][32][2], K padded with a zero to even.
//   * a 12x32 micro-kernel (24 zmm accumulators; per k pair 2 B loads, 12 broadcast A pairs,
//     24 vdpbf16ps) with 4- and 8-row variants for a panel's tail and the fp32 epilogue applied
//     to its accumulators; A packed 32 k at a time with an in-register transpose;
//   * a few-row NT path: rows of a rounded to bf16 once, each weight row streamed once, 32 k
//     per vdpbf16ps, lanes summed at the end.
// vdpbf16ps and vcvtneps2bf16 treat subnormal inputs (and results) as zero; nothing else differs
// from the other paths but the order of the fp32 sums.
// GCC 12's avx512fintrin.h seeds unmasked results with _mm512_undefined_ps() (a self-initialized
// variable), which -Wmaybe-uninitialized reports once inlined at -O3: a known false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu/gemm_avx512_inl.h"
#include "cpu/gemm_bf16_kernels.h"

namespace elmo::cpu::gemm_bf16_detail {
namespace {

using gemm_detail::EpilogueArgs;
using gemm_detail::Prefetch;
using gemm_detail::hi_mask;
using gemm_detail::kAAhead;
using gemm_detail::lo_mask;
using gemm_detail::micro_tile;
using gemm_detail::micro_tile_ep;
using gemm_detail::store_tile;

constexpr int kMR = 12, kNR = 32;

inline __m512bh as_bh(__m512i x) { return reinterpret_cast<__m512bh&>(x); }

// 16 floats -> 16 bf16 (nearest even), lanes past n read as zero.
inline __m256i to_bf16(const float* p, int n) {
  const __mmask16 m = n >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << n) - 1);
  const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, p));
  return reinterpret_cast<const __m256i&>(h);
}

// ---- packed path ------------------------------------------------------------------------------

// One A micro-panel: 32 k (16 pairs) at a time, each row rounded into one zmm of 16 k pairs,
// the 12 rows (four zero rows as padding) transposed in registers as 32-bit elements, then the
// 12 pairs of each k pair stored in place [k/2][i]. K past its end reads as zeros.
void pack_a_avx512bf16(void* dst, const float* a, int64_t lda, int64_t K, int rows) {
  float* d = static_cast<float*>(dst);  // k pairs moved as 32-bit lanes, never as floats
  const int64_t pairs = (K + 1) / 2;
  for (int64_t k = 0; k < K; k += 32) {
    const int n = K - k >= 32 ? 32 : static_cast<int>(K - k);
    const __mmask16 m0 = lo_mask(n), m1 = hi_mask(n);
    __m512 r[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {
      if (i < rows && i < kMR) {
        const float* s = a + i * lda + k;
        const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, s + 16), _mm512_maskz_loadu_ps(m0, s));
        r[i] = reinterpret_cast<const __m512&>(h);
      } else {
        r[i] = _mm512_setzero_ps();
      }
    }
    gemm_detail::transpose16(r);
    const int64_t p0 = k / 2, np = pairs - p0 < 16 ? pairs - p0 : 16;
    // Full 16-lane stores whose 4 zero lanes the next pair's store overwrites; only the last
    // pair's store is masked (as in the fp32 packer, where that cut its time by two thirds).
#pragma GCC unroll 16
    for (int q = 0; q < 16; ++q) {
      if (q + 1 < np) _mm512_storeu_ps(d + (p0 + q) * kMR, r[q]);
      else if (q + 1 == np) _mm512_mask_storeu_ps(d + (p0 + q) * kMR, 0x0FFF, r[q]);
    }
  }
}

// One B micro-panel: the 32-bit pair (k, k+1) of each weight row, 8 pairs at a time.
void pack_b_avx512bf16(uint16_t* dst, const uint16_t* src, int64_t ldb, int64_t kc, int cols) {
  uint32_t* d = reinterpret_cast<uint32_t*>(dst);
  const int64_t full = kc / 2;  // pairs wholly inside kc
  for (int j = 0; j < kNR; ++j) {
    const uint16_t* s = src + j * ldb;
    if (j >= cols) {
      for (int64_t p = 0; p < (kc + 1) / 2; ++p) d[p * kNR + j] = 0;
      continue;
    }
    for (int64_t p = 0; p < full; ++p) {
      uint32_t v;
      std::memcpy(&v, s + 2 * p, sizeof(v));
      d[p * kNR + j] = v;
    }
    if (kc % 2) d[full * kNR + j] = s[kc - 1];  // the odd last k, its pair partner zero
  }
}

// The 12x32 micro-kernel (per k pair 2 B loads, 12 broadcast A pairs, 24 vdpbf16ps):
// C[rows, cols] (+)= A . B over the first R rows of the A panel (rows <= R), then the epilogue
// `ep` (null: none) on the accumulators before their one store; R < kMR serves a panel's tail.
struct Bf16Rows {
  template <int R, bool kPf>
  static void run(int64_t kc, const void* Ap, const uint16_t* Bp, float* C, int64_t ldc, int rows, int cols, bool add,
                  const EpilogueArgs* ep, int64_t r0, int64_t c0, Prefetch pf) {
    const uint32_t* ap = static_cast<const uint32_t*>(Ap);
    __m512 acc[R][2];
#pragma GCC unroll 12
    for (int i = 0; i < R; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    const int64_t pairs = (kc + 1) / 2;
#pragma GCC unroll 2
    for (int64_t p = 0; p < pairs; ++p) {
      if (kPf && pf.lines > 0) {
        _mm_prefetch(pf.p, _MM_HINT_T0);
        pf.p += 64;
        --pf.lines;
      }
      _mm_prefetch(reinterpret_cast<const char*>(ap + kMR * kAAhead), _MM_HINT_T0);  // A from L2/L3
      const __m512bh b0 = as_bh(_mm512_loadu_si512(Bp)), b1 = as_bh(_mm512_loadu_si512(Bp + 32));  // B[p, 0:32]
#pragma GCC unroll 12
      for (int i = 0; i < R; ++i) {
        const __m512bh a = as_bh(_mm512_set1_epi32(static_cast<int>(ap[i])));  // A[i, 2p:2p+2]
        acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, b0);
        acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, b1);
      }
      ap += kMR;
      Bp += 2 * kNR;
    }
    store_tile<R>(acc, C, ldc, rows, cols, add, ep, r0, c0);
  }
};

// ---- few-row path -------------------------------------------------------------------------------

// Rows of a as bf16, zero-padded to a multiple of 32 (one zmm of bf16).
int64_t stream_ld_avx512bf16(int64_t K) { return (K + 31) / 32 * 32; }

void prep_a_avx512bf16(void* dst, const float* a, int64_t lda, int64_t M, int64_t K) {
  const int64_t ld = stream_ld_avx512bf16(K);
  for (int64_t m = 0; m < M; ++m) {
    uint16_t* d = static_cast<uint16_t*>(dst) + m * ld;
    for (int64_t k = 0; k < ld; k += 16) {
      const __m256i h = k < K ? to_bf16(a + m * lda + k, static_cast<int>(K - k)) : _mm256_setzero_si256();
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + k), h);
    }
  }
}

// C[0:MB, 0:NB] (ldc) = (add ? C : 0) + a'[0:MB] . b[0:NB]^T over K, 32 k per vdpbf16ps; the
// weight tail through a masked (zeroing, fault-free) load, a' is zero-padded already.
template <int MB, int NB>
void dot_tile(const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float* C, int64_t ldc, int64_t K,
              bool add) {
  __m512 acc[MB][NB];
#pragma GCC unroll 4
  for (int i = 0; i < MB; ++i)
#pragma GCC unroll 3
    for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_setzero_ps();
  constexpr int64_t kAhead = 512;  // weight elements: rows stream from memory, prefetched 1 KiB ahead
  for (int64_t k = 0; k < K; k += 32) {
    const __mmask32 m = K - k >= 32 ? 0xFFFFFFFFu : static_cast<__mmask32>((1u << (K - k)) - 1);
    __m512bh bv[NB];
#pragma GCC unroll 3
    for (int j = 0; j < NB; ++j) {
      _mm_prefetch(reinterpret_cast<const char*>(b + j * ldb + k + kAhead), _MM_HINT_T0);
      bv[j] = as_bh(_mm512_maskz_loadu_epi16(m, b + j * ldb + k));
    }
#pragma GCC unroll 4
    for (int i = 0; i < MB; ++i) {
      const __m512bh av = as_bh(_mm512_loadu_si512(a + i * lda + k));
#pragma GCC unroll 3
      for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], av, bv[j]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < MB; ++i)
#pragma GCC unroll 3
    for (int j = 0; j < NB; ++j) {
      const float v = _mm512_reduce_add_ps(acc[i][j]);
      C[i * ldc + j] = add ? C[i * ldc + j] + v : v;
    }
}

template <int NB>
void dot_rows(const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float* C, int64_t ldc, int64_t M,
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

void nt_stream_avx512bf16(const void* a, const uint16_t* b, int64_t ldb, float* C, int64_t ldc, int64_t M,
                          int64_t n0, int64_t n1, int64_t K, bool add) {
  const uint16_t* ap = static_cast<const uint16_t*>(a);
  const int64_t lda = stream_ld_avx512bf16(K);
  int64_t n = n0;
  for (; n + 3 <= n1; n += 3) dot_rows<3>(ap, lda, b + n * ldb, ldb, C + n, ldc, M, K, add);
  if (n1 - n == 2) dot_rows<2>(ap, lda, b + n * ldb, ldb, C + n, ldc, M, K, add);
  if (n1 - n == 1) dot_rows<1>(ap, lda, b + n * ldb, ldb, C + n, ldc, M, K, add);
}

}  // namespace

const Bf16Kernel& bf16_kernel_avx512_bf16() {
  using A = const void*;
  using B = const uint16_t*;
  static const Bf16Kernel k{"avx512_bf16",
                            kMR,
                            kNR,
                            256,
                            96,
                            256,
                            2,
                            2,
                            &pack_a_avx512bf16,
                            &pack_b_avx512bf16,
                            &micro_tile<Bf16Rows, A, B>,
                            &stream_ld_avx512bf16,
                            &prep_a_avx512bf16,
                            &nt_stream_avx512bf16,
                            &micro_tile_ep<Bf16Rows, A, B>};
  return k;
}

}  // namespace elmo::cpu::gemm_bf16_detail
