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

// The first elements of a view as another shape: a narrower layer's tensor in a buffer sized
// for the widest (pruned heads). An empty view stays empty.
inline Tensor reshape(const Tensor& t, const std::vector<int64_t>& dims) {
  if (t.empty()) return t;
  Tensor r = t;
  r.ndim = static_cast<int>(dims.size());
  for (size_t i = 0; i < dims.size() && i < static_cast<size_t>(kMaxDims); ++i) r.shape[i] = dims[i];
  r.panel = 0;
  return r;
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

// Lays views out one after another from `base`, each 64-byte aligned and sized as if f32 (4
// bytes per element, whatever the dtype: a layout's offsets stay those of f32). base ==
// nullptr only measures: `bytes` is then the size, and the views are empty.
struct Arena {
  char* base;
  Device dev;
  size_t bytes = 0;
  Tensor take(DType dt, const std::vector<int64_t>& dims) {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    Tensor t = base ? make_view(base, bytes, dt, dims, dev) : Tensor();
    bytes += round_up(static_cast<size_t>(n) * 4);
    return t;
  }
};

}  // namespace elmo::views

namespace elmo {
// A host copy of a weight packed by Backend::pack_weight ([N/panel][K][panel]) back to
// row-major [N, K] (bert.cpp).
void unpack_weight_panels(float* w, int64_t N, int64_t K, int panel);
}  // namespace elmo
