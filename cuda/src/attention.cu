// Fused attention forward (FlashAttention-2 style) over packed variable-length batches.
//
//   qkv [T, 3C] (C = NH*HD) holds rows [q | k | v]; head h at columns h*HD of each part.
//   For sequence b (rows [offsets[b], offsets[b+1])) and head h:
//     S = q kᵀ / sqrt(HD) over the sequence's own keys, P = softmax(S) (online, f32),
//     P' = dropout(P) (element (h, i, j), i and j packed rows: e = (h*T + i)*T + j, kept when
//     philox_uniform(seed, stream, e) >= p, scaled 1/(1-p)), out = P' v   out [T, C] (=)
//     lse [NH, T] f32 = log Σ_j exp(S_ij), the only thing saved for the backward.
//   No [T, T] matrix is ever stored; no work is spent on padding.
//
// Two kernels:
//   * attention_mma_kernel<HD, MT>: bf16 q/k/v on tensor cores (mma.sync m16n8k16 for QKᵀ and
//     PV, f32 accumulate), HD in {32, 64, 128}. A block of 4 warps owns 64·MT query rows (16·MT
//     per warp, kept in registers as A fragments); 64-key K/V tiles stream through shared
//     memory with cp.async, double-buffered, so the next tile loads while this one is computed.
//     Scores are kept in the exp2 domain (pre-scaled by log2 e).
//     MT = 1 or 2 row tiles of 16 per warp. Each K or V fragment a warp loads from shared
//     memory (ldmatrix) feeds MT mma.sync, so MT = 2 halves the shared-memory traffic per FLOP,
//     which bounds the MT = 1 kernel once sequences are long (S = 512: 0.77x SDPA's flash
//     kernel on an H200). It costs registers (HD <= 64 only) and gives half as many blocks, so
//     it pays for long sequences: attention_rows_per_warp() picks.
//   * attention_generic_kernel<T>: any HD <= 256, f32 math on f32 or bf16 storage; the
//     parity path. One warp per query row; lane j scores key j of a 32-key tile.
// attention_backward is not on CUDA yet (ERR_UNSUPPORTED).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "elmo/philox.h"
#include "ops.h"

