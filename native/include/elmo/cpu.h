// CPU features and the one thread pool of the CPU backend.
//
// ISA: kernels have scalar, AVX2+FMA and AVX-512 paths, each in its own translation unit
// compiled with its own flags; which one runs is decided at run time from CPUID, or forced
// with ELMO_ISA=scalar|avx2|avx512 (a path the CPU lacks is refused, not emulated).
//
// Threads: work is cut into chunks of a FIXED size chosen by the kernel (never by the thread
// count), and every reduction combines per-chunk partials in chunk order. So 1 thread and N
// threads give bit-identical results.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "elmo/status.h"

namespace elmo {

enum class Isa : uint8_t { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };
const char* isa_name(Isa isa);

struct CpuFeatures {
  bool avx2 = false, fma = false, avx512f = false, avx512bw = false, avx512vl = false,
       avx512dq = false, avx512_bf16 = false, avx512_vnni = false;
};
const CpuFeatures& cpu_features();
Isa best_isa();                                 // the best path this CPU runs
// Parses "scalar" | "avx2" | "avx512"; refuses a path the CPU lacks (ERR_INPUT).
Status parse_isa(const char* name, Isa* out);

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return threads_; }
  // Runs fn(i) for i in [0, n), spread over the pool (the calling thread takes part).
  // Blocks until all are done. Chunks are claimed dynamically; fn must not depend on which
  // thread runs it. Not reentrant: fn must not call parallel_for on the same pool. Callers on
  // different threads (models sharing the process pool) take turns, one job at a time, so
  // the machine's cores are never oversubscribed.
  void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

  // Waiting: a worker that finished a job polls for the next one for about kSpinMicros
  // before it sleeps on a condition variable, and so does the caller waiting for the
  // workers. A forward pass issues a few hundred parallel_for calls back to back; waking a
  // sleeping thread costs tens of microseconds (an inter-processor interrupt under a
  // hypervisor), which at batch 1 added up to 15-30% of the run.
  static constexpr int kSpinMicros = 200;

 private:
  void worker_loop(int id);
  void wake_sleepers();
  int threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::mutex run_mu_;  // one job at a time across calling threads
  std::condition_variable cv_start_, cv_done_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  std::atomic_int64_t next_{0};
  std::atomic_int busy_{0};               // workers still inside the current job
  std::atomic_uint64_t generation_{0};    // bumped once per job (and on stop)
  std::atomic_int sleepers_{0};           // threads blocked (or about to block) on a cv
  std::atomic_bool stop_{false};
};

int default_threads();  // ELMO_NUM_THREADS or hardware_concurrency()

// The process's pool of `threads` threads (0: default_threads()), shared by every CPU backend
// that asks for that count: the models of a process take turns on the cores instead of
// oversubscribing them. Freed when its last user goes.
std::shared_ptr<ThreadPool> shared_thread_pool(int threads);

// The arithmetic peak this CPU reaches, measured rather than derived from a clock that a VM or
// a boosting core does not report: `threads` threads at once run chains of independent vector
// FMAs (fp32; the widest the `isa` path has) and, when the CPU has AVX512_BF16, of bf16 dot
// products (vdpbf16ps, fp32 accumulate), each for about `seconds`. A GFLOP counts 2 FLOPs
// per multiply-add. bf16_gflops is 0 without AVX512_BF16.
struct CpuPeak {
  double fp32_gflops = 0;
  double bf16_gflops = 0;
  int threads = 0;
  Isa isa = Isa::kScalar;
};
Status measure_cpu_peak(int threads, Isa isa, double seconds, CpuPeak* out);

}  // namespace elmo
