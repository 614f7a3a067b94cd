// Fused attention throughput: B sequences of S tokens (all full length), NH heads of HD.
// Prints one JSON row per (S, pass, threads):
//   {"bench":"attention","B":..,"S":..,"NH":..,"HD":..,"pass":"fwd"|"fwd+bwd","threads":..,
//    "tokens_per_s":..,"ms":..,"peak_scratch_bytes":..,"isa":..}
// Tensors are allocated on 2 MB boundaries with MADV_HUGEPAGE (as an arena would; each row of a
// head lies in its own 4 KB page otherwise, and the TLB misses show); ELMO_BENCH_HUGEPAGES=0
// turns that off. ms is the median over repeats. Compare with scripts/bench_torch_attention.py (same rows).
// On a shared, loaded machine ELMO_BENCH_CLOCK=thread times single-thread rows with the
// calling thread's CPU time instead of wall time (the torch script has the same switch).
//   bench_attention [B] [S...]      defaults: B=32, S=128 512; ELMO_ISA forces a path.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>

#include <sys/mman.h>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "cpu/attention_kernels.h"
#include "elmo/backend.h"
#include "elmo/cpu.h"

using namespace elmo;

namespace {

// A float buffer on 2 MB boundaries, backed by huge pages when asked and the kernel allows.
struct Buffer {
  float* p = nullptr;
  size_t n = 0;
  Buffer(size_t count, bool huge) : n(count) {
    const size_t align = size_t(2) << 20, bytes = (count * sizeof(float) + align - 1) / align * align;
    p = static_cast<float*>(std::aligned_alloc(align, bytes));
    if (!p) std::abort();
    if (huge) madvise(p, bytes, MADV_HUGEPAGE);
    std::memset(p, 0, bytes);
  }
  ~Buffer() { std::free(p); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  float* data() { return p; }
};

void fill_random(Buffer& v, uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < v.n; ++i) {
    float& x = v.p[i];
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    x = static_cast<float>((s >> 40) * (1.0 / 16777216.0) * 2 - 1);
  }
}

void die(const Status& s) {
  if (!s.is_ok()) {
    std::fprintf(stderr, "%s: %s\n", code_name(s.code()), s.message().c_str());
    std::exit(1);
  }
}

double now_ms(bool thread_clock) {
  if (thread_clock) {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
  }
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <class F>
double median_ms(F&& fn, double min_seconds, int min_reps, bool thread_clock) {
  fn();  // warm-up: scratch, caches
  std::vector<double> ms;
  double total = 0;
  while (static_cast<int>(ms.size()) < min_reps || total < min_seconds * 1e3) {
    const double t0 = now_ms(thread_clock);
    fn();
    const double d = now_ms(thread_clock) - t0;
    ms.push_back(d);
    total += d;
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int B = argc > 1 ? std::atoi(argv[1]) : 32;
  std::vector<int> seqs;
  for (int i = 2; i < argc; ++i) seqs.push_back(std::atoi(argv[i]));
  if (seqs.empty()) seqs = {128, 512};
  const int NH = 12, HD = 64;
  const int64_t C = int64_t(NH) * HD;
  const char* clock = std::getenv("ELMO_BENCH_CLOCK");
  const bool thread_clock = clock && std::strcmp(clock, "thread") == 0;
  const char* hp = std::getenv("ELMO_BENCH_HUGEPAGES");
  const bool huge = !(hp && std::strcmp(hp, "0") == 0);
  std::vector<int> thread_counts = {1};
  if (default_threads() > 1) thread_counts.push_back(default_threads());

  for (int S : seqs) {
    const int64_t T = int64_t(B) * S;
    Buffer qkv(size_t(T * 3 * C), huge), dout(size_t(T * C), huge), out(size_t(T * C), huge);
    Buffer lse(size_t(NH * T), huge), dqkv(size_t(T * 3 * C), huge);
    fill_random(qkv, 1);
    fill_random(dout, 2);
    std::vector<int32_t> off(size_t(B) + 1);
    for (int b = 0; b <= B; ++b) off[size_t(b)] = b * S;
    Offsets o;
    die(make_offsets(&o, off.data(), nullptr, B, T));
    Tensor tq(qkv.data(), DType::kF32, {T, 3 * C}), to(out.data(), DType::kF32, {T, C});
    Tensor tl(lse.data(), DType::kF32, {NH, T}), td(dqkv.data(), DType::kF32, {T, 3 * C});
    Tensor tg(dout.data(), DType::kF32, {T, C});

    for (int threads : thread_counts) {
      std::unique_ptr<Backend> be;
      CpuOptions opts;
      opts.threads = threads;
      die(make_cpu_backend(&be, opts));
      const char* isa = std::getenv("ELMO_ISA") ? std::getenv("ELMO_ISA") : isa_name(best_isa());
      const double min_s = S >= 512 ? 2.0 : 1.0;
      for (int pass = 0; pass < 2; ++pass) {
        const double ms = median_ms(
            [&] {
              die(be->attention_forward(to, tl, tq, o, NH, HD, 0.0f, 1, 2));
              if (pass == 1) die(be->attention_backward(td, tg, tq, to, tl, o, NH, HD, 0.0f, 1, 2));
            },
            min_s, 3, thread_clock && threads == 1);
        const size_t per_thread =
            sizeof(float) * (pass == 0 ? cpu::attn::forward_scratch_floats(HD) : cpu::attn::backward_scratch_floats(HD)) +
            64;
        std::printf(
            "{\"bench\":\"attention\",\"B\":%d,\"S\":%d,\"NH\":%d,\"HD\":%d,\"pass\":\"%s\",\"threads\":%d,"
            "\"tokens_per_s\":%.1f,\"ms\":%.3f,\"peak_scratch_bytes\":%zu,\"isa\":\"%s\",\"hugepages\":%s}\n",
            B, S, NH, HD, pass == 0 ? "fwd" : "fwd+bwd", threads, double(T) / (ms * 1e-3), ms,
            per_thread * size_t(threads), isa, huge ? "true" : "false");
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
