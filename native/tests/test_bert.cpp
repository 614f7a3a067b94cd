// BERT graph: parity with transformers on the fixtures (every ISA x 1/2 threads), save -> load
// round trip, checkpoint errors naming the tensor, input validation, arena reuse, training mode.
#include <sys/stat.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "elmo/bert.h"
#include "elmo/json.h"
#include "elmo/safetensors.h"
#include "harness.h"
#include "tests/forwarding_backend.h"
#include "tests/bert_fixture.h"

using elmo::Bert;
using elmo::Code;

using bert_fixture::Fixture;
using bert_fixture::fixtures_dir;
using bert_fixture::download;
using bert_fixture::load_fixture;
using bert_fixture::read_text;

namespace {

// Compares one output with the transformers float64 reference.
void compare(elmo::Backend& be, const Fixture& f, const std::string& key, const elmo::Tensor& got) {
  auto it = f.outputs.find(key);
  if (it == f.outputs.end()) {
    CHECK(got.empty());
    return;
  }
  CHECK(!got.empty());
  if (got.empty()) return;
  CHECK(got.numel() == static_cast<int64_t>(it->second.values.size()));
  CHECK(got.ndim == static_cast<int>(it->second.shape.size()) && got.shape[0] == it->second.shape[0]);
  if (got.numel() != static_cast<int64_t>(it->second.values.size())) return;
  const std::vector<float> g = download(be, got);
  // fp32 graph vs float64 reference: 1e-4 relative, with a 1e-4 floor for values near 0.
  elmo_test::all_close((f.dir + " " + key).c_str(), g.data(), it->second.values.data(), got.numel(), 1e-4, 1e-4);
}

const char* kFixtures[] = {"bert-a-cls", "bert-b-mlm", "bert-b-multilabel"};

std::string make_tmp_dir() {
  char tmpl[] = "/tmp/elmo-bert-XXXXXX";
  const char* d = mkdtemp(tmpl);
  CHECK(d != nullptr);
  return d ? d : "/tmp";
}

// Rewrites a fixture's checkpoint through `edit` (tensors as write items) into dir.
void rewrite_checkpoint(const std::string& src_dir, const std::string& dst_dir,
                        const std::function<void(std::vector<elmo::StWriteItem>*)>& edit,
                        const std::string& config_text = "") {
  std::unique_ptr<elmo::SafetensorsFile> f;
  CHECK_OK(elmo::SafetensorsFile::open(src_dir + "/model.safetensors", &f));
  std::vector<elmo::StWriteItem> items;
  for (const auto& t : f->tensors()) items.push_back({t.name, t.dtype, t.shape, t.data});
  edit(&items);
  CHECK_OK(elmo::write_safetensors(dst_dir + "/model.safetensors", items));
  const std::string cfg = config_text.empty() ? read_text(src_dir + "/config.json") : config_text;
  CHECK_OK(elmo::write_file_atomic(dst_dir + "/config.json", cfg.data(), cfg.size()));
}

}  // namespace

