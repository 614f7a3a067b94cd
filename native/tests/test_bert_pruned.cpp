// BERT with pruned attention heads (config.json "elmo_pruned_heads"): the model holds only the
// kept heads of each layer, and its forward, backward and training steps equal those of the
// full-size model whose pruned heads are zero (q/k/v rows and biases, attention-output columns)
// on every ISA x 1/2 threads; save writes full-size tensors with those zeros back, load_encoder
// reads them; bf16 and int8 precision; the config's checks; LoRA refused.
#include <sys/stat.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "elmo/bert.h"
#include "elmo/json.h"
#include "elmo/safetensors.h"
#include "elmo/trainer.h"
#include "harness.h"
#include "tests/bert_fixture.h"

using elmo::Bert;
using elmo::Code;
using bert_fixture::download;
using bert_fixture::Fixture;
using bert_fixture::fixtures_dir;
using bert_fixture::load_fixture;
using bert_fixture::read_text;

namespace {

// bert-a-cls: 3 layers, 3 heads of 32, H = 96. Layer 1 keeps all its heads.
const char* kFixture = "bert-a-cls";
const std::vector<std::vector<int>> kPruned = {{1}, {}, {0, 2}};
const char* kPrunedJson = "{\"0\": [1], \"2\": [0, 2]}";

std::string make_tmp_dir() {
  char tmpl[] = "/tmp/elmo-bert-pruned-XXXXXX";
  const char* d = mkdtemp(tmpl);
  CHECK(d != nullptr);
  return d ? d : "/tmp";
}

// The fixture's config.json with `extra` members added before its closing brace.
std::string config_with(const std::string& extra) {
  std::string cfg = read_text(fixtures_dir() + "/" + kFixture + "/config.json");
  const size_t end = cfg.rfind('}');
  return cfg.substr(0, end) + (extra.empty() ? "" : ",\n  " + extra + "\n") + "}\n";
}

struct Checkpoint {
  std::vector<std::string> names;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<std::vector<float>> data;  // f32
  std::vector<float>* find(const std::string& name) {
    for (size_t i = 0; i < names.size(); ++i)
      if (names[i] == name) return &data[i];
    return nullptr;
  }
};

Checkpoint read_checkpoint(const std::string& file) {
  Checkpoint c;
  std::unique_ptr<elmo::SafetensorsFile> f;
  CHECK_OK(elmo::SafetensorsFile::open(file, &f));
  if (!f) return c;
  for (const auto& t : f->tensors()) {
    CHECK(t.dtype == elmo::StDType::kF32);
    c.names.push_back(t.name);
    c.shapes.push_back(t.shape);
    c.data.emplace_back(static_cast<size_t>(t.numel()));
    std::memcpy(c.data.back().data(), t.data, static_cast<size_t>(t.numel()) * 4);
  }
  return c;
}

void write_checkpoint(const Checkpoint& c, const std::string& dir, const std::string& config) {
  std::vector<elmo::StWriteItem> items;
  for (size_t i = 0; i < c.names.size(); ++i) items.push_back({c.names[i], elmo::StDType::kF32, c.shapes[i], c.data[i].data()});
  CHECK_OK(elmo::write_safetensors(dir + "/model.safetensors", items));
  CHECK_OK(elmo::write_file_atomic(dir + "/config.json", config.data(), config.size()));
}

// Zeroes head h of layer l in a full-size checkpoint (d = 32, H = 96).
void zero_head(Checkpoint* c, int l, int h) {
  const int64_t H = 96, d = 32;
  const std::string p = "bert.encoder.layer." + std::to_string(l) + ".attention.";
  for (const char* k : {"query", "key", "value"}) {
    std::vector<float>* w = c->find(p + "self." + k + ".weight");
    std::vector<float>* b = c->find(p + "self." + k + ".bias");
    CHECK(w && b);
    if (!w || !b) return;
    std::fill(w->begin() + h * d * H, w->begin() + (h + 1) * d * H, 0.0f);
    std::fill(b->begin() + h * d, b->begin() + (h + 1) * d, 0.0f);
  }
  std::vector<float>* o = c->find(p + "output.dense.weight");
  CHECK(o != nullptr);
  if (!o) return;
  for (int64_t r = 0; r < H; ++r) std::fill(o->begin() + r * H + h * d, o->begin() + r * H + (h + 1) * d, 0.0f);
}

// Two checkpoint directories: `zeroed` (full heads, the pruned ones zero, no elmo_pruned_heads)
// and `pruned` (the fixture's weights untouched, elmo_pruned_heads set: the listed heads'
// weights are dropped at load, whatever they hold).
struct Pair {
  std::string zeroed, pruned;
};
Pair make_pair_dirs() {
  const std::string src = fixtures_dir() + "/" + kFixture + "/model.safetensors";
  Pair p{make_tmp_dir(), make_tmp_dir()};
  Checkpoint c = read_checkpoint(src);
  write_checkpoint(c, p.pruned, config_with(std::string("\"elmo_pruned_heads\": ") + kPrunedJson));
  for (size_t l = 0; l < kPruned.size(); ++l)
    for (int h : kPruned[l]) zero_head(&c, static_cast<int>(l), h);
  write_checkpoint(c, p.zeroed, config_with(""));
  return p;
}

struct Outs {
  std::vector<float> hidden, logits;
};
Outs run(elmo::Backend& be, Bert& m, const Fixture& f, bool cls_only) {
  elmo::ForwardOptions o;
  o.cls_only = cls_only;
  elmo::BertOutputs out;
  CHECK_OK(m.forward(f.inputs(), o, &out));
  Outs r;
  if (!out.hidden.empty()) r.hidden = download(be, out.hidden);
  if (!out.logits.empty()) r.logits = download(be, out.logits);
  return r;
}

void close(const char* what, const std::vector<float>& got, const std::vector<float>& want, double tol) {
  CHECK(got.size() == want.size());
  if (got.size() == want.size())
    elmo_test::all_close(what, got.data(), want.data(), static_cast<int64_t>(got.size()), tol, tol);
}

}  // namespace

