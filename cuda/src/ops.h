// CUDA kernels' launchers, one file per op (cuda/src/<op>.cu). CudaBackend forwards to these.
// Each launcher validates shapes and dtypes on the host first (same messages and codes as the
// CPU backend), then enqueues its kernels on ctx.stream and turns every launch error into
// Status(Code::kCuda, "<op>: <cudaGetErrorString>"). Semantics: elmo/backend.h.
//
// Index inputs that live on the device (token ids, gather indices, loss targets) are checked
// inside the kernels: an out-of-range index is skipped (never read through) and raises
// ctx.flag; the launcher then synchronizes and returns ERR_INPUT.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "attention.h"
#include "elmo/backend.h"

namespace elmo::cuda {

// Grow-once buffers owned by the backend, handed to launchers that need temporary memory.
class Scratch {
 public:
  virtual ~Scratch() = default;
  // Device memory of at least `bytes`; the pointer stays valid until the next call.
  virtual Status device(size_t bytes, void** out) = 0;
  // Pinned host memory of at least `bytes`; valid until the next call.
  virtual Status pinned(size_t bytes, void** out) = 0;
};

struct Ctx {
  cudaStream_t stream = nullptr;
  int* flag = nullptr;       // device int: kernels set it on bad input
  int* flag_host = nullptr;  // pinned mirror of *flag
  Scratch* scratch = nullptr;
  int sm_count = 1;
  size_t max_smem_optin = 48 * 1024;  // bytes of dynamic shared memory a block may opt into
  DType compute = DType::kF32;        // operand precision for f32 attention (kF32 or kBF16)
  int attention_rows = 0;             // CudaOptions::attention_rows
};

// Turns the last launch's error into a Status naming the op.
Status launch_status(const char* op);
// Clears ctx.flag (async).
Status flag_reset(const Ctx& c, const char* op);
// Synchronizes and returns ERR_INPUT with `what` when a kernel raised ctx.flag.
Status flag_check(const Ctx& c, const char* op, const char* what);

// elementwise.cu (also fill and convert for the backend's memory ops)
Status fill(const Ctx& c, Tensor t, float value);
Status convert(const Ctx& c, Tensor out, Tensor in);
Status gelu_forward(const Ctx& c, Tensor out, Tensor inp);
Status gelu_backward(const Ctx& c, Tensor dinp, Tensor dout, Tensor inp);
Status tanh_forward(const Ctx& c, Tensor out, Tensor inp);
Status tanh_backward(const Ctx& c, Tensor dinp, Tensor dout, Tensor out);
Status dropout_forward(const Ctx& c, Tensor out, Tensor inp, float p, uint64_t seed, uint64_t stream);
Status dropout_backward(const Ctx& c, Tensor dinp, Tensor dout, float p, uint64_t seed, uint64_t stream);
Status softmax_forward(const Ctx& c, Tensor out, Tensor inp);
// dbias [N] += column sums of dout [M,N] (f32 or bf16); deterministic.
Status bias_backward(const Ctx& c, Tensor dbias, Tensor dout);

// embedding.cu
Status embedding_forward(const Ctx& c, Tensor out, Tensor ids, Tensor type_ids, const Offsets& o, Tensor wte,
                         Tensor wpe, Tensor wtt);
Status embedding_backward(const Ctx& c, Tensor dwte, Tensor dwpe, Tensor dwtt, Tensor dout, Tensor ids,
                          Tensor type_ids, const Offsets& o);

// layernorm.cu
Status layernorm_forward(const Ctx& c, Tensor out, Tensor sum_out, Tensor mean, Tensor rstd, Tensor inp,
                         Tensor residual, Tensor weight, Tensor bias, float eps);
Status layernorm_backward(const Ctx& c, Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout, Tensor x,
                          Tensor weight, Tensor mean, Tensor rstd);

// attention.cu
Status attention_forward(const Ctx& c, Tensor out, Tensor lse, Tensor qkv, const Offsets& o, int NH, int HD,
                         float dropout_p, uint64_t seed, uint64_t stream);
Status attention_backward(const Ctx& c, Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                          const Offsets& o, int NH, int HD, float dropout_p, uint64_t seed, uint64_t stream);
// (attention_tensor_core_head_size, attention_rows_per_warp: attention.h)

// gather.cu
Status gather_rows(const Ctx& c, Tensor out, Tensor inp, Tensor idx);
Status scatter_add_rows(const Ctx& c, Tensor dinp, Tensor dout, Tensor idx);
// Deterministic segmented scatter-add shared by the backward ops: for each segment s,
// dst[seg_dst[s], :] += Σ src[rows[k], :] for k in [seg_begin[s], seg_begin[s+1]) in that
// order. Host arrays; they are uploaded through ctx.scratch. src f32 or bf16, dst f32.
Status segmented_scatter_add(const Ctx& c, const char* op, Tensor dst, Tensor src, const int32_t* rows,
                             const int32_t* seg_begin, const int32_t* seg_dst, int64_t n_rows, int64_t n_seg);
// Groups rows 0..n-1 by key (keys in [0, K)), stably, into the arrays above. Host-side.
void group_by_key(const int32_t* keys, int64_t n, int64_t K, int32_t* rows, int32_t* seg_begin, int32_t* seg_dst,
                  int64_t* n_seg);

// loss.cu
Status cross_entropy_forward(const Ctx& c, Tensor losses, Tensor lse, Tensor logits, Tensor targets,
                             int ignore_index);
Status cross_entropy_backward(const Ctx& c, Tensor dlogits, Tensor logits, Tensor lse, Tensor targets, float scale,
                              int ignore_index);
Status bce_forward(const Ctx& c, Tensor losses, Tensor logits, Tensor targets);
Status bce_backward(const Ctx& c, Tensor dlogits, Tensor logits, Tensor targets, float scale);

// adamw.cu
Status adamw_update(const Ctx& c, Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWParams& p);
Status sum_squares(const Ctx& c, double* result, Tensor x);

}  // namespace elmo::cuda