TEST_CASE(config_parse_and_validate) {
  elmo::BertConfig c;
  CHECK_OK(elmo::BertConfig::load(fixtures_dir() + "/bert-a-cls/config.json", &c));
  CHECK(c.hidden_size == 96 && c.num_heads == 3 && c.num_layers == 3 && c.intermediate_size == 200);
  CHECK(c.num_labels == 5 && c.labels.size() == 5 && c.labels[4] == "label_e");
  CHECK(c.problem_type == elmo::ProblemType::kSingleLabel);
  CHECK(c.architectures.size() == 1 && c.architectures[0] == "BertForSequenceClassification");
  elmo::BertConfig m;
  CHECK_OK(elmo::BertConfig::load(fixtures_dir() + "/bert-b-multilabel/config.json", &m));
  CHECK(m.problem_type == elmo::ProblemType::kMultiLabel && m.num_labels == 4 && m.type_vocab_size == 1);
  // to_json -> parse gives the same config.
  elmo::BertConfig r;
  CHECK_OK(elmo::BertConfig::parse(c.to_json(true, false), &r));
  CHECK(r.hidden_size == c.hidden_size && r.labels == c.labels && r.layer_norm_eps == c.layer_norm_eps &&
        r.problem_type == c.problem_type && r.hidden_dropout == c.hidden_dropout);

  const std::string base =
      "\"vocab_size\":10,\"hidden_size\":8,\"num_hidden_layers\":1,\"intermediate_size\":4,"
      "\"max_position_embeddings\":4";
  auto bad = [&](const std::string& extra, const char* needle) {
    elmo::BertConfig x;
    elmo::Status st = elmo::BertConfig::parse("{" + base + extra + "}", &x);
    CHECK(st.code() == Code::kCheckpoint);
    if (st.message().find(needle) == std::string::npos) {
      ++elmo_test::failures();
      std::fprintf(stderr, "  config %s: message \"%s\" lacks \"%s\"\n", extra.c_str(), st.message().c_str(), needle);
    }
  };
  elmo::BertConfig ok;
  CHECK_OK(elmo::BertConfig::parse("{" + base + ",\"num_attention_heads\":2}", &ok));
  CHECK(ok.num_labels == 2 && ok.type_vocab_size == 2);  // transformers defaults
  bad(",\"num_attention_heads\":3", "not a multiple");
  bad("", "num_attention_heads: missing");
  bad(",\"num_attention_heads\":2,\"hidden_act\":\"relu\"", "hidden_act");
  bad(",\"num_attention_heads\":2,\"hidden_size\":8", "duplicate");
  bad(",\"num_attention_heads\":2.5", "expected an integer");
  bad(",\"num_attention_heads\":-2", "outside");
  bad(",\"num_attention_heads\":2,\"id2label\":{\"0\":\"a\",\"2\":\"b\"}", "id2label");
  bad(",\"num_attention_heads\":2,\"id2label\":{\"0\":\"a\"},\"label2id\":{\"b\":0}", "label2id");
  bad(",\"num_attention_heads\":2,\"id2label\":{\"0\":\"a\"},\"num_labels\":3", "num_labels");
  bad(",\"num_attention_heads\":2,\"problem_type\":\"ranking\"", "problem_type");
  bad(",\"num_attention_heads\":2,\"hidden_dropout_prob\":1.5", "hidden_dropout_prob");
  bad(",\"num_attention_heads\":2,\"model_type\":\"gpt2\"", "model_type");
  bad(",\"num_attention_heads\":2,\"position_embedding_type\":\"relative_key\"", "position_embedding_type");
  CHECK_STATUS(elmo::BertConfig::parse("[1]", &ok), Code::kCheckpoint);
  CHECK_STATUS(elmo::BertConfig::parse("{", &ok), Code::kCheckpoint);
  CHECK_STATUS(elmo::BertConfig::load("/nonexistent/config.json", &ok), Code::kCheckpoint);
}

// fn(backend, config, fixture, model) for every fixture loaded on every CPU configuration
// (ISA path x thread count).
template <typename Fn>
void for_each_fixture_model(const Fn& fn) {
  for (const char* name : kFixtures) {
    Fixture f;
    if (!load_fixture(name, &f)) continue;
    elmo_test::for_each_config([&](elmo::Backend& be, const elmo_test::Config& cfg) {
      elmo_test::context() += std::string(" ") + name;
      std::unique_ptr<Bert> m;
      CHECK_OK(Bert::load(f.dir, &be, &m));
      if (m) fn(be, cfg, f, m);
    });
  }
}

TEST_CASE(parity_with_transformers) {
  for_each_fixture_model([](elmo::Backend& be, const auto&, const Fixture& f, const auto& m) {
    // The CPU keeps the linear weights packed for its GEMM; both layouts must match PyTorch.
    CHECK(m->weights_packed() == (be.weight_panel() > 0));
    const std::string ctx = elmo_test::context();
    for (bool packed : {true, false}) {
      CHECK_OK(m->set_weights_packed(packed));
      elmo_test::context() = ctx + (packed ? " packed" : " row-major");
      elmo::BertOutputs out;
      CHECK_OK(m->forward(f.inputs(), {}, &out));
      compare(be, f, "hidden", out.hidden);
      compare(be, f, "pooled", out.pooled);
      compare(be, f, "logits", out.logits);
      compare(be, f, "mlm_logits", out.mlm_logits);
    }
  });
}