namespace elmo::cuda {
namespace {

// ---- kernels: generic (any HD, f32 math) ---------------------------------------------------

constexpr int kGenRows = 8;    // query rows (warps) per block
constexpr int kGenKeys = 32;   // keys per tile: one per lane
constexpr int kMaxHD = 256;
constexpr int kGenPerLane = kMaxHD / 32;

size_t generic_smem_bytes(int HD) {
  return sizeof(float) * (static_cast<size_t>(kGenRows) * HD + static_cast<size_t>(kGenKeys) * (HD + 1) +
                          static_cast<size_t>(kGenKeys) * HD);
}

template <class T>
__global__ void __launch_bounds__(kGenRows * 32)
    attention_generic_kernel(T* __restrict__ out, float* __restrict__ lse, const T* __restrict__ qkv,
                             const int32_t* __restrict__ offsets, int64_t Ttot, int NH, int HD, float scale,
                             float p, float keep_scale, uint64_t seed, uint64_t stream) {
  extern __shared__ float smem[];
  float* qs = smem;                           // [kGenRows][HD]
  float* ks = qs + kGenRows * HD;             // [kGenKeys][HD + 1] (padded: lane j reads row j)
  float* vs = ks + kGenKeys * (HD + 1);       // [kGenKeys][HD]
  const int b = blockIdx.z, h = blockIdx.y;
  const int64_t s0 = offsets[b];
  const int len = offsets[b + 1] - offsets[b];
  const int q0 = blockIdx.x * kGenRows;
  if (q0 >= len) return;
  const int w = threadIdx.x / 32, lane = threadIdx.x & 31;
  const int64_t C = static_cast<int64_t>(NH) * HD, ld3 = 3 * C;

  for (int idx = threadIdx.x; idx < kGenRows * HD; idx += blockDim.x) {
    const int r = idx / HD, d = idx % HD;
    qs[idx] = q0 + r < len ? ld(qkv, (s0 + q0 + r) * ld3 + static_cast<int64_t>(h) * HD + d) : 0.f;
  }
  const int row = q0 + w;
  const bool valid = row < len;
  float acc[kGenPerLane];
#pragma unroll
  for (int r = 0; r < kGenPerLane; ++r) acc[r] = 0.f;
  float m = -INFINITY, l = 0.f;
  const float* q = qs + w * HD;

  for (int k0 = 0; k0 < len; k0 += kGenKeys) {
    __syncthreads();  // previous tile fully consumed (and q loaded, the first time)
    for (int idx = threadIdx.x; idx < kGenKeys * HD; idx += blockDim.x) {
      const int j = idx / HD, d = idx % HD;
      const bool in = k0 + j < len;
      const int64_t g = (s0 + k0 + j) * ld3 + static_cast<int64_t>(h) * HD + d;
      ks[j * (HD + 1) + d] = in ? ld(qkv, g + C) : 0.f;
      vs[j * HD + d] = in ? ld(qkv, g + 2 * C) : 0.f;
    }
    __syncthreads();
    if (!valid) continue;
    const int j = k0 + lane;
    float s = -INFINITY;
    if (j < len) {
      const float* k = ks + lane * (HD + 1);
      float dot = 0.f;
      for (int d = 0; d < HD; ++d) dot += q[d] * k[d];
      s = dot * scale;
    }
    const float m_new = fmaxf(m, warp_max(s));
    const float corr = expf(m - m_new);
    const float pj = expf(s - m_new);
    l = l * corr + warp_sum(pj);
    float pd = pj;
    if (p > 0.f && j < len) {
      const uint64_t e = (static_cast<uint64_t>(h) * Ttot + static_cast<uint64_t>(s0 + row)) * Ttot +
                         static_cast<uint64_t>(s0 + j);
      pd = dropout_keep(seed, stream, e, p) ? pj * keep_scale : 0.f;
    }
#pragma unroll
    for (int r = 0; r < kGenPerLane; ++r) acc[r] *= corr;
    const int nk = len - k0 < kGenKeys ? len - k0 : kGenKeys;
    for (int jj = 0; jj < nk; ++jj) {
      const float pv = __shfl_sync(0xffffffffu, pd, jj);
      const float* v = vs + jj * HD;
#pragma unroll
      for (int r = 0; r < kGenPerLane; ++r) {
        const int d = lane + 32 * r;
        if (d < HD) acc[r] += pv * v[d];
      }
    }
    m = m_new;
  }
  if (!valid) return;
  const float inv = 1.0f / l;
  T* o = out + (s0 + row) * C + static_cast<int64_t>(h) * HD;
#pragma unroll
  for (int r = 0; r < kGenPerLane; ++r) {
    const int d = lane + 32 * r;
    if (d < HD) st(o, d, acc[r] * inv);
  }
  if (lane == 0 && lse) lse[static_cast<int64_t>(h) * Ttot + s0 + row] = m + logf(l);
}

// ---- kernels: bf16 tensor cores ------------------------------------------------------------

constexpr int kWarps = 4;
constexpr int kBQ = 16 * kWarps;  // query rows per block per row tile (MT)
constexpr int kBK = 64;           // keys per tile

template <int HD>
constexpr int mma_stride() {
  return HD + 8;  // +16 bytes per row: ldmatrix rows land in distinct banks
}
template <int HD, int MT>
constexpr size_t mma_smem_bytes() {
  return sizeof(__nv_bfloat16) * static_cast<size_t>(mma_stride<HD>()) * (kBQ * MT + 4 * kBK);
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool in) {
  const int n = in ? 16 : 0;  // 0 bytes read: the 16 destination bytes are zero-filled
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
// c[16x8] += a[16x16] · b[16x8], bf16 operands, f32 accumulate.
__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
__device__ __forceinline__ void store_pair(__nv_bfloat16* p, float a, float b) {
  *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b);
}
__device__ __forceinline__ void store_pair(float* p, float a, float b) { *reinterpret_cast<float2*>(p) = make_float2(a, b); }

// Loads `rows` rows of HD bf16 from global (row stride ld3 elements) into shared (stride
// mma_stride), rows at or past `valid` zero-filled.
template <int HD, int kRowsTile>
__device__ __forceinline__ void load_tile(__nv_bfloat16* dst, const __nv_bfloat16* src, int64_t ld3, int valid) {
  constexpr int kChunks = HD / 8;  // 16-byte chunks per row
  for (int idx = threadIdx.x; idx < kRowsTile * kChunks; idx += kWarps * 32) {
    const int r = idx / kChunks, ch = idx % kChunks;
    const bool in = r < valid;
    const __nv_bfloat16* g = in ? src + r * ld3 + ch * 8 : src;
    cp_async16(smem_addr(dst + r * mma_stride<HD>() + ch * 8), g, in);
  }
}

template <int HD, int MT, class OutT>
__global__ void __launch_bounds__(kWarps * 32)
    attention_mma_kernel(OutT* __restrict__ out, float* __restrict__ lse, const __nv_bfloat16* __restrict__ qkv,
                         const int32_t* __restrict__ offsets, int64_t Ttot, int NH, float scale_log2, float p,
                         float keep_scale, uint64_t seed, uint64_t stream) {
  constexpr int S = mma_stride<HD>();
  constexpr int KS = HD / 16;      // k-steps over the head dimension
  constexpr int DT = HD / 8;       // 8-wide output tiles
  constexpr int BQ = kBQ * MT;     // query rows per block
  constexpr int WR = 16 * MT;      // query rows per warp
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* qs = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [BQ][S]
  __nv_bfloat16* ks = qs + BQ * S;                                  // [2][kBK][S]
  __nv_bfloat16* vs = ks + 2 * kBK * S;                             // [2][kBK][S]

  const int b = blockIdx.z, h = blockIdx.y;
  const int64_t s0 = offsets[b];
  const int len = offsets[b + 1] - offsets[b];
  const int q0 = blockIdx.x * BQ;
  if (q0 >= len) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const int g = lane >> 2, tig = lane & 3;
  const int64_t C = static_cast<int64_t>(NH) * HD, ld3 = 3 * C;
  const __nv_bfloat16* base = qkv + s0 * ld3 + static_cast<int64_t>(h) * HD;

  load_tile<HD, BQ>(qs, base + q0 * ld3, ld3, len - q0);
  load_tile<HD, kBK>(ks, base + C, ld3, len);
  load_tile<HD, kBK>(vs, base + 2 * C, ld3, len);
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();

  // This warp's 16·MT query rows as A fragments, one per row tile and 16-wide k-step.
  uint32_t qf[MT][KS][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    const int r = warp * WR + mt * 16 + (lane & 15), c = (lane >> 4) * 8;
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) ldmatrix_x4(qf[mt][kk], smem_addr(qs + r * S + kk * 16 + c));
  }

