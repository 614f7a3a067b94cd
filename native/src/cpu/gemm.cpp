// CPU GEMM: out[M,N] = op(a) . op(b) with fused epilogues, plus the raw sgemm and bias_backward.
//
//   gemm  (NN) a [M,K] . b [K,N]     (NT) a [M,K] . b[N,K]^T     (TN) a[K,M]^T . b [K,N]
//   epilogue, applied on each finished tile while it is in L1:
//     v = acc (+ bias[n]); pre_gelu = v, v = gelu_erf(v); v += residual[m,n]; out = v
//     accumulate (kNone only): out += acc
//   bias_backward: dbias[N] += sum over rows of dout[M,N]
//
// Algorithm (BLIS-style):
//   1. pack all of op(A) into MR-row micro-panels [K][MR] and all of op(B) into NR-column
//      micro-panels [K][NR] (zero-padded tails), in parallel over panels;
//   2. cut C into fixed MC x NC tiles, one parallel task each; a task walks K in KC blocks and
//      runs the MR x NR register-blocked micro-kernel over its tile (B slice in L1, A block in
//      L2), adding into C after the first block, then applies the epilogue to each micro-tile
//      after the last block.
// Every output element is summed over K in the same order (KC blocks in order, k in order
// inside a block) whatever the tiling and whatever thread runs the tile, and K is never split
// across threads: 1 and N threads give bit-identical results.
//
// Workspace: the packed panels live in a per-calling-thread buffer that grows to the largest
// problem seen and is then reused (no allocation in steady state).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#include "cpu/gemm_driver.h"
#include "cpu/gemm_kernels.h"
#include "cpu/ops.h"

namespace elmo::cpu {
namespace gemm_detail {

GrowBuffer::~GrowBuffer() { std::free(p_); }

void* GrowBuffer::get(size_t bytes) {
  if (bytes > cap_) {
    std::free(p_);
    const size_t rounded = (bytes + 63) / 64 * 64;
    p_ = std::aligned_alloc(64, rounded);
    cap_ = p_ ? rounded : 0;
  }
  return p_;
}

int64_t short_tile_rows(int64_t m_panels, int64_t N, int mr) {
  const int64_t col_tiles = (N + kShortNC - 1) / kShortNC;
  const int64_t row_tiles =
      col_tiles >= kShortMinTasks ? 1 : std::min(m_panels, (kShortMinTasks + col_tiles - 1) / col_tiles);
  return (m_panels + row_tiles - 1) / row_tiles * mr;
}

void run_parallel(const Ctx& c, int64_t n, const std::function<void(int64_t)>& fn) {
  if (c.pool == nullptr || c.pool->threads() == 1 || n <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
  } else {
    c.pool->parallel_for(n, fn);
  }
}

// ---- scalar kernel (reference-quality path; also the fallback on CPUs without AVX2) -------

namespace {

constexpr int kScalarMR = 4, kScalarNR = 8;

void micro_scalar(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, int rows, int cols,
                  bool add, Prefetch pf) {
  for (int64_t q = 0; q < pf.lines; ++q) __builtin_prefetch(pf.p + q * 64, 0, 3);
  float acc[kScalarMR][kScalarNR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    const float* a = Ap + k * kScalarMR;  // (MR)
    const float* b = Bp + k * kScalarNR;  // (NR)
    for (int i = 0; i < kScalarMR; ++i)
      for (int j = 0; j < kScalarNR; ++j) acc[i][j] += a[i] * b[j];
  }
  for (int i = 0; i < rows; ++i) {
    float* c = C + i * ldc;
    for (int j = 0; j < cols; ++j) c[j] = add ? c[j] + acc[i][j] : acc[i][j];
  }
}

void epilogue_scalar(const EpilogueArgs& e, float* C, int64_t ldc, int64_t m0, int64_t n0, int rows, int cols) {
  for (int i = 0; i < rows; ++i) {
    float* c = C + i * ldc;
    for (int j = 0; j < cols; ++j) {
      float v = c[j];
      if (e.bias) v += e.bias[n0 + j];
      if (e.gelu) {
        if (e.pre_gelu) e.pre_gelu[(m0 + i) * e.ld_pre + n0 + j] = v;
        v = 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752f));
      }
      if (e.residual) v += e.residual[(m0 + i) * e.ld_res + n0 + j];
      c[j] = v;
    }
  }
}

void pack_b_nt_scalar8(float* dst, const float* src, int64_t ldb, int64_t K, int cols) {
  pack_b_nt_scalar(dst, src, ldb, K, cols, kScalarNR);
}

}  // namespace

