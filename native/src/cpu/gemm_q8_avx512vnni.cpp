// int8 GEMM micro-kernel, AVX-512 VNNI (see gemm_q8_kernels.h for the layouts).
//
// 8 rows x 16 weight rows per call, in 8 zmm accumulators of int32. For each group of 4 k, a
// row's 4 bytes of qa + 128 (uint8) are broadcast and vpdpbusd adds their products with the
// panel's 64 bytes (int8) to the row's 16 sums. The offset is removed at the end:
// sum (qa + 128) qw = sum qa qw + 128 * rowsum, exactly, in int32.
// GCC 12's unmasked AVX-512 intrinsics (slli, cvtepi32_ps) pass _mm512_undefined_*() (a
// self-initialized variable), which -Wmaybe-uninitialized reports once inlined: a known false
// positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include "cpu/gemm_q8_kernels.h"

namespace elmo::cpu::gemm_q8_detail {

namespace {

constexpr int kMR = 8;

void micro_vnni(int64_t kq, const uint8_t* A, int64_t lda, const void* Bv, const int32_t* rowsum, const float* sa,
                const float* sw, float* C, int64_t ldc, int rows, int cols, bool add) {
  const int8_t* B = static_cast<const int8_t*>(Bv);
  __m512i acc[kMR];
  for (int i = 0; i < kMR; ++i) acc[i] = _mm512_setzero_si512();
  for (int64_t g = 0; g < kq; ++g) {
    const __m512i b = _mm512_load_si512(reinterpret_cast<const void*>(B + g * 64));
    for (int i = 0; i < kMR; ++i) {
      int32_t word;
      __builtin_memcpy(&word, A + i * lda + g * 4, 4);
      acc[i] = _mm512_dpbusd_epi32(acc[i], _mm512_set1_epi32(word), b);
    }
  }
  const __m512i offset = _mm512_slli_epi32(_mm512_loadu_si512(reinterpret_cast<const void*>(rowsum)), 7);
  const __m512 w = _mm512_loadu_ps(sw);
  const __mmask16 mask = static_cast<__mmask16>(cols >= 16 ? 0xFFFF : (1u << cols) - 1);
  for (int i = 0; i < rows; ++i) {
    const __m512i sum = _mm512_sub_epi32(acc[i], offset);
    __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(sa[i])), w);
    float* c = C + i * ldc;
    if (add) v = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, c), v);
    _mm512_mask_storeu_ps(c, mask, v);
  }
}

}  // namespace

const Q8Kernel& q8_kernel_avx512_vnni() {
  static const Q8Kernel k{"avx512_vnni", kMR, 1, 4, true, &micro_vnni, &quantize_avx2, nullptr};
  return k;
}

}  // namespace elmo::cpu::gemm_q8_detail
