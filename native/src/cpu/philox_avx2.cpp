// Philox4x32-10 on AVX2: eight consecutive blocks per pass, one per 32-bit lane (see
// philox_words.h). The 32x32 -> 64-bit products come from _mm256_mul_epu32 on the even lanes
// and on the odd lanes shifted down.
#include <immintrin.h>

#include "cpu/philox_words.h"

namespace elmo::cpu::avx2 {

namespace {

inline void mulhilo(__m256i a, __m256i m, __m256i* hi, __m256i* lo) {
  const __m256i even = _mm256_mul_epu32(a, m);                          // lanes 0, 2, 4, 6 (64-bit)
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);   // lanes 1, 3, 5, 7
  *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

}  // namespace

void philox_words_x32(uint32_t* out, uint64_t e0, int64_t n, uint64_t seed, uint64_t stream) {
  const __m256i M0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i M1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i s0 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream)));
  const __m256i s1 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream >> 32)));
  alignas(32) uint32_t w[4][8];
  for (int64_t k = 0; k < n; k += 32) {
    const uint64_t blk = (e0 + static_cast<uint64_t>(k)) >> 2;
    // Counter words: the 64-bit block index (low word may carry into the high one) and the stream.
    const uint32_t lo = static_cast<uint32_t>(blk), hi = static_cast<uint32_t>(blk >> 32);
    __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(lo)), lane);
    // carry: lanes where lo + lane wrapped past 2^32
    const __m256i wrapped = _mm256_cmpgt_epi32(_mm256_xor_si256(_mm256_set1_epi32(static_cast<int>(lo)), _mm256_set1_epi32(INT32_MIN)),
                                               _mm256_xor_si256(c0, _mm256_set1_epi32(INT32_MIN)));
    __m256i c1 = _mm256_sub_epi32(_mm256_set1_epi32(static_cast<int>(hi)), wrapped);  // wrapped is -1 where it carried
    __m256i c2 = s0, c3 = s1;
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int r = 0; r < 10; ++r) {
      __m256i hi0, lo0, hi1, lo1;
      mulhilo(c0, M0, &hi0, &lo0);
      mulhilo(c2, M1, &hi1, &lo1);
      const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
      const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
      c0 = n0;
      c1 = lo1;
      c2 = n2;
      c3 = lo0;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    _mm256_store_si256(reinterpret_cast<__m256i*>(w[0]), c0);
    _mm256_store_si256(reinterpret_cast<__m256i*>(w[1]), c1);
    _mm256_store_si256(reinterpret_cast<__m256i*>(w[2]), c2);
    _mm256_store_si256(reinterpret_cast<__m256i*>(w[3]), c3);
    uint32_t* o = out + k;
    for (int b = 0; b < 8; ++b)
      for (int j = 0; j < 4; ++j) o[b * 4 + j] = w[j][b];
  }
}

}  // namespace elmo::cpu::avx2