// ForwardOptions::cls_only: the last layer on the [CLS] rows gives the pooled output, the
// logits and the [CLS] rows of the full forward bit for bit on the scalar and AVX-512 paths,
// for every thread count, with packed and row-major weights; hidden is left empty. The AVX2
// path runs products of at most 32 rows with a row-major weight on its streaming kernel, whose
// sums run in another order; the fixtures' FFN (200 wide, not a multiple of its 16-column
// panels) always stays row-major, so there the B-row products agree with the T-row ones to
// rounding (as a sequence's rows already do between batch sizes). Ignored with masked-LM
// positions.
TEST_CASE(cls_only_last_layer_same_bits) {
  for_each_fixture_model([](elmo::Backend& be, const elmo_test::Config& cfg, const Fixture& f, const auto& m) {
    elmo::BertInputs in = f.inputs();
    const bool mlm = in.n_mlm > 0;
    in.mlm_positions = nullptr;  // cls_only applies without masked-LM positions
    in.n_mlm = 0;
    const std::string ctx = elmo_test::context();
    for (bool packed : {true, false}) {
      CHECK_OK(m->set_weights_packed(packed));
      elmo_test::context() = ctx + (packed ? " packed" : " row-major");
      elmo::BertOutputs full, cls;
      CHECK_OK(m->forward(in, {}, &full));
      if (full.pooled.empty()) {
        CHECK(full.cls.empty());
        CHECK(m->forward_flops(in, true) == m->forward_flops(in));
        continue;  // no pooler: nothing reads the [CLS] rows alone
      }
      // The last layer's projection and FFN on B rows instead of T.
      const double Hd = static_cast<double>(m->config().hidden_size);
      const double Id = static_cast<double>(m->config().intermediate_size);
      const double saved = 2.0 * static_cast<double>(in.T - in.B) * (Hd * Hd + 2 * Hd * Id);
      CHECK(std::fabs(m->forward_flops(in) - m->forward_flops(in, true) - saved) <= 1e-9 * saved);
      const std::vector<float> hidden = download(be, full.hidden), pooled = download(be, full.pooled);
      const std::vector<float> logits = full.logits.empty() ? std::vector<float>() : download(be, full.logits);
      elmo::ForwardOptions o;
      o.cls_only = true;
      CHECK_OK(m->forward(in, o, &cls));
      CHECK(cls.hidden.empty());
      CHECK(!cls.cls.empty());
      if (cls.cls.empty()) continue;
      const bool exact = cfg.isa != elmo::Isa::kAvx2;
      auto same = [&](const char* what, const float* got, const float* want, int64_t n) {
        if (exact) elmo_test::bit_equal(what, got, want, n);
        else elmo_test::all_close(what, got, want, n, 1e-5, 1e-4);  // the fixtures' parity tolerance
      };
      const std::vector<float> rows = download(be, cls.cls);
      const int64_t H = m->config().hidden_size;
      for (int b = 0; b < in.B; ++b) same("cls row", rows.data() + b * H, hidden.data() + int64_t{in.offsets[b]} * H, H);
      const std::vector<float> p = download(be, cls.pooled);
      same("pooled", p.data(), pooled.data(), static_cast<int64_t>(p.size()));
      if (!logits.empty()) {
        const std::vector<float> l = download(be, cls.logits);
        same("logits", l.data(), logits.data(), static_cast<int64_t>(l.size()));
      }
    }
    if (mlm) {  // with masked-LM positions the full forward runs: hidden is there
      elmo::ForwardOptions o;
      o.cls_only = true;
      elmo::BertOutputs out;
      CHECK_OK(m->forward(f.inputs(), o, &out));
      CHECK(!out.hidden.empty());
    }
  });
}

TEST_CASE(threads_bit_identical) {
  Fixture f;
  if (!load_fixture("bert-a-cls", &f)) return;
  std::vector<std::vector<float>> results;
  for (const auto& cfg : elmo_test::all_configs()) {
    if (cfg.isa != elmo::best_isa()) continue;
    auto be = elmo_test::make_backend(cfg);
    std::unique_ptr<Bert> m;
    CHECK_OK(Bert::load(f.dir, be.get(), &m));
    if (!m) return;
    elmo::BertOutputs out;
    CHECK_OK(m->forward(f.inputs(), {}, &out));
    if (!out.hidden.empty()) results.push_back(download(*be, out.hidden));
  }
  CHECK(results.size() == 2);
  if (results.size() == 2 && results[0].size() == results[1].size())
    elmo_test::bit_equal("hidden 1 vs 2 threads", results[0].data(), results[1].data(),
                         static_cast<int64_t>(results[0].size()));
}

