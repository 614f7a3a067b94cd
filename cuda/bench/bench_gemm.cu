// Throughput of elmo::cuda::gemm on the BERT-base GEMM shapes, bf16 operands, bf16 out, no
// epilogue (the same work as torch.matmul in scripts/bench_torch_gemm_gpu.py).
//
//   M = T tokens, (N, K) in {(3072,768) FFN up, (768,3072) FFN down, (768,768) attn out,
//   (2304,768) fused QKV}, T in {128, 4096, 16384}, NT (the linear layer); plus NN and TN at
//   T = 4096 (the backward's data and weight gradients).
//
// NT rows at T >= 4096 run once per kernel on compute capability 9.0 devices, side by side: the
// mma.sync kernel ("kernel":"mma") and each forced wgmma kernel of gemm.h (kWgmmaKernels:
// "wgmma128", "wgmma192", "wgmma256", the persistent "wgmma192p", "wgmma256p", and the
// two-blocks-per-SM "wgmma128x2", "wgmma128x2p"); elsewhere only "mma".
//
// ELMO_BENCH_WGMMA=none|<kernel> narrows the rows (see main).
//
// Each shape: 5 warm-up runs, then 20 timed runs (cudaEvent pair around each), median reported.
// Inputs rotate over enough copies that the working set exceeds the L2 cache, so the timed runs
// read operands from HBM as they would inside a model step.
// One JSON row per shape on stdout:
//   {"bench":"cuda_gemm","m":..,"n":..,"k":..,"op":"NT","dtype":"bf16","kernel":"mma","tflops":..,"ms":..}
// Exit 77 with a SKIP line when there is no device.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <vector>

#include "gemm.h"

using elmo::Device;
using elmo::DType;
using elmo::Epilogue;
using elmo::GemmOp;
using elmo::Tensor;

