// CUDA GEMM with fused epilogues: out[M,N] = op(a) · op(b), then bias / bias+GELU / residual /
// accumulate (semantics: elmo/backend.h, GemmOp and Epilogue; entry point: gemm.h).
//
//   kNN: a [M,K], b [K,N]     kNT: a [M,K], b [N,K]     kTN: a [K,M], b [K,N]   (row-major)
//
// Paths:
//   * 16-bit operands (bf16 or f16, both the same), every row 16-byte aligned (the contiguous
//     dimension of a and of b a multiple of 8, base pointers 16-byte aligned):
//     gemm_tc_kernel — tensor cores, mma.sync.m16n8k16 with fp32 accumulate; operands move
//     global -> shared through a 4-stage cp.async pipeline (zero-filled outside the matrix) and
//     shared -> registers with ldmatrix (.trans for the operand whose contiguous dim is not K).
//     Block tile BM x BN x 32 with 8 warps in a 2 x 4 grid; tiles 128x128, 64x128, 64x64 picked
//     by the grid size. Shared rows are padded by 16 bytes so ldmatrix and cp.async hit distinct
//     banks. See docs/kernels-cuda-gemm.md.
//     On Hopper, NT products may instead take the wgmma kernel of gemm_sm90a.cu (TMA, 128 x 128,
//     128 x 192 or 128 x 256 tiles, warp-specialized); GemmConfig::kernel (gemm.h) says when.
//   * f32 operands (exact, the parity path), and 16-bit operands whose rows are not 16-byte
//     aligned: gemm_simt_kernel — 64x64x16 tiles, 4x4 outputs per thread, fp32 FFMA in k order.
//   * mixed (f32 with bf16/f16): the f32 operand is rounded to the other's type into the
//     workspace by convert_kernel, then the 16-bit path.
// Every path ends in the same epilogue (gemm_epilogue.cuh: epilogue_pair / epilogue_one):
// bias[n], GELU (erf) with pre_gelu saved, residual[m,n] (may alias out), accumulate
// (out += ...), then one store in out's dtype (f32 or bf16). Each output element is owned by
// exactly one thread.
#include "gemm.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "common.cuh"
#include "gemm_epilogue.cuh"
#include "gemm_sm90a.h"