TEST_CASE(config_lists_pruned_heads) {
  elmo::BertConfig c;
  CHECK_OK(elmo::BertConfig::parse(config_with(std::string("\"elmo_pruned_heads\": ") + kPrunedJson), &c));
  CHECK(c.pruned_heads == kPruned);
  CHECK(c.heads_in_layer(0) == 2 && c.heads_in_layer(1) == 3 && c.heads_in_layer(2) == 1);
  CHECK(c.attention_width(2) == 32 && c.kept_heads(0) == std::vector<int>({0, 2}));
  // Written back as parsed (layers without pruned heads left out); none: the key is dropped.
  elmo::BertConfig r;
  CHECK_OK(elmo::BertConfig::parse(c.to_json(true, false), &r));
  CHECK(r.pruned_heads == kPruned);
  CHECK(c.to_json(true, false).find("\"elmo_pruned_heads\"") != std::string::npos);
  r.pruned_heads.clear();
  CHECK(r.to_json(true, false).find("elmo_pruned_heads") == std::string::npos);
  // Unsorted and repeated heads are sorted and merged; an empty object is no pruning.
  CHECK_OK(elmo::BertConfig::parse(config_with("\"elmo_pruned_heads\": {\"2\": [2, 0, 2]}"), &c));
  CHECK(c.pruned_heads[2] == std::vector<int>({0, 2}) && c.pruned_heads[0].empty());
  CHECK_OK(elmo::BertConfig::parse(config_with("\"elmo_pruned_heads\": {}"), &c));
  CHECK(c.pruned_heads.empty() && !c.has_pruned_heads());

  auto bad = [](const std::string& value, const char* needle) {
    elmo::BertConfig x;
    const elmo::Status st = elmo::BertConfig::parse(config_with("\"elmo_pruned_heads\": " + value), &x);
    CHECK(st.code() == Code::kCheckpoint);
    if (st.message().find(needle) == std::string::npos) {
      ++elmo_test::failures();
      std::fprintf(stderr, "  %s: message \"%s\" lacks \"%s\"\n", value.c_str(), st.message().c_str(), needle);
    }
  };
  bad("[1]", "expected an object");
  bad("{\"3\": [0]}", "not a layer in [0, 3)");
  bad("{\"x\": [0]}", "not a layer");
  bad("{\"0\": 1}", "expected an array");
  bad("{\"0\": [3]}", "not an integer in [0, 3)");
  bad("{\"0\": [0.5]}", "not an integer");
  bad("{\"1\": [0, 1, 2]}", "keeps at least one");
}

TEST_CASE(pruned_model_equals_zeroed_heads) {
  Fixture f;
  if (!load_fixture(kFixture, &f)) return;
  const Pair dirs = make_pair_dirs();
  elmo_test::for_each_config([&](elmo::Backend& be, const elmo_test::Config&) {
    std::unique_ptr<Bert> full, pruned;
    CHECK_OK(Bert::load(dirs.zeroed, &be, &full));
    CHECK_OK(Bert::load(dirs.pruned, &be, &pruned));
    if (!full || !pruned) return;
    // Per pruned head: q, k, v rows (32 x 96) and biases (32), and 32 columns of the output projection.
    CHECK(pruned->num_parameters() == full->num_parameters() - 3 * (4 * 32 * 96 + 3 * 32));
    for (bool cls_only : {false, true}) {
      const Outs a = run(be, *full, f, cls_only), b = run(be, *pruned, f, cls_only);
      // The same sums less the zero terms, in another blocking: rounding apart.
      close("hidden", b.hidden, a.hidden, 2e-5);
      close("logits", b.logits, a.logits, 2e-5);
    }
  });
}

