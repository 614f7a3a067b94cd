// STUB: replaced by the real kernel.
#include "cpu/ops.h"
#pragma GCC diagnostic ignored "-Wunused-parameter"

namespace elmo::cpu {

Status attention_forward(const Ctx& c, Tensor out, Tensor lse, Tensor qkv, const Offsets& o, int NH, int HD, float dropout_p, uint64_t seed, uint64_t stream) { return Status(Code::kUnsupported, "attention_forward: not implemented"); }
Status attention_backward(const Ctx& c, Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse, const Offsets& o, int NH, int HD, float dropout_p, uint64_t seed, uint64_t stream) { return Status(Code::kUnsupported, "attention_backward: not implemented"); }

}  // namespace elmo::cpu