TEST_CASE(save_load_round_trip) {
  auto be = elmo_test::make_backend({elmo::best_isa(), 2});
  const char* keep = std::getenv("ELMO_ROUNDTRIP_OUT");  // for scripts/gen_bert_fixtures.py --check-roundtrip
  for (const char* name : kFixtures) {
    Fixture f;
    if (!load_fixture(name, &f)) continue;
    std::unique_ptr<Bert> a, b;
    CHECK_OK(Bert::load(f.dir, be.get(), &a));
    if (!a) continue;
    const std::string dir = keep ? std::string(keep) + "/" + name : make_tmp_dir();
    if (keep) ::mkdir(keep, 0755);
    CHECK_OK(a->save(dir));
    CHECK_OK(Bert::load(dir, be.get(), &b));
    if (!b) continue;
    CHECK(a->heads().pooler == b->heads().pooler && a->heads().classifier == b->heads().classifier &&
          a->heads().mlm == b->heads().mlm);
    CHECK(a->config().labels == b->config().labels && a->config().problem_type == b->config().problem_type);
    CHECK(a->parameters().size() == b->parameters().size());
    for (size_t i = 0; i < a->parameters().size() && i < b->parameters().size(); ++i) {
      CHECK(a->parameters()[i].name == b->parameters()[i].name);
      const auto pa = download(*be, a->parameters()[i].value), pb = download(*be, b->parameters()[i].value);
      CHECK(pa.size() == pb.size());
      if (pa.size() == pb.size()) elmo_test::bit_equal(a->parameters()[i].name.c_str(), pa.data(), pb.data(), static_cast<int64_t>(pa.size()));
    }
    elmo::BertOutputs oa, ob;
    CHECK_OK(a->forward(f.inputs(), {}, &oa));
    const auto ha = download(*be, oa.hidden);
    CHECK_OK(b->forward(f.inputs(), {}, &ob));
    const auto hb = download(*be, ob.hidden);
    if (ha.size() == hb.size()) elmo_test::bit_equal("hidden after round trip", ha.data(), hb.data(), static_cast<int64_t>(ha.size()));
    // save() wrote row-major matrices: unpacked, the reloaded weights equal the original's.
    CHECK_OK(a->set_weights_packed(false));
    CHECK_OK(b->set_weights_packed(false));
    for (size_t i = 0; i < a->parameters().size() && i < b->parameters().size(); ++i) {
      CHECK(a->parameters()[i].value.panel == 0 && b->parameters()[i].value.panel == 0);
      const auto pa = download(*be, a->parameters()[i].value), pb = download(*be, b->parameters()[i].value);
      if (pa.size() == pb.size()) elmo_test::bit_equal(a->parameters()[i].name.c_str(), pa.data(), pb.data(), static_cast<int64_t>(pa.size()));
    }
    // The file uses HF names with Q/K/V split and no fused names.
    std::unique_ptr<elmo::SafetensorsFile> sf;
    CHECK_OK(elmo::SafetensorsFile::open(dir + "/model.safetensors", &sf));
    if (sf) {
      CHECK(sf->find("bert.encoder.layer.0.attention.self.query.weight") != nullptr);
      CHECK(sf->find("bert.encoder.layer.0.attention.self.value.bias") != nullptr);
      CHECK(sf->find("bert.encoder.layer.0.attention.self.qkv.weight") == nullptr);
    }
    if (!keep) std::system(("rm -rf " + dir).c_str());
  }
}

TEST_CASE(bare_model_without_prefix) {
  auto be = elmo_test::make_backend({elmo::best_isa(), 1});
  Fixture f;
  if (!load_fixture("bert-b-mlm", &f)) return;
  const std::string dir = make_tmp_dir();
  // A bare BertModel checkpoint: no "bert." prefix, no heads.
  rewrite_checkpoint(f.dir, dir, [](std::vector<elmo::StWriteItem>* items) {
    std::vector<elmo::StWriteItem> kept;
    for (auto it : *items) {
      if (it.name.compare(0, 5, "bert.") != 0) continue;
      it.name = it.name.substr(5);
      kept.push_back(it);
    }
    *items = kept;
  }, "{\"vocab_size\":600,\"hidden_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":2,"
     "\"intermediate_size\":130,\"max_position_embeddings\":48,\"type_vocab_size\":2}");
  std::unique_ptr<Bert> m;
  CHECK_OK(Bert::load(dir, be.get(), &m));
  if (m) {
    CHECK(!m->heads().pooler && !m->heads().classifier && !m->heads().mlm);
    elmo::BertInputs in = f.inputs();
    in.n_mlm = 0;
    elmo::BertOutputs out;
    CHECK_OK(m->forward(in, {}, &out));
    compare(*be, f, "hidden", out.hidden);
    CHECK(out.pooled.empty() && out.logits.empty() && out.mlm_logits.empty());
    CHECK_STATUS(m->forward(f.inputs(), {}, &out), Code::kInput);  // MLM positions without the head
  }
  std::system(("rm -rf " + dir).c_str());
}