TEST_CASE(save_writes_full_size_zero_padded_tensors) {
  Fixture f;
  if (!load_fixture(kFixture, &f)) return;
  const Pair dirs = make_pair_dirs();
  auto be = elmo_test::make_backend({elmo::best_isa(), 2});
  std::unique_ptr<Bert> pruned;
  CHECK_OK(Bert::load(dirs.pruned, be.get(), &pruned));
  if (!pruned) return;
  const std::string out = make_tmp_dir();
  CHECK_OK(pruned->save(out));
  Checkpoint saved = read_checkpoint(out + "/model.safetensors");
  Checkpoint want = read_checkpoint(dirs.zeroed + "/model.safetensors");
  for (size_t i = 0; i < want.names.size(); ++i) {
    std::vector<float>* got = saved.find(want.names[i]);
    CHECK(got != nullptr);
    if (got) elmo_test::bit_equal(want.names[i].c_str(), got->data(), want.data[i].data(), static_cast<int64_t>(got->size()));
  }
  CHECK(saved.names.size() == want.names.size());
  elmo::BertConfig cfg;
  CHECK_OK(elmo::BertConfig::load(out + "/config.json", &cfg));
  CHECK(cfg.pruned_heads == kPruned && cfg.num_heads == 3);
  // Loaded again: the same model, bit for bit.
  std::unique_ptr<Bert> again;
  CHECK_OK(Bert::load(out, be.get(), &again));
  if (!again) return;
  const Outs a = run(*be, *pruned, f, false), b = run(*be, *again, f, false);
  elmo_test::bit_equal("logits", b.logits.data(), a.logits.data(), static_cast<int64_t>(a.logits.size()));
  // load_encoder reads full-size tensors into the pruned model (the kept heads' rows, columns).
  std::unique_ptr<Bert> other;
  CHECK_OK(Bert::load(dirs.pruned, be.get(), &other));
  CHECK_OK(other->load_encoder(fixtures_dir() + "/bert-a-cls/model.safetensors", true));
  const Outs c = run(*be, *other, f, false);
  elmo_test::bit_equal("load_encoder logits", c.logits.data(), a.logits.data(), static_cast<int64_t>(a.logits.size()));
  // A file whose attention shapes are not the full [H, H] is refused, naming the tensor.
  Checkpoint cut = read_checkpoint(dirs.zeroed + "/model.safetensors");
  for (size_t i = 0; i < cut.names.size(); ++i)
    if (cut.names[i] == "bert.encoder.layer.0.attention.output.dense.weight") {
      cut.shapes[i] = {96, 64};
      cut.data[i].resize(96 * 64);
    }
  const std::string bad = make_tmp_dir();
  write_checkpoint(cut, bad, config_with(std::string("\"elmo_pruned_heads\": ") + kPrunedJson));
  std::unique_ptr<Bert> refused;
  const elmo::Status st = Bert::load(bad, be.get(), &refused);
  CHECK(st.code() == Code::kCheckpoint && st.message().find("attention.output.dense.weight") != std::string::npos);
}

