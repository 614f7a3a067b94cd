// Philox words in bulk: out[k] = the 32-bit Philox4x32-10 word of element e0 + k (philox.h:
// block (e0 + k) / 4 of the stream, word (e0 + k) % 4). Dropout draws one word per element,
// and ten rounds of Philox per four elements are most of its cost: on AVX2 eight blocks run
// side by side (philox_avx2.cpp). Integer math, so every path gives the same bits.
#pragma once

#include <cstdint>

namespace elmo::cpu {

void philox_words(uint32_t* out, uint64_t e0, int64_t n, uint64_t seed, uint64_t stream);

namespace avx2 {
// n a multiple of 32, e0 a multiple of 4.
void philox_words_x32(uint32_t* out, uint64_t e0, int64_t n, uint64_t seed, uint64_t stream);
}

}  // namespace elmo::cpu
