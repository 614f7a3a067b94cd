// STUB: replaced by the real kernel.
#include "cpu/ops.h"
#pragma GCC diagnostic ignored "-Wunused-parameter"

namespace elmo::cpu {

Status gemm(const Ctx& c, Tensor out, Tensor pre_gelu, Tensor a, Tensor b, Tensor bias, Tensor residual, GemmOp op, Epilogue ep, bool accumulate) { return Status(Code::kUnsupported, "gemm: not implemented"); }
Status bias_backward(const Ctx& c, Tensor dbias, Tensor dout) { return Status(Code::kUnsupported, "bias_backward: not implemented"); }
void sgemm(const Ctx& c, GemmOp op, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {}

}  // namespace elmo::cpu