  float o[MT][DT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int dt = 0; dt < DT; ++dt) o[mt][dt][0] = o[mt][dt][1] = o[mt][dt][2] = o[mt][dt][3] = 0.f;
  // Per row tile, rows g and g+8 of it: running max (exp2 domain), this thread's part of the
  // row sums, and the sequence-local row.
  float m[MT][2], l[MT][2];
  int row[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    m[mt][0] = m[mt][1] = -INFINITY;
    l[mt][0] = l[mt][1] = 0.f;
    row[mt][0] = q0 + warp * WR + mt * 16 + g;
    row[mt][1] = row[mt][0] + 8;
  }

  const int ntiles = (len + kBK - 1) / kBK;
  for (int t = 0; t < ntiles; ++t) {
    const int stage = t & 1;
    if (t + 1 < ntiles) {  // prefetch the next tile into the other stage
      const int k0n = (t + 1) * kBK;
      load_tile<HD, kBK>(ks + (stage ^ 1) * kBK * S, base + k0n * ld3 + C, ld3, len - k0n);
      load_tile<HD, kBK>(vs + (stage ^ 1) * kBK * S, base + k0n * ld3 + 2 * C, ld3, len - k0n);
      cp_async_commit();
    }
    const __nv_bfloat16* kt = ks + stage * kBK * S;
    const __nv_bfloat16* vt = vs + stage * kBK * S;
    const int k0 = t * kBK;

    // S = Q Kᵀ: 8 n-tiles of 8 keys per row tile; each K fragment serves every row tile.
    float s[MT][kBK / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kBK / 8; ++nt) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.f;
#pragma unroll
    for (int np = 0; np < kBK / 16; ++np) {
      const int key = np * 16 + (lane & 7) + ((lane >> 4) << 3);
      const int dim = ((lane >> 3) & 1) * 8;
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) {
        uint32_t bfr[4];
        ldmatrix_x4(bfr, smem_addr(kt + key * S + kk * 16 + dim));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_bf16(s[mt][2 * np], qf[mt][kk], bfr[0], bfr[1]);
          mma_bf16(s[mt][2 * np + 1], qf[mt][kk], bfr[2], bfr[3]);
        }
      }
    }

