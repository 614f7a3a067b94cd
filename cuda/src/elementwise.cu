// Elementwise ops on f32 or bf16 tensors (out has inp's dtype), plus the backend's fill and
// convert and the bias gradient.
//   gelu (erf form):  y = x * 0.5 * (1 + erf(x / sqrt(2)))
//                     dy/dx = 0.5 * (1 + erf(x / sqrt(2))) + x * exp(-x²/2) / sqrt(2π)
//   tanh:             dinp = dout * (1 - out²)
//   dropout:          element e kept when philox_uniform(seed, stream, e) >= p, scaled 1/(1-p)
//   softmax:          out [N,V] = softmax(inp [N,V]) along V, f32 statistics
//   bias_backward:    dbias [N] += Σ_m dout[m, :]   (deterministic column sums)
// Activation outputs are written (=); dbias accumulates (+=). All math in f32.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstring>

#include "elmo/philox.h"
#include "ops.h"

namespace elmo::cuda {
namespace {

// ---- kernels -------------------------------------------------------------------------------

template <class W>
__global__ void fill_kernel(W* __restrict__ p, int64_t n, W v) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = v;
}

__device__ __forceinline__ float load_any(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::kBF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case DType::kF16: return __half2float(static_cast<const __half*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}
__device__ __forceinline__ void store_any(void* p, DType t, int64_t i, float v) {
  switch (t) {
    case DType::kBF16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(v); break;
    case DType::kF16: static_cast<__half*>(p)[i] = __float2half(v); break;
    default: static_cast<float*>(p)[i] = v; break;
  }
}

__global__ void convert_kernel(void* __restrict__ out, DType tout, const void* __restrict__ in, DType tin,
                               int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    store_any(out, tout, i, load_any(in, tin, i));
}

enum class Unary : int { kGelu, kTanh };

template <Unary kOp, class T>
__global__ void unary_forward_kernel(T* out, const T* inp, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float x = ld(inp, i);
    float y;
    if (kOp == Unary::kGelu) y = x * 0.5f * (1.0f + erff(x * 0.70710678118654752f));
    else y = tanhf(x);
    st(out, i, y);
  }
}

// dinp may alias dout: each element is read, then written, by the same thread.
template <class T>
__global__ void gelu_backward_kernel(T* dinp, const T* dout, const T* inp, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float x = ld(inp, i);
    const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
    const float pdf = expf(-0.5f * x * x) * 0.39894228040143268f;
    st(dinp, i, ld(dout, i) * (cdf + x * pdf));
  }
}

template <class T>
__global__ void tanh_backward_kernel(T* dinp, const T* dout, const T* out, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float y = ld(out, i);
    st(dinp, i, ld(dout, i) * (1.0f - y * y));
  }
}

template <class T>
__global__ void dropout_kernel(T* out, const T* inp, int64_t n, float p, float scale, uint64_t seed,
                               uint64_t stream) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const bool keep = dropout_keep(seed, stream, static_cast<uint64_t>(i), p);
    st(out, i, keep ? ld(inp, i) * scale : 0.0f);
  }
}

// One warp per row: max, sum of exponentials, then the normalized write.
template <class T>
__global__ void softmax_kernel(T* out, const T* inp, int64_t N, int64_t V) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= N) return;
  const T* x = inp + row * V;
  T* y = out + row * V;
  float m = -INFINITY;
  for (int64_t j = lane; j < V; j += 32) m = fmaxf(m, ld(x, j));
  m = warp_max(m);
  float s = 0.f;
  for (int64_t j = lane; j < V; j += 32) s += expf(ld(x, j) - m);
  s = warp_sum(s);
  const float inv = 1.0f / s;
  for (int64_t j = lane; j < V; j += 32) st(y, j, expf(ld(x, j) - m) * inv);
}

template <class T>
struct ColumnOf {
  const T* p;
  int64_t N;
  __device__ float operator()(int64_t r, int64_t c) const { return ld(p, r * N + c); }
};

bool is_float(DType t) { return t == DType::kF32 || t == DType::kBF16; }

Status check_pair(const char* op, const char* a_name, const Tensor& a, const char* b_name, const Tensor& b) {
  ELMO_CHECK(!a.empty(), Code::kInput, "%s: %s is missing (null data)", op, a_name);
  ELMO_CHECK(!b.empty(), Code::kInput, "%s: %s is missing (null data)", op, b_name);
  ELMO_CHECK(is_float(a.dtype), Code::kDType, "%s: %s must be f32 or bf16, received %s", op, a_name,
             dtype_name(a.dtype));
  ELMO_CHECK(a.dtype == b.dtype, Code::kDType, "%s: %s is %s but %s is %s", op, a_name, dtype_name(a.dtype), b_name,
             dtype_name(b.dtype));
  ELMO_CHECK(a.numel() == b.numel() && a.ndim == b.ndim, Code::kShape, "%s: %s %s and %s %s differ in shape", op,
             a_name, a.describe().c_str(), b_name, b.describe().c_str());
  for (int i = 0; i < a.ndim; ++i)
    ELMO_CHECK(a.shape[i] == b.shape[i], Code::kShape, "%s: %s %s and %s %s differ in shape", op, a_name,
               a.describe().c_str(), b_name, b.describe().c_str());
  return Status::ok();
}

}  // namespace

