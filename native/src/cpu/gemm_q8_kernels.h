// The ISA-specific pieces of the int8 GEMM (driver: gemm_q8.cpp).
//
//   out[m, n] = float(sum_k qa[m, k] * qw[n, k]) * sa[m] * sw[n]    (then the f32 epilogue)
//
// qa: a's rows quantized at each call, qw: the weight quantized once, both symmetric int8 in
// [-127, 127] with one f32 scale per row. The integer sums are exact, so every path and thread
// count gives the same sums; only the two f32 multiplies follow.
//
// Layouts shared by the driver and every kernel (K padded with zeros to Kp, a multiple of 4):
//   * quantized A: rows of Kp integers of a_elem bytes (1: int8; 2: widened to int16, the
//     operand of vpmaddwd), row stride lda bytes, padded with zero rows to a multiple of mr. A
//     kernel with a_u8 reads int8 rows as uint8 qa + 128 (the operand of vpdpbusd) and
//     subtracts 128 * sum_k qw[n, k] (the weight's row sums) from each sum.
//   * quantized weight (Backend::quantized_weight_bytes): Np = N rounded up to kQ8Panel, then
//       f32 sw[Np] | i32 rowsum[Np] | int8 panels[Np / kQ8Panel][Kp / kgroup][kQ8Panel][kgroup]
//     (a panel holds kQ8Panel rows of W, kgroup consecutive k of a row side by side: 4, one
//     32-bit lane of vpdpbusd; or 2, one 32-bit lane of vpmaddwd once widened). Padding rows
//     are zero with scale 0.
//
// Included by translation units compiled with ISA flags: plain structs and declarations only.
#pragma once

#include <cstdint>

namespace elmo::cpu::gemm_q8_detail {

constexpr int kQ8Panel = 16;  // weight rows per panel: 16 int32 lanes of a zmm, two ymm

struct Q8Kernel {
  const char* name;  // "scalar", "avx2", "avx512_vnni"
  int mr;            // rows of A per call (the driver pads A to a multiple)
  int a_elem;        // bytes per integer of quantized A: 1 or 2
  int kgroup;        // consecutive k of one weight row side by side in a panel: 4 or 2
  bool a_u8;         // reads A as qa + 128 (uint8) and needs the weight's row sums
  // C[rows, cols] (ldc) = (add ? C : 0) + float(sum) * sa[i] * sw[j] for i < rows, j < cols
  // (cols <= kQ8Panel), over kq = Kp / 4 groups of 4 k. A: mr rows of stride lda bytes; B: one panel;
  // rowsum: the panel's kQ8Panel row sums (read only when a_u8).
  void (*micro)(int64_t kq, const uint8_t* A, int64_t lda, const void* B, const int32_t* rowsum, const float* sa,
                const float* sw, float* C, int64_t ldc, int rows, int cols, bool add);
  // Quantizes n values of x into q and returns the scale (gemm_q8.cpp's contract: round to
  // nearest even, [-127, 127], NaN scale for a row with NaN, infinite for one with infinity).
  // Null: the driver's scalar loop.
  float (*quantize)(int8_t* q, const float* x, int64_t n);
  // The row straight into the kernel's A layout, with the same values and scale; required for
  // a_elem 2. Null (a_elem 1): quantize, then the driver's offset for a_u8.
  float (*quantize_a)(void* q, const float* x, int64_t n);
};

const Q8Kernel& q8_kernel_scalar();
const Q8Kernel& q8_kernel_avx2();         // call only when the CPU runs AVX2
const Q8Kernel& q8_kernel_avx512_vnni();  // call only when the CPU runs AVX-512 F/BW/VL + VNNI
float quantize_avx2(int8_t* q, const float* x, int64_t n);  // Q8Kernel::quantize; AVX2 only

}  // namespace elmo::cpu::gemm_q8_detail
