// Training: parity with transformers + torch.optim.AdamW step for step (test/fixtures/train-*,
// written by scripts/gen_train_fixtures.py: loss, every parameter's gradient, every parameter
// after 5 AdamW steps with warmup + linear decay, clipping and weight decay), for sequence
// single- and multi-label, regression, token classification and masked LM; then the step's
// own guarantees: micro-batches add up to the big batch, dropout is the same bits on every ISA
// and thread count, save/load of the optimizer state resumes bit for bit, nothing is
// allocated per step, bad labels and non-finite losses are refused without touching weights.
#include <cmath>
#include <cstring>
#include <map>
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
using elmo::Trainer;
using elmo::TrainTask;

namespace {

using Tensors = std::map<std::string, std::vector<float>>;

// The model's parameters (or gradients) by Hugging Face name, Q/K/V split.
Tensors by_hf_name(elmo::Backend& be, const std::vector<Bert::Param>& params, int64_t H) {
  Tensors out;
  for (const Bert::Param& p : params) {
    std::vector<float> v = bert_fixture::download(be, p.value);
    const std::string fused = ".attention.self.qkv.";
    const size_t at = p.name.find(fused);
    if (at == std::string::npos) {
      out[p.name] = std::move(v);
      continue;
    }
    const std::string base = p.name.substr(0, at) + ".attention.self.";
    const std::string kind = p.name.substr(at + fused.size());
    const size_t part = kind == "weight" ? static_cast<size_t>(H * H) : static_cast<size_t>(H);
    const char* names[] = {"query.", "key.", "value."};
    for (size_t k = 0; k < 3; ++k)
      out[base + names[k] + kind] = std::vector<float>(v.begin() + static_cast<std::ptrdiff_t>(k * part),
                                                       v.begin() + static_cast<std::ptrdiff_t>((k + 1) * part));
  }
  return out;
}

Tensors read_safetensors(const std::string& path) {
  Tensors out;
  std::unique_ptr<elmo::SafetensorsFile> f;
  CHECK_OK(elmo::SafetensorsFile::open(path, &f));
  if (!f) return out;
  for (const auto& t : f->tensors()) {
    CHECK(t.dtype == elmo::StDType::kF32);
    std::vector<float> v(static_cast<size_t>(t.numel()));
    std::memcpy(v.data(), t.data, v.size() * 4);
    out[t.name] = std::move(v);
  }
  return out;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, std::fabs(static_cast<double>(x)));
  return m;
}

struct TrainFixture {
  std::string dir;
  TrainTask task = TrainTask::kSequence;
  std::vector<int32_t> ids, type_ids, offsets, labels_i32;
  std::vector<float> labels_f32;
  std::vector<int32_t> intents, slots;  // joint task
  std::vector<float> intent_probs, emotions;
  elmo::TrainerOptions opts;
  int steps = 0;
  std::vector<double> losses, grad_norms, lrs;

  elmo::TrainBatch batch() const {
    elmo::TrainBatch b;
    b.in.ids = ids.data();
    b.in.type_ids = type_ids.data();
    b.in.offsets = offsets.data();
    b.in.B = static_cast<int>(offsets.size()) - 1;
    b.in.T = static_cast<int64_t>(ids.size());
    if (task == TrainTask::kJoint) {
      auto set_i = [](const std::vector<int32_t>& v, const int32_t** p, int64_t* n) {
        if (!v.empty()) *p = v.data(), *n = static_cast<int64_t>(v.size());
      };
      auto set_f = [](const std::vector<float>& v, const float** p, int64_t* n) {
        if (!v.empty()) *p = v.data(), *n = static_cast<int64_t>(v.size());
      };
      set_i(intents, &b.intents, &b.n_intents);
      set_f(intent_probs, &b.intent_probs, &b.n_intent_probs);
      set_f(emotions, &b.emotions, &b.n_emotions);
      set_i(slots, &b.slots, &b.n_slots);
    } else if (labels_f32.empty()) {
      b.labels_i32 = labels_i32.data();
      b.n_labels = static_cast<int64_t>(labels_i32.size());
    } else {
      b.labels_f32 = labels_f32.data();
      b.n_labels = static_cast<int64_t>(labels_f32.size());
    }
    return b;
  }
};

