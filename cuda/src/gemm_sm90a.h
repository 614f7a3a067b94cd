// The Hopper GEMM path (cuda/src/gemm_sm90a.cu), reached through elmo::cuda::gemm (gemm.h).
// That file is compiled for sm_90a only (wgmma, setmaxnreg), so everything in it is called
// only after wgmma_supported() said yes for the current device.
#pragma once

#include <cuda_runtime_api.h>

#include "elmo/status.h"
#include "elmo/tensor.h"
#include "gemm_epilogue.cuh"

namespace elmo::cuda::gemm_detail {

// The block tile's rows; its columns are 128, 192 or 256 (the `bn` of gemm_wgmma_nt).
constexpr int kWgmmaBM = 128;

// True when device `dev` can run the wgmma kernel: compute capability 9.0 exactly (sm_90a code
// runs on no other), and the driver's tensor-map encoder is reachable through the runtime.
// Cached per device.
bool wgmma_supported(int dev);

// out[M,N] = a[M,K] · b[N,K]ᵀ, then the epilogue `e` (e.M = M, e.N = N). a and b are `t`
// (bf16 or f16), row strides lda/ldb elements (multiples of 8), base pointers 16-byte aligned,
// K > 0. bn: 128, 192 or 256, the block tile's columns; blocks_per_sm: 1, or 2 with bn = 128
// (WgmmaVariant in gemm.h). grid: the number of blocks, each walking tiles blockIdx.x,
// + gridDim.x, ... (persistent); 0 for one block per tile. Returns kCuda when the tensor maps
// cannot be built or the launch fails.
Status gemm_wgmma_nt(cudaStream_t stream, DType t, const void* a, const void* b, const EpilogueArgs& e, int K,
                     int lda, int ldb, int bn, int blocks_per_sm, int64_t grid);

// How many blocks of the wgmma kernel for (t, bn, blocks_per_sm) the current device keeps on
// one SM at once, with its attributes set as gemm_wgmma_nt sets them (gemm_blocks_per_sm in
// gemm.h; tests check that it is blocks_per_sm: a two-per-SM kernel that got one would quietly
// lose its point).
Status wgmma_occupancy(DType t, int bn, int blocks_per_sm, int* blocks);

}  // namespace elmo::cuda::gemm_detail
