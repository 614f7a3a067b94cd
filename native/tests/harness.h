// A small test harness for the native tests: no dependencies, one executable per test file.
//
//   TEST_CASE(name) { CHECK(cond); CHECK_CLOSE(a, b, atol, rtol); CHECK_OK(status); }
//   int main() { return run_all_tests(); }
//
// Each test executable prints one line per case and a summary "N passed, N failed";
// exit code 0 when all pass, 1 otherwise, 77 when the whole file is skipped (ctest: Not Run).
// ELMO_TEST_CASES=name,name,... runs only those cases (the summary then says how many of all);
// a name that matches no case fails the run.
// for_each_config() runs a body under every ISA the CPU has and with 1 and 2 threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "elmo/backend.h"
#include "elmo/cpu.h"

namespace elmo_test {

struct Case {
  const char* name;
  void (*fn)();
};
inline std::vector<Case>& registry() {
  static std::vector<Case> r;
  return r;
}
struct Registrar {
  Registrar(const char* n, void (*f)()) { registry().push_back({n, f}); }
};
inline int& failures() {
  static int f = 0;
  return f;
}
inline std::string& context() {
  static std::string c;
  return c;
}
// Why the running case was skipped (empty: it was not). A skipped case is reported by name
// ("SKIP name: why") and counted apart, never as a pass.
inline std::string& skip_reason() {
  static std::string r;
  return r;
}

// Marks the running case skipped, with the reason; the case should return right after.
#define SKIP_CASE(...)                                          \
  do {                                                          \
    char skip_buf_[512];                                        \
    std::snprintf(skip_buf_, sizeof skip_buf_, __VA_ARGS__);    \
    ::elmo_test::skip_reason() = skip_buf_;                     \
  } while (0)

#define TEST_CASE(name)                                                   \
  static void test_##name();                                              \
  static ::elmo_test::Registrar reg_##name(#name, &test_##name);          \
  static void test_##name()

#define CHECK(cond)                                                                                  \
  do {                                                                                               \
    if (!(cond)) {                                                                                   \
      ++::elmo_test::failures();                                                                     \
      std::fprintf(stderr, "  %s:%d: CHECK(%s) failed %s\n", __FILE__, __LINE__, #cond,              \
                   ::elmo_test::context().c_str());                                                  \
    }                                                                                                \
  } while (0)

#define CHECK_OK(expr)                                                                               \
  do {                                                                                               \
    ::elmo::Status _s = (expr);                                                                      \
    if (!_s.is_ok()) {                                                                               \
      ++::elmo_test::failures();                                                                     \
      std::fprintf(stderr, "  %s:%d: %s -> %s: %s %s\n", __FILE__, __LINE__, #expr,                  \
                   ::elmo::code_name(_s.code()), _s.message().c_str(), ::elmo_test::context().c_str()); \
    }                                                                                                \
  } while (0)

// Expects a failed Status with the given code (e.g. ::elmo::Code::kShape).
#define CHECK_STATUS(expr, want)                                                                     \
  do {                                                                                               \
    ::elmo::Status _s = (expr);                                                                      \
    if (_s.code() != (want)) {                                                                       \
      ++::elmo_test::failures();                                                                     \
      std::fprintf(stderr, "  %s:%d: %s -> %s (%s), expected %s %s\n", __FILE__, __LINE__, #expr,    \
                   ::elmo::code_name(_s.code()), _s.message().c_str(), ::elmo::code_name(want),      \
                   ::elmo_test::context().c_str());                                                  \
    }                                                                                                \
  } while (0)

// |got - want| <= atol + rtol * |want| for every element; reports the worst element.
inline bool all_close(const char* what, const float* got, const double* want, int64_t n, double atol, double rtol) {
  int64_t worst = -1;
  double worst_excess = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double g = got[i], w = want[i];
    const double err = std::fabs(g - w), tol = atol + rtol * std::fabs(w);
    if (!(err <= tol)) {  // NaN fails
      const double excess = std::isnan(err) ? 1e300 : err - tol;
      if (worst < 0 || excess > worst_excess) {
        worst = i;
        worst_excess = excess;
      }
    }
  }
  if (worst >= 0) {
    ++failures();
    std::fprintf(stderr, "  %s: mismatch at %lld: got %.9g want %.9g (atol %g rtol %g) %s\n", what,
                 (long long)worst, (double)got[worst], want[worst], atol, rtol, context().c_str());
    return false;
  }
  return true;
}
inline bool all_close(const char* what, const float* got, const float* want, int64_t n, double atol, double rtol) {
  std::vector<double> w(want, want + n);
  return all_close(what, got, w.data(), n, atol, rtol);
}
// Every value is a bf16 one (its low 16 bits zero: it came through bf16 storage); otherwise a
// failure naming `what` and how many are not.
inline bool all_bf16_values(const char* what, const std::vector<float>& v) {
  size_t bad = 0;
  for (float x : v) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    bad += (u & 0xFFFFu) != 0;
  }
  if (bad == 0) return true;
  ++failures();
  std::fprintf(stderr, "  %s: %zu of %zu values are not bf16 %s\n", what, bad, v.size(), context().c_str());
  return false;
}