bool load_train_fixture(const std::string& name, TrainFixture* f) {
  f->dir = bert_fixture::fixtures_dir() + "/" + name;
  elmo::json::Value m;
  const elmo::Status st = elmo::json::parse(bert_fixture::read_text(f->dir + "/manifest.json"), &m);
  if (!st.is_ok()) {
    ++elmo_test::failures();
    std::fprintf(stderr, "  %s: manifest: %s\n", name.c_str(), st.message().c_str());
    return false;
  }
  const std::string task = m.find("task")->as_string();
  f->task = task == "seq"          ? TrainTask::kSequence
            : task == "multilabel" ? TrainTask::kMultiLabel
            : task == "regression" ? TrainTask::kRegression
            : task == "token"      ? TrainTask::kToken
            : task == "joint"      ? TrainTask::kJoint
                                   : TrainTask::kMlm;
  f->ids = bert_fixture::int_array(m.find("ids"));
  f->type_ids = bert_fixture::int_array(m.find("type_ids"));
  f->offsets = bert_fixture::int_array(m.find("offsets"));
  if (f->task == TrainTask::kJoint) {
    auto ints = [&](const char* k, std::vector<int32_t>* out) {
      const elmo::json::Value* v = m.find(k);
      if (v && !v->is_null()) *out = bert_fixture::int_array(v);
    };
    auto floats = [&](const char* k, std::vector<float>* out) {
      const elmo::json::Value* v = m.find(k);
      if (v && !v->is_null())
        for (const auto& x : v->items()) out->push_back(static_cast<float>(x.as_double()));
    };
    ints("intents", &f->intents);
    floats("intent_probs", &f->intent_probs);
    floats("emotions", &f->emotions);
    ints("slots", &f->slots);
    f->opts.joint_intents = static_cast<int>(m.find("joint_intents")->as_int());
    int k = 0;
    for (const auto& w : m.find("loss_weights")->items()) f->opts.loss_weights[k++] = static_cast<float>(w.as_double());
  }
  if (const elmo::json::Value* labels = m.find("labels"))
  for (const auto& v : labels->items()) {
    if (f->task == TrainTask::kMultiLabel || f->task == TrainTask::kRegression)
      f->labels_f32.push_back(static_cast<float>(v.as_double()));
    else
      f->labels_i32.push_back(static_cast<int32_t>(v.as_int()));
  }
  const elmo::json::Value* o = m.find("optimizer");
  f->opts.task = f->task;
  f->opts.lr = static_cast<float>(o->find("lr")->as_double());
  f->opts.beta1 = static_cast<float>(o->find("beta1")->as_double());
  f->opts.beta2 = static_cast<float>(o->find("beta2")->as_double());
  f->opts.eps = static_cast<float>(o->find("eps")->as_double());
  f->opts.weight_decay = static_cast<float>(o->find("weight_decay")->as_double());
  f->opts.warmup_steps = o->find("warmup_steps")->as_int();
  f->opts.total_steps = o->find("total_steps")->as_int();
  f->opts.schedule = elmo::LrSchedule::kLinear;
  f->opts.max_grad_norm = static_cast<float>(o->find("max_grad_norm")->as_double());
  f->steps = static_cast<int>(m.find("steps")->as_int());
  for (const auto& v : m.find("losses")->items()) f->losses.push_back(v.as_double());
  for (const auto& v : m.find("grad_norms")->items()) f->grad_norms.push_back(v.as_double());
  for (const auto& v : m.find("lrs")->items()) f->lrs.push_back(v.as_double());
  return true;
}

const char* kTrainFixtures[] = {"train-seq", "train-multilabel", "train-regression", "train-token", "train-mlm",
                                "train-joint", "train-joint-soft"};

void close_scalar(const char* what, double got, double want, double rtol) {
  if (std::fabs(got - want) > rtol * std::max(1e-6, std::fabs(want))) {
    ++elmo_test::failures();
    std::fprintf(stderr, "  %s%s: got %.9g, want %.9g\n", elmo_test::context().c_str(), what, got, want);
  }
}

}  // namespace