void pack_b_nt_scalar(float* dst, const float* src, int64_t ldb, int64_t K, int cols, int nr) {
  // Blocks of 16 k keep the nr source rows' cache lines hot while the panel is written in order.
  constexpr int64_t kBlock = 16;
  for (int64_t k0 = 0; k0 < K; k0 += kBlock) {
    const int64_t k1 = std::min(K, k0 + kBlock);
    for (int j = 0; j < nr; ++j) {
      if (j < cols) {
        const float* s = src + j * ldb;
        for (int64_t k = k0; k < k1; ++k) dst[k * nr + j] = s[k];
      } else {
        for (int64_t k = k0; k < k1; ++k) dst[k * nr + j] = 0.0f;
      }
    }
  }
}

const Kernel& kernel_scalar() {
  static const Kernel k{kScalarMR, kScalarNR, 256, 64, 256, &micro_scalar, &epilogue_scalar, &pack_b_nt_scalar8, nullptr,
                        nullptr, nullptr};
  return k;
}

}  // namespace gemm_detail

namespace {

using gemm_detail::EpilogueArgs;
using gemm_detail::Kernel;
using gemm_detail::PanelPrefetch;
using gemm_detail::Prefetch;

const Kernel& select_kernel(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return gemm_detail::kernel_avx512();
    case Isa::kAvx2: return gemm_detail::kernel_avx2();
    case Isa::kScalar: break;
  }
  return gemm_detail::kernel_scalar();
}

using gemm_detail::GrowBuffer;
using gemm_detail::run_parallel;

thread_local GrowBuffer tl_workspace;  // packed A and B of the calling thread
thread_local GrowBuffer tl_block;      // a task's B block (short M), per running thread

struct Problem {
  GemmOp op;
  int64_t M, N, K;
  float alpha;
  const float* A;  // NN/NT: [M, lda]; TN: [K, lda]
  int64_t lda;
  const float* B;  // NN/TN: [K, ldb]; NT: [N, ldb]
  int64_t ldb;
  float beta;      // 0: C is overwritten (not read); 1: added to; else scaled first
  float* C;        // [M, ldc]
  int64_t ldc;
  const EpilogueArgs* ep;  // null: none
  const float* Bpanels = nullptr;  // NT only: B already packed, N / NR panels [K][NR] (B unused)
};

// The common case of pack_rows: whole panels of a compile-time width W, no scaling, so each
// row copy is a fixed run of vector moves.
template <int W>
void pack_rows_full(const float* __restrict src, int64_t ld, int64_t K, int64_t count, float* __restrict dst) {
  const int64_t panel = W * K;
  constexpr int64_t kAhead = 8;  // rows prefetched ahead: the row stride defeats the hardware
  for (int64_t k = 0; k < K; ++k) {
    const float* __restrict s = src + k * ld;
    if (k + kAhead < K)
      for (int64_t j = 0; j < count * W; j += 16) __builtin_prefetch(s + kAhead * ld + j);
    for (int64_t q = 0; q < count; ++q) {
      float* __restrict d = dst + q * panel + k * W;
      for (int j = 0; j < W; ++j) d[j] = s[q * W + j];
    }
  }
}

