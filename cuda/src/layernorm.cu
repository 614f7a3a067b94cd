// Layer norm fused with the residual add.
//   forward:  x = inp + residual (residual optional); out = (x - mean) * rstd * weight + bias
//             mean = Σx/C, rstd = 1/sqrt(Σ(x-mean)²/C + eps), two passes in f32.
//             inp, residual, out, sum_out: [T,C] f32 or bf16 (one dtype); weight, bias [C] f32;
//             sum_out (optional) receives x; mean, rstd [T] f32 (optional) receive the stats.
//             out and sum_out may alias inp or residual: each element is read, then written,
//             by the same thread in the last pass.
//             One warp per row. Rows of 32 * E * k elements (E = 8 bf16 or 4 f32 per 16 bytes;
//             k = 1, 2, 3, 4, 6, 8, so every BERT width from 256 to 1024) with 16-byte aligned
//             tensors take layernorm_forward_vec_kernel: the row read once into registers in
//             16-byte accesses. Others take layernorm_forward_kernel: three passes over the row,
//             an element per access.
//   backward: xhat = (x - mean) * rstd, g = dout * weight,
//             dinp = rstd * (g - mean(g) - xhat * mean(g * xhat))   (=)
//             dweight += Σ_t dout * xhat, dbias += Σ_t dout   (deterministic column sums)
//             all f32.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "ops.h"

namespace elmo::cuda {
namespace {

// ---- kernels -------------------------------------------------------------------------------

// One warp per row.
template <class T>
__global__ void layernorm_forward_kernel(T* out, T* sum_out, float* __restrict__ mean_out,
                                         float* __restrict__ rstd_out, const T* inp, const T* residual,
                                         const float* __restrict__ weight, const float* __restrict__ bias, int64_t N,
                                         int64_t C, float eps) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= N) return;
  const T* a = inp + row * C;
  const T* r = residual ? residual + row * C : nullptr;
  float s = 0.f;
  for (int64_t c = lane; c < C; c += 32) s += ld(a, c) + (r ? ld(r, c) : 0.f);
  const float mean = warp_sum(s) / static_cast<float>(C);
  float v = 0.f;
  for (int64_t c = lane; c < C; c += 32) {
    const float d = ld(a, c) + (r ? ld(r, c) : 0.f) - mean;
    v += d * d;
  }
  const float rstd = rsqrtf(warp_sum(v) / static_cast<float>(C) + eps);
  T* y = out + row * C;
  T* xs = sum_out ? sum_out + row * C : nullptr;
  for (int64_t c = lane; c < C; c += 32) {
    const float x = ld(a, c) + (r ? ld(r, c) : 0.f);
    if (xs) st(xs, c, x);
    st(y, c, (x - mean) * rstd * weight[c] + bias[c]);
  }
  if (lane == 0) {
    if (mean_out) mean_out[row] = mean;
    if (rstd_out) rstd_out[row] = rstd;
  }
}

// 16 bytes of T as floats and back: E = 16 / sizeof(T) elements (8 bf16, 4 f32). p is
// 16-byte aligned.
__device__ __forceinline__ void load16(const float* p, float* v) {
  const float4 q = *reinterpret_cast<const float4*>(p);
  v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
}
__device__ __forceinline__ void load16(const __nv_bfloat16* p, float* v) {
  const uint4 q = *reinterpret_cast<const uint4*>(p);
  const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __nv_bfloat162 h;
    std::memcpy(&h, &w[i], 4);
    const float2 f = __bfloat1622float2(h);
    v[2 * i] = f.x, v[2 * i + 1] = f.y;
  }
}
__device__ __forceinline__ void store16(float* p, const float* v) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void store16(__nv_bfloat16* p, const float* v) {
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
    std::memcpy(&w[i], &h, 4);
  }
  *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}

// The same LayerNorm as layernorm_forward_kernel for rows of exactly C = 32 * E * kVecs
// elements, 16-byte aligned: one warp per row, each lane holding kVecs 16-byte vectors of it
// in registers (lane l's vector v covers columns (32 v + l) E ...), so the row is read from
// memory once, in 16-byte accesses, instead of three times an element at a time. The same
// formula per element; the sums run in another order. Every element is read before any is
// written, by the lane that writes it, so out and sum_out may alias inp or residual.
template <class T, int kVecs>
__global__ void layernorm_forward_vec_kernel(T* out, T* sum_out, float* __restrict__ mean_out,
                                             float* __restrict__ rstd_out, const T* inp, const T* residual,
                                             const float* __restrict__ weight, const float* __restrict__ bias,
                                             int64_t N, float eps) {
  constexpr int E = 16 / sizeof(T);
  constexpr int C = 32 * E * kVecs;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= N) return;
  float x[kVecs * E];
#pragma unroll
  for (int v = 0; v < kVecs; ++v) {
    const int64_t i = row * C + (v * 32 + lane) * E;
    load16(inp + i, x + v * E);
    if (residual) {
      float r[E];
      load16(residual + i, r);
#pragma unroll
      for (int e = 0; e < E; ++e) x[v * E + e] += r[e];
    }
  }
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < kVecs * E; ++i) s += x[i];
  const float mean = warp_sum(s) / static_cast<float>(C);
  float q = 0.f;
