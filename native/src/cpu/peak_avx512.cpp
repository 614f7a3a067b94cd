// AVX-512 loop of measure_cpu_peak (peak.cpp).
#include <immintrin.h>

#include "cpu/peak_kernels.h"

namespace elmo::cpu::peak_detail {

float fma_rounds_avx512(int64_t n) {
  __m512 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(1.0f + 1e-3f * static_cast<float>(i));
  const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-6f);  // stays near 1
  for (int64_t r = 0; r < n; ++r)
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(acc[i], b, c);
  __m512 s = acc[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, acc[i]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  return lanes[0] + lanes[15];
}

}  // namespace elmo::cpu::peak_detail
