// Float64 reference of the fused attention (test-only): the math of backend.h written the
// naive way, materializing P per (sequence, head). Same Philox dropout mask as every backend.
//
//   qkv (T, 3C), C = NH*HD; out (T, C); lse (NH, T); dqkv (T, 3C).
//   S_ij = q_i · k_j / sqrt(HD) (keys of the same sequence), P = softmax_j(S),
//   Pd_ij = P_ij * keep_ij / (1-p), out_i = Σ_j Pd_ij v_j, lse_i = log Σ_j exp(S_ij).
// The backward uses the softmax Jacobian directly (dS_ij = P_ij (dP_ij - Σ_k P_ik dP_ik)),
// not the dout·out identity of the fused kernels, so it checks that identity too.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "elmo/philox.h"

namespace elmo::ref {

// Dropout multiplier of element (h, i, j), i and j packed row indices: keep / (1-p) or 0.
inline double attention_dropout(int h, int64_t i, int64_t j, int64_t T, float p, uint64_t seed, uint64_t stream) {
  if (p <= 0.0f) return 1.0;
  const uint64_t e = (static_cast<uint64_t>(h) * T + i) * T + j;
  return dropout_keep(seed, stream, e, p) ? 1.0 / (1.0 - static_cast<double>(p)) : 0.0;
}

// Probabilities P (len, len) of sequence [s0, s0+len) and head h, plus the row log-sum-exp.
inline void attention_probs_ref(std::vector<double>& P, std::vector<double>& lse, const double* qkv, int64_t s0,
                                int len, int NH, int HD, int h) {
  const int64_t C = int64_t(NH) * HD, ld = 3 * C;
  const double scale = 1.0 / std::sqrt(static_cast<double>(HD));
  P.assign(size_t(len) * len, 0.0);
  lse.assign(size_t(len), 0.0);
  for (int i = 0; i < len; ++i) {
    const double* q = qkv + (s0 + i) * ld + int64_t(h) * HD;
    double mx = -INFINITY;
    for (int j = 0; j < len; ++j) {
      const double* k = qkv + (s0 + j) * ld + C + int64_t(h) * HD;
      double s = 0;
      for (int d = 0; d < HD; ++d) s += q[d] * k[d];
      P[size_t(i) * len + j] = s * scale;
      mx = std::max(mx, s * scale);
    }
    double sum = 0;
    for (int j = 0; j < len; ++j) sum += std::exp(P[size_t(i) * len + j] - mx);
    for (int j = 0; j < len; ++j) P[size_t(i) * len + j] = std::exp(P[size_t(i) * len + j] - mx) / sum;
    lse[size_t(i)] = mx + std::log(sum);
  }
}

inline void attention_forward_ref(double* out, double* lse, const double* qkv, const int32_t* offsets, int B,
                                  int64_t T, int NH, int HD, float p, uint64_t seed, uint64_t stream) {
  const int64_t C = int64_t(NH) * HD, ld = 3 * C;
  std::vector<double> P, l;
  for (int b = 0; b < B; ++b) {
    const int64_t s0 = offsets[b];
    const int len = offsets[b + 1] - offsets[b];
    for (int h = 0; h < NH; ++h) {
      attention_probs_ref(P, l, qkv, s0, len, NH, HD, h);
      for (int i = 0; i < len; ++i) {
        lse[int64_t(h) * T + s0 + i] = l[size_t(i)];
        double* o = out + (s0 + i) * C + int64_t(h) * HD;
        for (int d = 0; d < HD; ++d) o[d] = 0;
        for (int j = 0; j < len; ++j) {
          const double pd = P[size_t(i) * len + j] * attention_dropout(h, s0 + i, s0 + j, T, p, seed, stream);
          const double* v = qkv + (s0 + j) * ld + 2 * C + int64_t(h) * HD;
          for (int d = 0; d < HD; ++d) o[d] += pd * v[d];
        }
      }
    }
  }
}

// dqkv (=) from dout, recomputing everything from qkv.
inline void attention_backward_ref(double* dqkv, const double* dout, const double* qkv, const int32_t* offsets,
                                   int B, int64_t T, int NH, int HD, float p, uint64_t seed, uint64_t stream) {
  const int64_t C = int64_t(NH) * HD, ld = 3 * C;
  const double scale = 1.0 / std::sqrt(static_cast<double>(HD));
  std::fill(dqkv, dqkv + T * ld, 0.0);
  std::vector<double> P, l, dP;
  for (int b = 0; b < B; ++b) {
    const int64_t s0 = offsets[b];
    const int len = offsets[b + 1] - offsets[b];
    for (int h = 0; h < NH; ++h) {
      attention_probs_ref(P, l, qkv, s0, len, NH, HD, h);
      dP.assign(size_t(len) * len, 0.0);
      for (int i = 0; i < len; ++i) {
        const double* g = dout + (s0 + i) * C + int64_t(h) * HD;
        for (int j = 0; j < len; ++j) {
          const double mk = attention_dropout(h, s0 + i, s0 + j, T, p, seed, stream);
          const double* v = qkv + (s0 + j) * ld + 2 * C + int64_t(h) * HD;
          double* dv = dqkv + (s0 + j) * ld + 2 * C + int64_t(h) * HD;
          double gv = 0;
          for (int d = 0; d < HD; ++d) {
            dv[d] += P[size_t(i) * len + j] * mk * g[d];
            gv += g[d] * v[d];
          }
          dP[size_t(i) * len + j] = gv * mk;
        }
      }
      for (int i = 0; i < len; ++i) {
        double rowdot = 0;
        for (int j = 0; j < len; ++j) rowdot += P[size_t(i) * len + j] * dP[size_t(i) * len + j];
        const double* q = qkv + (s0 + i) * ld + int64_t(h) * HD;
        double* dq = dqkv + (s0 + i) * ld + int64_t(h) * HD;
        for (int j = 0; j < len; ++j) {
          const double ds = P[size_t(i) * len + j] * (dP[size_t(i) * len + j] - rowdot) * scale;
          const double* k = qkv + (s0 + j) * ld + C + int64_t(h) * HD;
          double* dk = dqkv + (s0 + j) * ld + C + int64_t(h) * HD;
          for (int d = 0; d < HD; ++d) {
            dq[d] += ds * k[d];
            dk[d] += ds * q[d];
          }
        }
      }
    }
  }
}

}  // namespace elmo::ref
