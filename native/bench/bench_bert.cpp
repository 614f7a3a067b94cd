// BERT encoder forward throughput: random weights, packed batches, one JSON row per case.
//
//   bench_bert [--device cpu|cuda] [--models mini,small,base] [--batches 1,8,32] [--seqs 32,128]
//              [--no-chat] [--min-ms 500] [--threads N] [--precision fp32|bf16|int8] [--row-major-weights]
// --precision bf16: the model keeps bf16 copies of its GEMM weights (BertOptions) on either
// device; on CUDA attention runs on bf16 operands too. int8 (CPU): dynamic quantization.
// --row-major-weights: the CPU GEMM repacks each weight per call instead of reading the
// packed copy Bert keeps by default (Bert::set_weights_packed), to measure what packing buys.
//
// Rows: {"bench":"bert","device":..,"model":..,"batch":..,"seq":..,"tokens":..,"seq_per_s":..,
//        "ms":..,"gflops":..}. seq is the fixed length, or "chat" for a batch of 32 utterances of
// 5-60 tokens (seeded), packed without padding. GFLOP/s counts 2 per multiply-add of the
// encoder and pooler GEMMs and attention.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "elmo/backend.h"
#include "elmo/bert.h"
#ifdef ELMO_HAVE_CUDA
#include "elmo/cuda_backend.h"
#endif

namespace {

struct ModelSpec {
  const char* name;
  int layers;
  int hidden;
  int heads;
};
const ModelSpec kModels[] = {{"mini", 4, 256, 4}, {"small", 4, 512, 8}, {"base", 12, 768, 12}};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  return out;
}

struct Batch {
  std::vector<int32_t> ids, type_ids, offsets;
  elmo::BertInputs inputs() const {
    elmo::BertInputs in;
    in.ids = ids.data();
    in.type_ids = type_ids.data();
    in.offsets = offsets.data();
    in.B = static_cast<int>(offsets.size()) - 1;
    in.T = static_cast<int64_t>(ids.size());
    return in;
  }
};

Batch make_batch(const std::vector<int>& lens, uint64_t seed) {
  Batch b;
  b.offsets.push_back(0);
  uint64_t s = seed;
  for (int len : lens) {
    for (int i = 0; i < len; ++i) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      b.ids.push_back(i == 0 ? 101 : static_cast<int32_t>(1000 + (s >> 33) % 29000));
      b.type_ids.push_back(0);
    }
    b.offsets.push_back(static_cast<int32_t>(b.ids.size()));
  }
  return b;
}