// Copies columns [c0, c0 + count*W) of a row-major [K, ld] matrix into `count` consecutive
// micro-panels [K][W] (zero-padded past `limit` columns), scaled by alpha. k is the outer loop,
// so each source row is read as one contiguous run: strided row-by-row reads of a single
// W-wide panel would hit one cache set per row when ld is a multiple of 1024 floats.
void pack_rows(const float* src, int64_t ld, int64_t K, int64_t c0, int64_t limit, int W, int64_t count,
               float alpha, float* dst) {
  const int64_t panel = W * K;
  const int64_t width = std::min(count * W, limit - c0);  // valid columns in this group
  if (alpha == 1.0f && width == count * W) {
    switch (W) {
      case 4: return pack_rows_full<4>(src + c0, ld, K, count, dst);
      case 6: return pack_rows_full<6>(src + c0, ld, K, count, dst);
      case 8: return pack_rows_full<8>(src + c0, ld, K, count, dst);
      case 12: return pack_rows_full<12>(src + c0, ld, K, count, dst);
      case 16: return pack_rows_full<16>(src + c0, ld, K, count, dst);
      case 32: return pack_rows_full<32>(src + c0, ld, K, count, dst);
      default: break;
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    const float* s = src + k * ld + c0;
    for (int64_t q = 0; q < count; ++q) {
      float* d = dst + q * panel + k * W;
      const int64_t j0 = q * W, n = std::min<int64_t>(W, width - j0);
      if (alpha == 1.0f)
        for (int64_t j = 0; j < n; ++j) d[j] = s[j0 + j];
      else
        for (int64_t j = 0; j < n; ++j) d[j] = alpha * s[j0 + j];
      for (int64_t j = std::max<int64_t>(n, 0); j < W; ++j) d[j] = 0.0f;
    }
  }
}

// dst [K][MR] <- rows m0.. of a stored [M, lda] (times alpha), zero rows past M.
void pack_a_transposed(const Problem& p, int MR, int64_t m0, float* dst) {
  const int rows = static_cast<int>(std::min<int64_t>(MR, p.M - m0));
  const float alpha = p.alpha;
  // gather MR rows; blocks of k keep the rows' cache lines hot.
  constexpr int64_t kBlock = 64;
  for (int64_t k0 = 0; k0 < p.K; k0 += kBlock) {
    const int64_t k1 = std::min(p.K, k0 + kBlock);
    for (int i = 0; i < MR; ++i) {
      if (i < rows) {
        const float* s = p.A + (m0 + i) * p.lda;
        if (alpha == 1.0f)
          for (int64_t k = k0; k < k1; ++k) dst[k * MR + i] = s[k];
        else
          for (int64_t k = k0; k < k1; ++k) dst[k * MR + i] = alpha * s[k];
      } else {
        for (int64_t k = k0; k < k1; ++k) dst[k * MR + i] = 0.0f;
      }
    }
  }
}

// Packs A micro-panels [first, first + count).
void pack_a_panels(const Kernel& kn, const Problem& p, int64_t first, int64_t count, float* Ap) {
  const int MR = kn.mr;
  if (p.op == GemmOp::kTN) {  // a [K, M]: each k holds a contiguous run of all the panels' rows
    pack_rows(p.A, p.lda, p.K, first * MR, p.M, MR, count, p.alpha, Ap + first * MR * p.K);
    return;
  }
  for (int64_t i = first; i < first + count; ++i) {
    if (kn.pack_a && p.alpha == 1.0f)
      kn.pack_a(Ap + i * MR * p.K, p.A + i * MR * p.lda, p.lda, p.K,
                static_cast<int>(std::min<int64_t>(MR, p.M - i * MR)));
    else
      pack_a_transposed(p, MR, i * MR, Ap + i * MR * p.K);
  }
}

// Packs rows [pc, pc + kc) of B micro-panels [first, first + count) into dst, panel q at
// dst + q * NR * kc.
void pack_b_panels(const Kernel& kn, const Problem& p, int64_t pc, int64_t kc, int64_t first, int64_t count,
                   float* dst) {
  const int NR = kn.nr;
  if (p.op != GemmOp::kNT) {  // b [K, N]
    pack_rows(p.B + pc * p.ldb, p.ldb, kc, first * NR, p.N, NR, count, 1.0f, dst);
    return;
  }
  for (int64_t q = 0; q < count; ++q) {
    const int64_t n0 = (first + q) * NR;
    kn.pack_b_nt(dst + q * NR * kc, p.B + n0 * p.ldb + pc, p.ldb, kc,
                 static_cast<int>(std::min<int64_t>(NR, p.N - n0)));
  }
}

// Scales C[m0:m1, n0:n1] by beta (beta == 0 writes zeros, never reading C).
void scale_tile(float* C, int64_t ldc, int64_t m0, int64_t m1, int64_t n0, int64_t n1, float beta) {
  for (int64_t m = m0; m < m1; ++m) {
    float* c = C + m * ldc;
    if (beta == 0.0f)
      for (int64_t n = n0; n < n1; ++n) c[n] = 0.0f;
    else
      for (int64_t n = n0; n < n1; ++n) c[n] *= beta;
  }
}

using gemm_detail::kShortM;
using gemm_detail::kShortNC;
using gemm_detail::kStreamM;
using gemm_detail::kStreamNC;

Status run_stream_nt(const Ctx& c, const Kernel& kn, const Problem& p) {
  const bool add = p.beta != 0.0f;
  run_parallel(c, (p.N + kStreamNC - 1) / kStreamNC, [&](int64_t t) {
    const int64_t n0 = t * kStreamNC, n1 = std::min(p.N, n0 + kStreamNC);
    kn.nt_stream(p.A, p.lda, p.B, p.ldb, p.C, p.ldc, p.M, n0, n1, p.K, add);
    if (p.ep) kn.epilogue(*p.ep, p.C + n0, p.ldc, 0, n0, static_cast<int>(p.M), static_cast<int>(n1 - n0));
  });
  return Status::ok();
}

Status run_gemm(const Ctx& c, const Problem& p);

// Tall problems run as a sequence of row blocks of this many MC tiles, so the packed-A
// workspace holds one block (BERT-base's FFN output at 4096 tokens: 14 MB instead of 50 MB); 16
// tiles keep a 1024-token batch whole, whose narrow products (N = H) have few tiles to share.
// Each element's K order is unchanged, so results do not depend on the blocking.
constexpr int64_t kRowBlockTiles = 16;

Status run_row_blocks(const Ctx& c, const Problem& p, int64_t rows) {
  for (int64_t m0 = 0; m0 < p.M; m0 += rows) {
    Problem q = p;
    q.M = std::min(rows, p.M - m0);
    q.A = p.op == GemmOp::kTN ? p.A + m0 : p.A + m0 * p.lda;  // TN: a is [K, M], rows are columns
    q.C = p.C + m0 * p.ldc;
    EpilogueArgs e;
    if (p.ep) {
      e = *p.ep;
      if (e.pre_gelu) e.pre_gelu += m0 * e.ld_pre;
      if (e.residual) e.residual += m0 * e.ld_res;
      q.ep = &e;
    }
    ELMO_RETURN_IF_ERROR(run_gemm(c, q));
  }
  return Status::ok();
}

Status run_gemm(const Ctx& c, const Problem& p) {
  if (p.M == 0 || p.N == 0) return Status::ok();
  const Kernel& kn = select_kernel(c.isa);
  if (p.M > kRowBlockTiles * kn.mc && p.K > 0) return run_row_blocks(c, p, kRowBlockTiles * kn.mc);
  const bool prepacked = p.Bpanels != nullptr;
  if (!prepacked && kn.nt_stream && p.op == GemmOp::kNT && p.M <= kStreamM && p.K > 0 && p.alpha == 1.0f &&
      (p.beta == 0.0f || p.beta == 1.0f))
    return run_stream_nt(c, kn, p);
  const int MR = kn.mr, NR = kn.nr;
  // K blocks of at most kn.kc, evenly sized (BERT-mini's K = 256 in one block, not 192 + 64):
  // every block costs a pass of C loads and stores over the whole tile, however few its k steps.
  const int64_t k_blocks = p.K > 0 ? (p.K + kn.kc - 1) / kn.kc : 1;
  const int64_t K = p.K, KC = K > 0 ? (K + k_blocks - 1) / k_blocks : 1;
  const bool short_m = p.M <= kShortM;
  const int64_t m_panels = (p.M + MR - 1) / MR, n_panels = (p.N + NR - 1) / NR;
  const int64_t NC = short_m ? kShortNC : kn.nc;
  const int64_t MC = short_m ? gemm_detail::short_tile_rows(m_panels, p.N, MR) : kn.mc;
  const int64_t a_panel = MR * K, b_panel = NR * K;  // floats per full-K micro-panel
  // B panels first, both regions rounded to 16 floats so every panel start stays 64-byte aligned.
  const int64_t b_floats = (short_m || prepacked) ? 0 : (n_panels * b_panel + 15) / 16 * 16;
  const int64_t a_floats = (m_panels * a_panel + 15) / 16 * 16;
  float* ws = static_cast<float*>(tl_workspace.get(static_cast<size_t>(a_floats + b_floats + 16) * sizeof(float)));
  if (ws == nullptr)
    return Status(Code::kOom, strformat("gemm: cannot allocate %lld bytes of packing workspace",
                                        static_cast<long long>((a_floats + b_floats) * 4)));
  const float* Bp = prepacked ? p.Bpanels : ws;
  float* Ap = ws + b_floats;

  // 1. Pack A (and B when shared), a fixed number of panels per task: A 2 per task, so that a
  //    problem of a few panels still spreads over the threads. Short problems skip this: their
  //    compute tasks pack A as they go (gemm_detail::LazyPanels).
  constexpr int64_t kPanelsPerTask = 8, kAPanelsPerTask = 2;
  const int64_t b_tasks = (short_m || prepacked) ? 0 : (n_panels + kPanelsPerTask - 1) / kPanelsPerTask;
  const int64_t a_tasks = (m_panels + kAPanelsPerTask - 1) / kAPanelsPerTask;
  const bool lazy_a = short_m && K > 0;
  gemm_detail::LazyPanels a_lazy(lazy_a ? m_panels : 0);
  if (K > 0 && !lazy_a) {
    run_parallel(c, a_tasks + b_tasks, [&](int64_t t) {
      if (t < b_tasks) {
        const int64_t j0 = t * kPanelsPerTask, count = std::min(n_panels, j0 + kPanelsPerTask) - j0;
        pack_b_panels(kn, p, 0, K, j0, count, ws + j0 * b_panel);
      } else {
        const int64_t i0 = (t - b_tasks) * kAPanelsPerTask;
        pack_a_panels(kn, p, i0, std::min(m_panels, i0 + kAPanelsPerTask) - i0, Ap);
      }
    });
  }

  // 2. Compute, one task per MC x NC tile of C; tiles sharing columns run back to back so that
  //    their B panels are reused from cache.
  const int64_t tiles_m = (p.M + MC - 1) / MC, tiles_n = (p.N + NC - 1) / NC;
  const bool add_first = p.beta != 0.0f;
  const bool rows_outer = gemm_detail::walk_rows_outer(short_m, p.ldc);
  std::atomic<bool> oom{false};
  run_parallel(c, tiles_m * tiles_n, [&](int64_t t) {
    const int64_t m0 = (t % tiles_m) * MC, n0 = (t / tiles_m) * NC;
    const int64_t m1 = std::min(p.M, m0 + MC), n1 = std::min(p.N, n0 + NC);
    float* bt = nullptr;  // this task's B block (short M): panels [kc][NR] for columns n0..n1
    if (short_m && !prepacked && K > 0) {
      bt = static_cast<float*>(tl_block.get(static_cast<size_t>(std::min(KC, K) * NC) * sizeof(float)));
      if (bt == nullptr) {
        oom = true;
        return;
      }
    }
    if (p.beta != 0.0f && p.beta != 1.0f) scale_tile(p.C, p.ldc, m0, m1, n0, n1, p.beta);
    for (int64_t pc = 0;; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      const bool last = pc + kc >= K;
      const bool add = pc > 0 || add_first;
      if (bt) pack_b_panels(kn, p, pc, kc, n0 / NR, (n1 - n0 + NR - 1) / NR, bt);
      // One micro-tile: rows [ir, ir + MR) x columns [jr, jr + NR) over this K block.
      const auto micro = [&](int64_t ir, int64_t jr, Prefetch pf) {
        const int rows = static_cast<int>(std::min<int64_t>(MR, m1 - ir));
        const int cols = static_cast<int>(std::min<int64_t>(NR, n1 - jr));
        const float* a = Ap + (ir / MR) * a_panel + pc * MR;  // (kc, MR)
        const float* b = bt ? bt + ((jr - n0) / NR) * NR * kc  // (kc, NR)
                            : Bp + (jr / NR) * b_panel + pc * NR;
        float* ct = p.C + ir * p.ldc + jr;
        if (last && p.ep && kn.micro_ep) {
          kn.micro_ep(kc, a, b, ct, p.ldc, rows, cols, add, *p.ep, ir, jr, pf);
        } else {
          kn.micro(kc, a, b, ct, p.ldc, rows, cols, add, pf);
          if (last && p.ep) kn.epilogue(*p.ep, ct, p.ldc, ir, jr, rows, cols);
        }
      };
      const auto first = [&](int64_t ir) {
        if (lazy_a && pc == 0) a_lazy.ensure(ir / MR, [&](int64_t i) { pack_a_panels(kn, p, i, 1, Ap); });
      };
      const gemm_detail::TileWalk w{m0, m1, n0, n1, pc, KC, K, MR, NR, 1, rows_outer, lazy_a && (t & 1)};
      gemm_detail::walk_tile(w, bt ? nullptr : Bp, b_panel, first, micro);
      if (last) break;
    }
  });
  if (oom) return Status(Code::kOom, "gemm: cannot allocate the per-thread B block");
  return Status::ok();
}

// True when [p, p+n) and [q, q+m) (bytes) overlap.
bool overlaps(const void* p, size_t n, const void* q, size_t m) {
  const auto a = reinterpret_cast<uintptr_t>(p), b = reinterpret_cast<uintptr_t>(q);
  return n > 0 && m > 0 && a < b + m && b < a + n;
}

}  // namespace

