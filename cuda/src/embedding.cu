// Embeddings: word + position + token type, summed per packed token.
//   forward:  out[t] = wte[ids[t]] + wpe[t - offsets[b]] + wtt[type_ids[t]]   (=)
//             out [T,H] f32 or bf16; ids, type_ids i32 [T] (type_ids optional -> type 0);
//             wte [V,H], wpe [P,H], wtt [TV,H] f32.
//   backward: dwte, dwpe, dwtt [.,H] f32 += scatter of dout [T,H] (f32 or bf16), deterministic:
//             rows are grouped by destination on the host and each destination sums its rows in
//             token order (segmented_scatter_add in gather.cu).
// An id outside its table or a sequence longer than P -> ERR_INPUT.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstring>
#include <vector>

#include "ops.h"

namespace elmo::cuda {
namespace {

// ---- kernels -------------------------------------------------------------------------------

// One block per token. The sequence is found by binary search over the offsets.
template <class T>
__global__ void embedding_forward_kernel(T* __restrict__ out, const int32_t* __restrict__ ids,
                                         const int32_t* __restrict__ type_ids, const int32_t* __restrict__ offsets,
                                         int B, const float* __restrict__ wte, const float* __restrict__ wpe,
                                         const float* __restrict__ wtt, int64_t V, int64_t P, int64_t TV, int64_t H,
                                         int* flag) {
  const int64_t t = blockIdx.x;
  int lo = 0, hi = B;  // find b with offsets[b] <= t < offsets[b+1]
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (offsets[mid] <= t) lo = mid;
    else hi = mid;
  }
  const int64_t pos = t - offsets[lo];
  const int32_t id = ids[t];
  const int32_t tt = type_ids ? type_ids[t] : 0;
  T* y = out + t * H;
  const bool bad = id < 0 || id >= V || pos < 0 || pos >= P || (wtt && (tt < 0 || tt >= TV));
  if (bad) {
    if (threadIdx.x == 0) atomicExch(flag, 1);
    for (int64_t h = threadIdx.x; h < H; h += blockDim.x) st(y, h, 0.0f);
    return;
  }
  const float* a = wte + static_cast<int64_t>(id) * H;
  const float* p = wpe + pos * H;
  const float* ty = wtt ? wtt + static_cast<int64_t>(tt) * H : nullptr;
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
    float v = a[h] + p[h];
    if (ty) v += ty[h];
    st(y, h, v);
  }
}

Status download_ids(const Ctx& c, const char* op, const Tensor& t, std::vector<int32_t>* out) {
  const size_t n = static_cast<size_t>(t.numel());
  out->resize(n);
  if (n == 0) return Status::ok();
  void* host = nullptr;
  ELMO_RETURN_IF_ERROR(c.scratch->pinned(n * 4, &host));
  cudaError_t e = cudaMemcpyAsync(host, t.data, n * 4, cudaMemcpyDeviceToHost, c.stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(c.stream);
  if (e != cudaSuccess) return Status(Code::kCuda, strformat("%s: %s", op, cudaGetErrorString(e)));
  std::memcpy(out->data(), host, n * 4);
  return Status::ok();
}

// dst [K,H] += rows of dout grouped by keys [T].
Status scatter_by_keys(const Ctx& c, const char* op, Tensor dst, Tensor dout, const std::vector<int32_t>& keys) {
  const int64_t n = static_cast<int64_t>(keys.size());
  if (n == 0) return Status::ok();
  std::vector<int32_t> rows(keys.size()), seg_begin(keys.size() + 1), seg_dst(keys.size());
  int64_t n_seg = 0;
  group_by_key(keys.data(), n, dst.shape[0], rows.data(), seg_begin.data(), seg_dst.data(), &n_seg);
  return segmented_scatter_add(c, op, dst, dout, rows.data(), seg_begin.data(), seg_dst.data(), n, n_seg);
}

}  // namespace

// ---- launchers -------------------------------------------------------------------------------