    // Mask keys past the sequence, scale into the exp2 domain, online softmax.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      float tmax0 = -INFINITY, tmax1 = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < kBK / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = k0 + nt * 8 + 2 * tig + (e & 1);
          s[mt][nt][e] = key < len ? s[mt][nt][e] * scale_log2 : -INFINITY;
        }
        tmax0 = fmaxf(tmax0, fmaxf(s[mt][nt][0], s[mt][nt][1]));
        tmax1 = fmaxf(tmax1, fmaxf(s[mt][nt][2], s[mt][nt][3]));
      }
      tmax0 = fmaxf(tmax0, __shfl_xor_sync(0xffffffffu, tmax0, 1));
      tmax0 = fmaxf(tmax0, __shfl_xor_sync(0xffffffffu, tmax0, 2));
      tmax1 = fmaxf(tmax1, __shfl_xor_sync(0xffffffffu, tmax1, 1));
      tmax1 = fmaxf(tmax1, __shfl_xor_sync(0xffffffffu, tmax1, 2));
      const float mn0 = fmaxf(m[mt][0], tmax0), mn1 = fmaxf(m[mt][1], tmax1);
      const float c0 = fast_exp2(m[mt][0] - mn0), c1 = fast_exp2(m[mt][1] - mn1);
      m[mt][0] = mn0;
      m[mt][1] = mn1;
      l[mt][0] *= c0;
      l[mt][1] *= c1;
#pragma unroll
      for (int dt = 0; dt < DT; ++dt) {
        o[mt][dt][0] *= c0;
        o[mt][dt][1] *= c0;
        o[mt][dt][2] *= c1;
        o[mt][dt][3] *= c1;
      }
#pragma unroll
      for (int nt = 0; nt < kBK / 8; ++nt) {
        s[mt][nt][0] = fast_exp2(s[mt][nt][0] - mn0);
        s[mt][nt][1] = fast_exp2(s[mt][nt][1] - mn0);
        s[mt][nt][2] = fast_exp2(s[mt][nt][2] - mn1);
        s[mt][nt][3] = fast_exp2(s[mt][nt][3] - mn1);
        l[mt][0] += s[mt][nt][0] + s[mt][nt][1];
        l[mt][1] += s[mt][nt][2] + s[mt][nt][3];
      }
      if (p > 0.f) {  // dropout on P after the row sums (the softmax is of the undropped scores)
#pragma unroll
        for (int nt = 0; nt < kBK / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = k0 + nt * 8 + 2 * tig + (e & 1);
            const int qrow = row[mt][e >> 1];
            if (key < len && qrow < len) {
              const uint64_t idx = (static_cast<uint64_t>(h) * Ttot + static_cast<uint64_t>(s0 + qrow)) * Ttot +
                                   static_cast<uint64_t>(s0 + key);
              s[mt][nt][e] = dropout_keep(seed, stream, idx, p) ? s[mt][nt][e] * keep_scale : 0.f;
            }
          }
      }
    }

    // O += P V: P's accumulator layout is the A-fragment layout, 16 keys per k-step; each V
    // fragment serves every row tile.
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
      uint32_t pf[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        pf[mt][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        pf[mt][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        pf[mt][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        pf[mt][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
      const int key = kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3);
      const int dim = (lane >> 4) * 8;
#pragma unroll
      for (int dp = 0; dp < DT / 2; ++dp) {
        uint32_t bfr[4];
        ldmatrix_x4_trans(bfr, smem_addr(vt + key * S + dp * 16 + dim));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_bf16(o[mt][2 * dp], pf[mt], bfr[0], bfr[1]);
          mma_bf16(o[mt][2 * dp + 1], pf[mt], bfr[2], bfr[3]);
        }
      }
    }
    cp_async_wait_all();
    __syncthreads();  // the next tile has landed; this stage may be overwritten
  }

#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float sum = l[mt][half];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const int r = row[mt][half];
      if (r >= len) continue;
      const float inv = 1.0f / sum;
      OutT* y = out + (s0 + r) * C + static_cast<int64_t>(h) * HD + 2 * tig;
#pragma unroll
      for (int dt = 0; dt < DT; ++dt) store_pair(y + dt * 8, o[mt][dt][2 * half] * inv, o[mt][dt][2 * half + 1] * inv);
      if (tig == 0 && lse)
        lse[static_cast<int64_t>(h) * Ttot + s0 + r] = (m[mt][half] + __log2f(sum)) * 0.69314718055994531f;
    }
  }
}

