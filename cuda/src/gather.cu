// Row gather and the deterministic row scatter-add.
//   gather_rows:      out [N,C] = inp [T,C] rows idx [N] (=); out/inp f32 or bf16
//   scatter_add_rows: dinp [T,C] += dout [N,C] scattered to rows idx (f32 accumulation)
// Determinism: the indices are brought to the host, grouped by destination row (stable, so
// repeated indices add in their order in idx), and one thread per (destination, column) sums
// its sources in that order. No atomics, so the result does not depend on scheduling.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstring>
#include <vector>

#include "ops.h"

namespace elmo::cuda {
namespace {

// ---- kernels -------------------------------------------------------------------------------

// One block per output row.
template <class T>
__global__ void gather_rows_kernel(T* __restrict__ out, const T* __restrict__ inp, const int32_t* __restrict__ idx,
                                   int64_t N, int64_t Tn, int64_t C, int* flag) {
  const int64_t n = blockIdx.x;
  if (n >= N) return;
  const int32_t r = idx[n];
  T* y = out + n * C;
  if (r < 0 || r >= Tn) {
    if (threadIdx.x == 0) atomicExch(flag, 1);
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) st(y, c, 0.0f);
    return;
  }
  const T* x = inp + static_cast<int64_t>(r) * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) y[c] = x[c];
}

// grid (segments, column blocks): dst[seg_dst[s], c] += Σ_k src[rows[k], c], k in segment s.
template <class T>
__global__ void segmented_scatter_add_kernel(float* __restrict__ dst, const T* __restrict__ src,
                                             const int32_t* __restrict__ rows, const int32_t* __restrict__ seg_begin,
                                             const int32_t* __restrict__ seg_dst, int64_t C) {
  const int64_t s = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float acc = 0.f;
  for (int32_t k = seg_begin[s]; k < seg_begin[s + 1]; ++k) acc += ld(src, static_cast<int64_t>(rows[k]) * C + c);
  dst[static_cast<int64_t>(seg_dst[s]) * C + c] += acc;
}

}  // namespace

// ---- launchers -------------------------------------------------------------------------------

void group_by_key(const int32_t* keys, int64_t n, int64_t K, int32_t* rows, int32_t* seg_begin, int32_t* seg_dst,
                  int64_t* n_seg) {
  std::vector<int32_t> count(static_cast<size_t>(K) + 1, 0);
  for (int64_t i = 0; i < n; ++i) ++count[static_cast<size_t>(keys[i]) + 1];
  for (int64_t k = 0; k < K; ++k) count[k + 1] += count[k];  // count[k] = first slot of key k
  std::vector<int32_t> next(count.begin(), count.end() - 1);
  for (int64_t i = 0; i < n; ++i) rows[next[keys[i]]++] = static_cast<int32_t>(i);
  int64_t s = 0;
  for (int64_t k = 0; k < K; ++k)
    if (count[k + 1] > count[k]) {
      seg_begin[s] = count[k];
      seg_dst[s] = static_cast<int32_t>(k);
      ++s;
    }
  seg_begin[s] = static_cast<int32_t>(n);
  *n_seg = s;
}

Status segmented_scatter_add(const Ctx& c, const char* op, Tensor dst, Tensor src, const int32_t* rows,
                             const int32_t* seg_begin, const int32_t* seg_dst, int64_t n_rows, int64_t n_seg) {
  if (n_seg == 0) return Status::ok();
  const int64_t C = src.shape[src.ndim - 1];
  const size_t words = static_cast<size_t>(n_rows + (n_seg + 1) + n_seg);
  void* host = nullptr;
  void* dev = nullptr;
  ELMO_RETURN_IF_ERROR(c.scratch->pinned(words * sizeof(int32_t), &host));
  ELMO_RETURN_IF_ERROR(c.scratch->device(words * sizeof(int32_t), &dev));
  int32_t* h = static_cast<int32_t*>(host);
  std::memcpy(h, rows, static_cast<size_t>(n_rows) * 4);
  std::memcpy(h + n_rows, seg_begin, static_cast<size_t>(n_seg + 1) * 4);
  std::memcpy(h + n_rows + n_seg + 1, seg_dst, static_cast<size_t>(n_seg) * 4);
  cudaError_t e = cudaMemcpyAsync(dev, host, words * 4, cudaMemcpyHostToDevice, c.stream);
  if (e != cudaSuccess) return Status(Code::kCuda, strformat("%s: %s", op, cudaGetErrorString(e)));
  const int32_t* d = static_cast<const int32_t*>(dev);
  dim3 grid(static_cast<unsigned>(n_seg), static_cast<unsigned>((C + 127) / 128));
  if (src.dtype == DType::kBF16)
    segmented_scatter_add_kernel<<<grid, 128, 0, c.stream>>>(dst.f32(), static_cast<const __nv_bfloat16*>(src.data),
                                                             d, d + n_rows, d + n_rows + n_seg + 1, C);
  else
    segmented_scatter_add_kernel<<<grid, 128, 0, c.stream>>>(dst.f32(), src.f32(), d, d + n_rows,
                                                             d + n_rows + n_seg + 1, C);
  ELMO_RETURN_IF_ERROR(launch_status(op));
  // The pinned and device scratch are reused by the next call: wait until this one is done.
  e = cudaStreamSynchronize(c.stream);
  if (e != cudaSuccess) return Status(Code::kCuda, strformat("%s: %s", op, cudaGetErrorString(e)));
  return Status::ok();
}