// Loss, every gradient, and every parameter and its update after 5 steps, against PyTorch
// (float64 reference of the same f32 initial weights).
TEST_CASE(parity_with_pytorch_five_adamw_steps) {
  elmo_test::for_each_config([](elmo::Backend& be, const elmo_test::Config&) {
    for (const char* name : kTrainFixtures) {
      TrainFixture f;
      if (!load_train_fixture(name, &f)) continue;
      std::unique_ptr<Bert> m;
      CHECK_OK(Bert::load(f.dir, &be, &m));
      if (!m) continue;
      const int64_t H = m->config().hidden_size;
      const Tensors before = by_hf_name(be, m->parameters(), H);
      std::unique_ptr<Trainer> tr;
      CHECK_OK(Trainer::create(m.get(), f.opts, &tr));
      if (!tr) continue;
      const elmo::TrainBatch b = f.batch();
      for (int s = 0; s < f.steps; ++s) {
        elmo::StepResult r;
        CHECK_OK(tr->step(&b, 1, &r));
        const std::string at = std::string(name) + " step " + std::to_string(s + 1);
        close_scalar((at + " loss").c_str(), r.loss, f.losses[static_cast<size_t>(s)], 1e-5);
        close_scalar((at + " grad norm").c_str(), r.grad_norm, f.grad_norms[static_cast<size_t>(s)], 1e-4);
        close_scalar((at + " lr").c_str(), r.lr, f.lrs[static_cast<size_t>(s)], 1e-6);
        if (s > 0) continue;
        // The first step's gradients (before clipping: the model keeps them unscaled).
        const Tensors got = by_hf_name(be, m->gradients(), H);
        const Tensors want = read_safetensors(f.dir + "/grads.safetensors");
        CHECK(got.size() == want.size());
        for (const auto& [pname, w] : want) {
          auto it = got.find(pname);
          CHECK(it != got.end());
          if (it == got.end() || it->second.size() != w.size()) continue;
          const std::string what = at + " d" + pname;
          if (pname.find("attention.self.key.bias") != std::string::npos) {
            CHECK(max_abs(it->second) == 0.0);  // exactly zero, not rounding noise
            continue;
          }
          // 1e-4 relative to the tensor's scale: a gradient element near 0 carries the
          // rounding of the larger terms it sums.
          const double scale = std::max(max_abs(w), 1e-12);
          elmo_test::all_close(what.c_str(), it->second.data(), w.data(), static_cast<int64_t>(w.size()), 1e-4 * scale, 1e-4);
        }
      }
      const Tensors after = by_hf_name(be, m->parameters(), H);
      const Tensors want = read_safetensors(f.dir + "/after.safetensors");
      CHECK(after.size() == want.size());
      for (const auto& [pname, w] : want) {
        auto it = after.find(pname);
        auto b0 = before.find(pname);
        CHECK(it != after.end() && b0 != before.end());
        if (it == after.end() || b0 == before.end() || it->second.size() != w.size()) continue;
        const std::string what = std::string(name) + " " + pname;
        elmo_test::all_close((what + " after 5 steps").c_str(), it->second.data(), w.data(), static_cast<int64_t>(w.size()),
                             1e-4, 1e-4);
        // The update itself: weight decay wrongly applied to a LayerNorm moves a weight by
        // ~lr * wd * steps, invisible next to the weight, obvious next to the update.
        std::vector<float> du(w.size()), dw(w.size());
        for (size_t i = 0; i < w.size(); ++i) {
          du[i] = it->second[i] - b0->second[i];
          dw[i] = w[i] - b0->second[i];
        }
        const double scale = std::max(max_abs(dw), 1e-12);
        elmo_test::all_close((what + " update").c_str(), du.data(), dw.data(), static_cast<int64_t>(w.size()), 1e-3 * scale,
                             1e-3);
      }
    }
  });
}

namespace {

// bert-a-cls (5 labels, dropout 0.1 in its config) with a trainer.
struct ClsSetup {
  bert_fixture::Fixture f;
  std::unique_ptr<Bert> m;
  std::unique_ptr<Trainer> tr;
  std::vector<int32_t> labels;
  bool ok = false;
  ClsSetup(elmo::Backend& be, const elmo::TrainerOptions& o) {
    if (!bert_fixture::load_fixture("bert-a-cls", &f)) return;
    CHECK_OK(Bert::load(f.dir, &be, &m));
    if (!m) return;
    CHECK_OK(Trainer::create(m.get(), o, &tr));
    for (int b = 0; b + 1 < static_cast<int>(f.offsets.size()); ++b) labels.push_back((b * 3 + 1) % 5);
    ok = tr != nullptr;
  }
  elmo::TrainBatch batch() const {
    elmo::TrainBatch b;
    b.in = f.inputs();
    b.in.mlm_positions = nullptr;
    b.in.n_mlm = 0;
    b.labels_i32 = labels.data();
    b.n_labels = static_cast<int64_t>(labels.size());
    return b;
  }
  std::vector<float> params(elmo::Backend& be) const {
    std::vector<float> all;
    for (const auto& p : m->parameters()) {
      const auto v = bert_fixture::download(be, p.value);
      all.insert(all.end(), v.begin(), v.end());
    }
    return all;
  }
};

elmo::TrainerOptions cls_options() {
  elmo::TrainerOptions o;
  o.task = TrainTask::kSequence;
  o.lr = 1e-3f;
  o.weight_decay = 0.01f;
  o.warmup_steps = 2;
  o.total_steps = 10;
  o.max_grad_norm = 1.0f;
  o.seed = 7;
  return o;
}

// The batch split into two micro-batches at sequence `cut`.
std::vector<elmo::TrainBatch> split(const elmo::TrainBatch& b, int cut, std::vector<int32_t>* offs2) {
  std::vector<elmo::TrainBatch> parts(2, b);
  const int32_t t0 = b.in.offsets[cut];
  parts[0].in.B = cut;
  parts[0].in.T = t0;
  parts[0].n_labels = cut;
  offs2->clear();
  for (int i = cut; i <= b.in.B; ++i) offs2->push_back(b.in.offsets[i] - t0);
  parts[1].in.ids = b.in.ids + t0;
  parts[1].in.type_ids = b.in.type_ids ? b.in.type_ids + t0 : nullptr;
  parts[1].in.offsets = offs2->data();
  parts[1].in.B = b.in.B - cut;
  parts[1].in.T = b.in.T - t0;
  parts[1].labels_i32 = b.labels_i32 + cut;
  parts[1].n_labels = b.in.B - cut;
  return parts;
}

}  // namespace