// ---- launch helpers ------------------------------------------------------------------------

struct Launch {
  void* out;
  float* lse;
  const void* qkv;
  const Offsets* o;
  int NH, HD;
  float p, keep_scale;
  uint64_t seed, stream;
};

template <int HD, int MT, class OutT>
Status launch_mma(const Ctx& c, const Launch& a) {
  constexpr size_t smem = mma_smem_bytes<HD, MT>();
  auto kernel = attention_mma_kernel<HD, MT, OutT>;
  if (smem > 48 * 1024) {
    if (smem > c.max_smem_optin)
      return Status(Code::kUnsupported, strformat("attention_forward: needs %zu bytes of shared memory", smem));
    static std::atomic<uint64_t> configured{0};
    ELMO_RETURN_IF_ERROR(allow_dynamic_smem(kernel, smem, &configured, "attention_forward: raise the shared memory limit"));
  }
  const float scale_log2 = static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(HD)));
  constexpr int BQ = kBQ * MT;
  dim3 grid(static_cast<unsigned>((a.o->max_len + BQ - 1) / BQ), static_cast<unsigned>(a.NH),
            static_cast<unsigned>(a.o->B));
  kernel<<<grid, kWarps * 32, smem, c.stream>>>(static_cast<OutT*>(a.out), a.lse,
                                                static_cast<const __nv_bfloat16*>(a.qkv), a.o->dev, a.o->T, a.NH,
                                                scale_log2, a.p, a.keep_scale, a.seed, a.stream);
  return launch_status("attention_forward");
}

// ELMO_CUDA_ATTN_ROWS in the environment (read once): 16, 32, or "auto" (-1); 0 when unset or
// anything else.
int attention_rows_env() {
  static const int rows = [] {
    const char* v = std::getenv("ELMO_CUDA_ATTN_ROWS");
    if (v == nullptr) return 0;
    if (std::strcmp(v, "16") == 0) return 16;
    if (std::strcmp(v, "32") == 0) return 32;
    return std::strcmp(v, "auto") == 0 ? -1 : 0;
  }();
  return rows;
}

template <class OutT>
Status dispatch_mma(const Ctx& c, const Launch& a) {
  const bool two = attention_rows_per_warp(c.attention_rows, a.HD, a.o->max_len) == 32;
  switch (a.HD) {
    case 32: return two ? launch_mma<32, 2, OutT>(c, a) : launch_mma<32, 1, OutT>(c, a);
    case 64: return two ? launch_mma<64, 2, OutT>(c, a) : launch_mma<64, 1, OutT>(c, a);
    case 128: return launch_mma<128, 1, OutT>(c, a);
    default: return Status(Code::kUnsupported, "attention_forward: no tensor-core kernel for this head size");
  }
}

template <class T>
Status launch_generic(const Ctx& c, const Launch& a) {
  const size_t smem = generic_smem_bytes(a.HD);
  auto kernel = attention_generic_kernel<T>;
  if (smem > 48 * 1024) {
    if (smem > c.max_smem_optin)
      return Status(Code::kUnsupported, strformat("attention_forward: needs %zu bytes of shared memory", smem));
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return Status(Code::kCuda, strformat("attention_forward: %s", cudaGetErrorString(e)));
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(a.HD)));
  dim3 grid(static_cast<unsigned>((a.o->max_len + kGenRows - 1) / kGenRows), static_cast<unsigned>(a.NH),
            static_cast<unsigned>(a.o->B));
  kernel<<<grid, kGenRows * 32, smem, c.stream>>>(static_cast<T*>(a.out), a.lse, static_cast<const T*>(a.qkv),
                                                  a.o->dev, a.o->T, a.NH, a.HD, scale, a.p, a.keep_scale, a.seed,
                                                  a.stream);
  return launch_status("attention_forward");
}

}  // namespace