// ---- launchers -------------------------------------------------------------------------------

Status fill(const Ctx& c, Tensor t, float value) {
  ELMO_CHECK(!t.empty(), Code::kInput, "fill: tensor is missing");
  const int64_t n = t.numel();
  if (n == 0) return Status::ok();
  const unsigned g = grid_1d(n, 256);
  switch (t.dtype) {
    case DType::kF32: fill_kernel<<<g, 256, 0, c.stream>>>(t.f32(), n, value); break;
    case DType::kBF16: {
      const __nv_bfloat16 h = __float2bfloat16(value);
      uint16_t bits;
      std::memcpy(&bits, &h, 2);
      fill_kernel<<<g, 256, 0, c.stream>>>(t.u16(), n, bits);
      break;
    }
    case DType::kF16: {
      const __half h = __float2half(value);
      uint16_t bits;
      std::memcpy(&bits, &h, 2);
      fill_kernel<<<g, 256, 0, c.stream>>>(t.u16(), n, bits);
      break;
    }
    case DType::kI32: fill_kernel<<<g, 256, 0, c.stream>>>(t.i32(), n, static_cast<int32_t>(value)); break;
    case DType::kI8: fill_kernel<<<g, 256, 0, c.stream>>>(t.i8(), n, static_cast<int8_t>(value)); break;
  }
  return launch_status("fill");
}

Status convert(const Ctx& c, Tensor out, Tensor in) {
  ELMO_CHECK(!out.empty() && !in.empty(), Code::kInput, "convert: tensor is missing");
  ELMO_CHECK(out.numel() == in.numel(), Code::kShape, "convert: %s into %s", in.describe().c_str(),
             out.describe().c_str());
  auto floating = [](DType t) { return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16; };
  ELMO_CHECK(floating(in.dtype) && floating(out.dtype), Code::kDType, "convert: %s -> %s not supported",
             dtype_name(in.dtype), dtype_name(out.dtype));
  const int64_t n = in.numel();
  if (n == 0) return Status::ok();
  convert_kernel<<<grid_1d(n, 256), 256, 0, c.stream>>>(out.data, out.dtype, in.data, in.dtype, n);
  return launch_status("convert");
}

template <Unary kOp>
static Status unary_forward(const Ctx& c, const char* op, Tensor out, Tensor inp) {
  ELMO_RETURN_IF_ERROR(check_pair(op, "out", out, "inp", inp));
  const int64_t n = inp.numel();
  if (n == 0) return Status::ok();
  if (inp.dtype == DType::kBF16)
    unary_forward_kernel<kOp><<<grid_1d(n, 256), 256, 0, c.stream>>>(
        static_cast<__nv_bfloat16*>(out.data), static_cast<const __nv_bfloat16*>(inp.data), n);
  else
    unary_forward_kernel<kOp><<<grid_1d(n, 256), 256, 0, c.stream>>>(out.f32(), inp.f32(), n);
  return launch_status(op);
}

Status gelu_forward(const Ctx& c, Tensor out, Tensor inp) {
  return unary_forward<Unary::kGelu>(c, "gelu_forward", out, inp);
}
Status tanh_forward(const Ctx& c, Tensor out, Tensor inp) {
  return unary_forward<Unary::kTanh>(c, "tanh_forward", out, inp);
}

Status gelu_backward(const Ctx& c, Tensor dinp, Tensor dout, Tensor inp) {
  ELMO_RETURN_IF_ERROR(check_pair("gelu_backward", "dinp", dinp, "dout", dout));
  ELMO_RETURN_IF_ERROR(check_pair("gelu_backward", "dout", dout, "inp", inp));
  const int64_t n = inp.numel();
  if (n == 0) return Status::ok();
  if (inp.dtype == DType::kBF16)
    gelu_backward_kernel<<<grid_1d(n, 256), 256, 0, c.stream>>>(static_cast<__nv_bfloat16*>(dinp.data),
                                                                static_cast<const __nv_bfloat16*>(dout.data),
                                                                static_cast<const __nv_bfloat16*>(inp.data), n);
  else
    gelu_backward_kernel<<<grid_1d(n, 256), 256, 0, c.stream>>>(dinp.f32(), dout.f32(), inp.f32(), n);
  return launch_status("gelu_backward");
}

