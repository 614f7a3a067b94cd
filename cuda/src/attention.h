// Host-side choices of the attention kernels (cuda/src/attention.cu), apart from ops.h so that
// host-only code (the backend, tests) can ask them.
#pragma once

namespace elmo::cuda {

// Head sizes with a tensor-core forward kernel (bf16 q/k/v; f32 ones are rounded to bf16 first
// under bf16 compute); others take the generic kernel.
bool attention_tensor_core_head_size(int HD);

// Query rows per warp of the tensor-core kernel for one call: 16 or 32 (see attention.cu).
// requested is CudaOptions::attention_rows: 16 or 32; -1 chooses by length (32 from max_len
// 256); 0 takes ELMO_CUDA_ATTN_ROWS from the environment (16, 32 or auto), else 16. Head sizes
// over 64 always get 16.
int attention_rows_per_warp(int requested, int HD, int max_len);

}  // namespace elmo::cuda