#pragma unroll
  for (int i = 0; i < kVecs * E; ++i) {
    const float d = x[i] - mean;
    q += d * d;
  }
  const float rstd = rsqrtf(warp_sum(q) / static_cast<float>(C) + eps);
#pragma unroll
  for (int v = 0; v < kVecs; ++v) {
    const int c0 = (v * 32 + lane) * E;
    if (sum_out) store16(sum_out + row * C + c0, x + v * E);
    float w[E], b[E], y[E];
#pragma unroll
    for (int j = 0; j < E; j += 4) {
      load16(weight + c0 + j, w + j);
      load16(bias + c0 + j, b + j);
    }
#pragma unroll
    for (int e = 0; e < E; ++e) y[e] = (x[v * E + e] - mean) * rstd * w[e] + b[e];
    store16(out + row * C + c0, y);
  }
  if (lane == 0) {
    if (mean_out) mean_out[row] = mean;
    if (rstd_out) rstd_out[row] = rstd;
  }
}

__global__ void layernorm_backward_kernel(float* dinp, const float* dout, const float* __restrict__ x,
                                          const float* __restrict__ weight, const float* __restrict__ mean,
                                          const float* __restrict__ rstd, int64_t N, int64_t C) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= N) return;
  const float mu = mean[row], rs = rstd[row];
  const float* g = dout + row * C;
  const float* xr = x + row * C;
  float sg = 0.f, sgx = 0.f;
  for (int64_t c = lane; c < C; c += 32) {
    const float gi = g[c] * weight[c];
    sg += gi;
    sgx += gi * (xr[c] - mu) * rs;
  }
  sg = warp_sum(sg) / static_cast<float>(C);
  sgx = warp_sum(sgx) / static_cast<float>(C);
  float* d = dinp + row * C;
  for (int64_t c = lane; c < C; c += 32) {
    const float xhat = (xr[c] - mu) * rs;
    d[c] = rs * (g[c] * weight[c] - sg - xhat * sgx);
  }
}

struct DoutXhat {
  const float* dout;
  const float* x;
  const float* mean;
  const float* rstd;
  int64_t C;
  __device__ float operator()(int64_t r, int64_t c) const {
    return dout[r * C + c] * (x[r * C + c] - mean[r]) * rstd[r];
  }
};
struct Dout {
  const float* dout;
  int64_t C;
  __device__ float operator()(int64_t r, int64_t c) const { return dout[r * C + c]; }
};

// layernorm_forward_vec_kernel for rows of 32 * E * k elements, k in {1, 2, 3, 4, 6, 8}.
template <class T>
void launch_vec(int k, unsigned blocks, cudaStream_t stream, T* out, T* sum_out, float* mean, float* rstd,
                const T* inp, const T* residual, const float* weight, const float* bias, int64_t N, float eps) {
  using Kernel = void (*)(T*, T*, float*, float*, const T*, const T*, const float*, const float*, int64_t, float);
  const Kernel kernel = k == 1   ? layernorm_forward_vec_kernel<T, 1>
                        : k == 2 ? layernorm_forward_vec_kernel<T, 2>
                        : k == 3 ? layernorm_forward_vec_kernel<T, 3>
                        : k == 4 ? layernorm_forward_vec_kernel<T, 4>
                        : k == 6 ? layernorm_forward_vec_kernel<T, 6>
                                 : layernorm_forward_vec_kernel<T, 8>;
  kernel<<<blocks, 256, 0, stream>>>(out, sum_out, mean, rstd, inp, residual, weight, bias, N, eps);
}

}  // namespace

// ---- launchers -------------------------------------------------------------------------------

