// STUB: replaced by the real kernel.
#include "cpu/ops.h"
#pragma GCC diagnostic ignored "-Wunused-parameter"

namespace elmo::cpu {

Status adamw_update(const Ctx& c, Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWParams& p) { return Status(Code::kUnsupported, "adamw_update: not implemented"); }
Status sum_squares(const Ctx& c, double* result, Tensor x) { return Status(Code::kUnsupported, "sum_squares: not implemented"); }

}  // namespace elmo::cpu
