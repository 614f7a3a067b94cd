// Core pieces: Status, Tensor checks, offsets validation, ISA parsing, the thread pool, Philox.
#include <atomic>
#include <chrono>
#include <thread>

#include "elmo/philox.h"
#include "tests/harness.h"

using namespace elmo;

TEST_CASE(check_tensor_reports_shape_and_dtype) {
  float buf[6];
  Tensor t(buf, DType::kF32, {2, 3});
  CHECK_OK(check_tensor(t, "x", DType::kF32, {2, 3}));
  CHECK_OK(check_tensor(t, "x", DType::kF32, {-1, 3}));
  CHECK_STATUS(check_tensor(t, "x", DType::kF32, {3, 2}), Code::kShape);
  CHECK_STATUS(check_tensor(t, "x", DType::kI32, {2, 3}), Code::kDType);
  CHECK_STATUS(check_tensor(Tensor(), "x", DType::kF32, {2, 3}), Code::kInput);
  CHECK_OK(check_optional(Tensor(), "x", DType::kF32, {2, 3}));
  Status s = check_tensor(t, "weight", DType::kF32, {3, 2});
  CHECK(s.message().find("weight") != std::string::npos);
  CHECK(s.message().find("[2, 3]") != std::string::npos);
}

TEST_CASE(offsets_are_validated) {
  Offsets o;
  int32_t good[] = {0, 1, 4, 4, 9};
  CHECK_OK(make_offsets(&o, good, nullptr, 4, 9));
  CHECK(o.max_len == 5 && o.B == 4 && o.T == 9 && o.dev == good);
  int32_t bad_start[] = {1, 4};
  CHECK_STATUS(make_offsets(&o, bad_start, nullptr, 1, 4), Code::kInput);
  int32_t decreasing[] = {0, 5, 3};
  CHECK_STATUS(make_offsets(&o, decreasing, nullptr, 2, 3), Code::kInput);
  CHECK_STATUS(make_offsets(&o, good, nullptr, 4, 10), Code::kShape);
  CHECK_STATUS(make_offsets(&o, good, nullptr, 0, 0), Code::kShape);
}

TEST_CASE(isa_parsing_refuses_unknown) {
  Isa isa;
  CHECK_OK(parse_isa("scalar", &isa));
  CHECK(isa == Isa::kScalar);
  CHECK_STATUS(parse_isa("sse9", &isa), Code::kInput);
}

TEST_CASE(cpu_peak_is_measured_on_each_vector_path) {
  const CpuFeatures& f = cpu_features();
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
    const bool have = isa == Isa::kAvx2 ? f.avx2 && f.fma : f.avx512f && f.fma;
    CpuPeak peak;
    if (!have) {
      CHECK_STATUS(measure_cpu_peak(1, isa, 0.02, &peak), Code::kInput);  // a path the CPU lacks
      continue;
    }
    CHECK_OK(measure_cpu_peak(2, isa, 0.02, &peak));
    CHECK(peak.isa == isa);
    CHECK(peak.threads == 2);
    CHECK(peak.fp32_gflops > 0);
    // bf16 dot products only on the AVX-512 path of a CPU with AVX512_BF16.
    CHECK((peak.bf16_gflops > 0) == (isa == Isa::kAvx512 && f.avx512_bf16));
  }
  CpuPeak peak;
  CHECK_STATUS(measure_cpu_peak(1, Isa::kScalar, 0.02, &peak), Code::kUnsupported);
  CHECK_STATUS(measure_cpu_peak(0, best_isa(), 0.02, &peak), Code::kInput);
  CHECK_STATUS(measure_cpu_peak(1, best_isa(), 0.0, &peak), Code::kInput);
  CHECK_STATUS(measure_cpu_peak(1, best_isa(), 61.0, &peak), Code::kInput);
  CHECK_STATUS(measure_cpu_peak(1, best_isa(), 0.02, nullptr), Code::kInput);
}

TEST_CASE(thread_pool_runs_every_index_once) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 7, 1000}) {
      std::vector<std::atomic_int> hits(static_cast<size_t>(n));
      for (auto& h : hits) h = 0;
      pool.parallel_for(n, [&](int64_t i) { hits[static_cast<size_t>(i)]++; });
      for (auto& h : hits) CHECK(h.load() == 1);
    }
  }
}