// ---- device helpers shared by the .cu files -------------------------------------------------
#if defined(__CUDACC__)
#include "common.cuh"

namespace elmo::cuda {

// Elements as f32 whatever their storage (f32, bf16, f16).
template <class T>
__device__ __forceinline__ float ld(const T* p, int64_t i) {
  return to_float(p[i]);
}
template <class T>
__device__ __forceinline__ void st(T* p, int64_t i, float v) {
  p[i] = from_float<T>(v);
}

__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

inline unsigned grid_1d(int64_t n, int threads, int64_t cap = 65535LL * 32) {
  int64_t g = (n + threads - 1) / threads;
  if (g < 1) g = 1;
  return static_cast<unsigned>(g < cap ? g : cap);
}

// Deterministic column sums: dst[c] += Σ_r f(r, c) for r in [0, M), c in [0, N). Rows are cut
// into chunks of a fixed size (independent of the device); each chunk's partial is summed in a
// fixed order and the partials are added in chunk order, so the result is bit-reproducible.
constexpr int kColChunk = 256;

template <class F>
__global__ void colsum_partial_kernel(float* __restrict__ partial, int64_t M, int64_t N, F f) {
  __shared__ float red[8][33];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kColChunk;
  const int64_t r1 = r0 + kColChunk < M ? r0 + kColChunk : M;
  float acc = 0.f;
  if (c < N)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) acc += f(r, c);
  red[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < N) {
    float s = 0.f;
    for (int k = 0; k < 8; ++k) s += red[k][threadIdx.x];
    partial[static_cast<int64_t>(blockIdx.y) * N + c] = s;
  }
}

template <int kUnused = 0>
__global__ void colsum_finish_kernel(float* __restrict__ dst, const float* __restrict__ partial, int64_t chunks,
                                     int64_t N) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= N) return;
  float s = 0.f;
  for (int64_t k = 0; k < chunks; ++k) s += partial[k * N + c];
  dst[c] += s;
}

template <class F>
Status column_sums(const Ctx& c, const char* op, float* dst, int64_t M, int64_t N, F f) {
  if (M <= 0 || N <= 0) return Status::ok();
  const int64_t chunks = (M + kColChunk - 1) / kColChunk;
  void* buf = nullptr;
  ELMO_RETURN_IF_ERROR(c.scratch->device(static_cast<size_t>(chunks * N) * sizeof(float), &buf));
  float* partial = static_cast<float*>(buf);
  dim3 grid(static_cast<unsigned>((N + 31) / 32), static_cast<unsigned>(chunks));
  colsum_partial_kernel<<<grid, dim3(32, 8), 0, c.stream>>>(partial, M, N, f);
  ELMO_RETURN_IF_ERROR(launch_status(op));
  colsum_finish_kernel<><<<grid_1d(N, 256), 256, 0, c.stream>>>(dst, partial, chunks, N);
  return launch_status(op);
}

}  // namespace elmo::cuda

#endif
