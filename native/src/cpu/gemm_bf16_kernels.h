// The ISA-specific pieces of the bf16-weight GEMM (driver: gemm_bf16.cpp).
//
//   out[M,N] = round_bf16(a)[M,K] . b[N,K]^T     a f32 (activations), b bf16 (a weight)
//
// Packed layouts shared by the driver and a kernel (K padded with zeros to a multiple of kstep):
//   * packed A: ceil(M/MR) micro-panels of [Kp][MR] elements of a_bytes each (rows past M zero):
//     a_bytes 4: f32 holding the bf16-rounded value of a; a_bytes 2: bf16, with kstep 2 the
//     panel is [Kp/2][MR][2] (a k pair per row, the operand layout of vdpbf16ps);
//   * packed B: ceil(N/NR) micro-panels of [Kp][NR] bf16, in an order of the kernel's choosing.
// A panel's K range [pc, pc+kc) (pc a multiple of kstep) starts at element pc*MR (resp. pc*NR),
// so the driver walks K in blocks of KC (a multiple of kstep) without repacking.
//
// As with gemm_kernels.h, this header is included by translation units compiled with ISA flags:
// plain structs and declarations only.
#pragma once

#include <cstdint>

#include "cpu/gemm_kernels.h"

namespace elmo::cpu::gemm_bf16_detail {

struct Bf16Kernel {
  const char* name;  // "scalar", "avx2", "avx512_bf16"
  int mr, nr;        // register tile
  int kc;            // K block (a multiple of kstep)
  int mc, nc;        // output tile of one parallel task (multiples of mr, nr)
  int kstep;         // packed K granularity: 1, or 2 (k pairs)
  int a_bytes;       // bytes of one packed A element: 4 or 2
  // One A micro-panel from rows of a (lda), k in [0, K): rows < mr valid, the rest zeros.
  void (*pack_a)(void* dst, const float* a, int64_t lda, int64_t K, int rows);
  // One B micro-panel from b stored [N, ldb], k in [0, kc): dst for columns j < cols (zeros past
  // cols and past kc up to the kstep multiple). src points at b[n0*ldb + k0].
  void (*pack_b)(uint16_t* dst, const uint16_t* src, int64_t ldb, int64_t kc, int cols);
  // C[rows, cols] (ldc) = (add ? C : 0) + Ap . Bp over kc (kc <= KC; odd only for the last block).
  // pf: cache lines to prefetch while it runs (gemm_kernels.h).
  void (*micro)(int64_t kc, const void* Ap, const uint16_t* Bp, float* C, int64_t ldc, int rows, int cols, bool add,
                gemm_detail::Prefetch pf);
  // Optional (null: not available). Few-row path without packing b: prep_a writes the M rows of a,
  // rounded to bf16, in the kernel's own row layout with row stride stream_ld(K) elements of
  // a_bytes; nt_stream then forms C[m, n] = (add ? C : 0) + sum_k a'[m, k] b[n, k] for m < M,
  // n0 <= n < n1, summed in an order fixed by K alone, each weight row streamed once per call.
  int64_t (*stream_ld)(int64_t K);
  void (*prep_a)(void* dst, const float* a, int64_t lda, int64_t M, int64_t K);
  void (*nt_stream)(const void* a, const uint16_t* b, int64_t ldb, float* C, int64_t ldc, int64_t M, int64_t n0,
                    int64_t n1, int64_t K, bool add);
  // Optional (null: micro, then the fp32 kernel's epilogue). The last K block of a tile with the
  // epilogue applied to its accumulators before their one store (m0, n0: the tile's place in
  // out); the same arithmetic in the same order as that epilogue.
  void (*micro_ep)(int64_t kc, const void* Ap, const uint16_t* Bp, float* C, int64_t ldc, int rows, int cols,
                   bool add, const gemm_detail::EpilogueArgs& e, int64_t m0, int64_t n0, gemm_detail::Prefetch pf);
};

const Bf16Kernel& bf16_kernel_scalar();
const Bf16Kernel& bf16_kernel_avx2();         // call only when the CPU runs AVX2 + FMA
const Bf16Kernel& bf16_kernel_avx512_bf16();  // call only when the CPU runs AVX-512 F/BW/VL/DQ + BF16

// Shared scalar helpers (defined in gemm_bf16.cpp, compiled without ISA flags, so ISA translation
// units never emit their own copies of inline host helpers).
// dst[i] = src[i] rounded to bf16 (nearest even; NaN stays NaN), as f32 / as bf16 bits.
void round_to_bf16(float* dst, const float* src, int64_t n);
void round_to_bf16_bits(uint16_t* dst, const float* src, int64_t n);
// A micro-panel [K][mr] of f32 holding the bf16-rounded a (a_bytes 4, kstep 1).
void pack_a_rounded_f32(float* dst, const float* a, int64_t lda, int64_t K, int rows, int mr);

}  // namespace elmo::cpu::gemm_bf16_detail