TEST_CASE(checkpoint_errors_name_the_tensor) {
  auto be = elmo_test::make_backend({elmo::best_isa(), 1});
  const std::string src = fixtures_dir() + "/bert-a-cls";
  const std::string dir = make_tmp_dir();
  auto expect = [&](const std::function<void(std::vector<elmo::StWriteItem>*)>& edit, const char* needle,
                    const std::string& cfg = "") {
    rewrite_checkpoint(src, dir, edit, cfg);
    std::unique_ptr<Bert> m;
    elmo::Status st = Bert::load(dir, be.get(), &m);
    CHECK(st.code() == Code::kCheckpoint && !m);
    if (st.message().find(needle) == std::string::npos) {
      ++elmo_test::failures();
      std::fprintf(stderr, "  load error \"%s\" lacks \"%s\"\n", st.message().c_str(), needle);
    }
  };
  auto drop = [](const char* name) {
    return [name](std::vector<elmo::StWriteItem>* items) {
      for (size_t i = 0; i < items->size(); ++i)
        if ((*items)[i].name == name) items->erase(items->begin() + static_cast<std::ptrdiff_t>(i));
    };
  };
  expect(drop("bert.encoder.layer.2.attention.self.key.bias"), "bert.encoder.layer.2.attention.self.key.bias: missing");
  expect(drop("bert.embeddings.LayerNorm.weight"), "bert.embeddings.LayerNorm.weight: missing");
  expect(drop("classifier.weight"), "classifier.weight: missing");
  expect(drop("bert.pooler.dense.weight"), "bert.pooler.dense.weight: missing");
  static float extra[4] = {1, 2, 3, 4};
  expect([](std::vector<elmo::StWriteItem>* items) { items->push_back({"bert.encoder.layer.9.foo", elmo::StDType::kF32, {4}, extra}); },
         "bert.encoder.layer.9.foo: unexpected tensor");
  expect([](std::vector<elmo::StWriteItem>* items) {
           for (auto& it : *items)
             if (it.name == "bert.encoder.layer.1.intermediate.dense.bias") it.shape = {100, 2};
         },
         "bert.encoder.layer.1.intermediate.dense.bias: expected shape [200] but the file has [100, 2]");
  expect([](std::vector<elmo::StWriteItem>* items) {
           for (auto& it : *items)
             if (it.name == "bert.pooler.dense.bias") it.dtype = elmo::StDType::kI32;
         },
         "bert.pooler.dense.bias: dtype I32");
  // Config says 4 labels, the classifier has 5 rows.
  std::string cfg = read_text(src + "/config.json");
  elmo::BertConfig c;
  CHECK_OK(elmo::BertConfig::parse(cfg, &c));
  c.num_labels = 4;
  c.labels.resize(4);
  expect([](std::vector<elmo::StWriteItem>*) {}, "classifier.weight: has 5 rows", c.to_json(true, false));
  // Tied decoder tensors and old buffers are accepted.
  rewrite_checkpoint(src, dir, [](std::vector<elmo::StWriteItem>* items) {
    static std::vector<int64_t> pos(64);
    items->push_back({"bert.embeddings.position_ids", elmo::StDType::kI64, {1, 64}, pos.data()});
  });
  std::unique_ptr<Bert> m;
  CHECK_OK(Bert::load(dir, be.get(), &m));
  // A corrupt safetensors file is reported, not crashed on.
  FILE* fp = std::fopen((dir + "/model.safetensors").c_str(), "r+b");
  if (fp) {
    const uint64_t huge = ~uint64_t(0);
    std::fwrite(&huge, 8, 1, fp);
    std::fclose(fp);
  }
  CHECK_STATUS(Bert::load(dir, be.get(), &m), Code::kCheckpoint);
  CHECK_STATUS(Bert::load("/nonexistent", be.get(), &m), Code::kCheckpoint);
  std::system(("rm -rf " + dir).c_str());
}