namespace elmo::cuda {
namespace {

using gemm_detail::EpilogueArgs;
using gemm_detail::epilogue_one;
using gemm_detail::epilogue_pair;

// ================================================================================================
// kernels
// ================================================================================================

// ---- PTX wrappers -------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16-byte global -> shared copy; reads nothing and writes zeros when !valid.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
// d (16x8 f32) += a (16x16, row) · b (16x8, col).
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// ---- tensor-core kernel -------------------------------------------------------------------------

constexpr int kTcThreads = 256;  // 8 warps: 2 (along M) x 4 (along N)
constexpr int kTcBK = 32;        // two k16 mma steps per stage
constexpr int kTcStages = 4;
constexpr int kPad = 8;          // 16 bytes of padding per shared row (bank-conflict-free ldmatrix)

// Shared tile of one operand for one stage, in elements. K-major: [ROWS][BK+pad] (rows of M or N,
// K contiguous, as a [M,K] or b [N,K] is stored). MN-major: [BK][ROWS+pad] (as a [K,M], b [K,N]).
template <bool KMAJOR, int ROWS>
constexpr int tile_elems() {
  return KMAJOR ? ROWS * (kTcBK + kPad) : kTcBK * (ROWS + kPad);
}
template <bool A_KMAJOR, bool B_KMAJOR, int BM, int BN>
constexpr size_t tc_smem_bytes() {
  return static_cast<size_t>(kTcStages) * (tile_elems<A_KMAJOR, BM>() + tile_elems<B_KMAJOR, BN>()) * 2;
}

// Issues the cp.async copies of one operand tile: rows [row0, row0+ROWS) of the M (or N) dim and
// k in [k0, k0+BK). g is the operand as stored, ld its row stride (a multiple of 8 elements).
// Chunks of 8 elements are all-in or all-out because K (K-major) or R (MN-major) is a multiple
// of 8 on this path; out-of-range chunks are zero-filled.
template <typename T, bool KMAJOR, int ROWS>
__device__ __forceinline__ void load_tile(uint32_t s, const T* __restrict__ g, int ld, int row0, int R, int k0,
                                          int K) {
  if (KMAJOR) {
    constexpr int kChunksPerRow = kTcBK / 8;
    constexpr int kChunks = ROWS * kChunksPerRow;
    static_assert(kChunks % kTcThreads == 0, "tile must split evenly over the threads");
#pragma unroll
    for (int t = 0; t < kChunks / kTcThreads; ++t) {
      const int c = threadIdx.x + t * kTcThreads;
      const int r = c / kChunksPerRow, kc = (c % kChunksPerRow) * 8;
      const int gr = row0 + r, gk = k0 + kc;
      const bool ok = gr < R && gk < K;
      const T* src = ok ? g + static_cast<size_t>(gr) * ld + gk : g;
      cp_async_16(s + (r * (kTcBK + kPad) + kc) * 2, src, ok);
    }
  } else {
    constexpr int kChunksPerRow = ROWS / 8;
    constexpr int kChunks = kTcBK * kChunksPerRow;
    static_assert(kChunks % kTcThreads == 0, "tile must split evenly over the threads");
#pragma unroll
    for (int t = 0; t < kChunks / kTcThreads; ++t) {
      const int c = threadIdx.x + t * kTcThreads;
      const int kr = c / kChunksPerRow, rc = (c % kChunksPerRow) * 8;
      const int gk = k0 + kr, gr = row0 + rc;
      const bool ok = gk < K && gr < R;
      const T* src = ok ? g + static_cast<size_t>(gk) * ld + gr : g;
      cp_async_16(s + (kr * (ROWS + kPad) + rc) * 2, src, ok);
    }
  }
}

// out[M,N] = op(a) op(b) + epilogue. A_KMAJOR: a stored [M,K] (else [K,M]); B_KMAJOR: b stored
// [N,K] (else [K,N]). lda/ldb: row strides as stored. Grid: (ceil(N/BN), ceil(M/BM)).
template <typename T, bool A_KMAJOR, bool B_KMAJOR, int BM, int BN>
__global__ void __launch_bounds__(kTcThreads, 2)
    gemm_tc_kernel(const T* __restrict__ a, const T* __restrict__ b, EpilogueArgs e, int K, int lda, int ldb) {
  constexpr int WTM = BM / 2, WTN = BN / 4;  // warp tile
  constexpr int MI = WTM / 16, NI = WTN / 8;  // mma tiles per warp
  static_assert(MI >= 1 && NI >= 2 && NI % 2 == 0, "bad tile");
  constexpr int kATile = tile_elems<A_KMAJOR, BM>(), kBTile = tile_elems<B_KMAJOR, BN>();
  constexpr int kStageElems = kATile + kBTile;

  extern __shared__ uint4 smem_raw[];  // 16-byte aligned
  const uint32_t smem = smem_addr(smem_raw);

  const int M = e.M, N = e.N;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wm = warp >> 2, wn = warp & 3;

  float acc[MI][NI][4];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;

  auto load_stage = [&](int stage, int k0) {
    const uint32_t sa = smem + stage * kStageElems * 2;
    load_tile<T, A_KMAJOR, BM>(sa, a, lda, m0, M, k0, K);
    load_tile<T, B_KMAJOR, BN>(sa + kATile * 2, b, ldb, n0, N, k0, K);
  };

  // Per-lane ldmatrix offsets (elements) inside a stage, for kk = 0; see the fragment layouts
  // of mma.m16n8k16: lanes 8j..8j+7 address the rows of 8x8 matrix j.
  //   A (16x16): matrix j covers m + (j&1)*8, k + (j>>1)*8.
  //   B (16 n x 16 k for two n8 tiles): matrix j covers n + (j>>1)*8, k + (j&1)*8.
  const int lr = lane & 7, lj = lane >> 3;
  int a_off, b_off;
  if (A_KMAJOR)
    a_off = (wm * WTM + (lj & 1) * 8 + lr) * (kTcBK + kPad) + (lj >> 1) * 8;
  else
    a_off = ((lj >> 1) * 8 + lr) * (BM + kPad) + wm * WTM + (lj & 1) * 8;
  if (B_KMAJOR)
    b_off = (wn * WTN + (lj >> 1) * 8 + lr) * (kTcBK + kPad) + (lj & 1) * 8;
  else
    b_off = ((lj & 1) * 8 + lr) * (BN + kPad) + wn * WTN + (lj >> 1) * 8;

  const int nk = (K + kTcBK - 1) / kTcBK;
#pragma unroll
  for (int s = 0; s < kTcStages - 1; ++s) {
    if (s < nk) load_stage(s, s * kTcBK);
    cp_async_commit();
  }

  for (int kt = 0; kt < nk; ++kt) {
    cp_async_wait<kTcStages - 2>();  // tile kt has landed (this thread's copies)
    __syncthreads();                 // ... everyone's; and stage (kt-1) % S is free again
    const int next = kt + kTcStages - 1;
    if (next < nk) load_stage(next % kTcStages, next * kTcBK);
    cp_async_commit();

    const uint32_t sa = smem + (kt % kTcStages) * kStageElems * 2;
    const uint32_t sb = sa + kATile * 2;
#pragma unroll
    for (int kk = 0; kk < kTcBK; kk += 16) {
      uint32_t af[MI][4], bf[NI][2];
#pragma unroll
      for (int i = 0; i < MI; ++i) {
        if (A_KMAJOR)
          ldmatrix_x4(af[i], sa + (a_off + i * 16 * (kTcBK + kPad) + kk) * 2);
        else
          ldmatrix_x4_trans(af[i], sa + (a_off + kk * (BM + kPad) + i * 16) * 2);
      }
#pragma unroll
      for (int jp = 0; jp < NI / 2; ++jp) {
        uint32_t r[4];
        if (B_KMAJOR)
          ldmatrix_x4(r, sb + (b_off + jp * 16 * (kTcBK + kPad) + kk) * 2);
        else
          ldmatrix_x4_trans(r, sb + (b_off + kk * (BN + kPad) + jp * 16) * 2);
        bf[2 * jp][0] = r[0];
        bf[2 * jp][1] = r[1];
        bf[2 * jp + 1][0] = r[2];
        bf[2 * jp + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j) mma_16816<T>(acc[i][j], af[i], bf[j]);
    }
  }
  cp_async_wait<0>();

  // Accumulator layout (m16n8): c0,c1 at (row lane/4, cols 2*(lane%4) + {0,1}); c2,c3 at row + 8.
#pragma unroll
  for (int i = 0; i < MI; ++i) {
    const int row = m0 + wm * WTM + i * 16 + (lane >> 2);
#pragma unroll
    for (int j = 0; j < NI; ++j) {
      const int col = n0 + wn * WTN + j * 8 + (lane & 3) * 2;
      epilogue_pair(e, row, col, acc[i][j][0], acc[i][j][1]);
      epilogue_pair(e, row + 8, col, acc[i][j][2], acc[i][j][3]);
    }
  }
}

// ---- SIMT kernel (exact fp32; also the unaligned 16-bit fallback) ------------------------------

constexpr int kSimtBM = 64, kSimtBN = 64, kSimtBK = 16, kSimtThreads = 256;

// Logical element A(m,k) / B(k,n) of the stored operands, 0 outside.
template <typename T, GemmOp OP>
__device__ __forceinline__ float load_a(const T* a, int M, int K, int m, int k) {
  if (m >= M || k >= K) return 0.0f;
  return to_float(OP == GemmOp::kTN ? a[static_cast<size_t>(k) * M + m] : a[static_cast<size_t>(m) * K + k]);
}
template <typename T, GemmOp OP>
__device__ __forceinline__ float load_b(const T* b, int N, int K, int k, int n) {
  if (n >= N || k >= K) return 0.0f;
  return to_float(OP == GemmOp::kNT ? b[static_cast<size_t>(n) * K + k] : b[static_cast<size_t>(k) * N + n]);
}

// Thread (tx, ty) of a 16x16 block computes rows ty + 16i and cols tx + 16j (i, j < 4); every
// output is one fp32 FFMA chain in k order. Grid: (ceil(N/64), ceil(M/64)).
template <typename T, GemmOp OP>
__global__ void __launch_bounds__(kSimtThreads)
    gemm_simt_kernel(const T* __restrict__ a, const T* __restrict__ b, EpilogueArgs e, int K) {
  __shared__ float As[kSimtBK][kSimtBM + 4];  // [k][m]
  __shared__ float Bs[kSimtBK][kSimtBN + 4];  // [k][n]
  const int M = e.M, N = e.N;
  const int m0 = blockIdx.y * kSimtBM, n0 = blockIdx.x * kSimtBN;
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;

  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

  for (int k0 = 0; k0 < K; k0 += kSimtBK) {
    // 64x16 elements per operand, 4 per thread; the index order follows the stored contiguous
    // dimension so that global reads coalesce.
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const int idx = tid + t * kSimtThreads;
      if (OP == GemmOp::kTN) {
        const int k = idx / kSimtBM, m = idx % kSimtBM;
        As[k][m] = load_a<T, OP>(a, M, K, m0 + m, k0 + k);
      } else {
        const int m = idx / kSimtBK, k = idx % kSimtBK;
        As[k][m] = load_a<T, OP>(a, M, K, m0 + m, k0 + k);
      }
      if (OP == GemmOp::kNT) {
        const int n = idx / kSimtBK, k = idx % kSimtBK;
        Bs[k][n] = load_b<T, OP>(b, N, K, k0 + k, n0 + n);
      } else {
        const int k = idx / kSimtBN, n = idx % kSimtBN;
        Bs[k][n] = load_b<T, OP>(b, N, K, k0 + k, n0 + n);
      }
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kSimtBK; ++k) {
      float ar[4], br[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) ar[i] = As[k][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) br[j] = Bs[k][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(ar[i], br[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) epilogue_one(e, m0 + ty + 16 * i, n0 + tx + 16 * j, acc[i][j]);
}

// ---- f32 -> bf16/f16 conversion (mixed-dtype operands) ------------------------------------------

template <typename T>
__global__ void convert_kernel(T* __restrict__ out, const float* __restrict__ in, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = from_float<T>(in[i]);
}

// ================================================================================================
// launchers
// ================================================================================================

int sm_count() {
  static std::atomic<int> cache[64];
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return 108;
  int v = cache[dev].load(std::memory_order_relaxed);
  if (v == 0) {
    if (cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || v <= 0) v = 108;
    cache[dev].store(v, std::memory_order_relaxed);
  }
  return v;
}

template <typename T, bool A_KMAJOR, bool B_KMAJOR, int BM, int BN>
Status launch_tc(cudaStream_t stream, const T* a, const T* b, const EpilogueArgs& e, int K, int lda, int ldb) {
  auto kernel = gemm_tc_kernel<T, A_KMAJOR, B_KMAJOR, BM, BN>;
  constexpr size_t smem = tc_smem_bytes<A_KMAJOR, B_KMAJOR, BM, BN>();
  static std::atomic<uint64_t> configured{0};
  ELMO_RETURN_IF_ERROR(allow_dynamic_smem(kernel, smem, &configured, "gemm: raise the shared memory limit"));
  const dim3 grid(ceil_div(e.N, BN), ceil_div(e.M, BM));
  kernel<<<grid, kTcThreads, smem, stream>>>(a, b, e, K, lda, ldb);
  ELMO_CUDA_CHECK_LAUNCH("gemm: tensor-core kernel launch");
  return Status::ok();
}

// Largest tile that still gives every SM a block; small problems trade reuse for parallelism.
template <typename T, bool A_KMAJOR, bool B_KMAJOR>
Status dispatch_tc(cudaStream_t stream, const T* a, const T* b, const EpilogueArgs& e, int K, int lda, int ldb) {
  const int64_t sms = sm_count();
  const int64_t tiles_128 = int64_t{ceil_div(e.M, 128)} * ceil_div(e.N, 128);
  const int64_t tiles_64x128 = int64_t{ceil_div(e.M, 64)} * ceil_div(e.N, 128);
  if (tiles_128 >= sms) return launch_tc<T, A_KMAJOR, B_KMAJOR, 128, 128>(stream, a, b, e, K, lda, ldb);
  if (tiles_64x128 >= sms) return launch_tc<T, A_KMAJOR, B_KMAJOR, 64, 128>(stream, a, b, e, K, lda, ldb);
  return launch_tc<T, A_KMAJOR, B_KMAJOR, 64, 64>(stream, a, b, e, K, lda, ldb);
}

template <typename T>
Status launch_simt(cudaStream_t stream, GemmOp op, const T* a, const T* b, const EpilogueArgs& e, int K) {
  const dim3 grid(ceil_div(e.N, kSimtBN), ceil_div(e.M, kSimtBM));
  switch (op) {
    case GemmOp::kNN: gemm_simt_kernel<T, GemmOp::kNN><<<grid, kSimtThreads, 0, stream>>>(a, b, e, K); break;
    case GemmOp::kNT: gemm_simt_kernel<T, GemmOp::kNT><<<grid, kSimtThreads, 0, stream>>>(a, b, e, K); break;
    case GemmOp::kTN: gemm_simt_kernel<T, GemmOp::kTN><<<grid, kSimtThreads, 0, stream>>>(a, b, e, K); break;
  }
  ELMO_CUDA_CHECK_LAUNCH("gemm: simt kernel launch");
  return Status::ok();
}

// What ELMO_CUDA_WGMMA in the environment asks of kAuto (read once): mode 0 = nothing ("0" or
// anything else unknown; unset: kWgmmaDefault), 1 = "1" or the name of a forced wgmma kernel
// such as "wgmma128x2p" (the size rule of wgmma_choice; a name also fixes the kernel),
// 2 = "force" (every NT product on tensor cores).
struct WgmmaEnv {
  int mode = 0;
  GemmKernel kernel = GemmKernel::kAuto;
};
// What kAuto does when ELMO_CUDA_WGMMA is unset: mma.sync, until the wgmma kernels have passed
// scripts/gpu-check.sh on a Hopper GPU; then {1, <the fastest variant its summary names>}.
constexpr WgmmaEnv kWgmmaDefault{};
WgmmaEnv wgmma_env() {
  static const WgmmaEnv env = [] {
    const char* v = std::getenv("ELMO_CUDA_WGMMA");
    if (v == nullptr) return kWgmmaDefault;
    if (std::strcmp(v, "1") == 0) return WgmmaEnv{1};
    if (std::strcmp(v, "force") == 0) return WgmmaEnv{2};
    GemmKernel k = GemmKernel::kAuto;
    if (gemm_kernel_by_name(v, &k) && wgmma_variant(k).columns > 0) return WgmmaEnv{1, k};
    return WgmmaEnv{};
  }();
  return env;
}

// How the wgmma kernel runs an NT product under `cfg`, or columns = 0 for mma.sync. A forced
// kernel is its WgmmaVariant. kAuto takes it only when ELMO_CUDA_WGMMA asks and 128x128 tiles
// already give every SM a block (or when forced): the kernel ELMO_CUDA_WGMMA names, or else one
// block per tile with the tile width whose grid leaves least of its last wave idle (the wider
// on a near tie): for BERT-base at 4096 tokens on 132 SMs, 192 for N = 768 and 2304 (128 and
// 384 blocks, where 256 would leave a quarter of the last wave idle) and 256 for N = 3072 (384
// blocks).
WgmmaVariant wgmma_choice(const GemmConfig& cfg, const EpilogueArgs& e) {
  const WgmmaVariant forced = wgmma_variant(cfg.kernel);
  if (forced.columns > 0) return forced;
  const WgmmaEnv env = cfg.kernel == GemmKernel::kAuto ? wgmma_env() : WgmmaEnv{};
  if (env.mode == 0) return {};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || !gemm_detail::wgmma_supported(dev)) return {};
  const int64_t sms = sm_count();
  const int64_t rows = ceil_div(e.M, gemm_detail::kWgmmaBM);
  if (rows * ceil_div(e.N, 128) < sms && env.mode != 2) return {};
  if (env.kernel != GemmKernel::kAuto) return wgmma_variant(env.kernel);
  WgmmaVariant best{128, 1, false};
  double best_use = 0.0;
  for (int bn : {256, 192, 128}) {
    const int64_t tiles = rows * ceil_div(e.N, bn);
    const double use = static_cast<double>(tiles) / static_cast<double>(ceil_div(tiles, sms) * sms);
    if (use > best_use + 0.02) {
      best.columns = bn;
      best_use = use;
    }
  }
  return best;
}

// The wgmma kernel's grid for `v`: 0 (a block per tile), or for a persistent kernel a block per
// SM slot, at most cfg.max_blocks when that is set.
int64_t wgmma_grid(const GemmConfig& cfg, const WgmmaVariant& v) {
  if (!v.persistent) return 0;
  const int64_t slots = int64_t{sm_count()} * v.blocks_per_sm;
  return cfg.max_blocks > 0 ? std::min<int64_t>(slots, cfg.max_blocks) : slots;
}

// 16-bit operands of one type: tensor cores when every row is 16-byte aligned (wgmma or
// mma.sync), else SIMT.
template <typename T>
Status run_16bit(cudaStream_t stream, const GemmConfig& cfg, GemmOp op, const T* a, const T* b, const EpilogueArgs& e,
                 int K) {
  const int M = e.M, N = e.N;
  const int lda = op == GemmOp::kTN ? M : K;
  const int ldb = op == GemmOp::kNT ? K : N;
  const bool tc_ok = lda % 8 == 0 && ldb % 8 == 0 && aligned16(a) && aligned16(b);
  if (!tc_ok) return launch_simt<T>(stream, op, a, b, e, K);
  if (op == GemmOp::kNT && K > 0) {
    const WgmmaVariant v = wgmma_choice(cfg, e);
    if (v.columns > 0)
      return gemm_detail::gemm_wgmma_nt(stream, TypeOf<T>::kDType, a, b, e, K, lda, ldb, v.columns, v.blocks_per_sm,
                                        wgmma_grid(cfg, v));
  }
  switch (op) {
    case GemmOp::kNN: return dispatch_tc<T, true, false>(stream, a, b, e, K, lda, ldb);
    case GemmOp::kNT: return dispatch_tc<T, true, true>(stream, a, b, e, K, lda, ldb);
    case GemmOp::kTN: return dispatch_tc<T, false, false>(stream, a, b, e, K, lda, ldb);
  }
  return input_error("gemm: unknown GemmOp");
}

template <typename T>
Status convert_into(cudaStream_t stream, T* out, const float* in, int64_t n) {
  if (n == 0) return Status::ok();
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>(ceil_div<int64_t>(n, threads), 65535 * 8);
  convert_kernel<T><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(out, in, n);
  ELMO_CUDA_CHECK_LAUNCH("gemm: operand conversion kernel launch");
  return Status::ok();
}

bool is_16bit(DType t) { return t == DType::kBF16 || t == DType::kF16; }
bool is_operand(DType t) { return t == DType::kF32 || is_16bit(t); }

// Bytes of the converted copy of the f32 operand (256-byte rounded), 0 when no conversion.
size_t conversion_bytes(const Tensor& a, const Tensor& b) {
  const Tensor* f = nullptr;
  if (a.dtype == DType::kF32 && is_16bit(b.dtype)) f = &a;
  if (b.dtype == DType::kF32 && is_16bit(a.dtype)) f = &b;
  if (f == nullptr) return 0;
  return (static_cast<size_t>(f->numel()) * 2 + 255) / 256 * 256;
}

Status check_device(const Tensor& t, const char* what) {
  ELMO_CHECK(t.device == Device::kCuda, Code::kInput, "gemm: %s must be a CUDA tensor, got a host tensor %s", what,
             t.describe().c_str());
  return Status::ok();
}

}  // namespace

const char* gemm_kernel_name(GemmKernel k) {
  switch (k) {
    case GemmKernel::kAuto: return "auto";
    case GemmKernel::kMma: return "mma";
    case GemmKernel::kWgmma128: return "wgmma128";
    case GemmKernel::kWgmma192: return "wgmma192";
    case GemmKernel::kWgmma256: return "wgmma256";
    case GemmKernel::kWgmma192P: return "wgmma192p";
    case GemmKernel::kWgmma256P: return "wgmma256p";
    case GemmKernel::kWgmma128x2: return "wgmma128x2";
    case GemmKernel::kWgmma128x2P: return "wgmma128x2p";
  }
  return "?";
}

bool gemm_kernel_by_name(const char* name, GemmKernel* k) {
  if (name == nullptr) return false;
  for (GemmKernel c : {GemmKernel::kAuto, GemmKernel::kMma})
    if (std::strcmp(name, gemm_kernel_name(c)) == 0) return *k = c, true;
  for (GemmKernel c : kWgmmaKernels)
    if (std::strcmp(name, gemm_kernel_name(c)) == 0) return *k = c, true;
  return false;
}

size_t gemm_workspace_bytes(Tensor a, Tensor b) { return conversion_bytes(a, b); }

Status gemm_blocks_per_sm(GemmKernel k, DType t, int* blocks) {
  const WgmmaVariant v = wgmma_variant(k);
  ELMO_CHECK(v.columns > 0 && blocks != nullptr, Code::kInput, "gemm_blocks_per_sm: a forced wgmma kernel, got %s",
             gemm_kernel_name(k));
  int dev = 0;
  ELMO_CUDA_TRY(cudaGetDevice(&dev), "gemm_blocks_per_sm: cudaGetDevice");
  ELMO_CHECK(gemm_detail::wgmma_supported(dev), Code::kUnsupported,
             "gemm_blocks_per_sm: the wgmma kernels need a compute capability 9.0 device");
  return gemm_detail::wgmma_occupancy(t, v.columns, v.blocks_per_sm, blocks);
}

Status gemm(cudaStream_t stream, const GemmConfig& cfg, Tensor out, Tensor pre_gelu, Tensor a, Tensor b, Tensor bias,
            Tensor residual, GemmOp op, Epilogue ep, bool accumulate) {
  // ---- validation: nothing is launched unless every argument agrees ----
  ELMO_CHECK(op == GemmOp::kNN || op == GemmOp::kNT || op == GemmOp::kTN, Code::kInput, "gemm: unknown GemmOp %d",
             static_cast<int>(op));
  ELMO_CHECK(ep == Epilogue::kNone || ep == Epilogue::kBias || ep == Epilogue::kBiasGelu ||
                 ep == Epilogue::kResidual || ep == Epilogue::kBiasResidual,
             Code::kInput, "gemm: unknown Epilogue %d", static_cast<int>(ep));
  ELMO_CHECK(!accumulate || ep == Epilogue::kNone, Code::kInput,
             "gemm: accumulate is only allowed with Epilogue::kNone");
  const bool force_wgmma = wgmma_variant(cfg.kernel).columns > 0;
  ELMO_CHECK(cfg.kernel == GemmKernel::kAuto || cfg.kernel == GemmKernel::kMma || force_wgmma, Code::kInput,
             "gemm: unknown GemmKernel %d", static_cast<int>(cfg.kernel));
  ELMO_CHECK(cfg.max_blocks >= 0, Code::kInput, "gemm: GemmConfig::max_blocks must be >= 0, got %d", cfg.max_blocks);
  if (force_wgmma) {
    int dev = 0;
    ELMO_CUDA_TRY(cudaGetDevice(&dev), "gemm: cudaGetDevice");
    ELMO_CHECK(gemm_detail::wgmma_supported(dev), Code::kUnsupported,
               "gemm: the wgmma kernel needs a compute capability 9.0 device and a driver with "
               "cuTensorMapEncodeTiled");
  }
  ELMO_CHECK(!out.empty() && !a.empty() && !b.empty(), Code::kInput, "gemm: out, a and b are required (null data)");
  ELMO_CHECK(out.dtype == DType::kF32 || out.dtype == DType::kBF16, Code::kDType,
             "gemm: out must be f32 or bf16 but received %s", dtype_name(out.dtype));
  ELMO_CHECK(is_operand(a.dtype), Code::kDType, "gemm: a must be f32, bf16 or f16 but received %s",
             dtype_name(a.dtype));
  ELMO_CHECK(is_operand(b.dtype), Code::kDType, "gemm: b must be f32, bf16 or f16 but received %s",
             dtype_name(b.dtype));
  ELMO_CHECK(!(is_16bit(a.dtype) && is_16bit(b.dtype) && a.dtype != b.dtype), Code::kDType,
             "gemm: a (%s) and b (%s) are different 16-bit types", dtype_name(a.dtype), dtype_name(b.dtype));
  ELMO_CHECK(out.ndim == 2 && a.ndim == 2 && b.ndim == 2, Code::kShape,
             "gemm: out, a and b must be 2-D, got out %s, a %s, b %s", out.describe().c_str(), a.describe().c_str(),
             b.describe().c_str());
  const int64_t M = out.shape[0], N = out.shape[1];
  const int64_t K = op == GemmOp::kTN ? a.shape[0] : a.shape[1];
  const int64_t a_m = op == GemmOp::kTN ? a.shape[1] : a.shape[0];
  const int64_t b_k = op == GemmOp::kNT ? b.shape[1] : b.shape[0];
  const int64_t b_n = op == GemmOp::kNT ? b.shape[0] : b.shape[1];
  static const char* const kOpName[] = {"NN", "NT", "TN"};
  ELMO_CHECK(a_m == M && b_k == K && b_n == N && M >= 0 && N >= 0 && K >= 0, Code::kShape,
             "gemm(%s): shapes disagree: out %s, a %s, b %s", kOpName[static_cast<int>(op)], out.describe().c_str(),
             a.describe().c_str(), b.describe().c_str());
  constexpr int64_t kMaxDim = (int64_t{1} << 31) - 256;
  ELMO_CHECK(M < kMaxDim && N < kMaxDim && K < kMaxDim && M / 64 < 65535, Code::kShape,
             "gemm: dims too large (M=%lld N=%lld K=%lld)", static_cast<long long>(M), static_cast<long long>(N),
             static_cast<long long>(K));
  ELMO_RETURN_IF_ERROR(check_device(out, "out"));
  ELMO_RETURN_IF_ERROR(check_device(a, "a"));
  ELMO_RETURN_IF_ERROR(check_device(b, "b"));

  const bool needs_bias = ep == Epilogue::kBias || ep == Epilogue::kBiasGelu || ep == Epilogue::kBiasResidual;
  const bool needs_residual = ep == Epilogue::kResidual || ep == Epilogue::kBiasResidual;
  if (needs_bias) {
    ELMO_RETURN_IF_ERROR(check_tensor(bias, "gemm: bias", DType::kF32, {N}));
    ELMO_RETURN_IF_ERROR(check_device(bias, "bias"));
  }
  if (needs_residual) {
    ELMO_RETURN_IF_ERROR(check_tensor(residual, "gemm: residual", out.dtype, {M, N}));
    ELMO_RETURN_IF_ERROR(check_device(residual, "residual"));
  }
  const bool save_pre = ep == Epilogue::kBiasGelu && !pre_gelu.empty();
  if (save_pre) {
    ELMO_CHECK(pre_gelu.dtype == DType::kF32 || pre_gelu.dtype == DType::kBF16, Code::kDType,
               "gemm: pre_gelu must be f32 or bf16 but received %s", dtype_name(pre_gelu.dtype));
    ELMO_RETURN_IF_ERROR(check_tensor(pre_gelu, "gemm: pre_gelu", pre_gelu.dtype, {M, N}));
    ELMO_RETURN_IF_ERROR(check_device(pre_gelu, "pre_gelu"));
  }

  const size_t ws_need = conversion_bytes(a, b);
  if (ws_need > 0) {
    ELMO_CHECK(cfg.workspace != nullptr && cfg.workspace_bytes >= ws_need, Code::kInput,
               "gemm: mixed operand dtypes (a %s, b %s) need a workspace of %zu bytes, got %zu", dtype_name(a.dtype),
               dtype_name(b.dtype), ws_need, cfg.workspace == nullptr ? size_t{0} : cfg.workspace_bytes);
  }
  if (M == 0 || N == 0) return Status::ok();

  EpilogueArgs e{};
  e.out = out.data;
  e.pre_gelu = save_pre ? pre_gelu.data : nullptr;
  e.bias = needs_bias ? bias.f32() : nullptr;
  e.residual = needs_residual ? residual.data : nullptr;
  e.M = static_cast<int>(M);
  e.N = static_cast<int>(N);
  e.gelu = ep == Epilogue::kBiasGelu;
  e.accumulate = accumulate;
  e.out_bf16 = out.dtype == DType::kBF16;
  e.pre_bf16 = save_pre && pre_gelu.dtype == DType::kBF16;
  e.pair_aligned = N % 2 == 0 && (reinterpret_cast<uintptr_t>(out.data) & 7) == 0 &&
                   (reinterpret_cast<uintptr_t>(e.residual) & 7) == 0 &&
                   (reinterpret_cast<uintptr_t>(e.pre_gelu) & 7) == 0;
  const int Ki = static_cast<int>(K);

  // ---- both f32: exact SIMT path (TF32 tensor cores are not implemented; allow_tf32 permits
  // them but never requires them, so the exact path is also correct there) ----
  if (a.dtype == DType::kF32 && b.dtype == DType::kF32) return launch_simt<float>(stream, op, a.f32(), b.f32(), e, Ki);

  // ---- mixed: round the f32 operand to the 16-bit type of the other into the workspace ----
  const DType t16 = is_16bit(a.dtype) ? a.dtype : b.dtype;
  const void* pa = a.data;
  const void* pb = b.data;
  if (ws_need > 0) {
    const Tensor& f = a.dtype == DType::kF32 ? a : b;
    if (t16 == DType::kBF16)
      ELMO_RETURN_IF_ERROR(convert_into(stream, static_cast<__nv_bfloat16*>(cfg.workspace), f.f32(), f.numel()));
    else
      ELMO_RETURN_IF_ERROR(convert_into(stream, static_cast<__half*>(cfg.workspace), f.f32(), f.numel()));
    (a.dtype == DType::kF32 ? pa : pb) = cfg.workspace;
  }
  if (t16 == DType::kBF16)
    return run_16bit(stream, cfg, op, static_cast<const __nv_bfloat16*>(pa),
                     static_cast<const __nv_bfloat16*>(pb), e, Ki);
  return run_16bit(stream, cfg, op, static_cast<const __half*>(pa), static_cast<const __half*>(pb), e, Ki);
}

}  // namespace elmo::cuda
