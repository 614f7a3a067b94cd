// Hopper (sm_90a) GEMM for the linear layer: out[M,N] = a[M,K] · b[N,K]ᵀ + epilogue, with
// 16-bit operands (bf16 or f16) and fp32 accumulation. Compiled for sm_90a only; gemm.cu calls it
// when wgmma_supported() (interface: gemm_sm90a.h; design: docs/kernels-cuda-gemm.md).
//
// A block computes 128 x BN tiles of out (BN = 128, 192 or 256):
//   * warpgroups 0 and 1, the consumers: each owns 64 rows of the tile and, per stage, issues
//     four wgmma.m64nBNk16 (k = 0, 16, 32, 48) reading both operands straight from shared memory;
//     once the tensor cores are done with a stage every consumer thread arrives on the stage's
//     "empty" mbarrier, which hands it back to the producer;
//   * the producer, the warps after them: one thread walks K in 64-wide steps and has the
//     tensor-memory accelerator (TMA) copy the A tile [128 x 64] and the B tile [BN x 64] of each
//     step into a ring of shared-memory stages, each completing on the stage's "full" mbarrier.
// The grid is either one block per tile or, persistent, fewer blocks that each walk the tiles
// blockIdx.x, blockIdx.x + gridDim.x, ...: the ring and its phases carry on from tile to tile,
// so the producer fills the stages of a block's next tile while its consumers are still in the
// epilogue of the last. With 128-column tiles two blocks can share an SM (three stages each),
// so that one block's wgmmas can run while the other writes its tile out (the intent; neither
// variant has been timed on a GPU yet).
// Both operands are K-major (K contiguous), as a [M,K] and b [N,K] are stored, which is the
// layout wgmma reads without a transpose. TMA writes them with the 128-byte swizzle: a tile row
// is 64 elements = 128 bytes, and the 16-byte chunks of row r are permuted by r mod 8, so the
// eight rows of each 1 KiB atom hit distinct banks. The wgmma descriptors name the same swizzle
// (stride between 8-row atoms: 1024 bytes); the k16 slices of a stage are 32 bytes apart.
// TMA zero-fills everything outside the matrices, so M, N and K tails need no code here, and the
// epilogue (gemm_epilogue.cuh, shared with the mma.sync kernel) writes only rows < M, cols < N.
//
// Registers: the consumers keep BN/2 fp32 accumulators per thread (128 for BN = 256). With one
// block per SM the producer is a whole warpgroup (384 threads, 168 registers each at launch)
// that gives its registers up with setmaxnreg (40) for the consumers to take (232). ptxas
// compiles every path within the launch bound, so a wgmma needs its accumulators to fit that:
// two blocks per SM (BN = 128, 64 accumulators) therefore use one producer warp instead
// (288 threads, at most 112 registers each) and no setmaxnreg.
#include "gemm_sm90a.h"

#include <cuda.h>  // CUtensorMap and its enums (types only: the encoder is fetched at run time)
#include <cudaTypedefs.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <mutex>

#include "common.cuh"

