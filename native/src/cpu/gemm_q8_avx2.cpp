// int8 GEMM micro-kernel, AVX2 (see gemm_q8_kernels.h for the layouts).
//
// 4 rows x 16 weight rows per call, in 8 ymm accumulators of int32. For each group of 4 k, a
// row's 4 bytes of qa are broadcast and multiplied with the panel's 64 bytes as
//   vpmaddubsw(|qa|, sign(qa) * qw)  ->  16-bit sums of 2 products, then vpmaddwd with ones
// (int32 sums of 4). |qa| and |qw| are at most 127, so a 16-bit pair sum is at most 32258: the
// saturating vpmaddubsw never saturates and the sums are exact.
#include <immintrin.h>

#include "cpu/gemm_q8_kernels.h"

namespace elmo::cpu::gemm_q8_detail {
namespace {

constexpr int kMR = 4;

void micro_avx2(int64_t kq, const uint8_t* A, int64_t lda, const int8_t* B, const int32_t* rowsum, const float* sa,
                const float* sw, float* C, int64_t ldc, int rows, int cols, bool add) {
  (void)rowsum;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[kMR][2];
  for (int i = 0; i < kMR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
  for (int64_t g = 0; g < kq; ++g) {
    const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(B + g * 64));
    const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(B + g * 64 + 32));
    for (int i = 0; i < kMR; ++i) {
      int32_t word;
      __builtin_memcpy(&word, A + i * lda + g * 4, 4);
      const __m256i a = _mm256_set1_epi32(word);
      const __m256i au = _mm256_sign_epi8(a, a);  // |qa| (no -128 in qa)
      const __m256i p0 = _mm256_maddubs_epi16(au, _mm256_sign_epi8(b0, a));
      const __m256i p1 = _mm256_maddubs_epi16(au, _mm256_sign_epi8(b1, a));
      acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(p0, ones));
      acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(p1, ones));
    }
  }
  const __m256 w0 = _mm256_loadu_ps(sw), w1 = _mm256_loadu_ps(sw + 8);
  for (int i = 0; i < rows; ++i) {
    const __m256 s = _mm256_set1_ps(sa[i]);
    alignas(32) float v[kQ8Panel];
    _mm256_store_ps(v, _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[i][0]), s), w0));
    _mm256_store_ps(v + 8, _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[i][1]), s), w1));
    float* c = C + i * ldc;
    if (cols == kQ8Panel && !add) {
      _mm256_storeu_ps(c, _mm256_load_ps(v));
      _mm256_storeu_ps(c + 8, _mm256_load_ps(v + 8));
    } else {
      for (int j = 0; j < cols; ++j) c[j] = add ? c[j] + v[j] : v[j];
    }
  }
}

}  // namespace

const Q8Kernel& q8_kernel_avx2() {
  static const Q8Kernel k{"avx2", kMR, false, &micro_avx2};
  return k;
}

}  // namespace elmo::cpu::gemm_q8_detail
