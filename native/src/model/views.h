// Views into the model's flat buffers (parameters, gradients, arenas): every view starts on a
// 64-byte boundary. Shared by bert.cpp (parameters, forward) and bert_backward.cpp (training).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "elmo/tensor.h"

namespace elmo::views {

constexpr size_t kAlign = 64;  // bytes; every view in the parameter buffer and arenas

inline size_t round_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

inline Tensor make_view(void* base, size_t byte_offset, DType dtype, const std::vector<int64_t>& dims, Device dev) {
  Tensor t;
  t.data = base ? static_cast<char*>(base) + byte_offset : nullptr;
  t.dtype = dtype;
  t.device = dev;
  t.ndim = static_cast<int>(dims.size());
  for (size_t i = 0; i < dims.size() && i < static_cast<size_t>(kMaxDims); ++i) t.shape[i] = dims[i];
  return t;
}

// The same view moved from one buffer to another of the same layout (a parameter's gradient,
// an optimizer moment). Row-major, whatever the source's panel layout.
inline Tensor rebase(const Tensor& t, const Tensor& from, const Tensor& to) {
  if (t.empty()) return t;
  Tensor r = t;
  r.data = static_cast<char*>(to.data) + (static_cast<char*>(t.data) - static_cast<char*>(from.data));
  r.panel = 0;
  return r;
}

}  // namespace elmo::views