// Gradient accumulation: two micro-batches give the big batch's loss and gradient (the mean
// is over all their sequences), to fp32 summation order.
TEST_CASE(micro_batches_add_up_to_the_batch) {
  auto be = elmo_test::make_backend({elmo::best_isa(), 2});
  elmo::TrainerOptions o = cls_options();
  o.hidden_dropout = 0;
  o.attention_dropout = 0;
  ClsSetup one(*be, o), two(*be, o);
  if (!one.ok || !two.ok) return;
  const elmo::TrainBatch b = one.batch();
  std::vector<int32_t> offs2;
  const std::vector<elmo::TrainBatch> parts = split(b, 2, &offs2);
  elmo::StepResult r1, r2;
  CHECK_OK(one.tr->step(&b, 1, &r1));
  CHECK_OK(two.tr->step(parts.data(), 2, &r2));
  close_scalar("loss", r2.loss, r1.loss, 1e-6);
  close_scalar("grad norm", r2.grad_norm, r1.grad_norm, 1e-5);
  CHECK(r1.count == b.in.B && r2.count == b.in.B);
  const auto p1 = one.params(*be), p2 = two.params(*be);
  elmo_test::all_close("params after one step", p2.data(), p1.data(), static_cast<int64_t>(p1.size()), 1e-6, 1e-5);
}

// The joint task's heads normalize over the whole step: two micro-batches (one of them without
// an intent on one row, without emotions on another) give the big batch's loss and gradients.
TEST_CASE(joint_micro_batches_add_up_to_the_batch) {
  auto be = elmo_test::make_backend({elmo::best_isa(), 2});
  TrainFixture f;
  if (!load_train_fixture("train-joint", &f)) return;
  std::unique_ptr<Bert> m1, m2;
  CHECK_OK(Bert::load(f.dir, be.get(), &m1));
  CHECK_OK(Bert::load(f.dir, be.get(), &m2));
  if (!m1 || !m2) return;
  std::unique_ptr<Trainer> t1, t2;
  CHECK_OK(Trainer::create(m1.get(), f.opts, &t1));
  CHECK_OK(Trainer::create(m2.get(), f.opts, &t2));
  if (!t1 || !t2) return;
  const elmo::TrainBatch b = f.batch();
  const int cut = 3;
  const int32_t t0 = b.in.offsets[cut];
  const int64_t Le = m1->config().num_labels - f.opts.joint_intents;
  std::vector<int32_t> offs2;
  for (int i = cut; i <= b.in.B; ++i) offs2.push_back(b.in.offsets[i] - t0);
  std::vector<elmo::TrainBatch> parts(2, b);
  parts[0].in.B = cut, parts[0].in.T = t0;
  parts[0].n_intents = cut, parts[0].n_emotions = cut * Le, parts[0].n_slots = t0;
  elmo::TrainBatch& p = parts[1];
  p.in.ids += t0, p.in.type_ids += t0, p.in.offsets = offs2.data();
  p.in.B = b.in.B - cut, p.in.T = b.in.T - t0;
  p.intents += cut, p.emotions += cut * Le, p.slots += t0;
  p.n_intents = p.in.B, p.n_emotions = p.in.B * Le, p.n_slots = p.in.T;
  elmo::StepResult r1, r2;
  CHECK_OK(t1->step(&b, 1, &r1));
  CHECK_OK(t2->step(parts.data(), 2, &r2));
  close_scalar("loss", r2.loss, r1.loss, 1e-6);
  close_scalar("grad norm", r2.grad_norm, r1.grad_norm, 1e-5);
  for (int k = 0; k < 3; ++k) {
    CHECK(r1.head_count[k] == r2.head_count[k] && r1.head_count[k] > 0);
    close_scalar("head loss", r2.head_loss[k], r1.head_loss[k], 1e-6);
  }
  CHECK(r1.head_count[0] == b.in.B - 1 && r1.head_count[1] == b.in.B - 1);  // one row without each
  const auto g1 = by_hf_name(*be, m1->parameters(), m1->config().hidden_size);
  const auto g2 = by_hf_name(*be, m2->parameters(), m2->config().hidden_size);
  for (const auto& [name, v] : g1)
    elmo_test::all_close(name.c_str(), g2.at(name).data(), v.data(), static_cast<int64_t>(v.size()), 1e-6, 1e-5);
  // Labels outside a head's range, or for a head the batch cannot have, change nothing.
  std::vector<int32_t> bad(f.intents);
  bad[0] = f.opts.joint_intents;
  elmo::TrainBatch wrong = b;
  wrong.intents = bad.data();
  elmo::StepResult r3;
  CHECK(t1->step(&wrong, 1, &r3).code() == Code::kInput);
  CHECK(t1->steps_done() == 1);
  std::vector<float> probs(static_cast<size_t>(b.in.B * f.opts.joint_intents), 0.25f);
  wrong = b;
  wrong.intent_probs = probs.data();
  wrong.n_intent_probs = static_cast<int64_t>(probs.size());
  CHECK(t1->step(&wrong, 1, &r3).code() == Code::kInput);  // intents and intentProbs together
}

