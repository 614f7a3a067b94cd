// STUB: replaced by the real kernel.
#include "cpu/ops.h"
#pragma GCC diagnostic ignored "-Wunused-parameter"

namespace elmo::cpu {

Status gelu_forward(const Ctx& c, Tensor out, Tensor inp) { return Status(Code::kUnsupported, "gelu_forward: not implemented"); }
Status gelu_backward(const Ctx& c, Tensor dinp, Tensor dout, Tensor inp) { return Status(Code::kUnsupported, "gelu_backward: not implemented"); }
Status tanh_forward(const Ctx& c, Tensor out, Tensor inp) { return Status(Code::kUnsupported, "tanh_forward: not implemented"); }
Status tanh_backward(const Ctx& c, Tensor dinp, Tensor dout, Tensor out) { return Status(Code::kUnsupported, "tanh_backward: not implemented"); }
Status dropout_forward(const Ctx& c, Tensor out, Tensor inp, float p, uint64_t seed, uint64_t stream) { return Status(Code::kUnsupported, "dropout_forward: not implemented"); }
Status dropout_backward(const Ctx& c, Tensor dinp, Tensor dout, float p, uint64_t seed, uint64_t stream) { return Status(Code::kUnsupported, "dropout_backward: not implemented"); }
Status softmax_forward(const Ctx& c, Tensor out, Tensor inp) { return Status(Code::kUnsupported, "softmax_forward: not implemented"); }

}  // namespace elmo::cpu
