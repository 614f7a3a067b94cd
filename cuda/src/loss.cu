// Losses, f32.
//   cross_entropy_forward:  lse[i] = log Σ_j exp(logits[i,j]); losses[i] = lse[i] - logits[i, t_i],
//                           0 where t_i == ignore_index. logits [N,V], targets i32 [N].
//   cross_entropy_backward: dlogits[i,j] = (exp(logits[i,j] - lse[i]) - [j == t_i]) * scale (=),
//                           zero rows where ignored; dlogits may alias logits.
//   bce_forward:            losses = softplus(x) - x*y = max(x,0) - x*y + log1p(exp(-|x|))
//   bce_backward:           dlogits = (sigmoid(x) - y) * scale (=)
// A target outside [0, V) other than ignore_index -> ERR_INPUT (checked in the kernel).
#include <cuda_runtime.h>

#include "ops.h"

namespace elmo::cuda {
namespace {

// ---- kernels -------------------------------------------------------------------------------

constexpr int kLossThreads = 256;

__device__ float block_reduce(float v, bool is_max) {
  __shared__ float red[kLossThreads / 32];
  __shared__ float result;
  v = is_max ? warp_max(v) : warp_sum(v);
  const int w = threadIdx.x / 32, lane = threadIdx.x & 31;
  if (lane == 0) red[w] = v;
  __syncthreads();
  if (w == 0) {
    float x = lane < kLossThreads / 32 ? red[lane] : (is_max ? -INFINITY : 0.f);
    x = is_max ? warp_max(x) : warp_sum(x);
    if (lane == 0) result = x;
  }
  __syncthreads();
  const float r = result;
  __syncthreads();  // red/result are reused by the next call
  return r;
}

// One block per row.
__global__ void cross_entropy_forward_kernel(float* __restrict__ losses, float* __restrict__ lse,
                                             const float* __restrict__ logits, const int32_t* __restrict__ targets,
                                             int64_t V, int ignore_index, int* flag) {
  const int64_t i = blockIdx.x;
  const float* x = logits + i * V;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, x[j]);
  m = block_reduce(m, true);
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) s += expf(x[j] - m);
  s = block_reduce(s, false);
  if (threadIdx.x == 0) {
    const float l = m + logf(s);
    lse[i] = l;
    const int32_t t = targets[i];
    if (t == ignore_index) {
      losses[i] = 0.f;
    } else if (t < 0 || t >= V) {
      losses[i] = 0.f;
      atomicExch(flag, 1);
    } else {
      losses[i] = l - x[t];
    }
  }
}

__global__ void cross_entropy_backward_kernel(float* dlogits, const float* logits, const float* __restrict__ lse,
                                              const int32_t* __restrict__ targets, int64_t V, float scale,
                                              int ignore_index, int* flag) {
  const int64_t i = blockIdx.x;
  const int32_t t = targets[i];
  float* d = dlogits + i * V;
  const float* x = logits + i * V;
  const bool bad = t != ignore_index && (t < 0 || t >= V);
  if (bad && threadIdx.x == 0) atomicExch(flag, 1);
  if (t == ignore_index || bad) {
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) d[j] = 0.f;
    return;
  }
  const float l = lse[i];
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) d[j] = (expf(x[j] - l) - (j == t ? 1.f : 0.f)) * scale;
}

__global__ void bce_forward_kernel(float* losses, const float* logits, const float* targets, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float x = logits[i], y = targets[i];
    losses[i] = fmaxf(x, 0.f) - x * y + log1pf(expf(-fabsf(x)));
  }
}

__global__ void bce_backward_kernel(float* dlogits, const float* logits, const float* targets, int64_t n,
                                    float scale) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float x = logits[i];
    const float s = x >= 0.f ? 1.f / (1.f + expf(-x)) : expf(x) / (1.f + expf(x));
    dlogits[i] = (s - targets[i]) * scale;
  }
}

}  // namespace

// ---- launchers -------------------------------------------------------------------------------

