// GEMM throughput on the BERT shapes: out[M=T, N] = op(a) . op(b) with K inner, for T = 128 and
// 4096, each of NN/NT/TN, with 1 thread and with all threads. One JSON object per line:
//   {"bench":"gemm","m":4096,"n":3072,"k":768,"op":"NT","threads":1,"gflops":95.1,"ms":203.2}
// (the same row format as scripts/bench_torch_gemm.py). Median of repeats after warm-up.
//
//   bench_gemm [op=NN,NT] [m=128] [n=768] [k=3072] [threads=1] [reps=7] [isa=avx2] [epilogue=bias_gelu]
// Every filter takes a comma-separated list; rows that do not match are skipped. packed=1: NT
// reads a weight kept packed; int8=1: NT reads an int8 weight (activations quantized per call).
#include <algorithm>
#include <array>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "elmo/backend.h"
#include "elmo/cpu.h"

using namespace elmo;

namespace {

struct Row {
  int64_t m, n, k;
  GemmOp op;
  int threads;
};


bool matches(const std::map<std::string, std::string>& filters, const char* key, const std::string& value) {
  auto it = filters.find(key);
  if (it == filters.end()) return true;
  const std::string list = "," + it->second + ",";
  return list.find("," + value + ",") != std::string::npos;
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double cpu_ms() {  // CPU time of the whole process (all threads)
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> out;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    out.push_back(std::atoll(s.substr(i, j - i).c_str()));
    i = j + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> filters;
  for (int i = 1; i < argc; ++i) {
    const char* eq = std::strchr(argv[i], '=');
    if (!eq) {
      std::fprintf(stderr, "usage: %s [op=NN,NT,TN] [m=..] [n=..] [k=..] [threads=..] [reps=N] [isa=..] "
                   "[epilogue=none|bias|bias_gelu|bias_gelu_nopre|residual] [packed=0|1] [int8=0|1]\n", argv[0]);
      return 2;
    }
    filters[std::string(argv[i], static_cast<size_t>(eq - argv[i]))] = eq + 1;
  }
  const int reps = filters.count("reps") ? std::max(1, std::atoi(filters["reps"].c_str())) : 7;
  Epilogue ep = Epilogue::kNone;
  const bool packed = filters.count("packed") && filters["packed"] == "1";
  const bool int8 = filters.count("int8") && filters["int8"] == "1";
  bool save_pre = true;  // bias_gelu_nopre: GELU without keeping the pre-activation (inference)
  if (filters.count("epilogue")) {
    const std::string e = filters["epilogue"];
    save_pre = e != "bias_gelu_nopre";
    ep = e == "bias" ? Epilogue::kBias : (e == "bias_gelu" || !save_pre) ? Epilogue::kBiasGelu
       : e == "residual" ? Epilogue::kResidual : Epilogue::kNone;
  }
  const int all_threads = default_threads();

  std::vector<int> thread_counts{1};
  if (all_threads > 1) thread_counts.push_back(all_threads);
  std::vector<Row> rows;
  // Default shapes; m=, n= and k= lists given together replace them (every combination).
  std::vector<int64_t> ms_list{128, 4096};
  std::vector<std::array<int64_t, 2>> shapes{{3072, 768}, {768, 3072}, {768, 768}, {512, 128}, {128, 512}};  // (N, K)
  if (filters.count("m") && filters.count("n") && filters.count("k")) {
    ms_list = parse_list(filters["m"]);
    shapes.clear();
    for (int64_t n : parse_list(filters["n"]))
      for (int64_t k : parse_list(filters["k"])) shapes.push_back({n, k});
  }
  for (int64_t T : ms_list)
    for (const auto& nk : shapes)
      for (GemmOp op : {GemmOp::kNN, GemmOp::kNT, GemmOp::kTN})
        for (int threads : thread_counts) {
          Row r{T, nk[0], nk[1], op, threads};
          if (!matches(filters, "m", std::to_string(r.m)) || !matches(filters, "n", std::to_string(r.n)) ||
              !matches(filters, "k", std::to_string(r.k)) || !matches(filters, "op", elmo::gemm_op_name(op)) ||
              !matches(filters, "threads", std::to_string(threads)))
            continue;
          rows.push_back(r);
        }

  int64_t max_a = 0, max_b = 0, max_c = 0;
  for (const Row& r : rows) {
    max_a = std::max(max_a, r.m * r.k);
    max_b = std::max(max_b, r.k * r.n);
    max_c = std::max(max_c, r.m * r.n);
  }
  std::vector<float> a(max_a), b(max_b), c(max_c), pre(max_c), res(max_c), bias(8192);
  uint64_t s = 88172645463325252ull;
  auto fill = [&](std::vector<float>& v) {
    for (float& x : v) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;
      x = static_cast<float>((s >> 40) * (1.0 / 16777216.0) - 0.5);
    }
  };
  fill(a), fill(b), fill(res), fill(bias);

  std::map<int, std::unique_ptr<Backend>> backends;
  for (const Row& r : rows) {
    auto& be = backends[r.threads];
    if (!be) {
      CpuOptions o;
      o.threads = r.threads;
      if (filters.count("isa")) o.isa = filters["isa"].c_str();
      Status st = make_cpu_backend(&be, o);
      if (!st.is_ok()) {
        std::fprintf(stderr, "make_cpu_backend: %s\n", st.message().c_str());
        return 1;
      }
      std::fprintf(stderr, "# %s\n", be->name().c_str());
    }
    const Tensor ta(a.data(), DType::kF32, {r.op == GemmOp::kTN ? r.k : r.m, r.op == GemmOp::kTN ? r.m : r.k});
    Tensor tb(b.data(), DType::kF32, {r.op == GemmOp::kNT ? r.n : r.k, r.op == GemmOp::kNT ? r.k : r.n});
    // packed=1: NT rows read a weight kept packed (Backend::pack_weight), as BERT inference does.
    std::unique_ptr<float, decltype(&std::free)> bpacked(nullptr, &std::free);
    // int8=1: NT rows read a quantized weight (Backend::quantize_weight), as an int8 model does.
    std::unique_ptr<int8_t, decltype(&std::free)> bq(nullptr, &std::free);
    if (int8 && r.op == GemmOp::kNT) {
      const int64_t bytes = be->quantized_weight_bytes(r.n, r.k);
      bq.reset(static_cast<int8_t*>(std::aligned_alloc(64, static_cast<size_t>((bytes + 63) / 64 * 64))));
      Tensor q(bq.get(), DType::kI8, {r.n, r.k});
      if (!be->quantize_weight(&q, tb).is_ok()) return 1;
      tb = q;
    } else if (packed && r.op == GemmOp::kNT && r.n % be->weight_panel() == 0) {
      bpacked.reset(static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>((r.n * r.k * 4 + 63) / 64 * 64))));
      std::copy(b.begin(), b.begin() + r.n * r.k, bpacked.get());
      tb.data = bpacked.get();
      if (!be->pack_weight(&tb, true).is_ok()) return 1;
    }
    const Tensor tc(c.data(), DType::kF32, {r.m, r.n});
    const bool use_bias = ep == Epilogue::kBias || ep == Epilogue::kBiasGelu;
    const Tensor tbias = use_bias ? Tensor(bias.data(), DType::kF32, {r.n}) : Tensor();
    const Tensor tres = ep == Epilogue::kResidual ? Tensor(res.data(), DType::kF32, {r.m, r.n}) : Tensor();
    const Tensor tpre = ep == Epilogue::kBiasGelu && save_pre ? Tensor(pre.data(), DType::kF32, {r.m, r.n}) : Tensor();
    auto run = [&] {
      Status st = be->gemm(tc, tpre, ta, tb, tbias, tres, r.op, ep, false);
      if (!st.is_ok()) {
        std::fprintf(stderr, "gemm: %s\n", st.message().c_str());
        std::exit(1);
      }
    };
    const double flop = 2.0 * r.m * r.n * r.k;
    // warm up (workspace, caches, clocks) for at least ~50 ms, then time `reps` runs, each
    // long enough to measure: small problems repeat inside one sample.
    double t0 = now_ms();
    int inner = 0;
    do {
      run();
      ++inner;
    } while (now_ms() - t0 < 50.0 && inner < 1000);
    const double one = (now_ms() - t0) / inner;
    inner = std::max(1, static_cast<int>(20.0 / std::max(one, 1e-3)));
    std::vector<double> ms, cpu;
    for (int i = 0; i < reps; ++i) {
      t0 = now_ms();
      const double c0 = cpu_ms();
      for (int j = 0; j < inner; ++j) run();
      cpu.push_back((cpu_ms() - c0) / inner);
      ms.push_back((now_ms() - t0) / inner);
    }
    std::sort(ms.begin(), ms.end());
    std::sort(cpu.begin(), cpu.end());
    const double med = ms[ms.size() / 2];
    // Best CPU time per thread: the least disturbed sample on a shared machine.
    const double cpu_best = cpu[0] / r.threads;
    std::printf("{\"bench\":\"gemm\",\"m\":%lld,\"n\":%lld,\"k\":%lld,\"op\":\"%s\",\"threads\":%d,"
                "\"packed\":%s,\"gflops\":%.2f,\"ms\":%.4f,\"cpu_gflops\":%.2f}\n",
                static_cast<long long>(r.m), static_cast<long long>(r.n), static_cast<long long>(r.k), elmo::gemm_op_name(r.op),
                r.threads, bpacked ? "true" : "false", flop / (med * 1e6), med, flop / (cpu_best * 1e6));
    std::fflush(stdout);
  }
  return 0;
}
