// Layer norm fused with the residual add.
//   forward:  x = inp + residual (residual optional); out = (x - mean) * rstd * weight + bias
//             mean = Σx/C, rstd = 1/sqrt(Σ(x-mean)²/C + eps), two passes in f32.
//             inp, residual, out, sum_out: [T,C] f32 or bf16 (one dtype); weight, bias [C] f32;
//             sum_out (optional) receives x; mean, rstd [T] f32 (optional) receive the stats.
//             out and sum_out may alias inp or residual: each element is read, then written,
//             by the same thread in the last pass.
//   backward: xhat = (x - mean) * rstd, g = dout * weight,
//             dinp = rstd * (g - mean(g) - xhat * mean(g * xhat))   (=)
//             dweight += Σ_t dout * xhat, dbias += Σ_t dout   (deterministic column sums)
//             all f32.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

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