namespace elmo::cuda::gemm_detail {
namespace {

// ================================================================================================
// kernels
// ================================================================================================

constexpr int kBK = 64;         // K per stage: one 128-byte swizzle row of 16-bit elements
constexpr int kConsumerThreads = 256;  // two warpgroups computing, 64 rows each

template <int BN, int kBlocks>
struct Tile {
  static_assert(kBlocks == 1 || (kBlocks == 2 && BN == 128), "two blocks per SM only with 128-column tiles");
  static constexpr int kABytes = kWgmmaBM * kBK * 2;  // 16 KiB
  static constexpr int kBBytes = BN * kBK * 2;        // 16, 24 or 32 KiB
  static constexpr int kStageBytes = kABytes + kBBytes;
  // One block per SM: as many stages as 200 KiB holds, at most 6 (6, 5 and 4 for BN = 128, 192,
  // 256). Two: 96 KiB each, 3 stages, so that both fit the SM's 228 KiB.
  static constexpr int kBudget = kBlocks == 1 ? 200 * 1024 : 96 * 1024;
  static constexpr int kStages = kBudget / kStageBytes < 6 ? kBudget / kStageBytes : 6;
  // Tiles (1024-byte aligned for the swizzle atoms), then full[kStages] and empty[kStages]; plus
  // up to 1 KiB lost to aligning the dynamic shared memory's base.
  static constexpr size_t kSmemBytes = size_t{kStages} * kStageBytes + 2 * kStages * 8 + 1024;
  // Threads: the consumers, then a producer warpgroup (one block per SM) or warp (two).
  static constexpr int kThreads = kConsumerThreads + (kBlocks == 1 ? 128 : 32);
  // One block per SM: setmaxnreg's split of the 168 registers per thread the launch bound gives
  // (65536 / 384 rounded down to 8): 128 * 40 + 256 * 232 = 64512 = 384 * 168.
  static constexpr int kProducerRegs = 40;
  static constexpr int kConsumerRegs = 232;
  static_assert(128 * kProducerRegs + 256 * kConsumerRegs <= 384 * 168, "the register split exceeds the block's");
};

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ELMO_SM90A_DEVICE 1
#endif

#ifdef ELMO_SM90A_DEVICE

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ---- mbarrier ----------------------------------------------------------------------------------

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// The producer's arrival, announcing `bytes` of TMA writes that complete the phase.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ bool mbar_try_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  asm volatile(
      "{\n.reg .pred p;\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
      "selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(done)
      : "r"(bar), "r"(parity)
      : "memory");
  return done != 0;
}
// Returns once the phase of parity `parity` has completed. A fresh barrier is in phase 0, so
// waiting on parity 1 returns at once (the producer's first pass over the empty barriers).
// A phase that never completes (a transaction count that disagrees with what TMA delivers)
// would hang the GPU; after 2^32 cycles (about 2 s at 2 GHz, a thousand times the longest
// legitimate wait: one stage's copy, or one tile's epilogue, even under compute-sanitizer) the
// kernel traps instead, which the launcher's next synchronization reports as ERR_CUDA.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  if (mbar_try_wait(bar, parity)) return;
  const long long t0 = clock64();
  while (!mbar_try_wait(bar, parity)) {
    if (clock64() - t0 > (1LL << 32)) __trap();
  }
}

// ---- TMA -----------------------------------------------------------------------------------------

// Copies the box at (c0 = k, c1 = row) of the 2-D tensor map into shared memory at dst; completes
// `box bytes` of transactions on bar. Out-of-range elements arrive as zeros.
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, int c0, int c1, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], "
      "[%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}

// ---- setmaxnreg: this warpgroup's registers per thread (an immediate) -------------------------

template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs) : "memory");
}
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs) : "memory");
}

// ---- wgmma ---------------------------------------------------------------------------------------

// Shared-memory matrix descriptor of a K-major operand in the 128-byte swizzle: start address,
// leading byte offset (unused by this layout; 16 by convention), stride byte offset 1024 (from
// one 8-row atom to the next), layout type 1 (128B swizzle) in bits 62-63. All fields >> 4.
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>(16 >> 4) << 16) |
         (static_cast<uint64_t>(1024 >> 4) << 32) | (uint64_t{1} << 62);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accesses of an accumulator across a wgmma fence or wait.
__device__ __forceinline__ void fence_operand(float& r) { asm volatile("" : "+f"(r)::"memory"); }

// The accumulator operands of an m64nNk16 wgmma, as PTX text (N/2 registers per thread).
#define ELMO_WGMMA_D128                                                                   \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "      \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "      \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define ELMO_WGMMA_D192                                                                              \
  ELMO_WGMMA_D128 ", "                                                                               \
  "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "                 \
  "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95"
#define ELMO_WGMMA_D256                                                                              \
  ELMO_WGMMA_D128 ", "                                                                               \
  "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "                 \
  "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "                 \
  "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "     \
  "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
#define ELMO_D8(i)                                                                                          \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), \
      "+f"(d[i + 7])
#define ELMO_D64(i)                                                                                     \
  ELMO_D8(i), ELMO_D8(i + 8), ELMO_D8(i + 16), ELMO_D8(i + 24), ELMO_D8(i + 32), ELMO_D8(i + 40), \
      ELMO_D8(i + 48), ELMO_D8(i + 56)

#define ELMO_D96_OPERANDS ELMO_D64(0), ELMO_D8(64), ELMO_D8(72), ELMO_D8(80), ELMO_D8(88)
#define ELMO_D128_OPERANDS ELMO_D64(0), ELMO_D64(64)