namespace {

#define BENCH_CUDA(expr)                                                                         \
  do {                                                                                           \
    cudaError_t _e = (expr);                                                                     \
    if (_e != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "%s:%d: %s -> %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(_e)); \
      std::exit(1);                                                                              \
    }                                                                                            \
  } while (0)

__global__ void fill_kernel(uint16_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    // bf16 in [-1, 1): sign, exponent 126 or below, random mantissa.
    const uint16_t mant = h & 0x7f, sign = (h >> 7) & 1, exp = 120 + ((h >> 8) % 7);
    p[i] = static_cast<uint16_t>(sign << 15 | exp << 7 | mant);
  }
}


void bench(GemmOp op, int64_t M, int64_t N, int64_t K, int64_t l2_bytes, elmo::cuda::GemmKernel kernel) {
  const size_t a_elems = static_cast<size_t>(M * K), b_elems = static_cast<size_t>(N * K);
  const size_t set_bytes = (a_elems + b_elems + static_cast<size_t>(M * N)) * 2;
  const int copies = static_cast<int>(std::clamp<int64_t>(3 * l2_bytes / static_cast<int64_t>(set_bytes) + 1, 2, 64));
  std::vector<uint16_t*> as(copies), bs(copies), outs(copies);
  for (int c = 0; c < copies; ++c) {
    BENCH_CUDA(cudaMalloc(&as[c], a_elems * 2));
    BENCH_CUDA(cudaMalloc(&bs[c], b_elems * 2));
    BENCH_CUDA(cudaMalloc(&outs[c], static_cast<size_t>(M * N) * 2));
    fill_kernel<<<1024, 256>>>(as[c], a_elems, 17u + c);
    fill_kernel<<<1024, 256>>>(bs[c], b_elems, 91u + c);
    BENCH_CUDA(cudaGetLastError());
  }
  auto run = [&](int c) {
    const Tensor a = op == GemmOp::kTN ? Tensor(as[c], DType::kBF16, {K, M}, Device::kCuda)
                                       : Tensor(as[c], DType::kBF16, {M, K}, Device::kCuda);
    const Tensor b = op == GemmOp::kNT ? Tensor(bs[c], DType::kBF16, {N, K}, Device::kCuda)
                                       : Tensor(bs[c], DType::kBF16, {K, N}, Device::kCuda);
    const Tensor out(outs[c], DType::kBF16, {M, N}, Device::kCuda);
    elmo::cuda::GemmConfig cfg;
    cfg.kernel = kernel;
    const elmo::Status s =
        elmo::cuda::gemm(nullptr, cfg, out, Tensor(), a, b, Tensor(), Tensor(), op, Epilogue::kNone, false);
    if (!s.is_ok()) {
      std::fprintf(stderr, "gemm failed: %s\n", s.message().c_str());
      std::exit(1);
    }
  };
  for (int i = 0; i < 5; ++i) run(i % copies);
  BENCH_CUDA(cudaDeviceSynchronize());
  cudaEvent_t start, stop;
  BENCH_CUDA(cudaEventCreate(&start));
  BENCH_CUDA(cudaEventCreate(&stop));
  std::vector<float> ms;
  for (int i = 0; i < 20; ++i) {
    BENCH_CUDA(cudaEventRecord(start));
    run((i + 5) % copies);
    BENCH_CUDA(cudaEventRecord(stop));
    BENCH_CUDA(cudaEventSynchronize(stop));
    float t = 0;
    BENCH_CUDA(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  const double med = 0.5 * (ms[9] + ms[10]);
  const double tflops = 2.0 * M * N * K / (med * 1e-3) / 1e12;
  std::printf("{\"bench\":\"cuda_gemm\",\"m\":%lld,\"n\":%lld,\"k\":%lld,\"op\":\"%s\",\"dtype\":\"bf16\","
              "\"kernel\":\"%s\",\"tflops\":%.2f,\"ms\":%.4f}\n",
              static_cast<long long>(M), static_cast<long long>(N), static_cast<long long>(K), elmo::gemm_op_name(op),
              elmo::cuda::gemm_kernel_name(kernel), tflops, med);
  std::fflush(stdout);
  BENCH_CUDA(cudaEventDestroy(start));
  BENCH_CUDA(cudaEventDestroy(stop));
  for (int c = 0; c < copies; ++c) {
    cudaFree(as[c]);
    cudaFree(bs[c]);
    cudaFree(outs[c]);
  }
}

}  // namespace

int main() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    std::printf("SKIP: no CUDA device (cudaGetDeviceCount -> %s)\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
    return 77;
  }
  cudaDeviceProp prop{};
  BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::fprintf(stderr, "device 0: %s (sm_%d%d, %d SMs, L2 %d MiB)\n", prop.name, prop.major, prop.minor,
               prop.multiProcessorCount, prop.l2CacheSize >> 20);
  const int64_t shapes[][2] = {{3072, 768}, {768, 3072}, {768, 768}, {2304, 768}};
  using elmo::cuda::GemmKernel;
  const bool hopper = prop.major == 9 && prop.minor == 0;
  // ELMO_BENCH_WGMMA: unset, every row; "none", no wgmma row; a kernel's name, only that
  // kernel's rows (scripts/gpu-check.sh times each wgmma kernel in a process of its own).
  const char* only = std::getenv("ELMO_BENCH_WGMMA");
  std::vector<GemmKernel> wgmma;
  if (only == nullptr) {
    wgmma.assign(std::begin(elmo::cuda::kWgmmaKernels), std::end(elmo::cuda::kWgmmaKernels));
  } else if (std::strcmp(only, "none") != 0) {
    GemmKernel k = GemmKernel::kAuto;
    if (!elmo::cuda::gemm_kernel_by_name(only, &k) || elmo::cuda::wgmma_variant(k).columns == 0) {
      std::fprintf(stderr, "ELMO_BENCH_WGMMA=%s names no wgmma kernel\n", only);
      return 2;
    }
    wgmma.push_back(k);
  }
  if (!hopper) wgmma.clear();
  const bool mma = only == nullptr || std::strcmp(only, "none") == 0;
  for (int64_t T : {128, 4096, 16384})
    for (const auto& nk : shapes) {
      if (mma) bench(GemmOp::kNT, T, nk[0], nk[1], prop.l2CacheSize, GemmKernel::kMma);
      if (T >= 4096)
        for (GemmKernel k : wgmma) bench(GemmOp::kNT, T, nk[0], nk[1], prop.l2CacheSize, k);
    }
  if (mma)
    for (GemmOp op : {GemmOp::kNN, GemmOp::kTN})
      for (const auto& nk : shapes) bench(op, 4096, nk[0], nk[1], prop.l2CacheSize, GemmKernel::kMma);
  return 0;
}
