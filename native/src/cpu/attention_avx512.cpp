// AVX-512 instantiation of the fused attention tiles (attention_impl.h).
#include <immintrin.h>

// GCC 12 reports the `__m512 __Y = __Y;` inside its own _mm512_undefined_ps() (used by the
// unmasked max/min/roundscale/scalef wrappers) as possibly uninitialized.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "cpu/attention_kernels.h"

namespace elmo::cpu::attn {
namespace {

struct VecAvx512 {
  using R = __m512;
  static constexpr int W = 16, MR = 4, NR = 4;  // 16 accumulators of 32 zmm registers
  static R zero() { return _mm512_setzero_ps(); }
  static R set1(float x) { return _mm512_set1_ps(x); }
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, R x) { _mm512_storeu_ps(p, x); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static R max(R a, R b) { return _mm512_max_ps(a, b); }
  // exp: x = n ln2 + r, |r| <= ln2/2, e^r by a degree-6 polynomial (Cephes expf, ~1-2 ulp),
  // scaled by 2^n with scalef, which underflows to 0 (and -inf gives 0). NaN propagates.
  static R exp(R x) {
    x = _mm512_min_ps(_mm512_set1_ps(88.5f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
    const R n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    R r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    R y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(y, n);
  }
};

}  // namespace
}  // namespace elmo::cpu::attn

#include "cpu/attention_impl.h"

namespace elmo::cpu::attn {

void forward_item_avx512(const Args& a, int b, int h, int qb, float* scratch) {
  forward_item<VecAvx512>(a, b, h, qb, scratch);
}
void backward_item_avx512(const Args& a, int b, int h, float* scratch) {
  backward_item<VecAvx512>(a, b, h, scratch);
}

}  // namespace elmo::cpu::attn