// d (64 x N, fp32, fragment layout of wgmma) += A (64 x 16, desc a) · B (N x 16, desc b)ᵀ.
template <typename T, int N>
struct Wgmma;

// One specialization per operand type and N. REGS and OPERANDS: the accumulators as PTX text and
// as asm operands; A, B, P: the placeholders that follow them (the two descriptors, scale-d).
#define ELMO_DEFINE_WGMMA(CPP_TYPE, PTX_TYPE, N, REGS, OPERANDS, A, B, P)                       \
  template <>                                                                                 \
  struct Wgmma<CPP_TYPE, N> {                                                                 \
    static __device__ __forceinline__ void run(float (&d)[N / 2], uint64_t a, uint64_t b) {   \
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" P ", 0;\n"                            \
                   "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." PTX_TYPE "." PTX_TYPE     \
                   " {" REGS "}, %" A ", %" B ", p, 1, 1, 0, 0;\n}\n"                          \
                   : OPERANDS                                                                 \
                   : "l"(a), "l"(b), "r"(1));                                                 \
    }                                                                                         \
  };
ELMO_DEFINE_WGMMA(__nv_bfloat16, "bf16", 128, ELMO_WGMMA_D128, ELMO_D64(0), "64", "65", "66")
ELMO_DEFINE_WGMMA(__half, "f16", 128, ELMO_WGMMA_D128, ELMO_D64(0), "64", "65", "66")
ELMO_DEFINE_WGMMA(__nv_bfloat16, "bf16", 192, ELMO_WGMMA_D192, ELMO_D96_OPERANDS, "96", "97", "98")
ELMO_DEFINE_WGMMA(__half, "f16", 192, ELMO_WGMMA_D192, ELMO_D96_OPERANDS, "96", "97", "98")
ELMO_DEFINE_WGMMA(__nv_bfloat16, "bf16", 256, ELMO_WGMMA_D256, ELMO_D128_OPERANDS, "128", "129", "130")
ELMO_DEFINE_WGMMA(__half, "f16", 256, ELMO_WGMMA_D256, ELMO_D128_OPERANDS, "128", "129", "130")
#undef ELMO_DEFINE_WGMMA

#endif  // ELMO_SM90A_DEVICE

// out = a · bᵀ + epilogue over 128 x BN tiles: tile i is row panel i / tiles_n, column panel
// i % tiles_n; block b takes tiles b, b + gridDim.x, ... (one each when the grid has a block per
// tile). ta: a [M,K] as a tensor map with box {64, 128}; tb: b [N,K] with box {64, BN}; both
// 128B swizzled. The body exists only in the sm_90a image.
template <typename T, int BN, int kBlocks>
__global__ void __launch_bounds__(Tile<BN, kBlocks>::kThreads, kBlocks)
    gemm_wgmma_kernel(const __grid_constant__ CUtensorMap ta, const __grid_constant__ CUtensorMap tb, EpilogueArgs e,
                      int K, int tiles_n, int tiles) {
#ifdef ELMO_SM90A_DEVICE
  using Cfg = Tile<BN, kBlocks>;
  constexpr int S = Cfg::kStages;
  extern __shared__ uint8_t smem_raw[];
  const uint32_t base = (smem_u32(smem_raw) + 1023u) & ~1023u;
  const uint32_t bars = base + S * Cfg::kStageBytes;
  const auto a_tile = [&](int s) { return base + s * Cfg::kStageBytes; };
  const auto b_tile = [&](int s) { return base + s * Cfg::kStageBytes + Cfg::kABytes; };
  const auto full = [&](int s) { return bars + 8 * s; };
  const auto empty = [&](int s) { return bars + 8 * (S + s); };

  const bool producer = threadIdx.x >= kConsumerThreads;
  const int nk = (K + kBK - 1) / kBK;

  if (threadIdx.x == 0) {
    for (int s = 0; s < S; ++s) {
      mbar_init(full(s), 1);
      mbar_init(empty(s), kConsumerThreads);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  // The two roles are the two branches of one if/else, each starting with its setmaxnreg (one
  // block per SM), so that ptxas applies the register split. Both walk the same tiles; `it` counts the K steps
  // this block has passed through the ring, over all its tiles: step `it` uses stage it % S in
  // the phase of parity (it / S) & 1.
  if (producer) {
    if constexpr (kBlocks == 1) setmaxnreg_dec<Cfg::kProducerRegs>();
    if (threadIdx.x == kConsumerThreads) {
      uint32_t it = 0;
      for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const int m0 = (tile / tiles_n) * kWgmmaBM, n0 = (tile % tiles_n) * BN;
        for (int kt = 0; kt < nk; ++kt, ++it) {
          const int s = static_cast<int>(it % S);
          mbar_wait(empty(s), ((it / S) & 1) ^ 1);
          mbar_arrive_expect_tx(full(s), Cfg::kStageBytes);
          tma_load_2d(a_tile(s), &ta, kt * kBK, m0, full(s));
          tma_load_2d(b_tile(s), &tb, kt * kBK, n0, full(s));
        }
      }
    }
  } else {
    if constexpr (kBlocks == 1) setmaxnreg_inc<Cfg::kConsumerRegs>();
    const int c = threadIdx.x / 128;  // this warpgroup's 64 rows of each tile: m0 + 64c ...
    const int warp = threadIdx.x / 32 % 4, lane = threadIdx.x % 32;
    uint32_t it = 0;
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
      const int m0 = (tile / tiles_n) * kWgmmaBM, n0 = (tile % tiles_n) * BN;
      float d[BN / 2];
#pragma unroll
      for (int i = 0; i < BN / 2; ++i) d[i] = 0.0f;

      for (int kt = 0; kt < nk; ++kt, ++it) {
        const int s = static_cast<int>(it % S);
        mbar_wait(full(s), (it / S) & 1);
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) fence_operand(d[i]);
        wgmma_fence();
        const uint32_t a0 = a_tile(s) + c * 64 * 128;  // 64 rows of 128 bytes
#pragma unroll
        for (int kk = 0; kk < kBK / 16; ++kk)
          Wgmma<T, BN>::run(d, smem_desc(a0 + kk * 32), smem_desc(b_tile(s) + kk * 32));
        wgmma_commit();
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) fence_operand(d[i]);
        // Keep this step's wgmmas in flight while the previous step's finish, then hand that
        // step's stage back to the producer.
        wgmma_wait<1>();
        if (kt > 0) mbar_arrive(empty((it - 1) % S));
      }
      wgmma_wait<0>();
#pragma unroll
      for (int i = 0; i < BN / 2; ++i) fence_operand(d[i]);
      // The tile's last stage goes back before the epilogue, so that the producer can fill it
      // with the next tile's data meanwhile.
      mbar_arrive(empty((it - 1) % S));

      // Fragment layout of the 64 x BN accumulator: warp w of the warpgroup holds rows
      // 16w..16w+15; per 8 columns j, d[4j], d[4j+1] sit at (row lane/4, cols 8j + 2(lane%4) +
      // {0,1}) and d[4j+2], d[4j+3] eight rows below.
      const int row = m0 + c * 64 + warp * 16 + lane / 4;
#pragma unroll
      for (int j = 0; j < BN / 8; ++j) {
        const int col = n0 + 8 * j + 2 * (lane % 4);
        epilogue_pair(e, row, col, d[4 * j], d[4 * j + 1]);
        epilogue_pair(e, row + 8, col, d[4 * j + 2], d[4 * j + 3]);
      }
    }
  }