int fail(const elmo::Status& st, const char* what) {
  std::fprintf(stderr, "bench_bert: %s: %s: %s\n", what, elmo::code_name(st.code()), st.message().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string device = "cpu", models = "mini,small,base", batches = "1,8,32", seqs = "32,128";
  bool chat = true;
  bool row_major = false;
  int chat_batch = 32;
  std::string precision = "fp32";
  double min_ms = 500;
  int threads = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_bert: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--device") device = next();
    else if (a == "--models") models = next();
    else if (a == "--batches") batches = next();
    else if (a == "--seqs") seqs = next();
    else if (a == "--no-chat") chat = false;
    else if (a == "--chat-batch") chat_batch = std::atoi(next().c_str());
    else if (a == "--precision") precision = next();
    else if (a == "--min-ms") min_ms = std::atof(next().c_str());
    else if (a == "--threads") threads = std::atoi(next().c_str());
    else if (a == "--row-major-weights") row_major = true;
    else {
      std::fprintf(stderr, "usage: bench_bert [--device cpu|cuda] [--models mini,small,base] [--batches 1,8,32] "
                           "[--seqs 32,128] [--no-chat] [--chat-batch 32] [--precision fp32|bf16|int8] [--min-ms 500] "
                           "[--threads N] [--row-major-weights]\n");
      return 2;
    }
  }

  if (precision != "fp32" && precision != "bf16" && precision != "int8") {
    std::fprintf(stderr, "bench_bert: unknown precision %s\n", precision.c_str());
    return 2;
  }
  elmo::BertOptions model_opts;
  model_opts.precision = precision == "bf16"   ? elmo::DType::kBF16
                         : precision == "int8" ? elmo::DType::kI8
                                               : elmo::DType::kF32;
  std::unique_ptr<elmo::Backend> backend;
  if (device == "cpu") {
    elmo::CpuOptions o;
    o.threads = threads;
    elmo::Status st = elmo::make_cpu_backend(&backend, o);
    if (!st) return fail(st, "cpu backend");
  } else if (device == "cuda") {
#ifdef ELMO_HAVE_CUDA
    elmo::CudaOptions o;
    o.compute = precision == "bf16" ? elmo::DType::kBF16 : elmo::DType::kF32;
    elmo::Status st = elmo::make_cuda_backend(&backend, o);
    if (!st) return fail(st, "cuda backend");
#else
    std::fprintf(stderr, "bench_bert: built without CUDA\n");
    return 1;
#endif
  } else {
    std::fprintf(stderr, "bench_bert: unknown device %s\n", device.c_str());
    return 2;
  }
  std::fprintf(stderr, "bench_bert on %s\n", backend->name().c_str());

  // The chat batch: chat_batch utterances of 5-60 tokens (the same lengths as
  // scripts/bench_torch_bert_gpu.py draws).
  std::vector<int> chat_lens;
  uint64_t s = 12345;
  for (int i = 0; i < chat_batch; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    chat_lens.push_back(5 + static_cast<int>((s >> 33) % 56));
  }

  for (const std::string& mname : split(models)) {
    const ModelSpec* spec = nullptr;
    for (const auto& m : kModels)
      if (mname == m.name) spec = &m;
    if (!spec) {
      std::fprintf(stderr, "bench_bert: unknown model %s\n", mname.c_str());
      return 2;
    }
    elmo::BertConfig cfg;
    cfg.num_layers = spec->layers;
    cfg.hidden_size = spec->hidden;
    cfg.num_heads = spec->heads;
    cfg.intermediate_size = 4 * spec->hidden;
    cfg.num_labels = 0;
    elmo::BertHeads heads;  // encoder + pooler
    std::unique_ptr<elmo::Bert> model;
    elmo::Status st = elmo::Bert::create(cfg, heads, 1, backend.get(), &model, model_opts);
    if (!st) return fail(st, "create");
    if (row_major && !(st = model->set_weights_packed(false))) return fail(st, "set_weights_packed");

    struct Case {
      int batch;
      std::string seq;
      std::vector<int> lens;
    };
    std::vector<Case> cases;
    for (const std::string& b : split(batches))
      for (const std::string& q : split(seqs)) cases.push_back({std::atoi(b.c_str()), q, std::vector<int>(static_cast<size_t>(std::atoi(b.c_str())), std::atoi(q.c_str()))});
    if (chat) cases.push_back({chat_batch, "chat", chat_lens});

    for (const Case& c : cases) {
      const Batch batch = make_batch(c.lens, 7);
      const elmo::BertInputs in = batch.inputs();
      elmo::BertOutputs out;
      st = model->forward(in, {}, &out);  // warm-up: arena, caches
      if (st) st = backend->sync();
      if (!st) return fail(st, "forward");
      int iters = 0;
      const auto t0 = std::chrono::steady_clock::now();
      double ms_total = 0;
      while (iters < 2 || ms_total < min_ms) {
        st = model->forward(in, {}, &out);
        if (st) st = backend->sync();
        if (!st) return fail(st, "forward");
        ++iters;
        ms_total = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      }
      const double ms = ms_total / iters;
      const double gflops = model->forward_flops(in) / (ms * 1e6);
      const std::string seq_json = c.seq == "chat" ? "\"chat\"" : c.seq;
      std::printf("{\"bench\":\"bert\",\"device\":\"%s\",\"precision\":\"%s\",\"model\":\"%s\",\"batch\":%d,\"seq\":%s,\"tokens\":%lld,"
                  "\"seq_per_s\":%.2f,\"ms\":%.3f,\"gflops\":%.2f}\n",
                  device.c_str(), precision.c_str(), spec->name, c.batch, seq_json.c_str(), (long long)in.T, c.batch * 1000.0 / ms, ms,
                  gflops);
      std::fflush(stdout);
    }
  }
  return 0;
}
