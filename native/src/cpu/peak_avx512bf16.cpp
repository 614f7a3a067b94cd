// AVX512-BF16 loop of measure_cpu_peak (peak.cpp): vdpbf16ps, two bf16 products per fp32 lane.
#include <immintrin.h>

#include <cstring>

#include "cpu/peak_kernels.h"

namespace elmo::cpu::peak_detail {

float dpbf16_rounds_avx512bf16(int64_t n) {
  __m512 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  // bf16 pairs: 1.0 (0x3f80) and 2^-24 (0x3380), so the sums grow by a tiny amount per round.
  const __m512i one = _mm512_set1_epi16(0x3f80), tiny = _mm512_set1_epi16(0x3380);
  __m512bh a, b;
  std::memcpy(&a, &one, sizeof(a));
  std::memcpy(&b, &tiny, sizeof(b));
  for (int64_t r = 0; r < n; ++r)
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, acc[i]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  return lanes[0] + lanes[15];
}

}  // namespace elmo::cpu::peak_detail