namespace gemm_detail {

Status check_op_and_epilogue(GemmOp op, Epilogue ep, bool accumulate) {
  if (op != GemmOp::kNN && op != GemmOp::kNT && op != GemmOp::kTN)
    return input_error(strformat("gemm: unknown op %d", static_cast<int>(op)));
  if (ep != Epilogue::kNone && ep != Epilogue::kBias && ep != Epilogue::kBiasGelu && ep != Epilogue::kResidual &&
      ep != Epilogue::kBiasResidual)
    return input_error(strformat("gemm: unknown epilogue %d", static_cast<int>(ep)));
  if (accumulate && ep != Epilogue::kNone)
    return input_error("gemm: accumulate is only allowed with Epilogue::kNone");
  return Status::ok();
}

Status check_inner(GemmOp op, Tensor a, Tensor b, int64_t K, int64_t Kb) {
  if (Kb == K) return Status::ok();
  return shape_error(strformat("gemm %s: inner dimensions differ: a %s gives K=%lld, b %s gives K=%lld", gemm_op_name(op),
                               a.describe().c_str(), static_cast<long long>(K), b.describe().c_str(),
                               static_cast<long long>(Kb)));
}

Status check_outputs(Tensor out, Tensor pre_gelu, Tensor a, Tensor b, Tensor bias, Tensor residual, Epilogue ep,
                     int64_t M, int64_t N, EpilogueArgs* e, bool* residual_in_place) {
  ELMO_RETURN_IF_ERROR(check_tensor(out, "gemm out", DType::kF32, {M, N}));
  const bool use_bias = ep == Epilogue::kBias || ep == Epilogue::kBiasGelu || ep == Epilogue::kBiasResidual;
  const bool use_residual = ep == Epilogue::kResidual || ep == Epilogue::kBiasResidual;
  const bool use_pre = ep == Epilogue::kBiasGelu && !pre_gelu.empty();
  if (use_bias) ELMO_RETURN_IF_ERROR(check_tensor(bias, "gemm bias", DType::kF32, {N}));
  if (use_residual) ELMO_RETURN_IF_ERROR(check_tensor(residual, "gemm residual", DType::kF32, {M, N}));
  if (use_pre) ELMO_RETURN_IF_ERROR(check_tensor(pre_gelu, "gemm pre_gelu", DType::kF32, {M, N}));
  for (const Tensor* t : {&out, &a, &b}) {
    if (t->device != Device::kCpu) return input_error("gemm: tensors must be in CPU memory");
  }
  if ((use_bias && bias.device != Device::kCpu) || (use_residual && residual.device != Device::kCpu) ||
      (use_pre && pre_gelu.device != Device::kCpu))
    return input_error("gemm: tensors must be in CPU memory");
  // out is written while a, b, bias and pre_gelu are read or written: they must not share memory
  // with it. residual may be out itself (an in-place residual add), but not partly overlap it.
  const size_t out_bytes = out.nbytes();
  if (overlaps(out.data, out_bytes, a.data, a.nbytes()) || overlaps(out.data, out_bytes, b.data, b.nbytes()))
    return input_error("gemm: out overlaps an input (a or b)");
  if (use_bias && overlaps(out.data, out_bytes, bias.data, bias.nbytes()))
    return input_error("gemm: out overlaps bias");
  if (use_pre && (overlaps(out.data, out_bytes, pre_gelu.data, pre_gelu.nbytes()) ||
                  overlaps(pre_gelu.data, pre_gelu.nbytes(), a.data, a.nbytes()) ||
                  overlaps(pre_gelu.data, pre_gelu.nbytes(), b.data, b.nbytes())))
    return input_error("gemm: pre_gelu overlaps out or an input");
  *residual_in_place = use_residual && residual.data == out.data;
  if (use_residual && !*residual_in_place && overlaps(out.data, out_bytes, residual.data, residual.nbytes()))
    return input_error("gemm: residual partly overlaps out (it may only be out itself)");

  *e = EpilogueArgs();
  if (use_bias) e->bias = bias.f32();
  if (ep == Epilogue::kBiasGelu) {
    e->gelu = true;
    if (use_pre) {
      e->pre_gelu = pre_gelu.f32();
      e->ld_pre = N;
    }
  }
  if (use_residual && !*residual_in_place) {
    e->residual = residual.f32();
    e->ld_res = N;
  }
  return Status::ok();
}

}  // namespace gemm_detail

