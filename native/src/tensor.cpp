#include "elmo/tensor.h"

#include "elmo/backend.h"

namespace elmo {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF32: case DType::kI32: return 4;
    case DType::kBF16: case DType::kF16: return 2;
    case DType::kI8: return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kBF16: return "bf16";
    case DType::kF16: return "f16";
    case DType::kI32: return "i32";
    case DType::kI8: return "i8";
  }
  return "?";
}

Tensor::Tensor(void* d, DType t, std::initializer_list<int64_t> dims, Device dev)
    : data(d), dtype(t), device(dev) {
  for (int64_t x : dims) {
    if (ndim < kMaxDims) shape[ndim] = x;
    ++ndim;
  }
  if (ndim > kMaxDims) ndim = kMaxDims;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return ndim == 0 ? 0 : n;
}

std::string Tensor::describe() const {
  std::string s = dtype_name(dtype);
  s += "[";
  for (int i = 0; i < ndim; ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  s += "]";
  if (panel > 0) s += strformat(" packed in panels of %d rows", panel);
  return s;
}

static std::string describe_dims(std::initializer_list<int64_t> dims) {
  std::string s = "[";
  int i = 0;
  for (int64_t d : dims) {
    if (i++) s += ", ";
    s += d < 0 ? std::string("*") : std::to_string(d);
  }
  return s + "]";
}

Status check_tensor(const Tensor& t, const char* what, DType dtype, std::initializer_list<int64_t> dims) {
  if (t.data == nullptr) return input_error(strformat("%s: tensor is missing (null data)", what));
  if (t.panel != 0)
    return input_error(strformat("%s: received a weight packed for the GEMM (%s); only gemm's b with op NT reads "
                                 "that layout", what, t.describe().c_str()));
  if (t.dtype != dtype)
    return dtype_error(strformat("%s: expected dtype %s but received %s", what, dtype_name(dtype), dtype_name(t.dtype)));
  bool ok = t.ndim == static_cast<int>(dims.size());
  int i = 0;
  for (int64_t d : dims) {
    if (!ok) break;
    if (t.shape[i] < 0 || (d >= 0 && t.shape[i] != d)) ok = false;
    ++i;
  }
  if (!ok)
    return shape_error(strformat("%s: expected shape %s but received %s", what, describe_dims(dims).c_str(),
                                 t.describe().c_str()));
  return Status::ok();
}

Status check_optional(const Tensor& t, const char* what, DType dtype, std::initializer_list<int64_t> dims) {
  if (t.empty()) return Status::ok();
  return check_tensor(t, what, dtype, dims);
}

Status check_offsets(const Tensor& offsets, int64_t T, const char* what) {
  ELMO_RETURN_IF_ERROR(check_tensor(offsets, what, DType::kI32, {-1}));
  const int64_t n = offsets.shape[0];
  if (n < 2) return shape_error(strformat("%s: needs at least 2 entries (B+1), received %lld", what, (long long)n));
  Offsets o;
  return make_offsets(&o, offsets.i32(), offsets.i32(), static_cast<int>(n - 1), T);
}

Status make_offsets(Offsets* out, const int32_t* host, const int32_t* dev, int B, int64_t T) {
  if (host == nullptr) return input_error("offsets: missing");
  if (B < 1) return shape_error(strformat("offsets: need at least one sequence, received B=%d", B));
  if (host[0] != 0) return input_error(strformat("offsets: offsets[0] must be 0, received %d", host[0]));
  int max_len = 0;
  for (int b = 0; b < B; ++b) {
    const int64_t len = static_cast<int64_t>(host[b + 1]) - host[b];
    if (len < 0) return input_error(strformat("offsets: decreasing at %d (%d > %d)", b, host[b], host[b + 1]));
    if (len > max_len) max_len = static_cast<int>(len);
  }
  if (host[B] != T)
    return shape_error(strformat("offsets: offsets[B] = %d but the batch has T = %lld rows", host[B], (long long)T));
  out->host = host;
  out->dev = dev ? dev : host;
  out->B = B;
  out->T = T;
  out->max_len = max_len;
  return Status::ok();
}

const char* gemm_op_name(GemmOp op) {
  switch (op) {
    case GemmOp::kNN: return "NN";
    case GemmOp::kNT: return "NT";
    case GemmOp::kTN: return "TN";
  }
  return "?";
}

const char* epilogue_name(Epilogue ep) {
  switch (ep) {
    case Epilogue::kNone: return "none";
    case Epilogue::kBias: return "bias";
    case Epilogue::kBiasGelu: return "bias_gelu";
    case Epilogue::kResidual: return "residual";
    case Epilogue::kBiasResidual: return "bias_residual";
  }
  return "?";
}

float clip_factor(double sum_of_squares, float max_norm, double* total_norm) {
  const double norm = sum_of_squares > 0 ? __builtin_sqrt(sum_of_squares) : 0.0;
  if (total_norm) *total_norm = norm;
  if (!(max_norm > 0) || norm <= max_norm) return 1.0f;
  return static_cast<float>(max_norm / (norm + 1e-6));
}

}  // namespace elmo
