// The epilogue every CUDA GEMM kernel ends in (gemm.cu, gemm_sm90a.cu): bias[n], GELU (erf)
// with pre_gelu saved, residual[m,n] (may alias out), accumulate (out += ...), then one store in
// out's dtype (f32 or bf16), in the order of backend.h. Each output element has one owner thread.
// Header-only, for .cu files.
#pragma once

#include <cuda_bf16.h>

#include <cstddef>

#include "common.cuh"

namespace elmo::cuda::gemm_detail {

struct EpilogueArgs {
  void* out;             // [M,N] f32 or bf16
  void* pre_gelu;        // [M,N] f32 or bf16, or null
  const float* bias;     // [N] or null
  const void* residual;  // [M,N] out's dtype, or null; may alias out
  int M, N;
  bool gelu;
  bool accumulate;
  bool out_bf16;
  bool pre_bf16;
  bool pair_aligned;  // N even and out/residual/pre_gelu aligned for 2-element accesses
};

__device__ __forceinline__ float load_elem(const void* p, bool is_bf16, size_t i) {
  return is_bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]) : static_cast<const float*>(p)[i];
}
__device__ __forceinline__ void store_elem(void* p, bool is_bf16, size_t i, float v) {
  if (is_bf16)
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  else
    static_cast<float*>(p)[i] = v;
}
__device__ __forceinline__ float2 load_pair(const void* p, bool is_bf16, size_t i) {
  if (is_bf16) return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(static_cast<const __nv_bfloat16*>(p) + i));
  return *reinterpret_cast<const float2*>(static_cast<const float*>(p) + i);
}
__device__ __forceinline__ void store_pair(void* p, bool is_bf16, size_t i, float2 v) {
  if (is_bf16)
    *reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(p) + i) = __floats2bfloat162_rn(v.x, v.y);
  else
    *reinterpret_cast<float2*>(static_cast<float*>(p) + i) = v;
}

// One element: bias, GELU (saving pre_gelu), residual, accumulate, store.
__device__ __forceinline__ void epilogue_one(const EpilogueArgs& e, int m, int n, float v) {
  if (m >= e.M || n >= e.N) return;
  const size_t i = static_cast<size_t>(m) * e.N + n;
  if (e.bias) v += e.bias[n];
  if (e.gelu) {
    if (e.pre_gelu) store_elem(e.pre_gelu, e.pre_bf16, i, v);
    v = gelu_erf(v);
  }
  if (e.residual) v += load_elem(e.residual, e.out_bf16, i);
  if (e.accumulate) v += load_elem(e.out, e.out_bf16, i);
  store_elem(e.out, e.out_bf16, i, v);
}

// Two horizontally adjacent elements (n even): paired loads/stores where aligned and in range.
__device__ __forceinline__ void epilogue_pair(const EpilogueArgs& e, int m, int n, float v0, float v1) {
  if (m >= e.M || n >= e.N) return;
  if (!e.pair_aligned || n + 1 >= e.N) {
    epilogue_one(e, m, n, v0);
    epilogue_one(e, m, n + 1, v1);
    return;
  }
  const size_t i = static_cast<size_t>(m) * e.N + n;
  float2 v = make_float2(v0, v1);
  if (e.bias) {
    v.x += e.bias[n];
    v.y += e.bias[n + 1];
  }
  if (e.gelu) {
    if (e.pre_gelu) store_pair(e.pre_gelu, e.pre_bf16, i, v);
    v.x = gelu_erf(v.x);
    v.y = gelu_erf(v.y);
  }
  if (e.residual) {
    const float2 r = load_pair(e.residual, e.out_bf16, i);
    v.x += r.x;
    v.y += r.y;
  }
  if (e.accumulate) {
    const float2 o = load_pair(e.out, e.out_bf16, i);
    v.x += o.x;
    v.y += o.y;
  }
  store_pair(e.out, e.out_bf16, i, v);
}

}  // namespace elmo::cuda::gemm_detail
