// Pieces the f32 and bf16 GEMM drivers (gemm.cpp, gemm_bf16.cpp) share; defined in gemm.cpp.
// Not for ISA translation units: drivers only.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>

#include "cpu/gemm_kernels.h"
#include "cpu/ops.h"

namespace elmo::cpu::gemm_detail {

// A 64-byte aligned buffer that grows to the largest request and is then kept: the drivers
// hold theirs in thread_local variables, so steady state allocates nothing. get() returns null
// when the allocation fails (the caller reports ERR_OOM).
class GrowBuffer {
 public:
  GrowBuffer() = default;
  GrowBuffer(const GrowBuffer&) = delete;
  GrowBuffer& operator=(const GrowBuffer&) = delete;
  ~GrowBuffer();
  void* get(size_t bytes);

 private:
  void* p_ = nullptr;
  size_t cap_ = 0;
};

// Argument checks shared by the f32 and bf16 GEMM drivers (defined in gemm.cpp): op, epilogue and
// accumulate; then, with a and b already checked and out [M, N], the epilogue tensors, the
// devices and aliasing, filling the epilogue and whether residual is out itself.
Status check_op_and_epilogue(GemmOp op, Epilogue ep, bool accumulate);
// ERR_SHAPE naming both operands when op(a)'s K and op(b)'s Kb differ.
Status check_inner(GemmOp op, Tensor a, Tensor b, int64_t K, int64_t Kb);
Status check_outputs(Tensor out, Tensor pre_gelu, Tensor a, Tensor b, Tensor bias, Tensor residual, Epilogue ep,
                     int64_t M, int64_t N, EpilogueArgs* e, bool* residual_in_place);

// Tiling shared by both drivers.
// Up to kShortM rows, C is cut into column tiles only (all rows in one task) and each task
// packs its own B block right before using it: B is then read from memory once and never
// written back packed. Taller problems pack all of B up front and share it between row tiles.
constexpr int64_t kShortM = 256;
// Column tile of a task in the short-M case (a multiple of every NR).
constexpr int64_t kShortNC = 128;
// Short problems with fewer column tiles than this are also cut along M (each row tile packs
// the B block again, which is cheap next to leaving cores idle). Depends on the shape only.
constexpr int64_t kShortMinTasks = 4;
// Up to kStreamM rows, NT (x . W^T) with a row-major W runs without packing when the kernel
// has a streaming path: each task streams kStreamNC rows of W once and forms their dot products
// with every row of x, which stays in cache. Packing W would copy the whole weight per call for
// a product that uses each packed element only ceil(M / MR) times.
constexpr int64_t kStreamM = 32;
constexpr int64_t kStreamNC = 48;  // columns of C per task (a multiple of the 3-column dot block)

// Which way a task walks its tile (walk_tile). Tall products go column panel by column panel,
// each B slice reused from L1 down all the tile's row panels. When C's rows are a multiple of
// 4 KiB apart, though, every row of a column panel falls in the same two L1 sets, so that walk
// sends all of a task's stores to two sets and they keep evicting the lines there. Walking row
// panel by row panel instead spreads consecutive tiles' stores over the sets; each B slice then
// comes from L2, prefetched by the call before the one that uses it. BERT-mini's FFN input
// product on one thread (`bench_gemm op=NT m=4096 n=1024 k=256 threads=1 packed=1`, the two
// walks' builds alternated): 163 -> 204 GFLOP/s; the same product with 1040 columns (rows not
// 4 KiB apart) ran at 208 with the column walk. Short products keep the column walk (their C
// stays in L2: no such loss at M = 128). `ldc` in elements of C (f32).
inline bool walk_rows_outer(bool short_m, int64_t ldc) { return !short_m && ldc % 1024 == 0; }

// The A panels of a short problem (M <= kShortM), packed by the compute tasks as they first reach
// them instead of in a parallel region of their own: one fork/join less per product, and a
// forward at batch 1 is a few hundred small products. A task claims a panel with a
// compare-and-swap and packs it; a task that finds it claimed waits until it is packed. Callers
// walk odd tasks' rows from the bottom, so two threads starting together pack from both ends.
// One per driver call, on its stack.
class LazyPanels {
 public:
  static constexpr int64_t kMax = 64;  // kShortM rows in panels of at least 4
  explicit LazyPanels(int64_t n) {
    for (int64_t i = 0; i < n; ++i) state_[i].store(kUnpacked, std::memory_order_relaxed);
  }
  // Panel i is packed on return: by pack(i) here, or by the task that claimed it first.
  template <typename Pack>
  void ensure(int64_t i, const Pack& pack) {
    std::atomic<uint8_t>& st = state_[i];
    if (st.load(std::memory_order_acquire) == kPacked) return;
    uint8_t unpacked = kUnpacked;
    if (st.compare_exchange_strong(unpacked, kPacking, std::memory_order_acq_rel)) {
      pack(i);
      st.store(kPacked, std::memory_order_release);
      return;
    }
    while (st.load(std::memory_order_acquire) != kPacked) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
  }