inline bool bit_equal(const char* what, const float* a, const float* b, int64_t n) {
  if (std::memcmp(a, b, sizeof(float) * n) != 0) {
    ++failures();
    for (int64_t i = 0; i < n; ++i)
      if (std::memcmp(a + i, b + i, 4) != 0) {
        std::fprintf(stderr, "  %s: not bit-identical at %lld: %.9g vs %.9g %s\n", what, (long long)i, a[i], b[i],
                     context().c_str());
        break;
      }
    return false;
  }
  return true;
}

// Deterministic test data (xorshift), uniform in [lo, hi).
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  double uniform(double lo = -1, double hi = 1) { return lo + (hi - lo) * ((next() >> 11) * (1.0 / 9007199254740992.0)); }
  int64_t randint(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }
};
inline std::vector<float> random_vec(int64_t n, uint64_t seed, double lo = -1, double hi = 1) {
  Rng r(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<float>(r.uniform(lo, hi));
  return v;
}
inline std::vector<double> to_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// Offsets for a batch of sequence lengths.
inline std::vector<int32_t> make_offsets_vec(const std::vector<int>& lens) {
  std::vector<int32_t> o{0};
  for (int l : lens) o.push_back(o.back() + l);
  return o;
}

// Every CPU configuration this machine can run: each ISA up to the best, 1 and 2 threads.
struct Config {
  elmo::Isa isa;
  int threads;
};
inline std::vector<Config> all_configs() {
  std::vector<Config> out;
  for (int i = 0; i <= static_cast<int>(elmo::best_isa()); ++i)
    for (int t : {1, 2}) out.push_back({static_cast<elmo::Isa>(i), t});
  return out;
}
inline std::unique_ptr<elmo::Backend> make_backend(const Config& c) {
  std::unique_ptr<elmo::Backend> b;
  elmo::CpuOptions o;
  o.threads = c.threads;
  o.isa = elmo::isa_name(c.isa);
  elmo::Status s = elmo::make_cpu_backend(&b, o);
  if (!s.is_ok()) {
    std::fprintf(stderr, "make_cpu_backend: %s\n", s.message().c_str());
    std::exit(1);
  }
  return b;
}
// Runs body(backend, config) for every config whose ISA path the CPU can run for a kernel with
// its own extension (`runs(isa)`: e.g. avx512 only with AVX512_BF16), the context naming the
// kernel that path takes (`kernel_name(isa)`).
inline void for_each_kernel_path(const std::function<bool(elmo::Isa)>& runs,
                                 const std::function<const char*(elmo::Isa)>& kernel_name,
                                 const std::function<void(elmo::Backend&, const Config&)>& body) {
  for (const Config& c : all_configs()) {
    if (!runs(c.isa)) continue;
    auto be = make_backend(c);
    context() = std::string("[kernel=") + kernel_name(c.isa) + " threads=" + std::to_string(c.threads) + "]";
    body(*be, c);
  }
  context().clear();
}

// Runs body(backend, config) for every config, setting the failure context.
inline void for_each_config(const std::function<void(elmo::Backend&, const Config&)>& body) {
  for (const Config& c : all_configs()) {
    auto b = make_backend(c);
    context() = std::string("[isa=") + elmo::isa_name(c.isa) + " threads=" + std::to_string(c.threads) + "]";
    body(*b, c);
  }
  context().clear();
}

// The names ELMO_TEST_CASES lists (comma-separated); empty when it is unset or empty.
inline std::vector<std::string> selected_cases() {
  std::vector<std::string> names;
  const char* list = std::getenv("ELMO_TEST_CASES");
  for (const char* p = list ? list : ""; *p;) {
    const char* end = std::strchr(p, ',');
    names.emplace_back(p, end ? static_cast<size_t>(end - p) : std::strlen(p));
    p += names.back().size() + (end ? 1 : 0);
  }
  return names;
}

inline int run_all_tests() {
  int passed = 0, failed = 0, skipped = 0, selected = 0;
  const std::vector<std::string> only = selected_cases();
  auto listed = [&](const std::string& name) { return std::find(only.begin(), only.end(), name) != only.end(); };
  // Every name asked for must exist: a typo must not pass as "nothing failed".
  for (const std::string& name : only) {
    bool found = false;
    for (const Case& c : registry()) found = found || name == c.name;
    if (!found) {
      std::printf("FAIL ELMO_TEST_CASES names no case \"%s\"\n", name.c_str());
      ++failed;
    }
  }
  for (const Case& c : registry()) {
    if (!only.empty() && !listed(c.name)) continue;
    ++selected;
    const int before = failures();
    skip_reason().clear();
    c.fn();
    const bool ok = failures() == before;
    if (ok && !skip_reason().empty()) {
      std::printf("SKIP %s: %s\n", c.name, skip_reason().c_str());
      std::fflush(stdout);
      ++skipped;
      continue;
    }
    std::printf("%s %s\n", ok ? "PASS" : "FAIL", c.name);
    std::fflush(stdout);
    (ok ? passed : failed)++;
  }
  if (selected < static_cast<int>(registry().size()))
    std::printf("(ELMO_TEST_CASES: %d of %zu cases run)\n", selected, registry().size());
  if (skipped > 0) std::printf("%d skipped\n", skipped);
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}

}  // namespace elmo_test
