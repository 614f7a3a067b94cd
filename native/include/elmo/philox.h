// Counter-based RNG (Philox4x32-10, Salmon et al., SC'11). Header-only and usable from host
// and device code, so the CPU and CUDA backends draw the same dropout masks from the same
// (seed, stream): the draw for element e depends only on (seed, stream, e), never on the
// thread that computes it.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define ELMO_HD __host__ __device__ __forceinline__
#else
#define ELMO_HD inline
#endif

namespace elmo {

ELMO_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

// One Philox4x32-10 block: 4 random words from a 128-bit counter and a 64-bit key.
ELMO_HD void philox4x32_10(const uint32_t ctr_in[4], uint32_t k0, uint32_t k1, uint32_t out[4]) {
  uint32_t c0 = ctr_in[0], c1 = ctr_in[1], c2 = ctr_in[2], c3 = ctr_in[3];
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(0xD2511F53u, c0, &hi0, &lo0);
    philox_mulhilo(0xCD9E8D57u, c2, &hi1, &lo1);
    uint32_t n0 = hi1 ^ c1 ^ k0;
    uint32_t n1 = lo1;
    uint32_t n2 = hi0 ^ c3 ^ k1;
    uint32_t n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

// The 32-bit word for element e: block e/4 of the stream, word e%4.
ELMO_HD uint32_t philox_u32(uint64_t seed, uint64_t stream, uint64_t e) {
  uint64_t blk = e >> 2;
  uint32_t ctr[4] = {static_cast<uint32_t>(blk), static_cast<uint32_t>(blk >> 32),
                     static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)};
  uint32_t out[4];
  philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), out);
  return out[e & 3];
}

// Uniform in [0, 1) with 24 random bits (exact in f32).
ELMO_HD float philox_uniform(uint64_t seed, uint64_t stream, uint64_t e) {
  return static_cast<float>(philox_u32(seed, stream, e) >> 8) * (1.0f / 16777216.0f);
}

// Dropout keep decision shared by every backend.
ELMO_HD bool dropout_keep(uint64_t seed, uint64_t stream, uint64_t e, float p) {
  return philox_uniform(seed, stream, e) >= p;
}

}  // namespace elmo