Status gemm(const Ctx& c, Tensor out, Tensor pre_gelu, Tensor a, Tensor b, Tensor bias, Tensor residual, GemmOp op,
            Epilogue ep, bool accumulate) {
  ELMO_RETURN_IF_ERROR(gemm_detail::check_op_and_epilogue(op, ep, accumulate));
  ELMO_RETURN_IF_ERROR(check_tensor(a, "gemm a", DType::kF32, {-1, -1}));
  // b may be a weight kept packed by pack_weight (op NT only): its panels are used as they are.
  Tensor b_rows = b;
  b_rows.panel = 0;
  if (b.panel != 0) {
    if (op != GemmOp::kNT)
      return input_error(strformat("gemm %s: b is a packed weight (%s), which only op NT reads", gemm_op_name(op),
                                   b.describe().c_str()));
    const int nr = select_kernel(c.isa).nr;
    if (b.panel != nr)
      return input_error(strformat("gemm: b is packed in panels of %d rows but the %s kernel reads panels of %d; "
                                   "pack it with this backend", b.panel, isa_name(c.isa), nr));
  }
  ELMO_RETURN_IF_ERROR(check_tensor(b_rows, "gemm b", DType::kF32, {-1, -1}));
  if (b.panel != 0 && (b.shape[0] % b.panel != 0 || reinterpret_cast<uintptr_t>(b.data) % 64 != 0))
    return shape_error(strformat("gemm: packed b %s: not whole 64-byte aligned panels", b.describe().c_str()));
  const bool ta = op == GemmOp::kTN, tb = op == GemmOp::kNT;
  const int64_t M = ta ? a.shape[1] : a.shape[0];
  const int64_t K = ta ? a.shape[0] : a.shape[1];
  const int64_t N = tb ? b.shape[0] : b.shape[1];
  const int64_t Kb = tb ? b.shape[1] : b.shape[0];
  ELMO_RETURN_IF_ERROR(gemm_detail::check_inner(op, a, b, K, Kb));
  EpilogueArgs e;
  bool residual_in_place = false;
  ELMO_RETURN_IF_ERROR(
      gemm_detail::check_outputs(out, pre_gelu, a, b, bias, residual, ep, M, N, &e, &residual_in_place));
  const bool any_epilogue = e.bias || e.gelu || e.residual;
  Problem p{op,   M,   N, K, 1.0f, a.f32(), ta ? M : K, b.f32(), tb ? K : N,
            // In-place residual: out already holds the residual, so the product is added to it.
            (accumulate || residual_in_place) ? 1.0f : 0.0f, out.f32(), N, any_epilogue ? &e : nullptr};
  if (b.panel != 0) p.Bpanels = b.f32();
  return run_gemm(c, p);
}

