// STUB: replaced by the real kernel.
#include "cpu/ops.h"
#pragma GCC diagnostic ignored "-Wunused-parameter"

namespace elmo::cpu {

Status gather_rows(const Ctx& c, Tensor out, Tensor inp, Tensor idx) { return Status(Code::kUnsupported, "gather_rows: not implemented"); }
Status scatter_add_rows(const Ctx& c, Tensor dinp, Tensor dout, Tensor idx) { return Status(Code::kUnsupported, "scatter_add_rows: not implemented"); }

}  // namespace elmo::cpu
