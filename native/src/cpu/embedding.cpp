// STUB: replaced by the real kernel.
#include "cpu/ops.h"
#pragma GCC diagnostic ignored "-Wunused-parameter"

namespace elmo::cpu {

Status embedding_forward(const Ctx& c, Tensor out, Tensor ids, Tensor type_ids, const Offsets& o, Tensor wte, Tensor wpe, Tensor wtt) { return Status(Code::kUnsupported, "embedding_forward: not implemented"); }
Status embedding_backward(const Ctx& c, Tensor dwte, Tensor dwpe, Tensor dwtt, Tensor dout, Tensor ids, Tensor type_ids, const Offsets& o) { return Status(Code::kUnsupported, "embedding_backward: not implemented"); }

}  // namespace elmo::cpu
