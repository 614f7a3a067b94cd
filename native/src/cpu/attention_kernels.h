// Fused attention on the CPU: what the dispatcher (attention.cpp) shares with the per-ISA
// translation units (attention.cpp itself for scalar, attention_avx2.cpp, attention_avx512.cpp).
//
// The ISA units hold only the tile kernels of attention_impl.h (internal linkage) and the
// entry points below; everything that touches the standard library (thread pool, scratch,
// the Philox mask) stays in the baseline-compiled dispatcher, so no inline function compiled
// with AVX flags can be picked by the linker for code that runs on a CPU without them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace elmo::cpu::attn {

// Queries per tile and keys per tile. Every buffer is sized by these and HD, never by the
// sequence length.
constexpr int kTile = 64;

// Validated arguments of one call, as raw pointers.
struct Args {
  float* out = nullptr;              // (T, C) forward output
  float* lse = nullptr;              // (NH, T) forward log-sum-exp
  float* dqkv = nullptr;             // (T, 3C) backward output
  const float* qkv = nullptr;        // (T, 3C)
  const float* dout = nullptr;       // (T, C) backward input
  const float* o = nullptr;          // (T, C) forward output, backward input
  const float* lse_in = nullptr;     // (NH, T) backward input
  const int32_t* offsets = nullptr;  // (B+1)
  int B = 0;
  int64_t T = 0;
  int NH = 0;
  int HD = 0;
  float p = 0.0f;  // dropout probability in [0, 1)
  uint64_t seed = 0;
  uint64_t stream = 0;
};

// Head dim rounded up to the widest vector (16 floats), the row stride of packed tiles.
static constexpr int padded_hd(int HD) { return (HD + 15) / 16 * 16; }

// Per-thread scratch of one work item, in floats; grows with HD only. The layouts are carved
// in attention_impl.h in exactly this order.
//   forward:  Qt, Kp, Vp, O (kTile x HDp each); ST, MkT (kTile x kTile); m, l, alpha (kTile)
//   backward: Qt, dOt, Qs, dOp, Kp, Vp, dQ, tile (kTile x HDp); PT, PdT, dPT, MkT; D, lse
static constexpr size_t forward_scratch_floats(int HD) {
  return size_t(4) * kTile * padded_hd(HD) + size_t(2) * kTile * kTile + 3 * kTile;
}
static constexpr size_t backward_scratch_floats(int HD) {
  return size_t(8) * kTile * padded_hd(HD) + size_t(4) * kTile * kTile + 2 * kTile;
}

// Forward of one work item: sequence b, head h, query tile qb (rows qb*kTile ..).
// scratch: forward_scratch_floats(HD) floats, 64-byte aligned.
void forward_item_scalar(const Args& a, int b, int h, int qb, float* scratch);
void forward_item_avx2(const Args& a, int b, int h, int qb, float* scratch);
void forward_item_avx512(const Args& a, int b, int h, int qb, float* scratch);
// Backward of one work item: sequence b, head h, all its query and key tiles in a fixed order.
// scratch: backward_scratch_floats(HD) floats, 64-byte aligned.
void backward_item_scalar(const Args& a, int b, int h, float* scratch);
void backward_item_avx2(const Args& a, int b, int h, float* scratch);
void backward_item_avx512(const Args& a, int b, int h, float* scratch);

// Dropout multipliers of a key-major tile: mkt[j*ld + i] = keep(h, i0+i, j0+j) ? 1/(1-p) : 0
// for j < kv, i < qv, and 0 for qv <= i < cols. i0, j0 are packed (global) row indices.
// Defined in attention.cpp (baseline flags); called from every ISA path.
void dropout_tile_t(float* mkt, int ld, int kv, int qv, int cols, int64_t i0, int64_t j0, int h, const Args& a);

}  // namespace elmo::cpu::attn