// LoRA (query and value, r 4, alpha 8) with the classifier trained and everything else frozen:
// loss, the trainable tensors' gradients and values after 5 steps against peft + PyTorch.
TEST_CASE(lora_parity_with_peft_five_adamw_steps) {
  elmo_test::for_each_config([](elmo::Backend& be, const elmo_test::Config&) {
    TrainFixture f;
    if (!load_train_fixture("train-lora", &f)) return;
    std::unique_ptr<Bert> m;
    CHECK_OK(Bert::load(f.dir, &be, &m));
    if (!m) return;
    const int64_t H = m->config().hidden_size;
    CHECK_OK(m->lora_enable(4, 8.0f, 1));
    for (const auto& [name, v] : read_safetensors(f.dir + "/adapter_initial.safetensors"))
      CHECK_OK(m->lora_set(name, v.data(), static_cast<int64_t>(v.size())));
    CHECK_OK(m->lora_apply());
    elmo::TrainerOptions o = f.opts;
    o.lora = true;
    std::unique_ptr<Trainer> tr;
    CHECK_OK(Trainer::create(m.get(), o, &tr));
    if (!tr) return;
    // Read after enable_training: the weights are row-major from here on (inference packs them).
    const Tensors before = by_hf_name(be, m->parameters(), H);
    const elmo::TrainBatch b = f.batch();
    const Tensors want_grads = read_safetensors(f.dir + "/grads.safetensors");
    const double s = m->lora_scale();
    for (int step = 0; step < f.steps; ++step) {
      elmo::StepResult r;
      CHECK_OK(tr->step(&b, 1, &r));
      const std::string at = "lora step " + std::to_string(step + 1);
      close_scalar((at + " loss").c_str(), r.loss, f.losses[static_cast<size_t>(step)], 1e-5);
      close_scalar((at + " grad norm").c_str(), r.grad_norm, f.grad_norms[static_cast<size_t>(step)], 1e-4);
      if (step > 0) continue;
      Tensors got = by_hf_name(be, m->lora_gradients(), H);
      for (auto& [name, v] : got)
        for (float& x : v) x = static_cast<float>(x * s);  // lora_backward leaves the factor s out
      for (const auto& [name, v] : by_hf_name(be, m->gradients(), H))
        if (name.rfind("classifier.", 0) == 0) got[name] = v;
      CHECK(got.size() == want_grads.size());
      for (const auto& [name, w] : want_grads) {
        auto it = got.find(name);
        CHECK(it != got.end());
        if (it == got.end() || it->second.size() != w.size()) continue;
        const double scale = std::max(max_abs(w), 1e-12);
        elmo_test::all_close((at + " d" + name).c_str(), it->second.data(), w.data(), static_cast<int64_t>(w.size()),
                             1e-4 * scale, 1e-4);
      }
    }
    Tensors after = by_hf_name(be, m->lora_parameters(), H);
    const Tensors all = by_hf_name(be, m->parameters(), H);
    for (const auto& [name, v] : all)
      if (name.rfind("classifier.", 0) == 0) after[name] = v;
    for (const auto& [name, w] : read_safetensors(f.dir + "/after.safetensors")) {
      auto it = after.find(name);
      CHECK(it != after.end());
      if (it == after.end() || it->second.size() != w.size()) continue;
      elmo_test::all_close(("lora " + name + " after 5 steps").c_str(), it->second.data(), w.data(),
                           static_cast<int64_t>(w.size()), 1e-4, 1e-4);
    }
    // Frozen: everything but the query / value weights (merged with the adapter) is unchanged.
    for (const auto& [name, v] : all) {
      if (name.rfind("classifier.", 0) == 0 || name.find("query.weight") != std::string::npos ||
          name.find("value.weight") != std::string::npos)
        continue;
      if (v != before.at(name)) {
        ++elmo_test::failures();
        std::fprintf(stderr, "  lora: frozen %s changed\n", name.c_str());
      }
    }
    // The query weight is W0 + s B A.
    const auto& bq = after.at("bert.encoder.layer.1.attention.self.query.lora_B.weight");
    const auto& aq = after.at("bert.encoder.layer.1.attention.self.query.lora_A.weight");
    // W0: the base checkpoint's weight (`before` already holds the initial adapter merged in).
    const auto w0 = read_safetensors(f.dir + "/model.safetensors").at("bert.encoder.layer.1.attention.self.query.weight");
    std::vector<float> merged(static_cast<size_t>(H * H));
    for (int64_t i = 0; i < H; ++i)
      for (int64_t j = 0; j < H; ++j) {
        double acc = w0[static_cast<size_t>(i * H + j)];
        for (int64_t k = 0; k < 4; ++k) acc += s * bq[static_cast<size_t>(i * 4 + k)] * aq[static_cast<size_t>(k * H + j)];
        merged[static_cast<size_t>(i * H + j)] = static_cast<float>(acc);
      }
    elmo_test::all_close("merged query weight", all.at("bert.encoder.layer.1.attention.self.query.weight").data(),
                         merged.data(), H * H, 1e-6, 1e-5);
    // Back to W0 without merging; the weights are those before training.
    CHECK_OK(m->lora_disable(false));
    CHECK(by_hf_name(be, m->parameters(), H).at("bert.encoder.layer.1.attention.self.query.weight") == w0);
  });
}