TEST_CASE(bad_inputs) {
  auto be = elmo_test::make_backend({elmo::best_isa(), 1});
  Fixture f;
  if (!load_fixture("bert-a-cls", &f)) return;
  std::unique_ptr<Bert> m;
  CHECK_OK(Bert::load(f.dir, be.get(), &m));
  if (!m) return;
  elmo::BertOutputs out;
  {
    Fixture g = f;
    g.ids[3] = 600;
    CHECK_STATUS(m->forward(g.inputs(), {}, &out), Code::kInput);
    g.ids[3] = -1;
    CHECK_STATUS(m->forward(g.inputs(), {}, &out), Code::kInput);
  }
  {
    Fixture g = f;
    g.type_ids[0] = 2;
    CHECK_STATUS(m->forward(g.inputs(), {}, &out), Code::kInput);
  }
  {
    Fixture g = f;
    g.offsets[1] = g.offsets[0];  // empty first sequence
    CHECK_STATUS(m->forward(g.inputs(), {}, &out), Code::kInput);
    g = f;
    g.offsets.back() += 1;  // offsets[B] != T
    CHECK(!m->forward(g.inputs(), {}, &out).is_ok());
  }
  {
    std::vector<int32_t> ids(65, 5), offsets{0, 65};  // longer than max_position_embeddings 64
    elmo::BertInputs in;
    in.ids = ids.data();
    in.offsets = offsets.data();
    in.B = 1;
    in.T = 65;
    CHECK_STATUS(m->forward(in, {}, &out), Code::kInput);
    in.ids = nullptr;
    CHECK_STATUS(m->forward(in, {}, &out), Code::kInput);
  }
  // After all of that the model still works.
  CHECK_OK(m->forward(f.inputs(), {}, &out));
  compare(*be, f, "logits", out.logits);
}

// The fixture's batch `times` over, as one packed batch (its arrays owned here).
struct Repeated {
  std::vector<int32_t> ids, types, offsets{0};
  Repeated(const Fixture& f, int times) {
    for (int r = 0; r < times; ++r) {
      ids.insert(ids.end(), f.ids.begin(), f.ids.end());
      types.insert(types.end(), f.type_ids.begin(), f.type_ids.end());
      for (size_t b = 1; b < f.offsets.size(); ++b) offsets.push_back(offsets.back() + f.offsets[b] - f.offsets[b - 1]);
    }
  }
  elmo::BertInputs inputs() const {
    return elmo::BertInputs{ids.data(), types.data(), offsets.data(), static_cast<int>(offsets.size()) - 1,
                            static_cast<int64_t>(ids.size())};
  }
};

TEST_CASE(arena_allocated_once_and_grown_on_demand) {
  auto be = elmo_test::make_backend({elmo::best_isa(), 1});
  Fixture f;
  if (!load_fixture("bert-b-mlm", &f)) return;
  std::unique_ptr<Bert> m;
  CHECK_OK(Bert::load(f.dir, be.get(), &m));
  if (!m) return;
  elmo::BertOutputs out;
  CHECK_OK(m->forward(f.inputs(), {}, &out));
  CHECK(m->arena_allocations() == 1);
  const size_t bytes = m->arena_bytes();
  const uint64_t warm = be->allocations();
  // Smaller batches and repeated calls reuse it, and nothing else is allocated.
  elmo::BertInputs small = f.inputs();
  small.B = 2;
  small.T = f.offsets[2];
  small.n_mlm = 2;
  for (int i = 0; i < 3; ++i) CHECK_OK(m->forward(small, {}, &out));
  CHECK_OK(m->forward(f.inputs(), {}, &out));
  compare(*be, f, "mlm_logits", out.mlm_logits);
  CHECK(m->arena_allocations() == 1 && m->arena_bytes() == bytes);
  CHECK(be->allocations() == warm);
  // A bigger batch grows it once.
  const Repeated big(f, 3);
  CHECK_OK(m->forward(big.inputs(), {}, &out));
  CHECK(m->arena_allocations() == 2 && m->arena_bytes() > bytes);
  CHECK(be->allocations() == warm + 1);  // the arena, nothing else
  // The repeated sequences give the same hidden rows as the original batch.
  const auto h = download(*be, out.hidden);
  const auto& want = f.outputs["hidden"].values;
  const int64_t n = static_cast<int64_t>(want.size());
  if (static_cast<int64_t>(h.size()) == 3 * n)
    for (int r = 0; r < 3; ++r) elmo_test::all_close("repeated batch", h.data() + r * n, want.data(), n, 1e-4, 1e-4);
}

