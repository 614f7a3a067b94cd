// Pieces the f32 and bf16 GEMM drivers (gemm.cpp, gemm_bf16.cpp) share; defined in gemm.cpp.
// Not for ISA translation units: drivers only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

#include "cpu/ops.h"

namespace elmo::cpu::gemm_detail {

// A 64-byte aligned buffer that grows to the largest request and is then kept: the drivers
// hold theirs in thread_local variables, so steady state allocates nothing. get() returns null
// when the allocation fails (the caller reports ERR_OOM).
class GrowBuffer {
 public:
  GrowBuffer() = default;
  GrowBuffer(const GrowBuffer&) = delete;
  GrowBuffer& operator=(const GrowBuffer&) = delete;
  ~GrowBuffer();
  void* get(size_t bytes);

 private:
  void* p_ = nullptr;
  size_t cap_ = 0;
};

// fn(i) for i in [0, n) on c.pool, or on the calling thread when there is no pool, one thread
// or one item.
void run_parallel(const Ctx& c, int64_t n, const std::function<void(int64_t)>& fn);

}  // namespace elmo::cpu::gemm_detail