int gemm_weight_panel(const Ctx& c) { return select_kernel(c.isa).nr; }

namespace {

// Rewrites each group of `nr` rows of a [N, K] matrix (N a multiple of nr) between row-major
// and its micro-panel [K][nr], in place: the group's nr x K floats are exactly the memory of
// its panel, so a copy of the group (the only extra memory: nr x K floats per task) is
// transposed back into place.
Status repack_groups(const Ctx& c, const Kernel& kn, float* base, int64_t N, int64_t K, int nr, bool to_panels) {
  constexpr int64_t kGroupsPerTask = 4;
  const int64_t groups = N / nr, tasks = (groups + kGroupsPerTask - 1) / kGroupsPerTask;
  std::atomic<bool> oom{false};
  run_parallel(c, tasks, [&](int64_t t) {
    std::unique_ptr<float[]> tmp(new (std::nothrow) float[static_cast<size_t>(nr * K)]);
    if (!tmp) {
      oom = true;
      return;
    }
    for (int64_t g = t * kGroupsPerTask; g < std::min(groups, (t + 1) * kGroupsPerTask); ++g) {
      float* group = base + g * nr * K;
      std::memcpy(tmp.get(), group, static_cast<size_t>(nr * K) * sizeof(float));
      if (to_panels) {
        kn.pack_b_nt(group, tmp.get(), K, K, nr);
      } else {
        for (int j = 0; j < nr; ++j)
          for (int64_t k = 0; k < K; ++k) group[j * K + k] = tmp[static_cast<size_t>(k * nr + j)];
      }
    }
  });
  if (oom) return Status(Code::kOom, strformat("pack_weight: cannot allocate %lld bytes", (long long)(nr * K * 4)));
  return Status::ok();
}

}  // namespace

