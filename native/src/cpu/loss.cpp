// STUB: replaced by the real kernel.
#include "cpu/ops.h"
#pragma GCC diagnostic ignored "-Wunused-parameter"

namespace elmo::cpu {

Status cross_entropy_forward(const Ctx& c, Tensor losses, Tensor lse, Tensor logits, Tensor targets, int ignore_index) { return Status(Code::kUnsupported, "cross_entropy_forward: not implemented"); }
Status cross_entropy_backward(const Ctx& c, Tensor dlogits, Tensor logits, Tensor lse, Tensor targets, float scale, int ignore_index) { return Status(Code::kUnsupported, "cross_entropy_backward: not implemented"); }
Status bce_forward(const Ctx& c, Tensor losses, Tensor logits, Tensor targets) { return Status(Code::kUnsupported, "bce_forward: not implemented"); }
Status bce_backward(const Ctx& c, Tensor dlogits, Tensor logits, Tensor targets, float scale) { return Status(Code::kUnsupported, "bce_backward: not implemented"); }

}  // namespace elmo::cpu
