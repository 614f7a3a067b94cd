// philox_words (the bulk Philox behind CPU dropout, AVX2 where the CPU has it) against the
// per-element reference philox_u32 of philox.h: every offset modulo 4, ragged lengths, and a
// block counter that carries from its low 32 bits into the high ones.
#include <cstdint>
#include <vector>

#include "cpu/philox_words.h"
#include "elmo/philox.h"
#include "harness.h"

TEST_CASE(philox_words_match_the_reference) {
  const uint64_t seed = 0x0123456789ABCDEFull, stream = 0xFEDCBA9876543210ull;
  const uint64_t carry = (uint64_t(1) << 34) - 40;  // blocks 2^32 - 10 .. : the low word wraps
  for (uint64_t base : {uint64_t(0), uint64_t(1), uint64_t(2), uint64_t(3), uint64_t(1000003), carry, carry + 1}) {
    for (int64_t n : {0, 1, 5, 31, 32, 63, 64, 65, 100, 257, 1024, 3001}) {
      std::vector<uint32_t> got(static_cast<size_t>(n) + 1, 0xDEADBEEFu);
      elmo::cpu::philox_words(got.data(), base, n, seed, stream);
      for (int64_t k = 0; k < n; ++k)
        if (got[static_cast<size_t>(k)] != elmo::philox_u32(seed, stream, base + static_cast<uint64_t>(k))) {
          ++elmo_test::failures();
          std::fprintf(stderr, "  philox_words(e0=%llu, n=%lld) word %lld differs\n", (unsigned long long)base,
                       (long long)n, (long long)k);
          break;
        }
      CHECK(got[static_cast<size_t>(n)] == 0xDEADBEEFu);  // nothing written past n
    }
  }
}

int main() { return elmo_test::run_all_tests(); }
