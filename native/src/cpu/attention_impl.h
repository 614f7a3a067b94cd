// The fused attention tile algorithm, written once over a vector type V and instantiated per
// ISA (scalar in attention.cpp, AVX2 in attention_avx2.cpp, AVX-512 in attention_avx512.cpp).
// Everything here has internal linkage: each ISA unit gets its own copy, compiled with its own
// flags. V provides:
//   R (register type), W (floats per R), MR (rows per micro-tile), NR (max R per micro-tile row),
//   zero, set1, load, store (unaligned), fma(a, b, c) = a*b + c, mul, sub, max, exp.
//
// Layout. Scores are kept key-major: ST[j][i] = q_i · k_j * scale for key j, query i, so that a
// softmax statistic of query i (running max, sum) is one lane of a vector and every softmax
// step is vertical (no horizontal reductions). All GEMMs are one micro-kernel: C (+)= A · B with
// A broadcast element-wise (A or Aᵀ, row-major) and B read as vectors along its rows.
//
// Forward, per (sequence, head, query tile of kTile rows): for each key tile in order,
//   ST = Kp · Qt;  m' = max(m, colmax ST);  P = exp(ST - m');  l = l e^(m-m') + colsum P;
//   O = O e^(m-m') + (P ⊙ dropout)ᵀ · V;  then out = O / l, lse = m + log l.
// Backward, per (sequence, head): query tiles outer, key tiles inner, both ascending. dQ of the
// query tile accumulates in scratch; dK, dV of each key tile are added to dqkv in query-tile
// order. One thread owns an item, so the summation order never depends on the thread count.
//   P = exp(ST - lse), Pd = P ⊙ dropout, dV += Pdᵀ dO, dPd = dO Vᵀ, dP = dPd ⊙ dropout,
//   dS = P ⊙ (dP - D) with D_i = dO_i · out_i, dK += dSᵀ Q·scale, dQ += dS K·scale.
#pragma once

#include <cstdint>

#include "cpu/attention_kernels.h"

