// STUB: replaced by the real kernel.
#include "cpu/ops.h"
#pragma GCC diagnostic ignored "-Wunused-parameter"

namespace elmo::cpu {

Status layernorm_forward(const Ctx& c, Tensor out, Tensor sum_out, Tensor mean, Tensor rstd, Tensor inp, Tensor residual, Tensor weight, Tensor bias, float eps) { return Status(Code::kUnsupported, "layernorm_forward: not implemented"); }
Status layernorm_backward(const Ctx& c, Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout, Tensor x, Tensor weight, Tensor mean, Tensor rstd) { return Status(Code::kUnsupported, "layernorm_backward: not implemented"); }

}  // namespace elmo::cpu