bool attention_tensor_core_head_size(int HD) { return HD == 32 || HD == 64 || HD == 128; }

int attention_rows_per_warp(int requested, int HD, int max_len) {
  if (requested == 0) requested = attention_rows_env();
  if (HD > 64) return 16;  // 32 rows' accumulators and fragments would not fit in registers
  if (requested == -1) return max_len >= 256 ? 32 : 16;
  return requested == 32 ? 32 : 16;
}

// ---- launchers -------------------------------------------------------------------------------

Status attention_forward(const Ctx& c, Tensor out, Tensor lse, Tensor qkv, const Offsets& o, int NH, int HD,
                         float dropout_p, uint64_t seed, uint64_t stream) {
  const char* op = "attention_forward";
  ELMO_CHECK(NH >= 1, Code::kInput, "%s: NH must be >= 1, received %d", op, NH);
  ELMO_CHECK(HD >= 1 && HD <= kMaxHD, Code::kInput, "%s: HD must be in [1, %d], received %d", op, kMaxHD, HD);
  ELMO_CHECK(dropout_p >= 0.f && dropout_p < 1.f, Code::kInput, "%s: dropout_p must be in [0, 1), received %g", op,
             static_cast<double>(dropout_p));
  ELMO_CHECK(o.host != nullptr && o.B >= 1, Code::kInput, "%s: offsets are missing", op);
  ELMO_CHECK(!qkv.empty() && (qkv.dtype == DType::kF32 || qkv.dtype == DType::kBF16), Code::kDType,
             "%s: qkv must be f32 or bf16", op);
  const int64_t T = o.T, C = static_cast<int64_t>(NH) * HD;
  ELMO_RETURN_IF_ERROR(check_tensor(qkv, "attention_forward: qkv", qkv.dtype, {T, 3 * C}));
  ELMO_RETURN_IF_ERROR(check_tensor(out, "attention_forward: out", qkv.dtype, {T, C}));
  ELMO_RETURN_IF_ERROR(check_optional(lse, "attention_forward: lse", DType::kF32, {NH, T}));
  ELMO_CHECK(out.data != qkv.data, Code::kInput, "%s: out must not alias qkv", op);
  ELMO_CHECK(o.B <= 65535, Code::kInput, "%s: at most 65535 sequences per call, received %d", op, o.B);
  if (T == 0 || o.max_len == 0) return Status::ok();

  Launch a{out.data, lse.empty() ? nullptr : lse.f32(), qkv.data, &o, NH, HD, dropout_p,
           dropout_p > 0.f ? 1.0f / (1.0f - dropout_p) : 1.0f, seed, stream};
  const bool aligned = (reinterpret_cast<uintptr_t>(qkv.data) % 16) == 0;
  if (qkv.dtype == DType::kBF16) {
    if (attention_tensor_core_head_size(HD) && aligned && (reinterpret_cast<uintptr_t>(out.data) % 4) == 0)
      return dispatch_mma<__nv_bfloat16>(c, a);
    return launch_generic<__nv_bfloat16>(c, a);
  }
  if (c.compute == DType::kBF16 && attention_tensor_core_head_size(HD) && (reinterpret_cast<uintptr_t>(out.data) % 8) == 0) {
    // f32 tensors, bf16 compute: round q/k/v to bf16 once, keep the output f32.
    void* buf = nullptr;
    ELMO_RETURN_IF_ERROR(c.scratch->device(static_cast<size_t>(qkv.numel()) * 2, &buf));
    Tensor q16(buf, DType::kBF16, {T, 3 * C}, Device::kCuda);
    ELMO_RETURN_IF_ERROR(convert(c, q16, qkv));
    a.qkv = buf;
    return dispatch_mma<float>(c, a);
  }
  return launch_generic<float>(c, a);
}

Status attention_backward(const Ctx& c, Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                          const Offsets& o, int NH, int HD, float dropout_p, uint64_t seed, uint64_t stream) {
  (void)c, (void)dqkv, (void)dout, (void)qkv, (void)out, (void)lse, (void)o, (void)NH, (void)HD, (void)dropout_p,
      (void)seed, (void)stream;
  return Status(Code::kUnsupported, "attention_backward: not yet on CUDA");
}

}  // namespace elmo::cuda