#else
  (void)ta;
  (void)tb;
  (void)e;
  (void)K;
  (void)tiles_n;
  (void)tiles;
#endif
}

// ================================================================================================
// launchers
// ================================================================================================

using EncodeTiled = PFN_cuTensorMapEncodeTiled_v12000;

// The driver's cuTensorMapEncodeTiled, fetched through the runtime (the project links no libcuda);
// null when the driver lacks it.
EncodeTiled encoder() {
  static const EncodeTiled fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      cudaGetLastError();  // not sticky; clear it
      return EncodeTiled{nullptr};
    }
    return reinterpret_cast<EncodeTiled>(p);
  }();
  return fn;
}

// A [rows, K] row-major 16-bit matrix with row stride ld elements, read in boxes of 64 x box_rows.
Status make_map(CUtensorMap* map, DType t, const void* p, int64_t rows, int64_t K, int64_t ld, int box_rows) {
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(K), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(ld) * 2};
  const cuuint32_t box[2] = {kBK, static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t elem_strides[2] = {1, 1};
  const CUtensorMapDataType type =
      t == DType::kBF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  // OOB_FILL_NONE: elements outside the tensor arrive as zeros (NONE means no NaN request).
  const CUresult r = encoder()(map, type, 2, const_cast<void*>(p), dims, strides, box, elem_strides,
                               CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                               CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return Status(Code::kCuda, strformat("gemm (wgmma): cuTensorMapEncodeTiled failed with CUresult %d for a "
                                         "[%lld, %lld] operand, row stride %lld",
                                         static_cast<int>(r), static_cast<long long>(rows), static_cast<long long>(K),
                                         static_cast<long long>(ld)));
  return Status::ok();
}

// make_map through a small per-thread cache. A model's weights and its activation arena keep
// their addresses from call to call, so once warmed up its GEMMs find their maps here instead of
// calling the driver's encoder twice per product. The key is everything the map encodes, so a
// hit is the map make_map would build (an address reused by another allocation of the same
// layout included).
Status cached_map(CUtensorMap* map, DType t, const void* p, int64_t rows, int64_t K, int64_t ld, int box_rows) {
  struct Key {
    const void* p;
    int64_t rows, K, ld;
    int box_rows;
    DType t;
    bool operator==(const Key& o) const {
      return p == o.p && rows == o.rows && K == o.K && ld == o.ld && box_rows == o.box_rows && t == o.t;
    }
  };
  struct Entry {
    CUtensorMap map;
    Key key{nullptr, 0, 0, 0, 0, DType::kF32};  // p == nullptr: empty
  };
  constexpr size_t kEntries = 64;
  thread_local Entry cache[kEntries];
  const Key key{p, rows, K, ld, box_rows, t};
  const uint64_t h = (reinterpret_cast<uintptr_t>(p) >> 8) * 0x9E3779B97F4A7C15ull ^
                     static_cast<uint64_t>(rows * 31 + K * 17 + ld * 7 + box_rows) * 0xC2B2AE3D27D4EB4Full;
  Entry& e = cache[(h >> 32) % kEntries];
  if (p != nullptr && e.key == key) {
    *map = e.map;
    return Status::ok();
  }
  ELMO_RETURN_IF_ERROR(make_map(map, t, p, rows, K, ld, box_rows));
  e.map = *map;
  e.key = key;
  return Status::ok();
}

// Names one instantiation of gemm_wgmma_kernel, for with_kernel below.
template <typename T, int BN, int kBlocks>
struct Kernel {};

// Calls f(Kernel<T, BN, kBlocks>{}) for the instantiation that operand type t (bf16 or f16),
// bn (128, 192, 256) and blocks_per_sm (1, or 2 with bn = 128) name; ERR_INPUT for none.
template <typename F>
Status with_kernel(DType t, int bn, int blocks_per_sm, F&& f) {
  ELMO_CHECK(t == DType::kBF16 || t == DType::kF16, Code::kDType, "gemm (wgmma): operands must be bf16 or f16, got %s",
             dtype_name(t));
  ELMO_CHECK((blocks_per_sm == 1 && (bn == 128 || bn == 192 || bn == 256)) || (blocks_per_sm == 2 && bn == 128),
             Code::kInput, "gemm (wgmma): no kernel for bn = %d, blocks_per_sm = %d", bn, blocks_per_sm);
  using B16 = __nv_bfloat16;
  const bool bf16 = t == DType::kBF16;
  if (blocks_per_sm == 2) return bf16 ? f(Kernel<B16, 128, 2>{}) : f(Kernel<__half, 128, 2>{});
  if (bn == 256) return bf16 ? f(Kernel<B16, 256, 1>{}) : f(Kernel<__half, 256, 1>{});
  if (bn == 192) return bf16 ? f(Kernel<B16, 192, 1>{}) : f(Kernel<__half, 192, 1>{});
  return bf16 ? f(Kernel<B16, 128, 1>{}) : f(Kernel<__half, 128, 1>{});
}

// Sets the attributes gemm_wgmma_kernel<T, BN, kBlocks> needs on the current device, once:
// its dynamic shared memory, and for two blocks per SM the largest carveout (both blocks'
// shared memory must fit one SM).
template <typename T, int BN, int kBlocks>
Status configure() {
  auto kernel = gemm_wgmma_kernel<T, BN, kBlocks>;
  static std::atomic<uint64_t> configured{0};
  ELMO_RETURN_IF_ERROR(allow_dynamic_smem(kernel, Tile<BN, kBlocks>::kSmemBytes, &configured,
                                          "gemm (wgmma): raise the shared memory limit"));
  if (kBlocks > 1) {
    static std::atomic<uint64_t> carved{0};
    int dev = 0;
    ELMO_CUDA_TRY(cudaGetDevice(&dev), "gemm (wgmma): cudaGetDevice");
    const uint64_t bit = uint64_t{1} << (dev & 63);
    if (!(carved.load(std::memory_order_relaxed) & bit)) {
      ELMO_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                         cudaSharedmemCarveoutMaxShared),
                    "gemm (wgmma): shared memory carveout");
      carved.fetch_or(bit, std::memory_order_relaxed);
    }
  }
  return Status::ok();
}