Status embedding_forward(const Ctx& c, Tensor out, Tensor ids, Tensor type_ids, const Offsets& o, Tensor wte,
                         Tensor wpe, Tensor wtt) {
  const char* op = "embedding_forward";
  ELMO_CHECK(!wte.empty() && wte.ndim == 2, Code::kShape, "%s: wte: expected shape [V, H] but received %s", op,
             wte.describe().c_str());
  const int64_t V = wte.shape[0], H = wte.shape[1], T = o.T;
  ELMO_RETURN_IF_ERROR(check_tensor(wte, "embedding_forward: wte", DType::kF32, {V, H}));
  ELMO_RETURN_IF_ERROR(check_tensor(wpe, "embedding_forward: wpe", DType::kF32, {-1, H}));
  ELMO_RETURN_IF_ERROR(check_optional(wtt, "embedding_forward: wtt", DType::kF32, {-1, H}));
  ELMO_CHECK(!out.empty() && (out.dtype == DType::kF32 || out.dtype == DType::kBF16), Code::kDType,
             "%s: out must be f32 or bf16", op);
  ELMO_RETURN_IF_ERROR(check_tensor(out, "embedding_forward: out", out.dtype, {T, H}));
  ELMO_RETURN_IF_ERROR(check_tensor(ids, "embedding_forward: ids", DType::kI32, {T}));
  ELMO_RETURN_IF_ERROR(check_optional(type_ids, "embedding_forward: type_ids", DType::kI32, {T}));
  ELMO_CHECK(type_ids.empty() || !wtt.empty(), Code::kInput, "%s: type_ids given without a wtt table", op);
  const int64_t P = wpe.shape[0];
  ELMO_CHECK(o.max_len <= P, Code::kInput, "%s: a sequence of %d tokens is longer than the %lld positions", op,
             o.max_len, (long long)P);
  if (T == 0 || H == 0) return Status::ok();
  const int64_t TV = wtt.empty() ? 0 : wtt.shape[0];
  ELMO_RETURN_IF_ERROR(flag_reset(c, op));
  const int32_t* tt = type_ids.empty() ? nullptr : type_ids.i32();
  const float* wtt_p = wtt.empty() ? nullptr : wtt.f32();
  const unsigned grid = static_cast<unsigned>(T);
  if (out.dtype == DType::kBF16)
    embedding_forward_kernel<<<grid, 128, 0, c.stream>>>(static_cast<__nv_bfloat16*>(out.data), ids.i32(), tt, o.dev,
                                                         o.B, wte.f32(), wpe.f32(), wtt_p, V, P, TV, H, c.flag);
  else
    embedding_forward_kernel<<<grid, 128, 0, c.stream>>>(out.f32(), ids.i32(), tt, o.dev, o.B, wte.f32(), wpe.f32(),
                                                         wtt_p, V, P, TV, H, c.flag);
  ELMO_RETURN_IF_ERROR(launch_status(op));
  return flag_check(c, op, "a token id or type id is outside its table");
}

Status embedding_backward(const Ctx& c, Tensor dwte, Tensor dwpe, Tensor dwtt, Tensor dout, Tensor ids,
                          Tensor type_ids, const Offsets& o) {
  const char* op = "embedding_backward";
  const int64_t T = o.T;
  ELMO_CHECK(!dout.empty() && (dout.dtype == DType::kF32 || dout.dtype == DType::kBF16), Code::kDType,
             "%s: dout must be f32 or bf16", op);
  ELMO_RETURN_IF_ERROR(check_tensor(dout, "embedding_backward: dout", dout.dtype, {T, -1}));
  const int64_t H = dout.shape[1];
  ELMO_RETURN_IF_ERROR(check_tensor(dwte, "embedding_backward: dwte", DType::kF32, {-1, H}));
  ELMO_RETURN_IF_ERROR(check_tensor(dwpe, "embedding_backward: dwpe", DType::kF32, {-1, H}));
  ELMO_RETURN_IF_ERROR(check_optional(dwtt, "embedding_backward: dwtt", DType::kF32, {-1, H}));
  ELMO_RETURN_IF_ERROR(check_tensor(ids, "embedding_backward: ids", DType::kI32, {T}));
  ELMO_RETURN_IF_ERROR(check_optional(type_ids, "embedding_backward: type_ids", DType::kI32, {T}));
  const int64_t V = dwte.shape[0], P = dwpe.shape[0];
  ELMO_CHECK(o.max_len <= P, Code::kInput, "%s: a sequence of %d tokens is longer than the %lld positions", op,
             o.max_len, (long long)P);
  if (T == 0 || H == 0) return Status::ok();

  std::vector<int32_t> keys;
  ELMO_RETURN_IF_ERROR(download_ids(c, op, ids, &keys));
  for (int64_t t = 0; t < T; ++t)
    ELMO_CHECK(keys[t] >= 0 && keys[t] < V, Code::kInput, "%s: ids[%lld] = %d is outside [0, %lld)", op, (long long)t,
               keys[t], (long long)V);
  std::vector<int32_t> types;
  if (!dwtt.empty()) {
    if (type_ids.empty()) {
      types.assign(static_cast<size_t>(T), 0);
    } else {
      ELMO_RETURN_IF_ERROR(download_ids(c, op, type_ids, &types));
    }
    for (int64_t t = 0; t < T; ++t)
      ELMO_CHECK(types[t] >= 0 && types[t] < dwtt.shape[0], Code::kInput, "%s: type_ids[%lld] = %d is outside [0, %lld)",
                 op, (long long)t, types[t], (long long)dwtt.shape[0]);
  }
  std::vector<int32_t> pos(static_cast<size_t>(T));
  for (int b = 0; b < o.B; ++b)
    for (int32_t t = o.host[b]; t < o.host[b + 1]; ++t) pos[t] = t - o.host[b];

  ELMO_RETURN_IF_ERROR(scatter_by_keys(c, op, dwte, dout, keys));
  ELMO_RETURN_IF_ERROR(scatter_by_keys(c, op, dwpe, dout, pos));
  if (!dwtt.empty()) ELMO_RETURN_IF_ERROR(scatter_by_keys(c, op, dwtt, dout, types));
  return Status::ok();
}

}  // namespace elmo::cuda