// Back-to-back jobs (workers still polling) and jobs after pauses longer than the polling
// window (workers asleep on the condition variable): every index runs exactly once, every
// job's writes are visible when parallel_for returns, and the pool shuts down in either state.
TEST_CASE(thread_pool_polling_and_sleeping_workers) {
  for (int threads : {2, 3, 5}) {
    for (int pause_us : {0, 3 * ThreadPool::kSpinMicros}) {
      ThreadPool pool(threads);
      std::vector<int64_t> slot(257);
      for (int job = 0; job < (pause_us ? 6 : 3000); ++job) {
        const int64_t n = 1 + job % 257;
        pool.parallel_for(n, [&](int64_t i) { slot[static_cast<size_t>(i)] = job * 1000 + i; });
        bool ok = true;
        for (int64_t i = 0; i < n; ++i) ok = ok && slot[static_cast<size_t>(i)] == job * 1000 + i;
        CHECK(ok);
        if (pause_us) std::this_thread::sleep_for(std::chrono::microseconds(pause_us));
      }
    }
  }
}

TEST_CASE(philox_known_answer_and_uniformity) {
  // Known-answer vector of Philox4x32-10 (Random123 kat_vectors: ctr=0, key=0).
  uint32_t ctr[4] = {0, 0, 0, 0}, out[4];
  philox4x32_10(ctr, 0, 0, out);
  CHECK(out[0] == 0x6627e8d5u && out[1] == 0xe169c58du && out[2] == 0xbc57ac4cu && out[3] == 0x9b00dbd8u);
  uint32_t ctr2[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
  philox4x32_10(ctr2, 0xffffffffu, 0xffffffffu, out);
  CHECK(out[0] == 0x408f276du && out[1] == 0x41c83b0eu && out[2] == 0xa20bc7c6u && out[3] == 0x6d5451fdu);
  // Keep rate close to 1-p over many draws.
  int kept = 0;
  const int n = 200000;
  for (int e = 0; e < n; ++e) kept += dropout_keep(42, 7, static_cast<uint64_t>(e), 0.1f);
  CHECK(std::fabs(kept / double(n) - 0.9) < 0.005);
  CHECK(philox_u32(1, 0, 5) != philox_u32(2, 0, 5));
  CHECK(philox_u32(1, 0, 5) != philox_u32(1, 1, 5));
}

TEST_CASE(bf16_and_f16_conversion_round_trip) {
  std::unique_ptr<Backend> b;
  CHECK_OK(make_cpu_backend(&b));
  float src[6] = {1.0f, -2.5f, 3.14159f, 65504.0f, 6.0e-8f, 0.0f};
  uint16_t h[6];
  float back[6];
  Tensor ts(src, DType::kF32, {6}), th(h, DType::kF16, {6}), tb(back, DType::kF32, {6});
  CHECK_OK(b->convert(th, ts));
  CHECK_OK(b->convert(tb, th));
  CHECK(back[0] == 1.0f && back[1] == -2.5f && std::fabs(back[2] - 3.14159f) < 2e-3f && back[3] == 65504.0f);
  CHECK(std::fabs(back[4] - 5.96e-8f) < 1e-9f && back[5] == 0.0f);
  Tensor tbf(h, DType::kBF16, {6});
  CHECK_OK(b->convert(tbf, ts));
  CHECK_OK(b->convert(tb, tbf));
  CHECK(back[0] == 1.0f && back[1] == -2.5f && std::fabs(back[2] - 3.14159f) < 2e-2f);
}

// The process pool: one per thread count, shared while in use; callers on different threads
// (two models' worker threads) take turns and each gets its own complete result.
TEST_CASE(shared_thread_pool_serves_concurrent_callers) {
  std::shared_ptr<ThreadPool> a = shared_thread_pool(2), b = shared_thread_pool(2), c = shared_thread_pool(1);
  CHECK(a.get() == b.get());
  CHECK(a.get() != c.get() && c->threads() == 1);
  constexpr int64_t n = 1000;
  std::vector<int64_t> sums(4, 0);
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t)
    callers.emplace_back([&, t] {
      for (int rep = 0; rep < 50; ++rep) {
        std::vector<std::atomic_int64_t> hits(n);
        a->parallel_for(n, [&](int64_t i) { hits[static_cast<size_t>(i)] += i + t; });
        int64_t s = 0;
        for (auto& h : hits) s += h.load();
        sums[static_cast<size_t>(t)] += s;
      }
    });
  for (auto& th : callers) th.join();
  for (int t = 0; t < 4; ++t) CHECK(sums[static_cast<size_t>(t)] == 50 * (n * (n - 1) / 2 + n * t));
  // Backends made with shared_pool use it.
  std::unique_ptr<elmo::Backend> be;
  elmo::CpuOptions o;
  o.threads = 2;
  o.shared_pool = true;
  CHECK_OK(elmo::make_cpu_backend(&be, o));
  CHECK(a.use_count() >= 3);
}

int main() { return elmo_test::run_all_tests(); }