namespace {
// A CPU backend whose alloc() refuses, once `cap` is set, any allocation over cap bytes with
// ERR_OOM, as a device that has run out of memory does.
class CappedBackend final : public elmo_test::ForwardingBackend {
 public:
  using ForwardingBackend::ForwardingBackend;
  size_t cap = SIZE_MAX;
  elmo::Status alloc(elmo::Tensor* out, elmo::DType dtype, std::initializer_list<int64_t> dims) override {
    size_t bytes = elmo::dtype_size(dtype);
    for (int64_t d : dims) bytes *= static_cast<size_t>(d);
    if (bytes > cap) return elmo::Status(Code::kOom, "capped: out of memory");
    return ForwardingBackend::alloc(out, dtype, dims);
  }
};
}  // namespace

// Out of memory on a batch too large for the activation arena: ERR_OOM, and the model stays
// usable: the batch it ran before runs again with the same results, and a larger one that fits
// exactly, but not with the arena's usual headroom, runs too.
TEST_CASE(arena_out_of_memory_leaves_the_model_usable) {
  Fixture f;
  if (!load_fixture("bert-a-cls", &f)) return;
  const Repeated four(f, 4), sixteen(f, 16);
  // The cap: the arena of exactly 4x the batch. 4x with headroom (6x) and 16x do not fit it.
  size_t bytes4 = 0;
  {
    auto be = elmo_test::make_backend({elmo::best_isa(), 1});
    std::unique_ptr<Bert> m;
    CHECK_OK(Bert::load(f.dir, be.get(), &m));
    if (!m) return;
    elmo::BertOutputs out;
    CHECK_OK(m->forward(four.inputs(), {}, &out));
    bytes4 = m->arena_bytes();
  }
  auto be = std::make_unique<CappedBackend>(elmo_test::make_backend({elmo::best_isa(), 1}));
  std::unique_ptr<Bert> m;
  CHECK_OK(Bert::load(f.dir, be.get(), &m));
  if (!m) return;
  be->cap = bytes4;  // the weights are in; from here on nothing over the 4x arena fits
  elmo::BertOutputs out;
  CHECK_OK(m->forward(f.inputs(), {}, &out));
  compare(*be, f, "logits", out.logits);
  const size_t bytes1 = m->arena_bytes();
  CHECK_STATUS(m->forward(sixteen.inputs(), {}, &out), Code::kOom);
  CHECK(m->arena_bytes() == 0);
  // The fixture's batch again: the arena comes back at its old size.
  CHECK_OK(m->forward(f.inputs(), {}, &out));
  compare(*be, f, "logits", out.logits);
  CHECK(m->arena_bytes() == bytes1);
  // 4x: no room for the headroom, so exactly 4x, with each copy's logits right.
  CHECK_OK(m->forward(four.inputs(), {}, &out));
  CHECK(m->arena_bytes() == bytes4);
  const auto logits = download(*be, out.logits);
  const auto& want = f.outputs["logits"].values;
  const int64_t n = static_cast<int64_t>(want.size());
  CHECK(static_cast<int64_t>(logits.size()) == 4 * n);
  if (static_cast<int64_t>(logits.size()) == 4 * n)
    for (int r = 0; r < 4; ++r) elmo_test::all_close("4x batch logits", logits.data() + r * n, want.data(), n, 1e-4, 1e-4);
}