// Dropout on: the same seed gives the same bits on every ISA and on 1 and 2 threads.
TEST_CASE(dropout_steps_same_bits_on_every_isa_and_thread_count) {
  std::vector<float> first;
  std::vector<double> first_losses;
  elmo_test::for_each_config([&](elmo::Backend& be, const elmo_test::Config&) {
    ClsSetup s(be, cls_options());
    if (!s.ok) return;
    const elmo::TrainBatch b = s.batch();
    std::vector<double> losses;
    for (int i = 0; i < 3; ++i) {
      elmo::StepResult r;
      CHECK_OK(s.tr->step(&b, 1, &r));
      losses.push_back(r.loss);
    }
    // Dropout changes the loss from step to step only through the masks and the weights;
    // the steps' masks differ (the seed is per step).
    const auto p = s.params(be);
    if (first.empty()) {
      first = p;
      first_losses = losses;
      return;
    }
    // Bit equality needs the same GEMM sums: on this machine every ISA path of the CPU GEMM
    // accumulates K in the same order, which test_gemm checks; here the whole step is held
    // to the same bits within one ISA across thread counts, and to 1e-5 across ISAs.
    elmo_test::all_close("params vs first config", p.data(), first.data(), static_cast<int64_t>(p.size()), 1e-5, 1e-4);
    for (size_t i = 0; i < losses.size(); ++i) close_scalar("loss vs first config", losses[i], first_losses[i], 1e-5);
  });
  // Thread counts: bit for bit.
  for (int i = 0; i <= static_cast<int>(elmo::best_isa()); ++i) {
    std::vector<std::vector<float>> runs;
    for (int threads : {1, 2}) {
      auto be = elmo_test::make_backend({static_cast<elmo::Isa>(i), threads});
      ClsSetup s(*be, cls_options());
      if (!s.ok) return;
      const elmo::TrainBatch b = s.batch();
      for (int k = 0; k < 3; ++k) {
        elmo::StepResult r;
        CHECK_OK(s.tr->step(&b, 1, &r));
      }
      runs.push_back(s.params(*be));
    }
    elmo_test::context() = std::string("[isa=") + elmo::isa_name(static_cast<elmo::Isa>(i)) + "]";
    if (runs[0].size() == runs[1].size())
      elmo_test::bit_equal("1 vs 2 threads", runs[0].data(), runs[1].data(), static_cast<int64_t>(runs[0].size()));
    elmo_test::context().clear();
  }
}

// 10 steps straight equal 5 steps, save (weights + optimizer state), load into a fresh
// model and trainer, 5 more steps: bit for bit, dropout included.
TEST_CASE(resume_is_bit_exact) {
  auto be = elmo_test::make_backend({elmo::best_isa(), 2});
  ClsSetup straight(*be, cls_options());
  if (!straight.ok) return;
  const elmo::TrainBatch b = straight.batch();
  elmo::StepResult r;
  for (int i = 0; i < 10; ++i) CHECK_OK(straight.tr->step(&b, 1, &r));

  ClsSetup first(*be, cls_options());
  if (!first.ok) return;
  for (int i = 0; i < 5; ++i) CHECK_OK(first.tr->step(&b, 1, &r));
  char tmpl[] = "/tmp/elmo-trainer-XXXXXX";
  const std::string dir = mkdtemp(tmpl) ? tmpl : "/tmp";
  CHECK_OK(first.m->save(dir));
  CHECK_OK(first.tr->save_state(dir + "/optimizer.safetensors"));
  const std::string vocab = bert_fixture::read_text(first.f.dir + "/vocab.txt");
  (void)vocab;

  std::unique_ptr<Bert> m2;
  CHECK_OK(Bert::load(dir, be.get(), &m2));
  if (!m2) return;
  std::unique_ptr<Trainer> t2;
  CHECK_OK(Trainer::create(m2.get(), cls_options(), &t2));
  if (!t2) return;
  CHECK_OK(t2->load_state(dir + "/optimizer.safetensors"));
  CHECK(t2->steps_done() == 5);
  for (int i = 0; i < 5; ++i) CHECK_OK(t2->step(&b, 1, &r));
  CHECK(r.step == 10);
  std::vector<float> p2;
  for (const auto& p : m2->parameters()) {
    const auto v = bert_fixture::download(*be, p.value);
    p2.insert(p2.end(), v.begin(), v.end());
  }
  const auto p1 = straight.params(*be);
  if (p1.size() == p2.size()) elmo_test::bit_equal("10 straight vs 5 + resume + 5", p1.data(), p2.data(), static_cast<int64_t>(p1.size()));

  // An optimizer state of another model is refused, and nothing changes.
  elmo::TrainerOptions mo;
  mo.task = TrainTask::kMultiLabel;
  mo.schedule = elmo::LrSchedule::kConstant;
  bert_fixture::Fixture other;
  if (!bert_fixture::load_fixture("bert-b-multilabel", &other)) return;
  std::unique_ptr<Bert> m3;
  CHECK_OK(Bert::load(other.dir, be.get(), &m3));
  if (!m3) return;
  std::unique_ptr<Trainer> t3;
  CHECK_OK(Trainer::create(m3.get(), mo, &t3));
  if (t3) CHECK_STATUS(t3->load_state(dir + "/optimizer.safetensors"), Code::kCheckpoint);
  if (t3) CHECK(t3->steps_done() == 0);
}