Status gather_rows(const Ctx& c, Tensor out, Tensor inp, Tensor idx) {
  ELMO_CHECK(!inp.empty() && inp.ndim == 2, Code::kShape, "gather_rows: inp: expected shape [T, C] but received %s",
             inp.describe().c_str());
  ELMO_CHECK(inp.dtype == DType::kF32 || inp.dtype == DType::kBF16, Code::kDType,
             "gather_rows: inp must be f32 or bf16, received %s", dtype_name(inp.dtype));
  ELMO_RETURN_IF_ERROR(check_tensor(idx, "gather_rows: idx", DType::kI32, {-1}));
  const int64_t N = idx.shape[0], Tn = inp.shape[0], C = inp.shape[1];
  ELMO_RETURN_IF_ERROR(check_tensor(out, "gather_rows: out", inp.dtype, {N, C}));
  if (N == 0 || C == 0) return Status::ok();
  ELMO_RETURN_IF_ERROR(flag_reset(c, "gather_rows"));
  if (inp.dtype == DType::kBF16)
    gather_rows_kernel<<<static_cast<unsigned>(N), 128, 0, c.stream>>>(
        static_cast<__nv_bfloat16*>(out.data), static_cast<const __nv_bfloat16*>(inp.data), idx.i32(), N, Tn, C,
        c.flag);
  else
    gather_rows_kernel<<<static_cast<unsigned>(N), 128, 0, c.stream>>>(out.f32(), inp.f32(), idx.i32(), N, Tn, C,
                                                                       c.flag);
  ELMO_RETURN_IF_ERROR(launch_status("gather_rows"));
  return flag_check(c, "gather_rows", strformat("an index is outside [0, %lld)", (long long)Tn).c_str());
}

Status scatter_add_rows(const Ctx& c, Tensor dinp, Tensor dout, Tensor idx) {
  ELMO_CHECK(!dinp.empty() && dinp.ndim == 2, Code::kShape,
             "scatter_add_rows: dinp: expected shape [T, C] but received %s", dinp.describe().c_str());
  ELMO_CHECK(dinp.dtype == DType::kF32, Code::kDType, "scatter_add_rows: dinp must be f32, received %s",
             dtype_name(dinp.dtype));
  ELMO_RETURN_IF_ERROR(check_tensor(idx, "scatter_add_rows: idx", DType::kI32, {-1}));
  const int64_t N = idx.shape[0], Tn = dinp.shape[0], C = dinp.shape[1];
  ELMO_CHECK(!dout.empty() && (dout.dtype == DType::kF32 || dout.dtype == DType::kBF16), Code::kDType,
             "scatter_add_rows: dout must be f32 or bf16");
  ELMO_RETURN_IF_ERROR(check_tensor(dout, "scatter_add_rows: dout", dout.dtype, {N, C}));
  if (N == 0 || C == 0) return Status::ok();
  std::vector<int32_t> keys(static_cast<size_t>(N));
  void* host = nullptr;
  ELMO_RETURN_IF_ERROR(c.scratch->pinned(static_cast<size_t>(N) * 4, &host));
  cudaError_t e = cudaMemcpyAsync(host, idx.data, static_cast<size_t>(N) * 4, cudaMemcpyDeviceToHost, c.stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(c.stream);
  if (e != cudaSuccess) return Status(Code::kCuda, strformat("scatter_add_rows: %s", cudaGetErrorString(e)));
  std::memcpy(keys.data(), host, static_cast<size_t>(N) * 4);
  for (int64_t i = 0; i < N; ++i)
    ELMO_CHECK(keys[i] >= 0 && keys[i] < Tn, Code::kInput, "scatter_add_rows: idx[%lld] = %d is outside [0, %lld)",
               (long long)i, keys[i], (long long)Tn);
  std::vector<int32_t> rows(static_cast<size_t>(N)), seg_begin(static_cast<size_t>(N) + 1), seg_dst(static_cast<size_t>(N));
  int64_t n_seg = 0;
  group_by_key(keys.data(), N, Tn, rows.data(), seg_begin.data(), seg_dst.data(), &n_seg);
  return segmented_scatter_add(c, "scatter_add_rows", dinp, dout, rows.data(), seg_begin.data(), seg_dst.data(), N,
                               n_seg);
}

}  // namespace elmo::cuda
