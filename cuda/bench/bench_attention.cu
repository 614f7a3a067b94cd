// Flash attention forward throughput (cuda/src/attention.cu), bf16 tensor-core path.
// Shapes: NH=12, HD=64 (BERT-base), B=32 at S in {128, 512} and B=256 at S=128; every sequence
// full length (a packed batch of B*S tokens with uniform offsets), dropout off. Each shape runs
// the tensor-core kernel with 16 and with 32 query rows per warp (Ctx::attention_rows).
// Protocol: 5 warm-up runs, then 20 runs each timed with CUDA events; the median is reported.
// FLOPs counted as 4*B*NH*S²*HD (QKᵀ and PV), as FlashAttention reports them.
// One JSON row per shape:
//   {"bench":"cuda_attention","B":..,"S":..,"NH":..,"HD":..,"dtype":"bf16","rows":16|32,"ms":..,"tflops":..}
// Compare with scripts/bench_torch_attention_gpu.py (torch SDPA, flash backend). Exit 77 without
// a device.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

#include "elmo/cuda_backend.h"
#include "ops.h"

namespace {

// Scratch is unused by the bf16 attention path; present because Ctx carries one.
class NoScratch final : public elmo::cuda::Scratch {
 public:
  elmo::Status device(size_t, void**) override { return elmo::Status(elmo::Code::kOom, "bench: no scratch"); }
  elmo::Status pinned(size_t, void**) override { return elmo::Status(elmo::Code::kOom, "bench: no scratch"); }
};

__global__ void init_kernel(__nv_bfloat16* p, int64_t n, uint32_t seed) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    h ^= h >> 15;
    p[i] = __float2bfloat16((h & 0xffff) / 32768.0f - 1.0f);
  }
}

#define CK(x)                                                                               \
  do {                                                                                      \
    cudaError_t e_ = (x);                                                                   \
    if (e_ != cudaSuccess) {                                                                \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      return 1;                                                                             \
    }                                                                                       \
  } while (0)

int run(int B, int S, int NH, int HD, int rows, const cudaDeviceProp& prop) {
  const int64_t T = static_cast<int64_t>(B) * S, C = static_cast<int64_t>(NH) * HD;
  __nv_bfloat16 *qkv = nullptr, *out = nullptr;
  float* lse = nullptr;
  int32_t* off_dev = nullptr;
  CK(cudaMalloc(&qkv, T * 3 * C * 2));
  CK(cudaMalloc(&out, T * C * 2));
  CK(cudaMalloc(&lse, NH * T * 4));
  std::vector<int32_t> off(B + 1);
  for (int b = 0; b <= B; ++b) off[b] = b * S;
  CK(cudaMalloc(&off_dev, off.size() * 4));
  CK(cudaMemcpy(off_dev, off.data(), off.size() * 4, cudaMemcpyHostToDevice));
  init_kernel<<<1024, 256>>>(qkv, T * 3 * C, 1234u);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());

  cudaStream_t stream;
  CK(cudaStreamCreate(&stream));
  NoScratch scratch;
  elmo::cuda::Ctx ctx;
  ctx.stream = stream;
  ctx.scratch = &scratch;
  ctx.sm_count = prop.multiProcessorCount;
  ctx.max_smem_optin = prop.sharedMemPerBlockOptin;
  ctx.attention_rows = rows;
  elmo::Offsets o;
  elmo::Status st = elmo::make_offsets(&o, off.data(), off_dev, B, T);
  elmo::Tensor tq(qkv, elmo::DType::kBF16, {T, 3 * C}, elmo::Device::kCuda);
  elmo::Tensor to(out, elmo::DType::kBF16, {T, C}, elmo::Device::kCuda);
  elmo::Tensor tl(lse, elmo::DType::kF32, {NH, T}, elmo::Device::kCuda);
  for (int i = 0; i < 5 && st.is_ok(); ++i) st = elmo::cuda::attention_forward(ctx, to, tl, tq, o, NH, HD, 0.f, 1, 1);
  if (!st.is_ok()) {
    std::fprintf(stderr, "attention_forward: %s\n", st.message().c_str());
    return 1;
  }
  CK(cudaStreamSynchronize(stream));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int i = 0; i < 20; ++i) {
    CK(cudaEventRecord(e0, stream));
    st = elmo::cuda::attention_forward(ctx, to, tl, tq, o, NH, HD, 0.f, 1, 1);
    CK(cudaEventRecord(e1, stream));
    CK(cudaEventSynchronize(e1));
    float t = 0;
    CK(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  const double med = 0.5 * (ms[9] + ms[10]);
  const double flops = 4.0 * B * NH * static_cast<double>(S) * S * HD;
  std::printf("{\"bench\":\"cuda_attention\",\"B\":%d,\"S\":%d,\"NH\":%d,\"HD\":%d,\"dtype\":\"bf16\",\"rows\":%d,"
              "\"ms\":%.4f,\"tflops\":%.2f}\n",
              B, S, NH, HD, rows, med, flops / (med * 1e-3) / 1e12);
  std::fflush(stdout);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaStreamDestroy(stream);
  cudaFree(qkv);
  cudaFree(out);
  cudaFree(lse);
  cudaFree(off_dev);
  return 0;
}

}  // namespace

int main() {
  std::vector<elmo::CudaDeviceInfo> devs;
  std::string reason;
  elmo::Status s = elmo::cuda_devices(&devs, &reason);
  if (!s.is_ok() || devs.empty()) {
    std::printf("SKIP: no CUDA device (%s)\n", s.is_ok() ? reason.c_str() : s.message().c_str());
    return 77;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return 1;
  std::fprintf(stderr, "device 0: %s\n", prop.name);
  const int shapes[][2] = {{32, 128}, {32, 512}, {256, 128}};
  int rc = 0;
  for (const auto& sh : shapes)
    for (int rows : {16, 32}) rc |= run(sh[0], sh[1], 12, 64, rows, prop);
  return rc;
}
