// The loops behind measure_cpu_peak (peak.cpp), one per ISA translation unit: `n` rounds of
// independent multiply-add chains, enough of them to cover the FMA latency on every pipe.
// Each returns a value that depends on every chain, so none is optimized away; the FLOPs of one
// round are the matching k*_flops_per_round.
#pragma once

#include <cstdint>

namespace elmo::cpu::peak_detail {

constexpr double kAvx2FlopsPerRound = 12 * 8 * 2;          // 12 ymm FMA chains
constexpr double kAvx512FlopsPerRound = 16 * 16 * 2;       // 16 zmm FMA chains
constexpr double kAvx512Bf16FlopsPerRound = 16 * 32 * 2;   // 16 zmm vdpbf16ps chains

float fma_rounds_avx2(int64_t n);
float fma_rounds_avx512(int64_t n);
float dpbf16_rounds_avx512bf16(int64_t n);

}  // namespace elmo::cpu::peak_detail
