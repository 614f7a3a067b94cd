// AdamW (decoupled weight decay) and the deterministic sum of squares for gradient clipping.
//   adamw_update: g = grad * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²;
//                 param -= lr * ((m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) + wd * param)
//                 param, m, v f32 [n]; grad f32 or bf16 [n] (same shape).
//   sum_squares:  *result += Σ x² in double. x is cut into chunks of a fixed size; each chunk's
//                 partial is a fixed-order tree sum, and the partials are added in chunk order
//                 by one block, so the result is bit-reproducible on any device.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>

#include "ops.h"

namespace elmo::cuda {
namespace {

// ---- kernels -------------------------------------------------------------------------------

template <class G>
__global__ void adamw_kernel(float* __restrict__ param, const G* __restrict__ grad, float* __restrict__ m,
                             float* __restrict__ v, int64_t n, float lr, float b1, float b2, float eps, float wd,
                             float inv_bc1, float inv_bc2, float grad_scale) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = ld(grad, i) * grad_scale;
    const float mi = b1 * m[i] + (1.0f - b1) * g;
    const float vi = b2 * v[i] + (1.0f - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float p = param[i];
    param[i] = p - lr * ((mi * inv_bc1) / (sqrtf(vi * inv_bc2) + eps) + wd * p);
  }
}

constexpr int kSqThreads = 256;
constexpr int64_t kSqChunk = 16384;  // elements per partial; fixed, never derived from the device

template <int kThreads>
__device__ double block_sum_double(double v) {
  __shared__ double red[kThreads / 32];
  v = warp_sum(v);
  const int w = threadIdx.x / 32, lane = threadIdx.x & 31;
  if (lane == 0) red[w] = v;
  __syncthreads();
  double r = 0.0;
  if (w == 0) {
    r = lane < kThreads / 32 ? red[lane] : 0.0;
    r = warp_sum(r);
  }
  return r;  // valid in thread 0
}

template <class T>
__global__ void sum_squares_partial_kernel(double* __restrict__ partial, const T* __restrict__ x, int64_t n) {
  const int64_t base = static_cast<int64_t>(blockIdx.x) * kSqChunk;
  const int64_t end = base + kSqChunk < n ? base + kSqChunk : n;
  double acc = 0.0;
  for (int64_t i = base + threadIdx.x; i < end; i += kSqThreads) {
    const double xi = ld(x, i);
    acc += xi * xi;
  }
  acc = block_sum_double<kSqThreads>(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void sum_squares_finish_kernel(double* __restrict__ out, const double* __restrict__ partial,
                                          int64_t chunks) {
  double acc = 0.0;
  for (int64_t k = threadIdx.x; k < chunks; k += kSqThreads) acc += partial[k];
  acc = block_sum_double<kSqThreads>(acc);
  if (threadIdx.x == 0) *out = acc;
}

}  // namespace

// ---- launchers -------------------------------------------------------------------------------

Status adamw_update(const Ctx& c, Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWParams& p) {
  const char* op = "adamw_update";
  ELMO_CHECK(!param.empty(), Code::kInput, "%s: param is missing (null data)", op);
  ELMO_CHECK(param.dtype == DType::kF32, Code::kDType, "%s: param must be f32, received %s", op,
             dtype_name(param.dtype));
  ELMO_CHECK(!grad.empty() && (grad.dtype == DType::kF32 || grad.dtype == DType::kBF16), Code::kDType,
             "%s: grad must be f32 or bf16", op);
  ELMO_CHECK(!m.empty() && !v.empty(), Code::kInput, "%s: m and v are required", op);
  ELMO_CHECK(m.dtype == DType::kF32 && v.dtype == DType::kF32, Code::kDType, "%s: m and v must be f32", op);
  const int64_t n = param.numel();
  ELMO_CHECK(grad.numel() == n && m.numel() == n && v.numel() == n, Code::kShape,
             "%s: param %s, grad %s, m %s, v %s differ in size", op, param.describe().c_str(),
             grad.describe().c_str(), m.describe().c_str(), v.describe().c_str());
  ELMO_CHECK(p.step >= 1, Code::kInput, "%s: step must be >= 1, received %lld", op, (long long)p.step);
  ELMO_CHECK(p.beta1 >= 0.f && p.beta1 < 1.f && p.beta2 >= 0.f && p.beta2 < 1.f, Code::kInput,
             "%s: betas must be in [0, 1)", op);
  if (n == 0) return Status::ok();
  const double bc1 = 1.0 - std::pow(static_cast<double>(p.beta1), static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(p.beta2), static_cast<double>(p.step));
  const float inv_bc1 = static_cast<float>(1.0 / bc1), inv_bc2 = static_cast<float>(1.0 / bc2);
  if (grad.dtype == DType::kBF16)
    adamw_kernel<<<grid_1d(n, 256), 256, 0, c.stream>>>(param.f32(), static_cast<const __nv_bfloat16*>(grad.data),
                                                        m.f32(), v.f32(), n, p.lr, p.beta1, p.beta2, p.eps,
                                                        p.weight_decay, inv_bc1, inv_bc2, p.grad_scale);
  else
    adamw_kernel<<<grid_1d(n, 256), 256, 0, c.stream>>>(param.f32(), grad.f32(), m.f32(), v.f32(), n, p.lr, p.beta1,
                                                        p.beta2, p.eps, p.weight_decay, inv_bc1, inv_bc2,
                                                        p.grad_scale);
  return launch_status(op);
}

Status sum_squares(const Ctx& c, double* result, Tensor x) {
  const char* op = "sum_squares";
  ELMO_CHECK(result != nullptr, Code::kInput, "%s: result is null", op);
  ELMO_CHECK(!x.empty(), Code::kInput, "%s: x is missing (null data)", op);
  ELMO_CHECK(x.dtype == DType::kF32 || x.dtype == DType::kBF16, Code::kDType, "%s: x must be f32 or bf16, received %s",
             op, dtype_name(x.dtype));
  const int64_t n = x.numel();
  if (n == 0) return Status::ok();
  const int64_t chunks = (n + kSqChunk - 1) / kSqChunk;
  void* dev = nullptr;
  void* host = nullptr;
  ELMO_RETURN_IF_ERROR(c.scratch->device(static_cast<size_t>(chunks + 1) * sizeof(double), &dev));
  ELMO_RETURN_IF_ERROR(c.scratch->pinned(sizeof(double), &host));
  double* partial = static_cast<double*>(dev);
  double* total = partial + chunks;
  if (x.dtype == DType::kBF16)
    sum_squares_partial_kernel<<<static_cast<unsigned>(chunks), kSqThreads, 0, c.stream>>>(
        partial, static_cast<const __nv_bfloat16*>(x.data), n);
  else
    sum_squares_partial_kernel<<<static_cast<unsigned>(chunks), kSqThreads, 0, c.stream>>>(partial, x.f32(), n);
  ELMO_RETURN_IF_ERROR(launch_status(op));
  sum_squares_finish_kernel<<<1, kSqThreads, 0, c.stream>>>(total, partial, chunks);
  ELMO_RETURN_IF_ERROR(launch_status(op));
  cudaError_t e = cudaMemcpyAsync(host, total, sizeof(double), cudaMemcpyDeviceToHost, c.stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(c.stream);
  if (e != cudaSuccess) return Status(Code::kCuda, strformat("%s: %s", op, cudaGetErrorString(e)));
  *result += *static_cast<double*>(host);
  return Status::ok();
}

}  // namespace elmo::cuda
