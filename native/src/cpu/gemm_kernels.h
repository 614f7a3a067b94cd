// The ISA-specific pieces of the CPU GEMM (see gemm.cpp for the driver that uses them).
//
// Data layout shared by the driver and every kernel:
//   * packed A: ceil(M/MR) micro-panels, each [K][MR] (row i of the panel is the MR-wide
//     column slice at k), rows past M padded with zeros;
//   * packed B: ceil(N/NR) micro-panels, each [K][NR], columns past N padded with zeros.
// A micro-panel's K range [pc, pc+kc) starts at offset pc*MR (resp. pc*NR), so the driver can
// walk K in blocks of KC without repacking.
//
// This header is included by translation units compiled with AVX2 / AVX-512 flags, so it holds
// plain structs and declarations only (no inline functions or templates that could be emitted
// with ISA instructions and picked by the linker for other translation units).
#pragma once

#include <cstdint>

namespace elmo::cpu::gemm_detail {

// What happens to a finished output tile, in this order (backend.h): v += bias[n];
// pre_gelu[m,n] = v, v = gelu(v); v += residual[m,n]. Null pointers skip a step.
struct EpilogueArgs {
  const float* bias = nullptr;      // [N]
  bool gelu = false;
  float* pre_gelu = nullptr;        // [M, ld_pre], written only when gelu
  int64_t ld_pre = 0;
  const float* residual = nullptr;  // [M, ld_res]
  int64_t ld_res = 0;
};

// Cache lines for a micro-kernel to prefetch while it runs, one per k step among its FMAs: the
// caller's share of the next B micro-panel slice (so it arrives spread over the calls that use
// the current one, instead of in a burst that stalls on the fill buffers). lines == 0: none.
struct Prefetch {
  const char* p = nullptr;
  int64_t lines = 0;
};

struct Kernel {
  int mr, nr;  // register tile
  int kc;      // largest K block (the driver splits K evenly): a B slice (kc x nr) stays in L1
  int mc, nc;  // output tile of one parallel task (multiples of mr, nr)
  // C[rows, cols] (ldc) = (add ? C : 0) + Ap[kc][mr] . Bp[kc][nr], rows <= mr, cols <= nr.
  void (*micro)(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, int rows, int cols,
                bool add, Prefetch pf);
  // Applies the epilogue to C[rows, cols] (ldc) whose top-left element is out[m0, n0].
  void (*epilogue)(const EpilogueArgs& e, float* C, int64_t ldc, int64_t m0, int64_t n0, int rows, int cols);
  // Packs one B micro-panel from b stored [N, ldb] (the NT case): dst[k][j] = b[(n0+j)*ldb + k]
  // for j < cols (zeros past cols), k < K. src points at b[n0*ldb].
  void (*pack_b_nt)(float* dst, const float* src, int64_t ldb, int64_t K, int cols);
  // Optional (null: not available). Few-row NT without packing: C[m, n] = (add ? C[m, n] : 0) +
  // sum_k a[m*lda + k] * b[n*ldb + k] for m < M, n0 <= n < n1, summed in an order fixed by K
  // alone. b rows stream from memory once per call while the few rows of a stay in cache.
  void (*nt_stream)(const float* a, int64_t lda, const float* b, int64_t ldb, float* C, int64_t ldc, int64_t M,
                    int64_t n0, int64_t n1, int64_t K, bool add);
  // Optional (null: micro, then epilogue). The last K block of a tile with its epilogue
  // applied to the accumulators before they are stored (m0, n0: the tile's place in out), so a
  // full tile is not stored, reloaded and stored again. Same arithmetic in the same order.
  void (*micro_ep)(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, int rows, int cols, bool add,
                   const EpilogueArgs& e, int64_t m0, int64_t n0, Prefetch pf);
  // Optional (null: the driver's scalar gather). Packs one A micro-panel from `rows` <= mr rows
  // of a row-major [rows, lda] source: dst[k][i] = src[i*lda + k], zeros for i >= rows.
  void (*pack_a)(float* dst, const float* src, int64_t lda, int64_t K, int rows);
};

const Kernel& kernel_scalar();
const Kernel& kernel_avx2();    // call only when the CPU runs AVX2 + FMA
const Kernel& kernel_avx512();  // call only when the CPU runs AVX-512 F/BW/VL/DQ

// Shared scalar helpers (defined in gemm.cpp, compiled without ISA flags).
void pack_b_nt_scalar(float* dst, const float* src, int64_t ldb, int64_t K, int cols, int nr);

}  // namespace elmo::cpu::gemm_detail