Status pack_weight(const Ctx& c, Tensor* w, bool packed) {
  if (w == nullptr) return input_error("pack_weight: null tensor");
  Tensor rows = *w;
  rows.panel = 0;
  ELMO_RETURN_IF_ERROR(check_tensor(rows, "pack_weight w", DType::kF32, {-1, -1}));
  if (w->device != Device::kCpu) return input_error("pack_weight: tensor must be in CPU memory");
  if (reinterpret_cast<uintptr_t>(w->data) % 64 != 0)  // the kernels load panels with aligned moves
    return input_error("pack_weight: the weight's memory must be 64-byte aligned");
  const Kernel& kn = select_kernel(c.isa);
  const int want = packed ? kn.nr : 0;
  if (w->panel == want) return Status::ok();
  const int64_t N = w->shape[0], K = w->shape[1];
  if (w->panel != 0) {  // back to row-major first (also when packed for another kernel)
    if (w->panel < 0 || N % w->panel != 0)
      return shape_error(strformat("pack_weight: %s is not a whole number of panels", w->describe().c_str()));
    ELMO_RETURN_IF_ERROR(repack_groups(c, kn, w->f32(), N, K, w->panel, false));
    w->panel = 0;
  }
  if (want == 0) return Status::ok();
  if (N % want != 0)
    return shape_error(strformat("pack_weight: %s has %lld rows, not a multiple of the panel width %d",
                                 w->describe().c_str(), static_cast<long long>(N), want));
  ELMO_RETURN_IF_ERROR(repack_groups(c, kn, w->f32(), N, K, want, true));
  w->panel = want;
  return Status::ok();
}

