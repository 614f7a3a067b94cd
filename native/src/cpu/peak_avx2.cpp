// AVX2 + FMA loop of measure_cpu_peak (peak.cpp).
#include <immintrin.h>

#include "cpu/peak_kernels.h"

namespace elmo::cpu::peak_detail {

float fma_rounds_avx2(int64_t n) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(1.0f + 1e-3f * static_cast<float>(i));
  const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-6f);  // stays near 1
  for (int64_t r = 0; r < n; ++r)
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], b, c);
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  return lanes[0];
}

}  // namespace elmo::cpu::peak_detail