namespace elmo::cpu::attn {
namespace {

inline int round_up(int x, int m) { return (x + m - 1) / m * m; }
inline int imin(int a, int b) { return a < b ? a : b; }
inline int imax(int a, int b) { return a > b ? a : b; }

// C[MR, NV*W] (+)= A[MR, K] · B[K, NV*W].  A element (r, k) is A[r*lda + k], or A[k*lda + r]
// when TA (A stored transposed). B rows are ldb apart. C rows are ldc apart.
template <class V, bool TA, int NV>
inline void micro_tile(float* C, int ldc, const float* A, int lda, const float* B, int ldb, int K, bool acc) {
  using R = typename V::R;
  constexpr int MR = V::MR, W = V::W;
  R c[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int n = 0; n < NV; ++n) c[r][n] = acc ? V::load(C + r * ldc + n * W) : V::zero();
  for (int k = 0; k < K; ++k) {
    R b[NV];
    for (int n = 0; n < NV; ++n) b[n] = V::load(B + k * ldb + n * W);
    for (int r = 0; r < MR; ++r) {
      const R x = V::set1(TA ? A[k * lda + r] : A[r * lda + k]);
      for (int n = 0; n < NV; ++n) c[r][n] = V::fma(x, b[n], c[r][n]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int n = 0; n < NV; ++n) V::store(C + r * ldc + n * W, c[r][n]);
}

template <class V, bool TA, int NV>
inline void micro_dispatch(int nv, float* C, int ldc, const float* A, int lda, const float* B, int ldb, int K,
                           bool acc) {
  if constexpr (NV >= 1) {
    if (nv == NV) return micro_tile<V, TA, NV>(C, ldc, A, lda, B, ldb, K, acc);
    micro_dispatch<V, TA, NV - 1>(nv, C, ldc, A, lda, B, ldb, K, acc);
  }
}

// C[M, N] (+)= op(A)[M, K] · B[K, N]; M a multiple of MR, N a multiple of W. Within a C element
// the k-sum runs in ascending order (one FMA chain), whatever M and N.
template <class V, bool TA>
void gemm_tile(float* C, int ldc, const float* A, int lda, const float* B, int ldb, int M, int N, int K, bool acc) {
  for (int i = 0; i < M; i += V::MR) {
    const float* Ai = TA ? A + i : A + i * lda;
    float* Ci = C + i * ldc;
    for (int j = 0; j < N;) {
      const int nv = imin(V::NR, (N - j) / V::W);
      micro_dispatch<V, TA, V::NR>(nv, Ci + j, ldc, Ai, lda, B + j, ldb, K, acc);
      j += nv * V::W;
    }
  }
}

// dst[r][c] (ldd) = src[r][c] * scale for r < rows, c < cols (src rows lds apart); zero for
// cols <= c < cols_pad and for rows <= r < rows_pad.
inline void pack_rows(float* dst, int ldd, const float* src, int64_t lds, int rows, int rows_pad, int cols,
                      int cols_pad, float scale) {
  for (int r = 0; r < rows_pad; ++r) {
    float* d = dst + r * ldd;
    if (r < rows) {
      const float* s = src + r * lds;
      for (int c = 0; c < cols; ++c) d[c] = s[c] * scale;
      for (int c = cols; c < cols_pad; ++c) d[c] = 0.0f;
    } else {
      for (int c = 0; c < cols_pad; ++c) d[c] = 0.0f;
    }
  }
}

// Transposed pack: dst[c][r] (ldd) = src[r][c] * scale for r < rows, c < cols; zero for
// rows <= r < rows_pad.
inline void pack_cols(float* dst, int ldd, const float* src, int64_t lds, int rows, int rows_pad, int cols,
                      float scale) {
  for (int r = 0; r < rows; ++r) {
    const float* s = src + r * lds;
    for (int c = 0; c < cols; ++c) dst[c * ldd + r] = s[c] * scale;
  }
  for (int c = 0; c < cols; ++c)
    for (int r = rows; r < rows_pad; ++r) dst[c * ldd + r] = 0.0f;
}

// Asks for rows x cols floats (rows ld apart) to be brought into cache. Rows of a head are
// 3C floats apart, one page or more, where the hardware prefetchers do not follow.
inline void prefetch_rows(const float* base, int64_t ld, int rows, int cols) {
  for (int r = 0; r < rows; ++r) {
    const float* row = base + r * ld;
    for (int c = 0; c < cols; c += 16) __builtin_prefetch(row + c);
    __builtin_prefetch(row + cols - 1);
  }
}

// dst rows (ldd) = or += tile rows (ldt) * scale, rows x cols.
inline void store_rows(float* dst, int64_t ldd, const float* tile, int ldt, int rows, int cols, float scale,
                       bool add) {
  for (int r = 0; r < rows; ++r) {
    float* d = dst + r * ldd;
    const float* t = tile + r * ldt;
    if (add) {
      for (int c = 0; c < cols; ++c) d[c] += t[c] * scale;
    } else {
      for (int c = 0; c < cols; ++c) d[c] = t[c] * scale;
    }
  }
}

template <class V>
void forward_item(const Args& a, int b, int h, int qb, float* scratch) {
  using R = typename V::R;
  constexpr int W = V::W, L = kTile;
  const int HD = a.HD, HDp = padded_hd(HD), HDw = round_up(HD, W);
  const int64_t C = int64_t(a.NH) * HD, ld = 3 * C;
  const int64_t start = a.offsets[b];
  const int len = a.offsets[b + 1] - a.offsets[b];
  const int q0 = qb * L, qv = imin(L, len - q0);
  const int LQ = round_up(qv, imax(W, V::MR));  // query lanes computed (>= qv)
  const float scale = 1.0f / __builtin_sqrtf(static_cast<float>(HD));

  float* Qt = scratch;             // (HD, L)   q * scale, transposed
  float* Kp = Qt + L * HDp;        // (L, HDp)  key tile rows
  float* Vp = Kp + L * HDp;        // (L, HDp)  value tile rows, zero-padded to HDw
  float* O = Vp + L * HDp;         // (L, HDp)  unnormalized output rows
  float* ST = O + L * HDp;         // (L, L)    scores, then probabilities, key-major
  float* MkT = ST + L * L;         // (L, L)    dropout multipliers, key-major
  float* m = MkT + L * L;          // (L)       running max per query
  float* l = m + L;                // (L)       running sum per query
  float* alpha = l + L;            // (L)       rescale factor of this key tile

  const float* q = a.qkv + (start + q0) * ld + int64_t(h) * HD;
  const float* kbase = a.qkv + start * ld + C + int64_t(h) * HD;
  prefetch_rows(kbase, ld, imin(L, len), HD);
  prefetch_rows(kbase + C, ld, imin(L, len), HD);
  pack_cols(Qt, L, q, ld, qv, LQ, HD, scale);
  for (int i = 0; i < LQ; ++i) {
    m[i] = -__builtin_inff();
    l[i] = 0.0f;
    for (int d = 0; d < HDw; ++d) O[i * HDp + d] = 0.0f;
  }

  const int nkb = (len + L - 1) / L;
  for (int kb = 0; kb < nkb; ++kb) {
    const int k0 = kb * L, kv = imin(L, len - k0), KM = round_up(kv, V::MR);
    const float* k = kbase + k0 * ld;
    pack_rows(Kp, HDp, k, ld, kv, KM, HD, HD, 1.0f);
    pack_rows(Vp, HDp, k + C, ld, kv, kv, HD, HDw, 1.0f);
    if (kb + 1 < nkb) {
      prefetch_rows(k + L * ld, ld, imin(L, len - k0 - L), HD);
      prefetch_rows(k + L * ld + C, ld, imin(L, len - k0 - L), HD);
    }
    gemm_tile<V, false>(ST, L, Kp, HDp, Qt, L, KM, LQ, HD, false);

    // Online softmax, one query per lane.
    for (int i = 0; i < LQ; i += W) {
      R mx = V::load(ST + i);
      for (int j = 1; j < kv; ++j) mx = V::max(mx, V::load(ST + j * L + i));
      const R mold = V::load(m + i);
      const R mnew = V::max(mold, mx);
      R sum = V::zero();
      for (int j = 0; j < kv; ++j) {
        const R pj = V::exp(V::sub(V::load(ST + j * L + i), mnew));
        V::store(ST + j * L + i, pj);
        sum = V::add(sum, pj);
      }
      const R al = V::exp(V::sub(mold, mnew));  // exp(-inf) = 0 on the first tile
      V::store(alpha + i, al);
      V::store(l + i, V::fma(V::load(l + i), al, sum));
      V::store(m + i, mnew);
    }
    if (a.p > 0.0f) {
      dropout_tile_t(MkT, L, kv, qv, LQ, start + q0 + 0, start + k0, h, a);
      for (int j = 0; j < kv; ++j)
        for (int i = 0; i < LQ; i += W) V::store(ST + j * L + i, V::mul(V::load(ST + j * L + i), V::load(MkT + j * L + i)));
    }
    if (kb > 0) {
      for (int i = 0; i < LQ; ++i) {
        const R al = V::set1(alpha[i]);
        for (int d = 0; d < HDw; d += W) V::store(O + i * HDp + d, V::mul(V::load(O + i * HDp + d), al));
      }
    }
    // O[i, :] += sum_j ST[j, i] V[j, :]
    gemm_tile<V, true>(O, HDp, ST, L, Vp, HDp, LQ, HDw, kv, true);
  }

  float* out = a.out + (start + q0) * C + int64_t(h) * HD;
  float* lse = a.lse + int64_t(h) * a.T + start + q0;
  for (int i = 0; i < qv; ++i) {
    const float inv = 1.0f / l[i];
    for (int d = 0; d < HD; ++d) out[i * C + d] = O[i * HDp + d] * inv;
    lse[i] = m[i] + __builtin_logf(l[i]);
  }
}

template <class V>
void backward_item(const Args& a, int b, int h, float* scratch) {
  using R = typename V::R;
  constexpr int W = V::W, L = kTile;
  const int HD = a.HD, HDp = padded_hd(HD), HDw = round_up(HD, W);
  const int64_t C = int64_t(a.NH) * HD, ld = 3 * C;
  const int64_t start = a.offsets[b];
  const int len = a.offsets[b + 1] - a.offsets[b];
  const float scale = 1.0f / __builtin_sqrtf(static_cast<float>(HD));
  const bool dropout = a.p > 0.0f;

  float* Qt = scratch;        // (HD, L)  q * scale, transposed
  float* dOt = Qt + L * HDp;  // (HD, L)  dout, transposed
  float* Qs = dOt + L * HDp;  // (L, HDp) q * scale rows
  float* dOp = Qs + L * HDp;  // (L, HDp) dout rows
  float* Kp = dOp + L * HDp;  // (L, HDp) key rows
  float* Vp = Kp + L * HDp;   // (L, HDp) value rows
  float* dQ = Vp + L * HDp;   // (L, HDp) dQ of the query tile (unscaled)
  float* tile = dQ + L * HDp; // (L, HDp) dK or dV contribution of one tile pair
  float* PT = tile + L * HDp; // (L, L)   probabilities, key-major
  float* PdT = PT + L * L;    // (L, L)   probabilities after dropout
  float* dPT = PdT + L * L;   // (L, L)   dPd, then dS
  float* MkT = dPT + L * L;   // (L, L)   dropout multipliers
  float* D = MkT + L * L;     // (L)      dout_i · out_i
  float* lse = D + L;         // (L)      saved log-sum-exp, +inf on padded lanes
  if (!dropout) PdT = PT;

  const float* qbase = a.qkv + start * ld + int64_t(h) * HD;
  const float* kbase = qbase + C;
  const float* vbase = qbase + 2 * C;
  const float* dobase = a.dout + start * C + int64_t(h) * HD;
  const float* obase = a.o + start * C + int64_t(h) * HD;
  float* dqbase = a.dqkv + start * ld + int64_t(h) * HD;
  float* dkbase = dqbase + C;
  float* dvbase = dqbase + 2 * C;

  const int nb = (len + L - 1) / L;
  prefetch_rows(kbase, ld, imin(L, len), HD);
  prefetch_rows(vbase, ld, imin(L, len), HD);
  for (int qb = 0; qb < nb; ++qb) {
    const int q0 = qb * L, qv = imin(L, len - q0);
    const int LQ = round_up(qv, imax(W, V::MR));
    pack_cols(Qt, L, qbase + q0 * ld, ld, qv, LQ, HD, scale);
    pack_cols(dOt, L, dobase + q0 * C, C, qv, LQ, HD, 1.0f);
    pack_rows(Qs, HDp, qbase + q0 * ld, ld, qv, qv, HD, HDw, scale);
    pack_rows(dOp, HDp, dobase + q0 * C, C, qv, qv, HD, HDw, 1.0f);
    for (int i = 0; i < LQ; ++i) {
      if (i < qv) {
        const float* o = obase + (q0 + i) * C;
        const float* g = dobase + (q0 + i) * C;
        float s = 0.0f;
        for (int d = 0; d < HD; ++d) s += g[d] * o[d];
        D[i] = s;
        lse[i] = a.lse_in[int64_t(h) * a.T + start + q0 + i];
      } else {
        D[i] = 0.0f;
        lse[i] = __builtin_inff();
      }
    }

    if (qb + 1 < nb) {
      const int q1 = q0 + L, qn = imin(L, len - q1);
      prefetch_rows(qbase + q1 * ld, ld, qn, HD);
      prefetch_rows(dobase + q1 * C, C, qn, HD);
      prefetch_rows(obase + q1 * C, C, qn, HD);
    }
    for (int kb = 0; kb < nb; ++kb) {
      const int k0 = kb * L, kv = imin(L, len - k0), KM = round_up(kv, V::MR);
      if (qb == 0 && kb + 1 < nb) {  // first sweep: keys and values come from memory
        prefetch_rows(kbase + (k0 + L) * ld, ld, imin(L, len - k0 - L), HD);
        prefetch_rows(vbase + (k0 + L) * ld, ld, imin(L, len - k0 - L), HD);
      }
      pack_rows(Kp, HDp, kbase + k0 * ld, ld, kv, KM, HD, HDw, 1.0f);
      pack_rows(Vp, HDp, vbase + k0 * ld, ld, kv, KM, HD, HD, 1.0f);

      // Same scores as the forward (same packing, same kernel), probabilities from the saved lse.
      gemm_tile<V, false>(PT, L, Kp, HDp, Qt, L, KM, LQ, HD, false);
      for (int j = 0; j < kv; ++j)
        for (int i = 0; i < LQ; i += W)
          V::store(PT + j * L + i, V::exp(V::sub(V::load(PT + j * L + i), V::load(lse + i))));
      if (dropout) {
        dropout_tile_t(MkT, L, kv, qv, LQ, start + q0, start + k0, h, a);
        for (int j = 0; j < kv; ++j)
          for (int i = 0; i < LQ; i += W)
            V::store(PdT + j * L + i, V::mul(V::load(PT + j * L + i), V::load(MkT + j * L + i)));
      }
      // dV[j, :] += sum_i Pd[i, j] dO[i, :]
      gemm_tile<V, false>(tile, HDp, PdT, L, dOp, HDp, KM, HDw, qv, false);
      store_rows(dvbase + k0 * ld, ld, tile, HDp, kv, HD, 1.0f, qb > 0);
      // dPd[i, j] = dO[i, :] · V[j, :];  dS = P (dPd ⊙ dropout - D)
      gemm_tile<V, false>(dPT, L, Vp, HDp, dOt, L, KM, LQ, HD, false);
      for (int j = 0; j < kv; ++j) {
        for (int i = 0; i < LQ; i += W) {
          R dp = V::load(dPT + j * L + i);
          if (dropout) dp = V::mul(dp, V::load(MkT + j * L + i));
          V::store(dPT + j * L + i, V::mul(V::load(PT + j * L + i), V::sub(dp, V::load(D + i))));
        }
      }
      // dK[j, :] += sum_i dS[i, j] q[i, :] * scale
      gemm_tile<V, false>(tile, HDp, dPT, L, Qs, HDp, KM, HDw, qv, false);
      store_rows(dkbase + k0 * ld, ld, tile, HDp, kv, HD, 1.0f, qb > 0);
      // dQ[i, :] += sum_j dS[i, j] K[j, :]
      gemm_tile<V, true>(dQ, HDp, dPT, L, Kp, HDp, LQ, HDw, kv, kb > 0);
    }
    store_rows(dqbase + q0 * ld, ld, dQ, HDp, qv, HD, scale, false);
  }
}

}  // namespace
}  // namespace elmo::cpu::attn
