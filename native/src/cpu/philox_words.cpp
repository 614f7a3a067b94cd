// philox_words: the AVX2 path for whole 32-word groups where the CPU has AVX2, the scalar
// Philox (philox.h) for the ragged ends and elsewhere. Same bits either way.
#include "cpu/philox_words.h"

#include "elmo/cpu.h"
#include "elmo/philox.h"

namespace elmo::cpu {

namespace {
void scalar_words(uint32_t* out, uint64_t e0, int64_t n, uint64_t seed, uint64_t stream) {
  uint32_t words[4];
  for (int64_t k = 0; k < n; ++k) {
    const uint64_t e = e0 + static_cast<uint64_t>(k);
    if (k == 0 || (e & 3) == 0) {
      const uint64_t blk = e >> 2;
      const uint32_t ctr[4] = {static_cast<uint32_t>(blk), static_cast<uint32_t>(blk >> 32),
                               static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)};
      philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), words);
    }
    out[k] = words[e & 3];
  }
}
}  // namespace

void philox_words(uint32_t* out, uint64_t e0, int64_t n, uint64_t seed, uint64_t stream) {
  static const bool avx2 = best_isa() >= Isa::kAvx2;
  if (!avx2 || n < 64) return scalar_words(out, e0, n, seed, stream);
  // Scalar up to a block boundary, 32-word groups, scalar tail.
  const int64_t head = static_cast<int64_t>((4 - (e0 & 3)) & 3);
  scalar_words(out, e0, head, seed, stream);
  const int64_t body = (n - head) / 32 * 32;
  avx2::philox_words_x32(out + head, e0 + static_cast<uint64_t>(head), body, seed, stream);
  scalar_words(out + head + body, e0 + static_cast<uint64_t>(head + body), n - head - body, seed, stream);
}

}  // namespace elmo::cpu
