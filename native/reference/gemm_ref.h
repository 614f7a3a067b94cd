// float64 reference of the GEMM ops (test-only). Same semantics as elmo/backend.h:
//   out[M,N] = op(a) . op(b); epilogue: v += bias[n]; pre_gelu = v, v = gelu_erf(v);
//   v += residual[m,n]; out = accumulate ? out + v : v.
//   bias_backward: dbias[n] += sum_m dout[m,n].
#pragma once

#include <cmath>
#include <cstdint>

#include "elmo/backend.h"

namespace elmo::ref {

inline double gelu(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

// C[m*ldc + n] = alpha * sum_k opA(m,k) opB(k,n) + beta * C (beta == 0: C is not read).
// opA(m,k) = NN/NT: A[m*lda + k], TN: A[k*lda + m]; opB(k,n) = NN/TN: B[k*ldb + n], NT: B[n*ldb + k].
template <typename TA, typename TB, typename TC>
void sgemm(GemmOp op, int64_t M, int64_t N, int64_t K, double alpha, const TA* A, int64_t lda, const TB* B,
           int64_t ldb, double beta, TC* C, int64_t ldc) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double x = op == GemmOp::kTN ? A[k * lda + m] : A[m * lda + k];
        const double y = op == GemmOp::kNT ? B[n * ldb + k] : B[k * ldb + n];
        s += x * y;
      }
      const double c = beta == 0 ? 0.0 : beta * static_cast<double>(C[m * ldc + n]);
      C[m * ldc + n] = static_cast<TC>(alpha * s + c);
    }
}

// out [M,N] (holds the old values when accumulate); pre_gelu [M,N] or null; bias [N] or null;
// residual [M,N] or null. a, b as in GemmOp.
inline void gemm(double* out, double* pre_gelu, const double* a, const double* b, const double* bias,
                 const double* residual, GemmOp op, Epilogue ep, bool accumulate, int64_t M, int64_t N, int64_t K) {
  const int64_t lda = op == GemmOp::kTN ? M : K, ldb = op == GemmOp::kNT ? K : N;
  const bool use_bias = ep == Epilogue::kBias || ep == Epilogue::kBiasGelu || ep == Epilogue::kBiasResidual;
  const bool use_res = ep == Epilogue::kResidual || ep == Epilogue::kBiasResidual;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double v = 0;
      sgemm(op, 1, 1, K, 1.0, op == GemmOp::kTN ? a + m : a + m * lda, lda,
            op == GemmOp::kNT ? b + n * ldb : b + n, ldb, 0.0, &v, 1);
      if (use_bias) v += bias[n];
      if (ep == Epilogue::kBiasGelu) {
        if (pre_gelu) pre_gelu[m * N + n] = v;
        v = gelu(v);
      }
      if (use_res) v += residual[m * N + n];
      out[m * N + n] = accumulate ? out[m * N + n] + v : v;
    }
}

// dbias [N] += column sums of dout [M,N].
inline void bias_backward(double* dbias, const double* dout, int64_t M, int64_t N) {
  for (int64_t n = 0; n < N; ++n) {
    double s = 0;
    for (int64_t m = 0; m < M; ++m) s += dout[m * N + n];
    dbias[n] += s;
  }
}

}  // namespace elmo::ref