Status layernorm_forward(const Ctx& c, Tensor out, Tensor sum_out, Tensor mean, Tensor rstd, Tensor inp,
                         Tensor residual, Tensor weight, Tensor bias, float eps) {
  const char* op = "layernorm_forward";
  ELMO_CHECK(!inp.empty() && inp.ndim == 2, Code::kShape, "%s: inp: expected shape [T, C] but received %s", op,
             inp.describe().c_str());
  const DType dt = inp.dtype;
  ELMO_CHECK(dt == DType::kF32 || dt == DType::kBF16, Code::kDType, "%s: inp must be f32 or bf16, received %s", op,
             dtype_name(dt));
  const int64_t N = inp.shape[0], C = inp.shape[1];
  ELMO_RETURN_IF_ERROR(check_tensor(out, "layernorm_forward: out", dt, {N, C}));
  ELMO_RETURN_IF_ERROR(check_optional(residual, "layernorm_forward: residual", dt, {N, C}));
  ELMO_RETURN_IF_ERROR(check_optional(sum_out, "layernorm_forward: sum_out", dt, {N, C}));
  ELMO_RETURN_IF_ERROR(check_optional(mean, "layernorm_forward: mean", DType::kF32, {N}));
  ELMO_RETURN_IF_ERROR(check_optional(rstd, "layernorm_forward: rstd", DType::kF32, {N}));
  ELMO_RETURN_IF_ERROR(check_tensor(weight, "layernorm_forward: weight", DType::kF32, {C}));
  ELMO_RETURN_IF_ERROR(check_tensor(bias, "layernorm_forward: bias", DType::kF32, {C}));
  ELMO_CHECK(eps >= 0.0f, Code::kInput, "%s: eps must be >= 0, received %g", op, static_cast<double>(eps));
  ELMO_CHECK(C > 0, Code::kShape, "%s: C must be positive", op);
  if (N == 0) return Status::ok();
  const unsigned blocks = static_cast<unsigned>((N + 7) / 8);
  float* mp = mean.empty() ? nullptr : mean.f32();
  float* rp = rstd.empty() ? nullptr : rstd.f32();
  // Rows of 32 * E * k elements (k = 1, 2, 3, 4, 6, 8: BERT's 256 to 1024 in bf16, 128 to 1024
  // in f32) with 16-byte aligned storage: the register-resident kernel.
  const int64_t row_vec = 32 * (dt == DType::kBF16 ? 8 : 4);
  const int64_t k = C % row_vec == 0 ? C / row_vec : 0;
  const bool aligned = aligned16(out.data) && aligned16(sum_out.data) && aligned16(inp.data) &&
                       aligned16(residual.data) && aligned16(weight.data) && aligned16(bias.data);
  if (aligned && (k == 1 || k == 2 || k == 3 || k == 4 || k == 6 || k == 8)) {
    if (dt == DType::kBF16) {
      using B = __nv_bfloat16;
      launch_vec<B>(static_cast<int>(k), blocks, c.stream, static_cast<B*>(out.data), static_cast<B*>(sum_out.data),
                    mp, rp, static_cast<const B*>(inp.data), static_cast<const B*>(residual.data), weight.f32(),
                    bias.f32(), N, eps);
    } else {
      launch_vec<float>(static_cast<int>(k), blocks, c.stream, out.f32(), sum_out.f32(), mp, rp, inp.f32(),
                        residual.f32(), weight.f32(), bias.f32(), N, eps);
    }
    return launch_status(op);
  }
  if (dt == DType::kBF16) {
    using B = __nv_bfloat16;
    layernorm_forward_kernel<<<blocks, 256, 0, c.stream>>>(
        static_cast<B*>(out.data), static_cast<B*>(sum_out.data), mp, rp, static_cast<const B*>(inp.data),
        static_cast<const B*>(residual.data), weight.f32(), bias.f32(), N, C, eps);
  } else {
    layernorm_forward_kernel<<<blocks, 256, 0, c.stream>>>(out.f32(), sum_out.f32(), mp, rp, inp.f32(),
                                                           residual.f32(), weight.f32(), bias.f32(), N, C, eps);
  }
  return launch_status(op);
}

Status layernorm_backward(const Ctx& c, Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout, Tensor x,
                          Tensor weight, Tensor mean, Tensor rstd) {
  const char* op = "layernorm_backward";
  ELMO_CHECK(!x.empty() && x.ndim == 2, Code::kShape, "%s: x: expected shape [T, C] but received %s", op,
             x.describe().c_str());
  const int64_t N = x.shape[0], C = x.shape[1];
  ELMO_RETURN_IF_ERROR(check_tensor(x, "layernorm_backward: x", DType::kF32, {N, C}));
  ELMO_RETURN_IF_ERROR(check_tensor(dout, "layernorm_backward: dout", DType::kF32, {N, C}));
  ELMO_RETURN_IF_ERROR(check_tensor(dinp, "layernorm_backward: dinp", DType::kF32, {N, C}));
  ELMO_RETURN_IF_ERROR(check_tensor(weight, "layernorm_backward: weight", DType::kF32, {C}));
  ELMO_RETURN_IF_ERROR(check_tensor(mean, "layernorm_backward: mean", DType::kF32, {N}));
  ELMO_RETURN_IF_ERROR(check_tensor(rstd, "layernorm_backward: rstd", DType::kF32, {N}));
  ELMO_RETURN_IF_ERROR(check_optional(dweight, "layernorm_backward: dweight", DType::kF32, {C}));
  ELMO_RETURN_IF_ERROR(check_optional(dbias, "layernorm_backward: dbias", DType::kF32, {C}));
  ELMO_CHECK(dinp.data != x.data, Code::kInput, "%s: dinp must not alias x", op);
  if (N == 0 || C == 0) return Status::ok();
  // Parameter gradients first: dinp may alias dout.
  if (!dweight.empty())
    ELMO_RETURN_IF_ERROR(column_sums(c, op, dweight.f32(), N, C, DoutXhat{dout.f32(), x.f32(), mean.f32(), rstd.f32(), C}));
  if (!dbias.empty()) ELMO_RETURN_IF_ERROR(column_sums(c, op, dbias.f32(), N, C, Dout{dout.f32(), C}));
  layernorm_backward_kernel<<<static_cast<unsigned>((N + 7) / 8), 256, 0, c.stream>>>(
      dinp.f32(), dout.f32(), x.f32(), weight.f32(), mean.f32(), rstd.f32(), N, C);
  return launch_status(op);
}

}  // namespace elmo::cuda
