// Shared device helpers for the CUDA backend's .cu files:
//   * CUDA error -> Status (ELMO_CUDA_TRY for runtime calls, ELMO_CUDA_CHECK_LAUNCH after a launch);
//   * element type traits and float <-> bf16/f16 conversion (load_as_float / store_from_float);
//   * warp-level reductions (sum, max) over all 32 lanes;
//   * small integer helpers (ceil_div, aligned16).
// Header-only; include it from .cu files only (it pulls in cuda_bf16.h / cuda_fp16.h).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdint>

#include "elmo/status.h"
#include "elmo/tensor.h"

namespace elmo::cuda {

// ---- errors ---------------------------------------------------------------------------------

// A Status of code kCuda: "<what>: <cudaGetErrorName>: <cudaGetErrorString>".
inline Status cuda_status(cudaError_t err, const char* what) {
  return Status(Code::kCuda, strformat("%s: %s: %s", what, cudaGetErrorName(err), cudaGetErrorString(err)));
}

}  // namespace elmo::cuda

// Runs a CUDA runtime call; on failure returns Status(kCuda, "<what>: <error>") from the caller.
//   ELMO_CUDA_TRY(cudaMemsetAsync(p, 0, n, stream), "gemm: clear workspace");
#define ELMO_CUDA_TRY(expr, what)                                        \
  do {                                                                   \
    cudaError_t _e = (expr);                                             \
    if (_e != cudaSuccess) return ::elmo::cuda::cuda_status(_e, (what)); \
  } while (0)

// After a <<<...>>> launch: turns a launch error (bad config, no device, sticky fault) into a
// Status. It does not synchronize, so asynchronous faults surface at the next sync point.
//   kernel<<<grid, block, smem, stream>>>(...); ELMO_CUDA_CHECK_LAUNCH("gemm: nt bf16 kernel");
#define ELMO_CUDA_CHECK_LAUNCH(what) ELMO_CUDA_TRY(cudaGetLastError(), (what))

namespace elmo::cuda {

// ---- element types ------------------------------------------------------------------------

template <typename T>
struct TypeOf;  // maps a storage type to its DType
template <>
struct TypeOf<float> {
  static constexpr DType kDType = DType::kF32;
};
template <>
struct TypeOf<__nv_bfloat16> {
  static constexpr DType kDType = DType::kBF16;
};
template <>
struct TypeOf<__half> {
  static constexpr DType kDType = DType::kF16;
};

// float <-> storage. Conversions to bf16/f16 round to nearest even.
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}

// Two floats packed into one 32-bit register of two 16-bit values (lo = a, hi = b): the
// operand format of mma.sync and of paired 16-bit stores.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float a, float b);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float a, float b) {
  __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float a, float b) {
  __half2 v = __floats2half2_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&v);
}

// ---- warp reductions (all 32 lanes take part; every lane receives the result) ---------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

// ---- misc -----------------------------------------------------------------------------------

template <typename I>
__host__ __device__ __forceinline__ constexpr I ceil_div(I a, I b) {
  return (a + b - 1) / b;
}

// A 16-byte aligned address (null is): what 16-byte vector and cp.async accesses need.
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Lets `kernel` launch with `bytes` of dynamic shared memory on the current device. The opt-in
// above 48 KiB is per device and per kernel, so it is made once per device: `done` is the
// caller's per-kernel bitmask of devices already set (a function-local static).
template <typename Kernel>
inline Status allow_dynamic_smem(Kernel kernel, size_t bytes, std::atomic<uint64_t>* done, const char* what) {
  int dev = 0;
  ELMO_CUDA_TRY(cudaGetDevice(&dev), what);
  const uint64_t bit = uint64_t{1} << (dev & 63);
  if (!(done->load(std::memory_order_relaxed) & bit)) {
    ELMO_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
                  what);
    done->fetch_or(bit, std::memory_order_relaxed);
  }
  return Status::ok();
}

// GELU, erf form (BERT): x * 0.5 * (1 + erf(x / sqrt(2))).
__device__ __forceinline__ float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

}  // namespace elmo::cuda