Status cross_entropy_forward(const Ctx& c, Tensor losses, Tensor lse, Tensor logits, Tensor targets,
                             int ignore_index) {
  const char* op = "cross_entropy_forward";
  ELMO_RETURN_IF_ERROR(check_tensor(logits, "cross_entropy_forward: logits", DType::kF32, {-1, -1}));
  const int64_t N = logits.shape[0], V = logits.shape[1];
  ELMO_RETURN_IF_ERROR(check_tensor(losses, "cross_entropy_forward: losses", DType::kF32, {N}));
  ELMO_RETURN_IF_ERROR(check_tensor(lse, "cross_entropy_forward: lse", DType::kF32, {N}));
  ELMO_RETURN_IF_ERROR(check_tensor(targets, "cross_entropy_forward: targets", DType::kI32, {N}));
  ELMO_CHECK(V > 0, Code::kShape, "%s: V must be positive", op);
  if (N == 0) return Status::ok();
  ELMO_RETURN_IF_ERROR(flag_reset(c, op));
  cross_entropy_forward_kernel<<<static_cast<unsigned>(N), kLossThreads, 0, c.stream>>>(
      losses.f32(), lse.f32(), logits.f32(), targets.i32(), V, ignore_index, c.flag);
  ELMO_RETURN_IF_ERROR(launch_status(op));
  return flag_check(c, op, strformat("a target is outside [0, %lld) and is not ignore_index", (long long)V).c_str());
}

Status cross_entropy_backward(const Ctx& c, Tensor dlogits, Tensor logits, Tensor lse, Tensor targets, float scale,
                              int ignore_index) {
  const char* op = "cross_entropy_backward";
  ELMO_RETURN_IF_ERROR(check_tensor(logits, "cross_entropy_backward: logits", DType::kF32, {-1, -1}));
  const int64_t N = logits.shape[0], V = logits.shape[1];
  ELMO_RETURN_IF_ERROR(check_tensor(dlogits, "cross_entropy_backward: dlogits", DType::kF32, {N, V}));
  ELMO_RETURN_IF_ERROR(check_tensor(lse, "cross_entropy_backward: lse", DType::kF32, {N}));
  ELMO_RETURN_IF_ERROR(check_tensor(targets, "cross_entropy_backward: targets", DType::kI32, {N}));
  if (N == 0 || V == 0) return Status::ok();
  ELMO_RETURN_IF_ERROR(flag_reset(c, op));
  cross_entropy_backward_kernel<<<static_cast<unsigned>(N), kLossThreads, 0, c.stream>>>(
      dlogits.f32(), logits.f32(), lse.f32(), targets.i32(), V, scale, ignore_index, c.flag);
  ELMO_RETURN_IF_ERROR(launch_status(op));
  return flag_check(c, op, strformat("a target is outside [0, %lld) and is not ignore_index", (long long)V).c_str());
}

Status bce_forward(const Ctx& c, Tensor losses, Tensor logits, Tensor targets) {
  ELMO_RETURN_IF_ERROR(check_tensor(logits, "bce_forward: logits", DType::kF32, {-1, -1}));
  const int64_t N = logits.shape[0], L = logits.shape[1];
  ELMO_RETURN_IF_ERROR(check_tensor(targets, "bce_forward: targets", DType::kF32, {N, L}));
  ELMO_RETURN_IF_ERROR(check_tensor(losses, "bce_forward: losses", DType::kF32, {N, L}));
  const int64_t n = N * L;
  if (n == 0) return Status::ok();
  bce_forward_kernel<<<grid_1d(n, 256), 256, 0, c.stream>>>(losses.f32(), logits.f32(), targets.f32(), n);
  return launch_status("bce_forward");
}

Status bce_backward(const Ctx& c, Tensor dlogits, Tensor logits, Tensor targets, float scale) {
  ELMO_RETURN_IF_ERROR(check_tensor(logits, "bce_backward: logits", DType::kF32, {-1, -1}));
  const int64_t N = logits.shape[0], L = logits.shape[1];
  ELMO_RETURN_IF_ERROR(check_tensor(targets, "bce_backward: targets", DType::kF32, {N, L}));
  ELMO_RETURN_IF_ERROR(check_tensor(dlogits, "bce_backward: dlogits", DType::kF32, {N, L}));
  const int64_t n = N * L;
  if (n == 0) return Status::ok();
  bce_backward_kernel<<<grid_1d(n, 256), 256, 0, c.stream>>>(dlogits.f32(), logits.f32(), targets.f32(), n, scale);
  return launch_status("bce_backward");
}

}  // namespace elmo::cuda