 private:
  static constexpr uint8_t kUnpacked = 0, kPacking = 1, kPacked = 2;
  std::atomic<uint8_t> state_[kMax];
};
static_assert(kShortM / 4 <= LazyPanels::kMax, "every kernel's MR is at least 4");

// The rows of one task's tile in the short-M case (M <= kShortM; m_panels = ceil(M / mr)).
int64_t short_tile_rows(int64_t m_panels, int64_t N, int mr);

// fn(i) for i in [0, n) on c.pool, or on the calling thread when there is no pool, one thread
// or one item.
void run_parallel(const Ctx& c, int64_t n, const std::function<void(int64_t)>& fn);

// A slice of a packed weight prefetched while the current one is in use: its cache lines are
// spread over the `calls` micro-kernel calls (one per row panel) that use the current slice,
// each issuing its share among its FMAs, so the slice arrives over their run instead of in a
// burst that stalls on the fill buffers, or at the pace of the first call that reads it.
class PanelPrefetch {
 public:
  PanelPrefetch() = default;
  PanelPrefetch(const void* p, int64_t bytes, int64_t calls)
      : p_(static_cast<const char*>(p)), lines_(bytes / 64), per_call_(calls > 0 ? (lines_ + calls - 1) / calls : 0) {}
  // The next call's share (none once the slice is handed out).
  Prefetch take() {
    const Prefetch pf{p_, std::min(per_call_, lines_)};
    p_ += pf.lines * 64;
    lines_ -= pf.lines;
    return pf;
  }

 private:
  const char* p_ = nullptr;
  int64_t lines_ = 0, per_call_ = 0;
};

// What follows the slice (column panel jr, K block pc) of a packed weight in a task's walk over
// its tile [n0, n1): the next column panel in the same K block, else the tile's first panel in
// the next K block, else nothing. Bp: full-K panels of b_panel elements, NR wide; K blocks of KC
// rounded up to kstep.
template <typename T>
PanelPrefetch next_slice(const T* Bp, int64_t b_panel, int64_t NR, int64_t n0, int64_t n1, int64_t jr, int64_t pc,
                         int64_t KC, int64_t K, int64_t kstep, int64_t calls) {
  const auto slice_bytes = [&](int64_t k0) {
    const int64_t kc = std::min(KC, K - k0);
    return (kc + kstep - 1) / kstep * kstep * NR * static_cast<int64_t>(sizeof(T));
  };
  if (jr + NR < n1) return {Bp + (jr / NR + 1) * b_panel + pc * NR, slice_bytes(pc), calls};
  if (pc + KC < K) return {Bp + (n0 / NR) * b_panel + (pc + KC) * NR, slice_bytes(pc + KC), calls};
  return {};
}

// One task's tile, rows [m0, m1) x columns [n0, n1), over the K block at pc (blocks of KC, K
// in all), for walk_tile.
struct TileWalk {
  int64_t m0, m1, n0, n1;
  int64_t pc, KC, K;
  int64_t MR, NR;
  int64_t kstep;    // k granularity of the B panels (f32 1, bf16 2)
  bool rows_outer;  // walk_rows_outer
  bool reverse;     // column walk: row panels from the bottom (odd tasks, LazyPanels)
};

// Walks a tile micro-tile by micro-tile, for both GEMM drivers: micro(ir, jr, pf) computes the
// tile at rows ir, columns jr and issues the prefetches pf; first(ir) runs before row panel
// ir's first micro-tile (a short problem packs its A panel there, LazyPanels). Bp: the packed
// weight, whose next slice the calls prefetch among their FMAs (read straight from memory, it
// would otherwise arrive at the pace of the first call that waits on it); null when B is the
// task's own block, already in cache.
template <typename T, typename First, typename Micro>
void walk_tile(const TileWalk& w, const T* Bp, int64_t b_panel, const First& first, const Micro& micro) {
  const int64_t panels = (w.m1 - w.m0 + w.MR - 1) / w.MR;
  if (w.rows_outer) {  // the call on one B slice prefetches the next
    for (int64_t ir = w.m0; ir < w.m1; ir += w.MR) {
      first(ir);
      for (int64_t jr = w.n0; jr < w.n1; jr += w.NR) {
        PanelPrefetch next;
        if (Bp && jr + w.NR < w.n1) next = next_slice(Bp, b_panel, w.NR, w.n0, w.n1, jr, w.pc, w.KC, w.K, w.kstep, 1);
        micro(ir, jr, next.take());
      }
    }
    return;
  }
  for (int64_t jr = w.n0; jr < w.n1; jr += w.NR) {  // the slice spread over the column's calls
    PanelPrefetch next;
    if (Bp) next = next_slice(Bp, b_panel, w.NR, w.n0, w.n1, jr, w.pc, w.KC, w.K, w.kstep, panels);
    for (int64_t q = 0; q < panels; ++q) {
      const int64_t ir = w.m0 + (w.reverse ? panels - 1 - q : q) * w.MR;
      if (jr == w.n0) first(ir);
      micro(ir, jr, next.take());
    }
  }
}

}  // namespace elmo::cpu::gemm_detail
