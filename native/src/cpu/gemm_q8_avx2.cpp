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

// 32 values per step: |x| max (and a NaN flag), then x * (127 / amax) converted with the
// current rounding mode (nearest even, as nearbyint) and packed with signed saturation.
float quantize_avx2(int8_t* q, const float* x, int64_t n) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 vmax = _mm256_setzero_ps(), vnan = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    const __m256 v = _mm256_loadu_ps(x + k);
    vnan = _mm256_or_ps(vnan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, v));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  float amax = 0.0f;
  for (float v : lanes) amax = v > amax ? v : amax;
  bool nan = _mm256_movemask_ps(vnan) != 0;
  for (; k < n; ++k) {
    const float v = x[k] < 0 ? -x[k] : x[k];
    nan |= v != v;
    amax = v > amax ? v : amax;
  }
  if (nan) {
    for (int64_t i = 0; i < n; ++i) q[i] = 0;
    return __builtin_nanf("");
  }
  const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
  const __m256 vinv = _mm256_set1_ps(inv);
  const __m256i lo = _mm256_set1_epi8(-127), perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  k = 0;
  for (; k + 32 <= n; k += 32) {
    const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k), vinv));
    const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k + 8), vinv));
    const __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k + 16), vinv));
    const __m256i d = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k + 24), vinv));
    // packs work within 128-bit lanes: the permute puts the 32 bytes back in order.
    const __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    __m256i v = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), perm);
    v = _mm256_max_epi8(v, lo);  // -128 (NaN of inf * 0) to -127
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + k), v);
  }
  for (; k < n; ++k) {
    float r = __builtin_nearbyintf(x[k] * inv);
    r = r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r);
    q[k] = r == r ? static_cast<int8_t>(r) : 0;
  }
  return amax / 127.0f;
}

const Q8Kernel& q8_kernel_avx2() {
  static const Q8Kernel k{"avx2", kMR, false, &micro_avx2, &quantize_avx2};
  return k;
}

}  // namespace elmo::cpu::gemm_q8_detail
