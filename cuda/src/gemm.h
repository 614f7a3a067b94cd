// CUDA GEMM entry point (cuda/src/gemm.cu). Same semantics as Backend::gemm (elmo/backend.h):
// out[M,N] = op(a) op(b), epilogue bias / bias+GELU (pre_gelu saved) / residual, accumulate.
// Device tensors. Operand dtypes: a and b each f32, bf16 or f16.
//   * both bf16 or both f16 -> tensor cores (mma.sync m16n8k16; wgmma on Hopper, see GemmKernel),
//     fp32 accumulate;
//   * both f32 -> exact fp32 path (SIMT FFMA) for parity, or TF32 tensor cores when allow_tf32;
//   * mixed (f32 activations with bf16 weights) -> the f32 side is converted to bf16 into
//     `workspace` first (workspace_bytes must cover it; ERR_INPUT names the size otherwise).
// out, pre_gelu: f32 or bf16. bias: f32. residual: out's dtype (may alias out).
#pragma once

#include <cuda_runtime_api.h>

#include "elmo/backend.h"

namespace elmo::cuda {

// Which kernel computes a 16-bit product on tensor cores.
//   kAuto: the mma.sync kernel, unless the environment has ELMO_CUDA_WGMMA=1 (the wgmma kernel of
//     gemm_sm90a.cu on compute capability 9.0 for NT products that fill the GPU with 128x128
//     tiles, with the tile width that wastes least of the last wave) or ELMO_CUDA_WGMMA=force
//     (for every NT product on tensor cores; whole-model checks).
//     Off by default: the wgmma kernel has not yet been run on a Hopper GPU.
//   kMma: always the mma.sync kernel.
//   kWgmma128 / kWgmma192 / kWgmma256: the wgmma kernel with 128 x 128 / 192 / 256 block tiles
//     for every NT product the tensor-core path takes, whatever its size (tests, benchmarks);
//     ERR_UNSUPPORTED on devices other than compute capability 9.0. NN and TN use mma.sync.
enum class GemmKernel { kAuto, kMma, kWgmma128, kWgmma192, kWgmma256 };
// "auto", "mma", "wgmma128", "wgmma192", "wgmma256" (tests and benchmark rows); "?" otherwise.
const char* gemm_kernel_name(GemmKernel k);
// The forced wgmma kernels, for tests and benchmarks that run each one.
constexpr GemmKernel kWgmmaKernels[] = {GemmKernel::kWgmma128, GemmKernel::kWgmma192, GemmKernel::kWgmma256};
// A forced wgmma kernel's block-tile columns; 0 for kAuto and kMma.
constexpr int wgmma_tile_columns(GemmKernel k) {
  return k == GemmKernel::kWgmma128 ? 128 : k == GemmKernel::kWgmma192 ? 192 : k == GemmKernel::kWgmma256 ? 256 : 0;
}

struct GemmConfig {
  bool allow_tf32 = false;
  GemmKernel kernel = GemmKernel::kAuto;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

Status gemm(cudaStream_t stream, const GemmConfig& cfg, Tensor out, Tensor pre_gelu, Tensor a, Tensor b,
            Tensor bias, Tensor residual, GemmOp op, Epilogue ep, bool accumulate);

// Bytes of workspace gemm() needs for these operands (0 unless a conversion is needed).
size_t gemm_workspace_bytes(Tensor a, Tensor b);

}  // namespace elmo::cuda
