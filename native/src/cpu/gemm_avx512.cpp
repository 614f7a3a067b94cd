// AVX-512 pieces of the CPU GEMM (driver: gemm.cpp): a 12x32 micro-kernel (24 zmm
// accumulators, 2 B loads and 12 broadcasts of A per k) with 4- and 8-row variants for a
// panel's tail and the epilogue applied to its accumulators, the vectorized epilogue with an
// erf GELU (masked tails), and 16x16-transpose packers for A (row-major) and B stored [N, K].
// GCC 12's avx512fintrin.h seeds unmasked results with _mm512_undefined_ps() (a self-initialized
// variable), which -Wmaybe-uninitialized reports once inlined at -O3: a known false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstdint>

#include "cpu/gemm_avx512_inl.h"
#include "cpu/gemm_kernels.h"

namespace elmo::cpu::gemm_detail {
namespace {

constexpr int kMR = 12, kNR = 32;

// The 12x32 micro-kernel (24 zmm accumulators, 2 B loads and 12 broadcasts of A per k):
// C[rows, cols] (+)= A[kc][kMR] . B[kc][kNR] over the first R rows of the A panel (rows <= R),
// then the epilogue `ep` (null: none) on the accumulators before their one store. R < kMR
// serves a panel's short tail (a 32-row batch is two full panels and one of 8 rows) at the
// cost of its own rows, not twelve.
struct Fp32Rows {
  template <int R, bool kPf>
  static void run(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, int rows, int cols, bool add,
                  const EpilogueArgs* ep, int64_t r0, int64_t c0, Prefetch pf) {
    __m512 acc[R][2];
#pragma GCC unroll 12
    for (int i = 0; i < R; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; ++k) {
      if (kPf && pf.lines > 0) {
        _mm_prefetch(pf.p, _MM_HINT_T0);
        pf.p += 64;
        --pf.lines;
      }
      _mm_prefetch(reinterpret_cast<const char*>(Ap + kMR * kAAhead), _MM_HINT_T0);
      const __m512 b0 = _mm512_load_ps(Bp), b1 = _mm512_load_ps(Bp + 16);  // B[k, 0:32]
#pragma GCC unroll 12
      for (int i = 0; i < R; ++i) {
        const __m512 a = _mm512_set1_ps(Ap[i]);  // A[i, k]
        acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]);
        acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);
      }
      Ap += kMR;
      Bp += kNR;
    }
    store_tile<R>(acc, C, ldc, rows, cols, add, ep, r0, c0);
  }
};

void epilogue_avx512(const EpilogueArgs& e, float* C, int64_t ldc, int64_t m0, int64_t n0, int rows, int cols) {
  const float* bias = e.bias ? e.bias + n0 : nullptr;
  for (int i = 0; i < rows; ++i) {
    float* c = C + i * ldc;
    float* pre = e.pre_gelu ? e.pre_gelu + (m0 + i) * e.ld_pre + n0 : nullptr;
    const float* res = e.residual ? e.residual + (m0 + i) * e.ld_res + n0 : nullptr;
    for (int j = 0; j < cols; j += 16) {
      const __mmask16 m = cols - j >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (cols - j)) - 1);
      __m512 v = _mm512_maskz_loadu_ps(m, c + j);
      if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias + j));
      if (e.gelu) {
        if (pre) _mm512_mask_storeu_ps(pre + j, m, v);
        v = gelu16(v);
      }
      if (res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, res + j));
      _mm512_mask_storeu_ps(c + j, m, v);
    }
  }
}

void pack_b_nt_avx512(float* dst, const float* src, int64_t ldb, int64_t K, int cols) {
  if (cols < kNR) {
    pack_b_nt_scalar(dst, src, ldb, K, cols, kNR);
    return;
  }
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    for (int h = 0; h < 2; ++h) {  // two 16-column halves of the 32-wide panel
      __m512 r[16];
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j) r[j] = _mm512_loadu_ps(src + (h * 16 + j) * ldb + k);
      transpose16(r);
#pragma GCC unroll 16
      for (int q = 0; q < 16; ++q) _mm512_store_ps(dst + (k + q) * kNR + h * 16, r[q]);
    }
  }
  for (; k < K; ++k)
    for (int j = 0; j < kNR; ++j) dst[k * kNR + j] = src[j * ldb + k];
}

// One A micro-panel [K][12] from `rows` <= 12 rows of a row-major source: 16 k at a time, the
// rows (four zero rows as padding) transposed in registers, then 12 floats stored per k.
void pack_a_avx512(float* dst, const float* src, int64_t lda, int64_t K, int rows) {
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 r[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) r[i] = i < rows && i < kMR ? _mm512_loadu_ps(src + i * lda + k) : _mm512_setzero_ps();
    transpose16(r);
    // Each k's 12 floats go out as a full 16-lane store whose 4 zero lanes the next k's store
    // overwrites; only the last one is masked. With 16 masked stores the packer was 7.6% of a
    // BERT-mini 1x32 forward on Zen 5, with one 2.6%.
#pragma GCC unroll 15
    for (int q = 0; q < 15; ++q) _mm512_storeu_ps(dst + (k + q) * kMR, r[q]);
    _mm512_mask_storeu_ps(dst + (k + 15) * kMR, 0x0FFF, r[15]);
  }
  for (; k < K; ++k)
    for (int i = 0; i < kMR; ++i) dst[k * kMR + i] = i < rows ? src[i * lda + k] : 0.0f;
}

}  // namespace

const Kernel& kernel_avx512() {
  using F = const float*;
  static const Kernel k{kMR,
                        kNR,
                        256,
                        96,
                        256,
                        &micro_tile<Fp32Rows, F, F>,
                        &epilogue_avx512,
                        &pack_b_nt_avx512,
                        nullptr,
                        &micro_tile_ep<Fp32Rows, F, F>,
                        &pack_a_avx512};
  return k;
}

}  // namespace elmo::cpu::gemm_detail