// Runs on c.pool (never call it from inside a parallel_for task of that same pool); a Ctx with
// pool == nullptr runs it on the calling thread alone, which is what a kernel that already
// parallelizes over heads or sequences wants. sgemm cannot report a failed workspace
// allocation (gemm() returns ERR_OOM); C is then left wholly or partly unwritten.
void sgemm(const Ctx& c, GemmOp op, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  // alpha == 0: C = beta C, A and B are not read.
  Problem p{op, M, N, alpha == 0.0f ? 0 : K, alpha, A, lda, B, ldb, beta, C, ldc, nullptr};
  (void)run_gemm(c, p);
}

// dbias[N] += column sums of dout[M,N]. Fixed column chunks, each summed over all rows in row
// order in double: deterministic and independent of the thread count.
Status bias_backward(const Ctx& c, Tensor dbias, Tensor dout) {
  ELMO_RETURN_IF_ERROR(check_tensor(dout, "bias_backward dout", DType::kF32, {-1, -1}));
  const int64_t M = dout.shape[0], N = dout.shape[1];
  ELMO_RETURN_IF_ERROR(check_tensor(dbias, "bias_backward dbias", DType::kF32, {N}));
  if (dbias.device != Device::kCpu || dout.device != Device::kCpu)
    return input_error("bias_backward: tensors must be in CPU memory");
  if (overlaps(dbias.data, dbias.nbytes(), dout.data, dout.nbytes()))
    return input_error("bias_backward: dbias overlaps dout");
  constexpr int64_t kCols = 64;
  const float* g = dout.f32();  // (M, N)
  float* db = dbias.f32();      // (N)
  run_parallel(c, (N + kCols - 1) / kCols, [&](int64_t t) {
    const int64_t n0 = t * kCols, n1 = std::min(N, n0 + kCols);
    double sum[kCols] = {};
    for (int64_t m = 0; m < M; ++m) {
      const float* row = g + m * N;
      for (int64_t n = n0; n < n1; ++n) sum[n - n0] += row[n];
    }
    for (int64_t n = n0; n < n1; ++n) db[n] = static_cast<float>(db[n] + sum[n - n0]);
  });
  return Status::ok();
}

}  // namespace elmo::cpu
