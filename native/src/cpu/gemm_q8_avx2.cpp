// int8 GEMM micro-kernel, AVX2 (see gemm_q8_kernels.h for the layouts).
//
// Products in int16 (k pairs): 4 rows x 16 weight rows per call in 8 ymm accumulators of int32.
// For each pair of k, the panel's 2 x 16 int8 weights are widened to int16 (vpmovsxbw, shared by
// the 4 rows), a row's two values of qa (kept widened to int16) are broadcast, and vpmaddwd adds
// the products (exact: |qa qw| <= 127^2). That is 2 multiplies per 16 products, where int8
// operands would need vpmaddubsw (with the signs moved by vpsignb, as it takes one unsigned
// side) plus a vpmaddwd to widen its sums: AVX2 has no int8 dot product into int32. The weights
// stay int8 in memory (a quarter of the f32 bytes: what a batch of a few tokens waits for).
#include <immintrin.h>

#include "cpu/gemm_q8_kernels.h"

namespace elmo::cpu::gemm_q8_detail {
namespace {

constexpr int kMR = 4;

void micro_avx2(int64_t kq, const uint8_t* A, int64_t lda, const void* Bv, const int32_t* rowsum, const float* sa,
                const float* sw, float* C, int64_t ldc, int rows, int cols, bool add) {
  (void)rowsum;
  const int8_t* B = static_cast<const int8_t*>(Bv);
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  const uint8_t* a0 = A;
  const uint8_t* a1 = A + lda;
  const uint8_t* a2 = A + 2 * lda;
  const uint8_t* a3 = A + 3 * lda;
  for (int64_t p = 0; p < 2 * kq; ++p) {  // pairs of k
    const __m256i b0 = _mm256_cvtepi8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(B + p * 32)));
    const __m256i b1 = _mm256_cvtepi8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(B + p * 32 + 16)));
    int32_t w0, w1, w2, w3;
    __builtin_memcpy(&w0, a0 + p * 4, 4);
    __builtin_memcpy(&w1, a1 + p * 4, 4);
    __builtin_memcpy(&w2, a2 + p * 4, 4);
    __builtin_memcpy(&w3, a3 + p * 4, 4);
    __m256i x = _mm256_set1_epi32(w0);
    c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(x, b0));
    c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(x, b1));
    x = _mm256_set1_epi32(w1);
    c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(x, b0));
    c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(x, b1));
    x = _mm256_set1_epi32(w2);
    c20 = _mm256_add_epi32(c20, _mm256_madd_epi16(x, b0));
    c21 = _mm256_add_epi32(c21, _mm256_madd_epi16(x, b1));
    x = _mm256_set1_epi32(w3);
    c30 = _mm256_add_epi32(c30, _mm256_madd_epi16(x, b0));
    c31 = _mm256_add_epi32(c31, _mm256_madd_epi16(x, b1));
  }
  const __m256i acc[kMR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
  const __m256 s0 = _mm256_loadu_ps(sw), s1 = _mm256_loadu_ps(sw + 8);
  for (int i = 0; i < rows; ++i) {
    const __m256 s = _mm256_set1_ps(sa[i]);
    const __m256 v0 = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[i][0]), s), s0);
    const __m256 v1 = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[i][1]), s), s1);
    float* c = C + i * ldc;
    if (cols == kQ8Panel && !add) {
      _mm256_storeu_ps(c, v0);
      _mm256_storeu_ps(c + 8, v1);
    } else {
      alignas(32) float v[kQ8Panel];
      _mm256_store_ps(v, v0);
      _mm256_store_ps(v + 8, v1);
      for (int j = 0; j < cols; ++j) c[j] = add ? c[j] + v[j] : v[j];
    }
  }
}

}  // namespace

namespace {

// The row's scale, max |x| / 127 (NaN when a value is NaN), and *inv = 127 / max |x| (0 for a
// row of zeros); max |x| 8 values at a time.
float row_scale(const float* x, int64_t n, float* inv) {
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
  *inv = amax > 0.0f ? 127.0f / amax : 0.0f;
  return nan ? __builtin_nanf("") : amax / 127.0f;
}

// One value as the vector loops round it: nearest even, clamped, 0 for NaN (inf * 0).
int round_one(float x, float inv) {
  float r = __builtin_nearbyintf(x * inv);
  r = r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r);
  return r == r ? static_cast<int>(r) : 0;
}

// The row as int16 (the layout micro_avx2 reads), 16 values per step: converted with the
// current rounding mode (nearest even, as nearbyint), packed with signed saturation, clamped to
// [-127, 127] (a NaN of inf * 0 converts to INT_MIN, which then reads -127: its row's scale is
// infinite, so its outputs are NaN whatever the values).
float quantize_a16(void* dst, const float* x, int64_t n) {
  int16_t* q = static_cast<int16_t*>(dst);
  float inv;
  const float scale = row_scale(x, n, &inv);
  if (scale != scale) return scale;  // NaN: the row's outputs are NaN whatever q holds
  const __m256 vinv = _mm256_set1_ps(inv);
  const __m256i lo = _mm256_set1_epi16(-127), hi = _mm256_set1_epi16(127);
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k), vinv));
    const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k + 8), vinv));
    // packs works within 128-bit lanes: the permute puts the 16 values back in order.
    __m256i v = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
    v = _mm256_min_epi16(_mm256_max_epi16(v, lo), hi);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + k), v);
  }
  for (; k < n; ++k) q[k] = static_cast<int16_t>(round_one(x[k], inv));
  return scale;
}

}  // namespace

// 32 values per step, as quantize_a16 but packed on to int8.
float quantize_avx2(int8_t* q, const float* x, int64_t n) {
  float inv;
  const float scale = row_scale(x, n, &inv);
  if (scale != scale) return scale;  // NaN: a weight is refused, an activation row's outputs are NaN
  const __m256 vinv = _mm256_set1_ps(inv);
  const __m256i lo = _mm256_set1_epi8(-127), perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  int64_t k = 0;
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
  for (; k < n; ++k) q[k] = static_cast<int8_t>(round_one(x[k], inv));
  return scale;
}

const Q8Kernel& q8_kernel_avx2() {
  static const Q8Kernel k{"avx2", kMR, 2, 2, false, &micro_avx2, &quantize_avx2, &quantize_a16};
  return k;
}

}  // namespace elmo::cpu::gemm_q8_detail
