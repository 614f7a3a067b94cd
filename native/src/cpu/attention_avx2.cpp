// AVX2 + FMA instantiation of the fused attention tiles (attention_impl.h).
#include <immintrin.h>

#include "cpu/attention_kernels.h"

namespace elmo::cpu::attn {
namespace {

struct VecAvx2 {
  using R = __m256;
  static constexpr int W = 8, MR = 4, NR = 3;  // 12 accumulators of 16 ymm registers
  static R zero() { return _mm256_setzero_ps(); }
  static R set1(float x) { return _mm256_set1_ps(x); }
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, R x) { _mm256_storeu_ps(p, x); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static R max(R a, R b) { return _mm256_max_ps(a, b); }
  // exp: x = n ln2 + r, |r| <= ln2/2, e^r by a degree-6 polynomial (Cephes expf, ~1-2 ulp),
  // 2^n built in the exponent field. Below ln(FLT_MIN) the result is 0 (also for -inf);
  // NaN propagates.
  static R exp(R x) {
    const R lo = _mm256_set1_ps(-87.33654f), hi = _mm256_set1_ps(88.0f);
    const R under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(hi, _mm256_max_ps(lo, x));  // second operand wins on NaN
    const R n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    R r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    R y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
  }
};

}  // namespace
}  // namespace elmo::cpu::attn

#include "cpu/attention_impl.h"

namespace elmo::cpu::attn {

void forward_item_avx2(const Args& a, int b, int h, int qb, float* scratch) {
  forward_item<VecAvx2>(a, b, h, qb, scratch);
}
void backward_item_avx2(const Args& a, int b, int h, float* scratch) { backward_item<VecAvx2>(a, b, h, scratch); }

}  // namespace elmo::cpu::attn