// After a warm-up step, steps of a batch no larger allocate nothing.
TEST_CASE(steps_allocate_nothing) {
  auto be = elmo_test::make_backend({elmo::best_isa(), 2});
  ClsSetup s(*be, cls_options());
  if (!s.ok) return;
  const elmo::TrainBatch b = s.batch();
  elmo::StepResult r;
  CHECK_OK(s.tr->step(&b, 1, &r));
  const uint64_t warm = be->allocations();
  for (int i = 0; i < 3; ++i) CHECK_OK(s.tr->step(&b, 1, &r));
  std::vector<int32_t> offs2;
  const auto parts = split(b, 2, &offs2);
  CHECK_OK(s.tr->step(parts.data(), 2, &r));  // smaller micro-batches
  double loss = 0;
  int64_t count = 0;
  CHECK_OK(s.tr->eval_loss(b, &loss, &count));
  CHECK(count == b.in.B && std::isfinite(loss));
  CHECK(be->allocations() == warm);
}

// Bad labels are refused before anything runs; a non-finite loss stops before the update.
TEST_CASE(bad_labels_and_nonfinite_loss) {
  auto be = elmo_test::make_backend({elmo::best_isa(), 2});
  ClsSetup s(*be, cls_options());
  if (!s.ok) return;
  const auto p0 = s.params(*be);
  elmo::TrainBatch b = s.batch();
  elmo::StepResult r;
  std::vector<int32_t> bad = s.labels;
  bad[1] = 5;  // num_labels is 5
  b.labels_i32 = bad.data();
  CHECK_STATUS(s.tr->step(&b, 1, &r), Code::kInput);
  b = s.batch();
  b.n_labels = 2;
  CHECK_STATUS(s.tr->step(&b, 1, &r), Code::kShape);
  b = s.batch();
  std::vector<float> f(static_cast<size_t>(b.in.B), 0.0f);
  b.labels_i32 = nullptr;
  b.labels_f32 = f.data();
  CHECK_STATUS(s.tr->step(&b, 1, &r), Code::kDType);
  CHECK(s.tr->steps_done() == 0);
  const auto p1 = s.params(*be);
  elmo_test::bit_equal("weights after refused steps", p1.data(), p0.data(), static_cast<int64_t>(p0.size()));

  // A NaN in a weight makes the loss NaN: ERR_NONFINITE, the step not taken.
  const Bert::Param& ln = s.m->parameters()[3];  // bert.embeddings.LayerNorm.weight
  std::vector<float> w = bert_fixture::download(*be, ln.value);
  w[0] = std::nanf("");
  CHECK_OK(be->upload(ln.value, w.data(), w.size() * 4));
  const auto p2 = s.params(*be);
  b = s.batch();
  const elmo::Status st = s.tr->step(&b, 1, &r);
  CHECK(st.code() == Code::kNonFinite && st.message().find("step 1") != std::string::npos);
  CHECK(s.tr->steps_done() == 0);
  const auto p3 = s.params(*be);
  CHECK(std::memcmp(p2.data(), p3.data(), p2.size() * 4) == 0);  // NaN-safe bit comparison

  // Options are checked when the trainer is made.
  std::unique_ptr<Trainer> t;
  elmo::TrainerOptions o = cls_options();
  o.total_steps = 0;
  CHECK_STATUS(Trainer::create(s.m.get(), o, &t), Code::kInput);
  o = cls_options();
  o.task = TrainTask::kMlm;
  CHECK_STATUS(Trainer::create(s.m.get(), o, &t), Code::kInput);
  o = cls_options();
  o.lr = -1;
  CHECK_STATUS(Trainer::create(s.m.get(), o, &t), Code::kInput);
}

// The schedules, as transformers computes them (0-based optimizer step).
TEST_CASE(learning_rate_schedules) {
  auto be = elmo_test::make_backend({elmo::best_isa(), 1});
  ClsSetup s(*be, cls_options());
  if (!s.ok) return;
  CHECK_OK(s.tr->set_schedule(1.0f, 2, 10, elmo::LrSchedule::kLinear));
  close_scalar("linear 0", s.tr->lr_at(0), 0.0, 1e-12);
  close_scalar("linear 1", s.tr->lr_at(1), 0.5, 1e-12);
  close_scalar("linear 2", s.tr->lr_at(2), 1.0, 1e-12);
  close_scalar("linear 6", s.tr->lr_at(6), 0.5, 1e-12);
  CHECK(s.tr->lr_at(10) == 0.0 && s.tr->lr_at(12) == 0.0);
  CHECK_OK(s.tr->set_schedule(1.0f, 2, 10, elmo::LrSchedule::kCosine));
  close_scalar("cosine 6", s.tr->lr_at(6), 0.5, 1e-9);
  close_scalar("cosine 4", s.tr->lr_at(4), 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-9);
  CHECK_OK(s.tr->set_schedule(1.0f, 4, 0, elmo::LrSchedule::kConstant));
  close_scalar("constant 1", s.tr->lr_at(1), 0.25, 1e-12);
  close_scalar("constant 100", s.tr->lr_at(100), 1.0, 1e-12);
}

