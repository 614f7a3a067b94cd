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
//     tiles, with the tile width that wastes least of the last wave), ELMO_CUDA_WGMMA=<name> of
//     a kWgmma* kernel below, e.g. wgmma128x2p (that kernel, for the same products), or
//     ELMO_CUDA_WGMMA=force (for every NT product on tensor cores; whole-model checks).
//     Off by default: the wgmma kernel has not yet been run on a Hopper GPU.
//   kMma: always the mma.sync kernel.
//   kWgmma*: one wgmma kernel (WgmmaVariant below) for every NT product the tensor-core path
//     takes, whatever its size (tests, benchmarks); ERR_UNSUPPORTED on devices other than
//     compute capability 9.0. NN and TN use mma.sync.
//     kWgmma128 / 192 / 256: 128 x 128 / 192 / 256 block tiles, one block per tile;
//     kWgmma192P / 256P: the same tiles, persistent (a block per SM walks tiles);
//     kWgmma128x2 / 128x2P: 128 x 128 tiles, two blocks per SM, one block per tile / persistent.
enum class GemmKernel {
  kAuto,
  kMma,
  kWgmma128,
  kWgmma192,
  kWgmma256,
  kWgmma192P,
  kWgmma256P,
  kWgmma128x2,
  kWgmma128x2P
};
// "auto", "mma", "wgmma128", "wgmma192", ..., "wgmma128x2p" (tests and benchmark rows); "?" otherwise.
const char* gemm_kernel_name(GemmKernel k);
// The kernel whose gemm_kernel_name is `name`; false when none is (null included).
bool gemm_kernel_by_name(const char* name, GemmKernel* k);
// The forced wgmma kernels, for tests and benchmarks that run each one.
constexpr GemmKernel kWgmmaKernels[] = {GemmKernel::kWgmma128,   GemmKernel::kWgmma192,  GemmKernel::kWgmma256,
                                        GemmKernel::kWgmma192P,  GemmKernel::kWgmma256P, GemmKernel::kWgmma128x2,
                                        GemmKernel::kWgmma128x2P};

// How a wgmma kernel runs (gemm_sm90a.cu):
//   columns: the block tile's columns (its rows are 128); 0 for kAuto and kMma;
//   blocks_per_sm: 1, or 2 (128 columns only: three stages each, so that while one block is in
//     its epilogue the other's wgmmas can keep the tensor cores busy; not yet measured);
//   persistent: the grid is one block per SM slot (blocks_per_sm per SM) and each walks the
//     tiles blockIdx.x, + gridDim.x, ...; its producer loads the next tile's first stages while
//     the consumers write the last one out. Otherwise the grid is one block per tile.
struct WgmmaVariant {
  int columns = 0;
  int blocks_per_sm = 1;
  bool persistent = false;
};
constexpr WgmmaVariant wgmma_variant(GemmKernel k) {
  switch (k) {
    case GemmKernel::kWgmma128: return {128, 1, false};
    case GemmKernel::kWgmma192: return {192, 1, false};
    case GemmKernel::kWgmma256: return {256, 1, false};
    case GemmKernel::kWgmma192P: return {192, 1, true};
    case GemmKernel::kWgmma256P: return {256, 1, true};
    case GemmKernel::kWgmma128x2: return {128, 2, false};
    case GemmKernel::kWgmma128x2P: return {128, 2, true};
    default: return {};
  }
}

// How many blocks of forced wgmma kernel `k` with operands of type t (bf16 or f16) the current
// device keeps on one SM at once, configured as a call would configure it. ERR_UNSUPPORTED
// where the wgmma kernels cannot run; ERR_INPUT for kAuto, kMma or another dtype.
Status gemm_blocks_per_sm(GemmKernel k, DType t, int* blocks);

struct GemmConfig {
  bool allow_tf32 = false;
  GemmKernel kernel = GemmKernel::kAuto;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  // A persistent wgmma kernel's grid is at most this many blocks (0: every SM slot). Tests set
  // it low so that each block walks several tiles on any GPU.
  int max_blocks = 0;
};

Status gemm(cudaStream_t stream, const GemmConfig& cfg, Tensor out, Tensor pre_gelu, Tensor a, Tensor b,
            Tensor bias, Tensor residual, GemmOp op, Epilogue ep, bool accumulate);

// Bytes of workspace gemm() needs for these operands (0 unless a conversion is needed).
size_t gemm_workspace_bytes(Tensor a, Tensor b);

}  // namespace elmo::cuda