template <typename T, int BN, int kBlocks>
Status launch(Kernel<T, BN, kBlocks>, cudaStream_t stream, const void* a, const void* b, DType t, const EpilogueArgs& e,
              int K, int lda, int ldb, int64_t grid) {
  using Cfg = Tile<BN, kBlocks>;
  const int64_t tiles_n = ceil_div(e.N, BN);
  const int64_t tiles = tiles_n * ceil_div(e.M, kWgmmaBM);
  ELMO_CHECK(tiles <= INT32_MAX, Code::kInput, "gemm (wgmma): %lld tiles of 128 x %d is too many",
             static_cast<long long>(tiles), BN);
  if (tiles == 0) return Status::ok();
  CUtensorMap ta, tb;
  ELMO_RETURN_IF_ERROR(cached_map(&ta, t, a, e.M, K, lda, kWgmmaBM));
  ELMO_RETURN_IF_ERROR(cached_map(&tb, t, b, e.N, K, ldb, BN));
  ELMO_RETURN_IF_ERROR((configure<T, BN, kBlocks>()));
  const unsigned blocks = static_cast<unsigned>(grid > 0 ? std::min(grid, tiles) : tiles);
  gemm_wgmma_kernel<T, BN, kBlocks><<<blocks, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(
      ta, tb, e, K, static_cast<int>(tiles_n), static_cast<int>(tiles));
  ELMO_CUDA_CHECK_LAUNCH("gemm (wgmma): kernel launch");
  return Status::ok();
}

