// One BERT forward on the CPU backend over a packed batch read from a file, for the numerical
// cross-check of `npm run bench:infer` (built by bench/infer.js against libelmo.a).
//
//   elmo_forward <model_dir> <batch.bin> <out.bin>
//
// batch.bin, little-endian int32: B, T, offsets[B+1], ids[T], type_ids[T].
// out.bin, little-endian f32: pooled [B, H], then hidden [T, H] (packed rows).
#include <cstdint>
#include <cstdio>
#include <memory>
#include <vector>

#include "elmo/backend.h"
#include "elmo/bert.h"

namespace {

int fail(const char* what, const elmo::Status& st) {
  std::fprintf(stderr, "elmo_forward: %s: %s: %s\n", what, elmo::code_name(st.code()), st.message().c_str());
  return 1;
}

bool read_i32(std::FILE* f, int32_t* dst, size_t n) { return std::fread(dst, sizeof(int32_t), n, f) == n; }

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: elmo_forward <model_dir> <batch.bin> <out.bin>\n");
    return 2;
  }
  std::FILE* f = std::fopen(argv[2], "rb");
  if (!f) {
    std::fprintf(stderr, "elmo_forward: cannot open %s\n", argv[2]);
    return 1;
  }
  int32_t head[2] = {0, 0};
  bool ok = read_i32(f, head, 2) && head[0] > 0 && head[1] > 0 && head[0] <= (1 << 20) && head[1] <= (1 << 24);
  const int B = head[0], T = head[1];
  std::vector<int32_t> offsets(ok ? B + 1 : 0), ids(ok ? T : 0), type_ids(ok ? T : 0);
  ok = ok && read_i32(f, offsets.data(), offsets.size()) && read_i32(f, ids.data(), ids.size()) &&
       read_i32(f, type_ids.data(), type_ids.size());
  std::fclose(f);
  if (!ok || offsets[0] != 0 || offsets[B] != T) {
    std::fprintf(stderr, "elmo_forward: %s is not a packed batch (B, T, offsets, ids, type_ids)\n", argv[2]);
    return 1;
  }

  std::unique_ptr<elmo::Backend> backend;
  elmo::Status st = elmo::make_cpu_backend(&backend);
  if (!st) return fail("cpu backend", st);
  std::unique_ptr<elmo::Bert> model;
  st = elmo::Bert::load(argv[1], backend.get(), &model);
  if (!st) return fail("load", st);

  elmo::BertInputs in;
  in.ids = ids.data();
  in.type_ids = type_ids.data();
  in.offsets = offsets.data();
  in.B = B;
  in.T = T;
  elmo::BertOutputs out;
  st = model->forward(in, {}, &out);
  if (st) st = backend->sync();
  if (!st) return fail("forward", st);
  if (out.pooled.empty()) {
    std::fprintf(stderr, "elmo_forward: the model has no pooler\n");
    return 1;
  }

  const int64_t H = model->config().hidden_size;
  std::vector<float> pooled(static_cast<size_t>(B * H)), hidden(static_cast<size_t>(T * H));  // [B, H], [T, H]
  st = backend->download(pooled.data(), out.pooled, pooled.size() * sizeof(float));
  if (st) st = backend->download(hidden.data(), out.hidden, hidden.size() * sizeof(float));
  if (!st) return fail("download", st);
  std::FILE* o = std::fopen(argv[3], "wb");
  if (!o) {
    std::fprintf(stderr, "elmo_forward: cannot write %s\n", argv[3]);
    return 1;
  }
  ok = std::fwrite(pooled.data(), sizeof(float), pooled.size(), o) == pooled.size() &&
       std::fwrite(hidden.data(), sizeof(float), hidden.size(), o) == hidden.size();
  ok = (std::fclose(o) == 0) && ok;
  if (!ok) {
    std::fprintf(stderr, "elmo_forward: short write to %s\n", argv[3]);
    return 1;
  }
  std::fprintf(stderr, "elmo_forward: %s on %s, B=%d T=%d H=%lld\n", argv[1], backend->name().c_str(), B, T,
               static_cast<long long>(H));
  return 0;
}
