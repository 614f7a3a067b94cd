#include "elmo/cpu.h"

#include <cpuid.h>

#include <chrono>

#include <cstdlib>
#include <cstring>
#include <map>

namespace elmo {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "?";
}

static uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

static CpuFeatures detect() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27);
  const bool fma = c & (1u << 12);
  if (!osxsave) return f;
  const uint64_t xcr0 = xgetbv0();
  const bool ymm_os = (xcr0 & 0x6) == 0x6;
  const bool zmm_os = (xcr0 & 0xE6) == 0xE6;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  f.avx2 = ymm_os && (b & (1u << 5));
  f.fma = ymm_os && fma;
  f.avx512f = zmm_os && (b & (1u << 16));
  f.avx512dq = zmm_os && (b & (1u << 17));
  f.avx512bw = zmm_os && (b & (1u << 30));
  f.avx512vl = zmm_os && (b & (1u << 31));
  f.avx512_vnni = zmm_os && (c & (1u << 11));
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx512_bf16 = zmm_os && (a & (1u << 5));
  return f;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

Isa best_isa() {
  const CpuFeatures& f = cpu_features();
  if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.fma) return Isa::kAvx512;
  if (f.avx2 && f.fma) return Isa::kAvx2;
  return Isa::kScalar;
}

Status parse_isa(const char* name, Isa* out) {
  Isa want;
  if (std::strcmp(name, "scalar") == 0) want = Isa::kScalar;
  else if (std::strcmp(name, "avx2") == 0) want = Isa::kAvx2;
  else if (std::strcmp(name, "avx512") == 0) want = Isa::kAvx512;
  else return input_error(strformat("Expected one of scalar, avx2, avx512 for isa but received '%s'", name));
  if (static_cast<int>(want) > static_cast<int>(best_isa()))
    return input_error(strformat("isa '%s' is not supported by this CPU (best: %s)", name, isa_name(best_isa())));
  *out = want;
  return Status::ok();
}

int default_threads() {
  if (const char* env = std::getenv("ELMO_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}

namespace {

// Polls `done` for about `micros` microseconds; true when it became true.
template <typename Done>
bool spin_until(Done done, int micros) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(micros);
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    if (std::chrono::steady_clock::now() >= until) return done();
  }
}

}  // namespace

ThreadPool::ThreadPool(int threads) : threads_(threads < 1 ? 1 : threads) {
  for (int i = 1; i < threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  {
    std::lock_guard<std::mutex> lock(mu_);
  }
  cv_start_.notify_all();
  for (auto& w : workers_) w.join();
}

// A state change (generation_, busy_) is stored before sleepers_ is read, and a sleeper
// increments sleepers_ before it re-checks the state under mu_ (all sequentially
// consistent): either the waker sees the sleeper and notifies under mu_, or the sleeper sees
// the new state and does not block. No wake-up is lost.
void ThreadPool::wake_sleepers() {
  if (sleepers_.load() == 0) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
  }
  cv_start_.notify_all();
  cv_done_.notify_all();
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  if (threads_ == 1 || n == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::lock_guard<std::mutex> turn(run_mu_);
  // Every worker has left the previous job (busy_ reached 0 before it returned), so the job
  // fields can be rewritten; workers read them only after seeing the new generation.
  job_ = &fn;
  job_n_ = n;
  next_.store(0);
  busy_.store(static_cast<int>(workers_.size()));
  generation_.fetch_add(1);
  wake_sleepers();
  for (int64_t i; (i = next_.fetch_add(1)) < n;) fn(i);
  auto done = [this] { return busy_.load() == 0; };
  if (!spin_until(done, kSpinMicros)) {
    sleepers_.fetch_add(1);
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_done_.wait(lock, done);
    }
    sleepers_.fetch_sub(1);
  }
  job_ = nullptr;
}

void ThreadPool::worker_loop(int /*id*/) {
  uint64_t seen = 0;
  for (;;) {
    auto ready = [&] { return generation_.load() != seen; };
    if (!spin_until(ready, kSpinMicros)) {
      sleepers_.fetch_add(1);
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_start_.wait(lock, ready);
      }
      sleepers_.fetch_sub(1);
    }
    seen = generation_.load();
    if (stop_.load()) return;
    const std::function<void(int64_t)>* job = job_;
    const int64_t n = job_n_;
    for (int64_t i; (i = next_.fetch_add(1)) < n;) (*job)(i);
    if (busy_.fetch_sub(1) == 1) wake_sleepers();
  }
}

std::shared_ptr<ThreadPool> shared_thread_pool(int threads) {
  static std::mutex mu;
  static std::map<int, std::weak_ptr<ThreadPool>> pools;
  const int n = threads > 0 ? threads : default_threads();
  std::lock_guard<std::mutex> lock(mu);
  std::shared_ptr<ThreadPool> p = pools[n].lock();
  if (!p) {
    p = std::make_shared<ThreadPool>(n);
    pools[n] = p;
  }
  return p;
}

}  // namespace elmo
