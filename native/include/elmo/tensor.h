// Tensor: a non-owning view over memory owned by an arena or by the caller.
// Row-major, contiguous. Shapes are written outermost first: a [T, H] tensor has
// shape[0] = T rows of shape[1] = H elements.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "elmo/status.h"

namespace elmo {

enum class DType : uint8_t { kF32 = 0, kBF16, kF16, kI32, kI8 };
enum class Device : uint8_t { kCpu = 0, kCuda };

size_t dtype_size(DType t);
const char* dtype_name(DType t);  // "f32", "bf16", ...

constexpr int kMaxDims = 4;

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Device device = Device::kCpu;
  int ndim = 0;
  int64_t shape[kMaxDims] = {0, 0, 0, 0};
  // 0: row-major (every tensor but one kind). > 0: a 2-D weight [N, K] that a backend packed
  // for its GEMM (Backend::pack_weight): N / panel micro-panels, each [K][panel]. Only
  // Backend::gemm's b operand with op kNT accepts it; check_tensor refuses it everywhere else.
  int panel = 0;

  Tensor() = default;
  Tensor(void* d, DType t, std::initializer_list<int64_t> dims, Device dev = Device::kCpu);

  // An empty tensor (data == nullptr) stands for "not given" in optional arguments.
  bool empty() const { return data == nullptr; }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  int64_t dim(int i) const { return shape[i]; }

  float* f32() const { return static_cast<float*>(data); }
  int32_t* i32() const { return static_cast<int32_t*>(data); }
  uint16_t* u16() const { return static_cast<uint16_t*>(data); }  // bf16 / f16 bits
  int8_t* i8() const { return static_cast<int8_t*>(data); }

  std::string describe() const;  // "f32[128, 768]"
};

// Validation helpers used at the top of every op; each returns a Status naming `what`.
// `dims` with -1 accepts any size in that position.
Status check_tensor(const Tensor& t, const char* what, DType dtype, std::initializer_list<int64_t> dims);
// Same, but an empty tensor is accepted (optional argument).
Status check_optional(const Tensor& t, const char* what, DType dtype, std::initializer_list<int64_t> dims);
// offsets: i32 [B+1], offsets[0] == 0, non-decreasing, offsets[B] == T. Reads host memory;
// for device tensors the caller passes a host mirror.
Status check_offsets(const Tensor& offsets, int64_t T, const char* what = "offsets");

}  // namespace elmo