TEST_CASE(training_mode) {
  auto be = elmo_test::make_backend({elmo::best_isa(), 2});
  Fixture f;
  if (!load_fixture("bert-a-cls", &f)) return;
  std::unique_ptr<Bert> m;
  CHECK_OK(Bert::load(f.dir, be.get(), &m));
  if (!m) return;
  elmo::BertOutputs out;
  elmo::ForwardOptions train;
  train.training = true;
  train.seed = 42;
  CHECK_OK(m->forward(f.inputs(), train, &out));
  CHECK(m->arena_allocations() == 1);
  const auto l1 = download(*be, out.logits);
  CHECK_OK(m->forward(f.inputs(), train, &out));
  const auto l2 = download(*be, out.logits);
  if (l1.size() == l2.size()) elmo_test::bit_equal("same seed, same dropout", l1.data(), l2.data(), static_cast<int64_t>(l1.size()));
  train.seed = 43;
  CHECK_OK(m->forward(f.inputs(), train, &out));
  const auto l3 = download(*be, out.logits);
  CHECK(l3.size() == l1.size() && std::memcmp(l1.data(), l3.data(), l1.size() * 4) != 0);
  for (float v : l3) CHECK(std::isfinite(v));
  // Eval after training reuses the (larger) arena and matches the reference.
  CHECK_OK(m->forward(f.inputs(), {}, &out));
  compare(*be, f, "logits", out.logits);
  CHECK(m->arena_allocations() == 1);

  // With every dropout probability 0, the training graph computes the eval outputs.
  elmo::BertConfig c = m->config();
  c.hidden_dropout = c.attention_dropout = 0;
  c.classifier_dropout = 0;
  std::unique_ptr<Bert> z;
  CHECK_OK(Bert::load_weights(f.dir + "/model.safetensors", c, be.get(), &z));
  if (!z) return;
  CHECK_OK(z->forward(f.inputs(), train, &out));
  compare(*be, f, "hidden", out.hidden);
  compare(*be, f, "logits", out.logits);
}

TEST_CASE(create_fresh_model) {
  auto be = elmo_test::make_backend({elmo::best_isa(), 1});
  elmo::BertConfig c;
  c.vocab_size = 50;
  c.hidden_size = 24;
  c.num_layers = 2;
  c.num_heads = 3;
  c.intermediate_size = 37;
  c.max_position = 16;
  c.num_labels = 3;
  elmo::BertHeads heads;
  heads.classifier = true;
  heads.mlm = true;
  std::unique_ptr<Bert> a, b;
  CHECK_OK(Bert::create(c, heads, 7, be.get(), &a));
  CHECK_OK(Bert::create(c, heads, 7, be.get(), &b));
  if (!a || !b) return;
  CHECK(a->num_parameters() > 0);
  // Deterministic in the seed; LayerNorm at identity, biases zero, [PAD] row zero.
  for (size_t i = 0; i < a->parameters().size(); ++i) {
    const auto pa = download(*be, a->parameters()[i].value), pb = download(*be, b->parameters()[i].value);
    elmo_test::bit_equal(a->parameters()[i].name.c_str(), pa.data(), pb.data(), static_cast<int64_t>(pa.size()));
    const std::string& n = a->parameters()[i].name;
    if (n.find("LayerNorm.weight") != std::string::npos) CHECK(pa[0] == 1.0f);
    if (n.find(".bias") != std::string::npos) CHECK(pa[0] == 0.0f);
    if (n == "bert.embeddings.word_embeddings.weight") CHECK(pa[0] == 0.0f && pa[24] != 0.0f);
  }
  // The two parameter regions hold every parameter.
  CHECK(a->decay_region().numel() + a->no_decay_region().numel() >= a->num_parameters());
  std::vector<int32_t> ids{1, 5, 9, 2, 3}, offsets{0, 3, 5}, pos{1, 4};
  elmo::BertInputs in;
  in.ids = ids.data();
  in.offsets = offsets.data();
  in.B = 2;
  in.T = 5;
  in.mlm_positions = pos.data();
  in.n_mlm = 2;
  elmo::BertOutputs out;
  CHECK_OK(a->forward(in, {}, &out));
  CHECK(out.logits.numel() == 6 && out.mlm_logits.numel() == 100 && out.pooled.numel() == 48);
  for (float v : download(*be, out.logits)) CHECK(std::isfinite(v));
  elmo::BertHeads bad;
  bad.pooler = false;
  bad.classifier = true;
  CHECK_STATUS(Bert::create(c, bad, 7, be.get(), &a), Code::kInput);
  c.num_heads = 5;
  CHECK_STATUS(Bert::create(c, heads, 7, be.get(), &a), Code::kCheckpoint);
}

int main() { return elmo_test::run_all_tests(); }
