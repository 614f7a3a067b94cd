// The CUDA backend's public face: device discovery and the factory. Everything else is the
// Backend interface of elmo/backend.h. Compiled only when nvcc is found (ELMO_HAVE_CUDA).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "elmo/backend.h"

namespace elmo {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  size_t total_bytes = 0;
  size_t free_bytes = 0;
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;
};

// Lists the devices. With no driver or no device this returns OK with an empty list and
// `reason` set (e.g. "no CUDA driver: cudaGetDeviceCount -> ..."). Never crashes.
Status cuda_devices(std::vector<CudaDeviceInfo>* out, std::string* reason);

struct CudaOptions {
  int device = 0;
  // GEMM/attention operand precision for f32 tensors handed to the backend:
  // kF32 runs the exact fp32 path (parity), kBF16 converts f32 operands to bf16 (fp32
  // accumulate). Either way a GEMM with one bf16 operand (a bf16 model's weight copy,
  // BertOptions) rounds only its f32 operand and runs on the tensor cores.
  DType compute = DType::kF32;
  // A bf16 model keeps the activations that only feed GEMMs and attention in bf16 at inference
  // (Backend::gemm_bf16_activations, attention_bf16_io; the same bits, less traffic). false
  // keeps them f32: the reference the tests compare against.
  bool bf16_activations = true;
  // Query rows per warp of the tensor-core attention kernel: 16, 32 (twice the work per
  // shared-memory read, half the blocks: for long sequences; head sizes <= 64), -1 to choose
  // by length (32 from 256 tokens), 0 for the default: ELMO_CUDA_ATTN_ROWS (16, 32 or auto)
  // in the environment, else 16. 32 has not yet run on a GPU, hence not the default.
  int attention_rows = 0;
  // A bf16 model keeps its hidden states in bf16 too at inference (Backend::bf16_hidden_states:
  // less memory traffic between layers, results rounded like a bf16 PyTorch model's). 1 on,
  // -1 off, 0 for the default: ELMO_CUDA_BF16_HIDDEN=1 in the environment, else off. Not yet
  // run on a GPU, hence off by default.
  int bf16_hidden = 0;
};
Status make_cuda_backend(std::unique_ptr<Backend>* out, const CudaOptions& opts = {});

}  // namespace elmo