// Three AdamW steps (no dropout) on both models: the same losses and gradient norms, the same
// weights after, and the zeroed model's pruned heads still exactly zero (their gradients are).
TEST_CASE(training_equals_zeroed_heads) {
  Fixture f;
  if (!load_fixture(kFixture, &f)) return;
  const Pair dirs = make_pair_dirs();
  elmo_test::for_each_config([&](elmo::Backend& be, const elmo_test::Config&) {
    std::unique_ptr<Bert> full, pruned;
    CHECK_OK(Bert::load(dirs.zeroed, &be, &full));
    CHECK_OK(Bert::load(dirs.pruned, &be, &pruned));
    if (!full || !pruned) return;
    elmo::TrainerOptions o;
    o.lr = 1e-3f;
    o.total_steps = 3;
    o.weight_decay = 0.01f;
    o.hidden_dropout = 0;
    o.attention_dropout = 0;
    std::unique_ptr<elmo::Trainer> ta, tb;
    CHECK_OK(elmo::Trainer::create(full.get(), o, &ta));
    CHECK_OK(elmo::Trainer::create(pruned.get(), o, &tb));
    if (!ta || !tb) return;
    const int B = static_cast<int>(f.offsets.size()) - 1;
    std::vector<int32_t> labels;
    for (int b = 0; b < B; ++b) labels.push_back(b % 5);
    elmo::TrainBatch batch;
    batch.in = f.inputs();
    batch.labels_i32 = labels.data();
    batch.n_labels = B;
    for (int s = 0; s < 3; ++s) {
      elmo::StepResult ra, rb;
      CHECK_OK(ta->step(&batch, 1, &ra));
      CHECK_OK(tb->step(&batch, 1, &rb));
      CHECK(std::fabs(ra.loss - rb.loss) <= 1e-5 * std::fabs(ra.loss) + 1e-6);
      CHECK(std::fabs(ra.grad_norm - rb.grad_norm) <= 1e-4 * ra.grad_norm + 1e-6);
    }
    ta.reset();
    tb.reset();
    std::vector<float> qkv;
    CHECK_OK(full->read_parameter("bert.encoder.layer.2.attention.self.qkv.weight", &qkv));
    double pruned_abs = 0;  // rows of heads 0 and 2 in q, k and v: [0, 32), [64, 96) of each 96
    for (int part = 0; part < 3; ++part)
      for (int r : {0, 64})
        for (int64_t i = 0; i < 32 * 96; ++i) pruned_abs += std::fabs(qkv[static_cast<size_t>((part * 96 + r) * 96 + i)]);
    CHECK(pruned_abs == 0.0);
    const Outs a = run(be, *full, f, false), b = run(be, *pruned, f, false);
    close("logits after 3 steps", b.logits, a.logits, 1e-4);
    // Saved after training: still full-size with the pruned heads zero, and the same outputs.
    const std::string out = make_tmp_dir();
    CHECK_OK(pruned->save(out));
    std::unique_ptr<Bert> again;
    CHECK_OK(Bert::load(out, &be, &again));
    if (again) {
      const Outs c = run(be, *again, f, false);
      elmo_test::bit_equal("trained, saved, loaded", c.logits.data(), b.logits.data(), static_cast<int64_t>(b.logits.size()));
    }
  });
}

// Dropout on: the steps run and stay finite (the attention masks of a narrower layer are drawn
// over its own heads, so they differ from the full model's).
TEST_CASE(training_with_dropout_runs) {
  Fixture f;
  if (!load_fixture(kFixture, &f)) return;
  const Pair dirs = make_pair_dirs();
  auto be = elmo_test::make_backend({elmo::best_isa(), 2});
  std::unique_ptr<Bert> pruned;
  CHECK_OK(Bert::load(dirs.pruned, be.get(), &pruned));
  if (!pruned) return;
  elmo::TrainerOptions o;
  o.lr = 1e-3f;
  o.total_steps = 2;
  std::unique_ptr<elmo::Trainer> t;
  CHECK_OK(elmo::Trainer::create(pruned.get(), o, &t));
  const int B = static_cast<int>(f.offsets.size()) - 1;
  std::vector<int32_t> labels(static_cast<size_t>(B), 1);
  elmo::TrainBatch batch;
  batch.in = f.inputs();
  batch.labels_i32 = labels.data();
  batch.n_labels = B;
  for (int s = 0; s < 2 && t; ++s) {
    elmo::StepResult r;
    CHECK_OK(t->step(&batch, 1, &r));
    CHECK(std::isfinite(r.loss) && r.loss > 0 && std::isfinite(r.grad_norm));
  }
}

// bf16 and int8 precision: the pruned model's numbers are the zeroed model's at that precision
// (the kept rows round and quantize alike; the zero columns change no row's scale).
TEST_CASE(bf16_and_int8_equal_zeroed_heads) {
  Fixture f;
  if (!load_fixture(kFixture, &f)) return;
  const Pair dirs = make_pair_dirs();
  auto be = elmo_test::make_backend({elmo::best_isa(), 2});
  for (elmo::DType p : {elmo::DType::kBF16, elmo::DType::kI8}) {
    elmo::BertOptions opts;
    opts.precision = p;
    std::unique_ptr<Bert> full, pruned;
    CHECK_OK(Bert::load(dirs.zeroed, be.get(), &full, opts));
    CHECK_OK(Bert::load(dirs.pruned, be.get(), &pruned, opts));
    if (!full || !pruned) continue;
    elmo_test::context() = std::string("[") + elmo::dtype_name(p) + "]";
    const Outs a = run(*be, *full, f, false), b = run(*be, *pruned, f, false);
    close("logits", b.logits, a.logits, 1e-4);
    close("hidden", b.hidden, a.hidden, 1e-4);
  }
  elmo_test::context().clear();
}

TEST_CASE(lora_refused_on_pruned_heads) {
  const Pair dirs = make_pair_dirs();
  auto be = elmo_test::make_backend({elmo::best_isa(), 1});
  std::unique_ptr<Bert> pruned;
  CHECK_OK(Bert::load(dirs.pruned, be.get(), &pruned));
  if (pruned) CHECK_STATUS(pruned->lora_enable(4, 8, 1), Code::kUnsupported);
}

int main() { return elmo_test::run_all_tests(); }