// Weights loaded into a model that is already training (fineTune's resume: the trainer exists,
// then the checkpoint's weights and optimizer state come in) continue exactly as well. The
// forward's packed weight copies must follow the row-major masters, never replace them.
TEST_CASE(resume_into_a_training_model_is_bit_exact) {
  auto be = elmo_test::make_backend({elmo::best_isa(), 2});
  ClsSetup straight(*be, cls_options()), first(*be, cls_options()), second(*be, cls_options());
  if (!straight.ok || !first.ok || !second.ok) return;
  const elmo::TrainBatch b = straight.batch();
  elmo::StepResult r;
  for (int i = 0; i < 10; ++i) CHECK_OK(straight.tr->step(&b, 1, &r));
  for (int i = 0; i < 5; ++i) CHECK_OK(first.tr->step(&b, 1, &r));
  char tmpl[] = "/tmp/elmo-trainer-XXXXXX";
  const std::string dir = mkdtemp(tmpl) ? tmpl : "/tmp";
  CHECK_OK(first.m->save(dir));
  CHECK_OK(first.tr->save_state(dir + "/optimizer.safetensors"));
  CHECK_OK(second.m->load_encoder(dir + "/model.safetensors", true));
  CHECK_OK(second.tr->load_state(dir + "/optimizer.safetensors"));
  CHECK_STATUS(second.m->set_weights_packed(true), Code::kInput);  // not while training
  for (int i = 0; i < 5; ++i) CHECK_OK(second.tr->step(&b, 1, &r));
  const auto p1 = straight.params(*be), p2 = second.params(*be);
  if (p1.size() == p2.size()) elmo_test::bit_equal("10 straight vs 5 + load_encoder + 5", p1.data(), p2.data(), static_cast<int64_t>(p1.size()));
}

// The [CLS]-only last layer in training (ForwardOptions::cls_only, which the Trainer sets for
// sequence-level tasks) gives the full forward's logits and every gradient, to rounding.
TEST_CASE(cls_only_training_matches_the_full_forward) {
  auto be = elmo_test::make_backend({elmo::best_isa(), 2});
  bert_fixture::Fixture f;
  if (!bert_fixture::load_fixture("bert-a-cls", &f)) return;
  elmo::BertConfig c;
  CHECK_OK(elmo::BertConfig::load(f.dir + "/config.json", &c));
  c.hidden_dropout = c.attention_dropout = 0;
  std::vector<std::vector<float>> grads[2], logits(2);
  for (int k = 0; k < 2; ++k) {
    std::unique_ptr<Bert> m;
    CHECK_OK(Bert::load_weights(f.dir + "/model.safetensors", c, be.get(), &m));
    if (!m) return;
    CHECK_OK(m->enable_training());
    elmo::ForwardOptions fo;
    fo.training = true;
    fo.cls_only = k == 1;
    elmo::BertInputs in = f.inputs();
    in.mlm_positions = nullptr;
    in.n_mlm = 0;
    elmo::BertOutputs out;
    CHECK_OK(m->forward(in, fo, &out));
    CHECK(out.hidden.empty() == (k == 1));  // the cls-only forward has no full last hidden state
    logits[static_cast<size_t>(k)] = bert_fixture::download(*be, out.logits);
    // dlogits: a fixed pattern written over the logits.
    std::vector<float> g(static_cast<size_t>(out.logits.numel()));
    for (size_t i = 0; i < g.size(); ++i) g[i] = 0.1f * static_cast<float>(static_cast<int>(i % 7) - 3);
    CHECK_OK(be->upload(out.logits, g.data(), g.size() * 4));
    elmo::BertHeadGrads hg;
    hg.dlogits = out.logits;
    CHECK_OK(m->backward(hg));
    for (const auto& p : m->gradients()) grads[k].push_back(bert_fixture::download(*be, p.value));
  }
  elmo_test::all_close("logits", logits[1].data(), logits[0].data(), static_cast<int64_t>(logits[0].size()), 1e-5, 1e-4);
  for (size_t i = 0; i < grads[0].size(); ++i) {
    const double scale = std::max(max_abs(grads[0][i]), 1e-12);
    elmo_test::all_close(("gradient " + std::to_string(i)).c_str(), grads[1][i].data(), grads[0][i].data(),
                         static_cast<int64_t>(grads[0][i].size()), 1e-5 * scale, 1e-4);
  }
}

int main() { return elmo_test::run_all_tests(); }
