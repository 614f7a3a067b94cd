// measure_cpu_peak (elmo/cpu.h): every thread runs the ISA's multiply-add loop in rounds of a
// fixed size until the deadline; the peak is all threads' FLOPs over the wall time from the
// common start to the last thread's finish.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "cpu/peak_kernels.h"
#include "elmo/cpu.h"
#include "elmo/status.h"

namespace elmo {
namespace {

using Clock = std::chrono::steady_clock;

// One loop kind measured on `threads` threads: rounds(n) runs n rounds of flops_per_round.
double measure(int threads, double seconds, float (*rounds)(int64_t), double flops_per_round) {
  constexpr int64_t kChunk = 1 << 16;  // rounds between clock reads (~0.1-0.3 ms)
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<int64_t> done(static_cast<size_t>(threads), 0);
  std::vector<Clock::time_point> finish(static_cast<size_t>(threads));
  std::vector<float> sink(static_cast<size_t>(threads), 0.0f);
  Clock::time_point start;
  auto body = [&](int t) {
    ready.fetch_add(1);
    while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
    const Clock::time_point deadline = start + std::chrono::duration_cast<Clock::duration>(
                                                   std::chrono::duration<double>(seconds));
    int64_t n = 0;
    float s = 0.0f;
    do {
      s += rounds(kChunk);
      n += kChunk;
    } while (Clock::now() < deadline);
    done[static_cast<size_t>(t)] = n;
    finish[static_cast<size_t>(t)] = Clock::now();
    sink[static_cast<size_t>(t)] = s;
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(body, t);
  while (ready.load() < threads - 1) std::this_thread::yield();
  rounds(kChunk);  // warm up this core's vector units before the clock starts
  start = Clock::now();
  go.store(true, std::memory_order_release);
  body(0);
  for (std::thread& th : pool) th.join();
  double total = 0;
  Clock::time_point end = start;
  for (int t = 0; t < threads; ++t) {
    total += static_cast<double>(done[static_cast<size_t>(t)]) * flops_per_round;
    end = std::max(end, finish[static_cast<size_t>(t)]);
  }
  const double secs = std::chrono::duration<double>(end - start).count();
  volatile float keep = sink[0];  // the loops' results stay live
  (void)keep;
  return secs > 0 ? total / secs / 1e9 : 0.0;
}

}  // namespace

Status measure_cpu_peak(int threads, Isa isa, double seconds, CpuPeak* out) {
  if (out == nullptr) return Status(Code::kInput, "measure_cpu_peak: no output");
  if (threads < 1 || threads > 1024) return Status(Code::kInput, "measure_cpu_peak: threads must be in [1, 1024]");
  if (!(seconds > 0 && seconds <= 60)) return Status(Code::kInput, "measure_cpu_peak: seconds must be in (0, 60]");
  const CpuFeatures& f = cpu_features();
  if ((isa == Isa::kAvx512 && !(f.avx512f && f.fma)) || (isa == Isa::kAvx2 && !(f.avx2 && f.fma)))
    return Status(Code::kInput, std::string("measure_cpu_peak: this CPU has no ") + isa_name(isa));
  CpuPeak p;
  p.threads = threads;
  p.isa = isa;
  if (isa == Isa::kAvx512)
    p.fp32_gflops = measure(threads, seconds, &cpu::peak_detail::fma_rounds_avx512, cpu::peak_detail::kAvx512FlopsPerRound);
  else if (isa == Isa::kAvx2)
    p.fp32_gflops = measure(threads, seconds, &cpu::peak_detail::fma_rounds_avx2, cpu::peak_detail::kAvx2FlopsPerRound);
  else
    return Status(Code::kUnsupported, "measure_cpu_peak: the scalar path has no vector loop to measure");
  if (isa == Isa::kAvx512 && f.avx512_bf16)
    p.bf16_gflops = measure(threads, seconds, &cpu::peak_detail::dpbf16_rounds_avx512bf16,
                            cpu::peak_detail::kAvx512Bf16FlopsPerRound);
  *out = p;
  return Status::ok();
}

}  // namespace elmo