template <typename T, int BN, int kBlocks>
Status occupancy(Kernel<T, BN, kBlocks>, int* blocks) {
  ELMO_RETURN_IF_ERROR((configure<T, BN, kBlocks>()));
  ELMO_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, gemm_wgmma_kernel<T, BN, kBlocks>,
                                                              Tile<BN, kBlocks>::kThreads,
                                                              Tile<BN, kBlocks>::kSmemBytes),
                "gemm (wgmma): occupancy");
  return Status::ok();
}

}  // namespace

bool wgmma_supported(int dev) {
  // 0 = not asked yet, 1 = no, 2 = yes.
  static std::atomic<int> cache[64];
  if (dev < 0 || dev >= 64) return false;
  int v = cache[dev].load(std::memory_order_relaxed);
  if (v == 0) {
    int major = 0, minor = 0;
    const bool cc90 = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
                      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess &&
                      major == 9 && minor == 0;
    v = cc90 && encoder() != nullptr ? 2 : 1;
    cache[dev].store(v, std::memory_order_relaxed);
  }
  return v == 2;
}

Status gemm_wgmma_nt(cudaStream_t stream, DType t, const void* a, const void* b, const EpilogueArgs& e, int K, int lda,
                     int ldb, int bn, int blocks_per_sm, int64_t grid) {
  ELMO_CHECK(K > 0 && grid >= 0, Code::kInput, "gemm (wgmma): K = %d, grid = %lld", K, static_cast<long long>(grid));
  ELMO_CHECK(encoder() != nullptr, Code::kUnsupported, "gemm (wgmma): the driver has no cuTensorMapEncodeTiled");
  return with_kernel(t, bn, blocks_per_sm, [&](auto k) { return launch(k, stream, a, b, t, e, K, lda, ldb, grid); });
}

Status wgmma_occupancy(DType t, int bn, int blocks_per_sm, int* blocks) {
  ELMO_CHECK(blocks != nullptr, Code::kInput, "wgmma_occupancy: nowhere to write");
  return with_kernel(t, bn, blocks_per_sm, [&](auto k) { return occupancy(k, blocks); });
}

}  // namespace elmo::cuda::gemm_detail