Status tanh_backward(const Ctx& c, Tensor dinp, Tensor dout, Tensor out) {
  ELMO_RETURN_IF_ERROR(check_pair("tanh_backward", "dinp", dinp, "dout", dout));
  ELMO_RETURN_IF_ERROR(check_pair("tanh_backward", "dout", dout, "out", out));
  const int64_t n = out.numel();
  if (n == 0) return Status::ok();
  if (out.dtype == DType::kBF16)
    tanh_backward_kernel<<<grid_1d(n, 256), 256, 0, c.stream>>>(static_cast<__nv_bfloat16*>(dinp.data),
                                                                static_cast<const __nv_bfloat16*>(dout.data),
                                                                static_cast<const __nv_bfloat16*>(out.data), n);
  else
    tanh_backward_kernel<<<grid_1d(n, 256), 256, 0, c.stream>>>(dinp.f32(), dout.f32(), out.f32(), n);
  return launch_status("tanh_backward");
}

static Status dropout(const Ctx& c, const char* op, Tensor out, Tensor inp, float p, uint64_t seed,
                      uint64_t stream) {
  ELMO_RETURN_IF_ERROR(check_pair(op, "out", out, "inp", inp));
  ELMO_CHECK(p >= 0.0f && p < 1.0f, Code::kInput, "%s: p must be in [0, 1), received %g", op, static_cast<double>(p));
  const int64_t n = inp.numel();
  if (n == 0) return Status::ok();
  if (p == 0.0f) {
    if (out.data != inp.data) {
      cudaError_t e = cudaMemcpyAsync(out.data, inp.data, inp.nbytes(), cudaMemcpyDeviceToDevice, c.stream);
      ELMO_CHECK(e == cudaSuccess, Code::kCuda, "%s: %s", op, cudaGetErrorString(e));
    }
    return Status::ok();
  }
  const float scale = 1.0f / (1.0f - p);
  if (inp.dtype == DType::kBF16)
    dropout_kernel<<<grid_1d(n, 256), 256, 0, c.stream>>>(static_cast<__nv_bfloat16*>(out.data),
                                                          static_cast<const __nv_bfloat16*>(inp.data), n, p, scale,
                                                          seed, stream);
  else
    dropout_kernel<<<grid_1d(n, 256), 256, 0, c.stream>>>(out.f32(), inp.f32(), n, p, scale, seed, stream);
  return launch_status(op);
}

Status dropout_forward(const Ctx& c, Tensor out, Tensor inp, float p, uint64_t seed, uint64_t stream) {
  return dropout(c, "dropout_forward", out, inp, p, seed, stream);
}
// The backward of inverted dropout is the same masked scaling applied to the gradient.
Status dropout_backward(const Ctx& c, Tensor dinp, Tensor dout, float p, uint64_t seed, uint64_t stream) {
  return dropout(c, "dropout_backward", dinp, dout, p, seed, stream);
}

Status softmax_forward(const Ctx& c, Tensor out, Tensor inp) {
  ELMO_RETURN_IF_ERROR(check_pair("softmax_forward", "out", out, "inp", inp));
  ELMO_CHECK(inp.ndim == 2, Code::kShape, "softmax_forward: inp: expected shape [N, V] but received %s",
             inp.describe().c_str());
  const int64_t N = inp.shape[0], V = inp.shape[1];
  if (N == 0 || V == 0) return Status::ok();
  const unsigned blocks = static_cast<unsigned>((N + 7) / 8);
  if (inp.dtype == DType::kBF16)
    softmax_kernel<<<blocks, 256, 0, c.stream>>>(static_cast<__nv_bfloat16*>(out.data),
                                                 static_cast<const __nv_bfloat16*>(inp.data), N, V);
  else
    softmax_kernel<<<blocks, 256, 0, c.stream>>>(out.f32(), inp.f32(), N, V);
  return launch_status("softmax_forward");
}

Status bias_backward(const Ctx& c, Tensor dbias, Tensor dout) {
  ELMO_CHECK(!dout.empty(), Code::kInput, "bias_backward: dout is missing (null data)");
  ELMO_CHECK(dout.ndim == 2, Code::kShape, "bias_backward: dout: expected shape [M, N] but received %s",
             dout.describe().c_str());
  ELMO_CHECK(is_float(dout.dtype), Code::kDType, "bias_backward: dout must be f32 or bf16, received %s",
             dtype_name(dout.dtype));
  const int64_t M = dout.shape[0], N = dout.shape[1];
  ELMO_RETURN_IF_ERROR(check_tensor(dbias, "bias_backward: dbias", DType::kF32, {N}));
  if (dout.dtype == DType::kBF16)
    return column_sums(c, "bias_backward", dbias.f32(), M, N,
                       ColumnOf<__nv_bfloat16>{static_cast<const __nv_bfloat16*>(dout.data), N});
  return column_sums(c, "bias_backward", dbias.f32(), M, N, ColumnOf<float>{dout.f32(), N});
}

}  // namespace elmo::cuda
