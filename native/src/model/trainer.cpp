// Trainer: loss, backward, clipping, AdamW and the schedule around Bert (see trainer.h).
#include "elmo/trainer.h"

#include <cmath>
#include <map>

#include "elmo/safetensors.h"
#include "model/views.h"

namespace elmo {

using views::make_view;
using views::rebase;

const char* train_task_name(TrainTask t) {
  switch (t) {
    case TrainTask::kSequence: return "sequence";
    case TrainTask::kMultiLabel: return "multi-label";
    case TrainTask::kRegression: return "regression";
    case TrainTask::kToken: return "token";
    case TrainTask::kMlm: return "mlm";
    case TrainTask::kJoint: return "joint";
  }
  return "?";
}

namespace {

constexpr int kIgnore = -100;

uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Dropout seed of micro-batch `micro` of optimizer step `step`: a pure function of the three,
// so a resumed run draws the masks the uninterrupted run would have.
uint64_t step_seed(uint64_t seed, int64_t step, int micro) {
  return mix64(mix64(seed ^ 0x5EEDull) + static_cast<uint64_t>(step) * 0x100000001B3ull + static_cast<uint64_t>(micro));
}

Status check_float(float v, const char* what, float lo, float hi) {
  ELMO_CHECK(std::isfinite(v) && v >= lo && v <= hi, Code::kInput, "Expected a number in [%g, %g] for %s but received %g",
             static_cast<double>(lo), static_cast<double>(hi), what, static_cast<double>(v));
  return Status::ok();
}

}  // namespace

Status Trainer::create(Bert* model, const TrainerOptions& o, std::unique_ptr<Trainer>* out) {
  ELMO_CHECK(model != nullptr && out != nullptr, Code::kInput, "Trainer::create: null model or output");
  const BertHeads& h = model->heads();
  switch (o.task) {
    case TrainTask::kSequence:
    case TrainTask::kMultiLabel:
    case TrainTask::kRegression:
      ELMO_CHECK(h.classifier, Code::kInput, "Expected a model with a sequence-classification head for task '%s' but received one without",
                 train_task_name(o.task));
      break;
    case TrainTask::kToken:
      ELMO_CHECK(h.token_classifier, Code::kInput,
                 "Expected a model with a token-classification head for task 'token' but received one without");
      break;
    case TrainTask::kMlm:
      ELMO_CHECK(h.mlm, Code::kInput, "Expected a model with a masked-LM head for task 'mlm' but received one without");
      break;
    case TrainTask::kJoint: {
      const int L = h.classifier ? model->config().num_labels : 0;
      ELMO_CHECK(h.classifier || h.slots, Code::kInput,
                 "Expected a model with a sequence or slot classifier for task 'joint' but received one with neither");
      ELMO_CHECK(o.joint_intents >= 0 && o.joint_intents <= L, Code::kInput,
                 "Expected jointIntents in [0, %d] (the classifier's columns) but received %d", L, o.joint_intents);
      for (int k = 0; k < 3; ++k) ELMO_RETURN_IF_ERROR(check_float(o.loss_weights[k], "lossWeights", 0, 1e3f));
      break;
    }
    default: return Status(Code::kInput, "Trainer::create: unknown task");
  }
  std::unique_ptr<Trainer> t(new Trainer(model, o));
  ELMO_RETURN_IF_ERROR(t->set_schedule(o.lr, o.warmup_steps, o.total_steps, o.schedule));
  ELMO_RETURN_IF_ERROR(check_float(o.beta1, "beta1", 0, 0.999999f));
  ELMO_RETURN_IF_ERROR(check_float(o.beta2, "beta2", 0, 0.999999999f));
  ELMO_RETURN_IF_ERROR(check_float(o.eps, "eps", 0, 1));
  ELMO_RETURN_IF_ERROR(check_float(o.weight_decay, "weightDecay", 0, 1e3f));
  ELMO_CHECK(std::isfinite(o.max_grad_norm), Code::kInput, "Expected a finite number for maxGradNorm but received %g",
             static_cast<double>(o.max_grad_norm));
  if (o.hidden_dropout >= 0) ELMO_RETURN_IF_ERROR(check_float(o.hidden_dropout, "dropout", 0, 0.99f));
  if (o.attention_dropout >= 0) ELMO_RETURN_IF_ERROR(check_float(o.attention_dropout, "attentionDropout", 0, 0.99f));

  ELMO_CHECK(!o.lora || model->lora_enabled(), Code::kInput,
             "Expected a model with a LoRA adapter for options.lora but received one without (lora_enable first)");
  ELMO_RETURN_IF_ERROR(model->enable_training());
  Backend& be = *model->backend();
  const Tensor pd = model->decay_region(), pn = model->no_decay_region();
  const int64_t nd = pd.numel(), nn = pn.numel();
  ELMO_RETURN_IF_ERROR(be.alloc(&t->moments_, DType::kF32, {2 * (nd + nn)}));
  ELMO_RETURN_IF_ERROR(be.fill(t->moments_, 0.0f));
  const Device dev = be.device();
  t->m_decay_ = make_view(t->moments_.data, 0, DType::kF32, {nd}, dev);
  t->m_no_decay_ = make_view(t->moments_.data, static_cast<size_t>(nd) * 4, DType::kF32, {nn}, dev);
  t->v_decay_ = make_view(t->moments_.data, static_cast<size_t>(nd + nn) * 4, DType::kF32, {nd}, dev);
  t->v_no_decay_ = make_view(t->moments_.data, static_cast<size_t>(2 * nd + nn) * 4, DType::kF32, {nn}, dev);
  if (o.lora) {
    const int64_t nl = model->lora_region().numel();
    ELMO_RETURN_IF_ERROR(be.alloc(&t->lora_moments_, DType::kF32, {2 * nl}));
    ELMO_RETURN_IF_ERROR(be.fill(t->lora_moments_, 0.0f));
    t->lora_m_ = make_view(t->lora_moments_.data, 0, DType::kF32, {nl}, dev);
    t->lora_v_ = make_view(t->lora_moments_.data, static_cast<size_t>(nl) * 4, DType::kF32, {nl}, dev);
    // The heads after the pooler are the tails of the two regions (parameters are laid out in
    // order: embeddings, layers, pooler, classifier, MLM head, slot classifier).
    t->head_decay_offset_ = static_cast<size_t>(nd) * 4;
    t->head_no_decay_offset_ = static_cast<size_t>(nn) * 4;
    bool seen_d = false, seen_n = false;
    for (const Bert::Param& p : model->parameters()) {
      const bool head = p.name.rfind("classifier.", 0) == 0 || p.name.rfind("slot_classifier.", 0) == 0;
      if (!head) continue;
      const Tensor region = p.decay ? pd : pn;
      const size_t at = static_cast<size_t>(static_cast<char*>(p.value.data) - static_cast<char*>(region.data));
      if (p.decay && !seen_d) t->head_decay_offset_ = at, seen_d = true;
      if (!p.decay && !seen_n) t->head_no_decay_offset_ = at, seen_n = true;
    }
  }
  *out = std::move(t);
  return Status::ok();
}

Trainer::~Trainer() {
  Backend* be = model_ ? model_->backend() : nullptr;
  if (be) {
    be->free(&moments_);
    be->free(&scratch_);
    be->free(&lora_moments_);
  }
}

Status Trainer::set_schedule(float lr, int64_t warmup, int64_t total, LrSchedule schedule) {
  ELMO_RETURN_IF_ERROR(check_float(lr, "learningRate", 0, 1e3f));
  ELMO_CHECK(warmup >= 0, Code::kInput, "Expected an integer >= 0 for warmupSteps but received %lld", (long long)warmup);
  ELMO_CHECK(total >= 0, Code::kInput, "Expected an integer >= 0 for totalSteps but received %lld", (long long)total);
  ELMO_CHECK(schedule == LrSchedule::kConstant || total > 0, Code::kInput,
             "Expected totalSteps > 0 for a linear or cosine schedule but received %lld", (long long)total);
  opts_.lr = lr;
  opts_.warmup_steps = warmup;
  opts_.total_steps = total;
  opts_.schedule = schedule;
  return Status::ok();
}

double Trainer::lr_at(int64_t s) const {
  const double w = static_cast<double>(opts_.warmup_steps), total = static_cast<double>(opts_.total_steps);
  const double x = static_cast<double>(s);
  double f = 1.0;
  if (x < w) {
    f = x / std::max(1.0, w);
  } else if (opts_.schedule == LrSchedule::kLinear) {
    f = std::max(0.0, (total - x) / std::max(1.0, total - w));
  } else if (opts_.schedule == LrSchedule::kCosine) {
    const double progress = (x - w) / std::max(1.0, total - w);
    f = std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
  }
  return static_cast<double>(opts_.lr) * f;
}

Status Trainer::check_batch(const TrainBatch& b, int index, int64_t* count) const {
  const BertConfig& c = model_->config();
  const int B = b.in.B;
  const int64_t T = b.in.T, L = c.num_labels;
  *count = 0;
  ELMO_CHECK(b.in.ids != nullptr && b.in.offsets != nullptr && B >= 1 && T >= 1, Code::kInput,
             "step: micro-batch %d is empty", index);
  switch (opts_.task) {
    case TrainTask::kSequence:
      ELMO_CHECK(b.labels_i32 != nullptr, Code::kDType, "Expected Int32Array labels for task 'sequence' (micro-batch %d)", index);
      ELMO_CHECK(b.n_labels == B, Code::kShape, "Expected %d labels (one per sequence) but received %lld (micro-batch %d)", B,
                 (long long)b.n_labels, index);
      for (int i = 0; i < B; ++i)
        ELMO_CHECK(b.labels_i32[i] >= 0 && b.labels_i32[i] < L, Code::kInput,
                   "Expected labels in [0, %lld) but received labels[%d] = %d (micro-batch %d)", (long long)L, i,
                   b.labels_i32[i], index);
      *count = B;
      break;
    case TrainTask::kMultiLabel:
    case TrainTask::kRegression:
      ELMO_CHECK(b.labels_f32 != nullptr, Code::kDType, "Expected Float32Array labels for task '%s' (micro-batch %d)",
                 train_task_name(opts_.task), index);
      ELMO_CHECK(b.n_labels == B * L, Code::kShape, "Expected %lld labels ([B, numLabels] = [%d, %lld]) but received %lld (micro-batch %d)",
                 (long long)(B * L), B, (long long)L, (long long)b.n_labels, index);
      for (int64_t i = 0; i < B * L; ++i) {
        const float y = b.labels_f32[i];
        const bool ok = opts_.task == TrainTask::kMultiLabel ? (y >= 0 && y <= 1) : std::isfinite(y);
        ELMO_CHECK(ok, Code::kInput, "Expected %s labels but received labels[%lld] = %g (micro-batch %d)",
                   opts_.task == TrainTask::kMultiLabel ? "multi-label targets in [0, 1]" : "finite regression",
                   (long long)i, static_cast<double>(y), index);
      }
      *count = B * L;
      break;
    case TrainTask::kJoint: return Status(Code::kInput, "check_batch: the joint task's labels are checked by check_joint");
    case TrainTask::kToken:
    case TrainTask::kMlm: {
      ELMO_CHECK(b.labels_i32 != nullptr, Code::kDType, "Expected Int32Array labels for task '%s' (micro-batch %d)",
                 train_task_name(opts_.task), index);
      ELMO_CHECK(b.n_labels == T, Code::kShape, "Expected %lld labels (one per token, -100 = ignore) but received %lld (micro-batch %d)",
                 (long long)T, (long long)b.n_labels, index);
      const int64_t n = opts_.task == TrainTask::kToken ? L : c.vocab_size;
      for (int64_t t = 0; t < T; ++t) {
        const int32_t y = b.labels_i32[t];
        ELMO_CHECK(y == kIgnore || (y >= 0 && y < n), Code::kInput,
                   "Expected labels in [0, %lld) or -100 but received labels[%lld] = %d (micro-batch %d)", (long long)n,
                   (long long)t, y, index);
        if (y != kIgnore) ++*count;
      }
      break;
    }
  }
  return Status::ok();
}

Status Trainer::ensure_scratch(int64_t rows, int64_t cells) {
  if (!scratch_.empty() && rows <= scratch_rows_ && cells <= scratch_cells_) return Status::ok();
  Backend& be = *model_->backend();
  be.free(&scratch_);
  const int64_t R = std::max<int64_t>(rows, scratch_rows_ * 3 / 2), C = std::max<int64_t>(cells, scratch_cells_ * 3 / 2);
  auto pad = [](int64_t n) { return (n + 15) / 16 * 16; };  // 64-byte views
  ELMO_RETURN_IF_ERROR(be.alloc(&scratch_, DType::kF32, {pad(C) * 2 + pad(R) * 4}));
  scratch_rows_ = R, scratch_cells_ = C;
  return Status::ok();
}

Status Trainer::run_micro(const TrainBatch& b, bool train, uint64_t seed, int64_t total_count, double* loss_sum) {
  Backend& be = *model_->backend();
  const BertConfig& c = model_->config();
  const TrainTask task = opts_.task;
  const int B = b.in.B;
  const int64_t T = b.in.T, L = c.num_labels;
  BertInputs in = b.in;
  in.mlm_positions = nullptr;
  in.n_mlm = 0;
  // Rows of the loss: sequences, tokens or masked positions; cells: rows x L for the BCE/MSE.
  int64_t rows = B;
  if (task == TrainTask::kToken) rows = T;
  if (task == TrainTask::kMlm) {
    host_pos_.clear();
    host_tgt_.clear();
    for (int64_t t = 0; t < T; ++t)
      if (b.labels_i32[t] != kIgnore) {
        host_pos_.push_back(static_cast<int32_t>(t));
        host_tgt_.push_back(b.labels_i32[t]);
      }
    if (host_pos_.empty()) return Status::ok();  // nothing labelled: no loss, no gradient
    in.mlm_positions = host_pos_.data();
    in.n_mlm = static_cast<int>(host_pos_.size());
    rows = in.n_mlm;
  }
  const int64_t cells = (task == TrainTask::kMultiLabel || task == TrainTask::kRegression) ? B * L : rows;
  ELMO_RETURN_IF_ERROR(ensure_scratch(rows, cells));
  auto pad = [](int64_t n) { return (n + 15) / 16 * 16; };
  const Device dev = be.device();
  size_t off = 0;
  auto take = [&](DType dt, int64_t n) {
    Tensor t = make_view(scratch_.data, off, dt, {n}, dev);
    off += static_cast<size_t>(pad(n)) * 4;
    return t;
  };
  losses_ = take(DType::kF32, cells);
  lse_ = take(DType::kF32, rows);
  targets_i32_ = take(DType::kI32, rows);
  targets_f32_ = take(DType::kF32, cells);

  ForwardOptions fo;
  fo.training = train;
  // Sequence-level losses read only the [CLS] rows of the last layer: its tail runs on those.
  fo.cls_only = task == TrainTask::kSequence || task == TrainTask::kMultiLabel || task == TrainTask::kRegression;
  fo.seed = seed;
  fo.hidden_dropout = opts_.hidden_dropout;
  fo.attention_dropout = opts_.attention_dropout;
  BertOutputs out;
  ELMO_RETURN_IF_ERROR(model_->forward(in, fo, &out));
  const float scale = static_cast<float>(1.0 / static_cast<double>(total_count));
  BertHeadGrads hg;
  host_losses_.clear();
  if (task == TrainTask::kSequence || task == TrainTask::kToken || task == TrainTask::kMlm) {
    const Tensor logits = task == TrainTask::kMlm ? out.mlm_logits : out.logits;
    const int32_t* tgt = task == TrainTask::kMlm ? host_tgt_.data() : b.labels_i32;
    Tensor losses = losses_, lse = lse_, targets = targets_i32_;
    losses.shape[0] = lse.shape[0] = targets.shape[0] = rows;
    ELMO_RETURN_IF_ERROR(be.upload(targets, tgt, static_cast<size_t>(rows) * 4));
    ELMO_RETURN_IF_ERROR(be.cross_entropy_forward(losses, lse, logits, targets, kIgnore));
    host_f_.resize(static_cast<size_t>(rows));
    ELMO_RETURN_IF_ERROR(be.download(host_f_.data(), losses, static_cast<size_t>(rows) * 4));
    if (train) {
      ELMO_RETURN_IF_ERROR(be.cross_entropy_backward(logits, logits, lse, targets, scale, kIgnore));
      (task == TrainTask::kMlm ? hg.dmlm_logits : hg.dlogits) = logits;
    }
  } else if (task == TrainTask::kMultiLabel) {
    Tensor losses = losses_, targets = targets_f32_;
    losses.ndim = targets.ndim = 2;
    losses.shape[0] = targets.shape[0] = B;
    losses.shape[1] = targets.shape[1] = L;
    ELMO_RETURN_IF_ERROR(be.upload(targets, b.labels_f32, static_cast<size_t>(B * L) * 4));
    ELMO_RETURN_IF_ERROR(be.bce_forward(losses, out.logits, targets));
    host_f_.resize(static_cast<size_t>(B * L));
    ELMO_RETURN_IF_ERROR(be.download(host_f_.data(), losses, static_cast<size_t>(B * L) * 4));
    if (train) {
      ELMO_RETURN_IF_ERROR(be.bce_backward(out.logits, out.logits, targets, scale));
      hg.dlogits = out.logits;
    }
  } else {  // regression: MSE on [B, L] values, small enough to do on the host on any backend
    host_g_.resize(static_cast<size_t>(B * L));
    ELMO_RETURN_IF_ERROR(be.download(host_g_.data(), out.logits, static_cast<size_t>(B * L) * 4));
    ELMO_RETURN_IF_ERROR(be.sync());
    host_f_.resize(static_cast<size_t>(B * L));
    for (int64_t i = 0; i < B * L; ++i) {
      const double e = static_cast<double>(host_g_[static_cast<size_t>(i)]) - static_cast<double>(b.labels_f32[i]);
      host_f_[static_cast<size_t>(i)] = static_cast<float>(e * e);
      host_g_[static_cast<size_t>(i)] = static_cast<float>(2.0 * e / static_cast<double>(total_count));
    }
    if (train) {
      ELMO_RETURN_IF_ERROR(be.upload(out.logits, host_g_.data(), static_cast<size_t>(B * L) * 4));
      hg.dlogits = out.logits;
    }
  }
  ELMO_RETURN_IF_ERROR(be.sync());
  double sum = 0;
  for (float v : host_f_) sum += static_cast<double>(v);
  *loss_sum += sum;
  if (train) ELMO_RETURN_IF_ERROR(model_->backward(hg));
  return Status::ok();
}

Status Trainer::step(const TrainBatch* micro, int n, StepResult* out) {
  ELMO_CHECK(micro != nullptr && n >= 1 && out != nullptr, Code::kInput, "step: no micro-batches");
  ELMO_CHECK(model_->training_enabled(), Code::kInput, "step: the model's training memory was released");
  if (opts_.task == TrainTask::kJoint) return step_joint(micro, n, out);
  int64_t total = 0;
  for (int i = 0; i < n; ++i) {
    int64_t cnt = 0;
    ELMO_RETURN_IF_ERROR(check_batch(micro[i], i, &cnt));
    total += cnt;
  }
  ELMO_CHECK(total > 0, Code::kInput, "step: no labelled %s in the batch (every label is -100)",
             opts_.task == TrainTask::kMlm ? "position" : "token");
  ELMO_RETURN_IF_ERROR(model_->zero_gradients());
  double loss_sum = 0;
  for (int i = 0; i < n; ++i)
    ELMO_RETURN_IF_ERROR(run_micro(micro[i], true, step_seed(opts_.seed, step_, i), total, &loss_sum));
  out->count = total;
  return apply_update(loss_sum / static_cast<double>(total), out);
}

namespace {

// The tail of a flat region from a byte offset (the same offset suits every region laid out alike:
// parameters, gradients, moments).
Tensor tail(const Tensor& region, size_t offset) {
  const int64_t n = region.numel() - static_cast<int64_t>(offset / 4);
  return make_view(region.data, offset, DType::kF32, {n}, region.device);
}

}  // namespace

// The gradients are in place: clip to max_grad_norm, AdamW, advance.
//   Full training: both regions, all parameters.
//   LoRA: the adapters' gradients from the weight gradients first; then the adapters (their
//   gradients lack the factor s = alpha / r: it enters the clipping norm squared and AdamW's
//   gradient scale) and the heads after the pooler (the tails of the regions); the frozen
//   weights' gradients are not applied; the adapters are merged into the weights again.
Status Trainer::apply_update(double loss, StepResult* out) {
  Backend& be = *model_->backend();
  struct Part {
    Tensor param, grad, m, v;
    bool decay;
    double scale;  // the gradient's missing factor
  };
  Part parts[3];  // fixed: a step allocates nothing
  int n = 0;
  if (opts_.lora) {
    ELMO_RETURN_IF_ERROR(model_->lora_backward());
    const size_t od = head_decay_offset_, on = head_no_decay_offset_;
    parts[n++] = {model_->lora_region(), model_->lora_grad_region(), lora_m_, lora_v_, true, model_->lora_scale()};
    parts[n++] = {tail(model_->decay_region(), od), tail(model_->grad_decay_region(), od), tail(m_decay_, od),
                  tail(v_decay_, od), true, 1.0};
    parts[n++] = {tail(model_->no_decay_region(), on), tail(model_->grad_no_decay_region(), on), tail(m_no_decay_, on),
                  tail(v_no_decay_, on), false, 1.0};
  } else {
    parts[n++] = {model_->decay_region(), model_->grad_decay_region(), m_decay_, v_decay_, true, 1.0};
    parts[n++] = {model_->no_decay_region(), model_->grad_no_decay_region(), m_no_decay_, v_no_decay_, false, 1.0};
  }
  double ss = 0;
  for (int k = 0; k < n; ++k) {
    const Part& part = parts[k];
    if (part.grad.numel() == 0) continue;
    double x = 0;
    ELMO_RETURN_IF_ERROR(be.sum_squares(&x, part.grad));
    ss += part.scale * part.scale * x;
  }
  double norm = 0;
  const float factor = clip_factor(ss, opts_.max_grad_norm, &norm);
  if (!std::isfinite(loss) || !std::isfinite(norm))
    return Status(Code::kNonFinite,
                  strformat("step %lld: the %s is %s; the step was not applied (the weights are those after step %lld)",
                            (long long)(step_ + 1), std::isfinite(loss) ? "gradient norm" : "loss",
                            std::isnan(std::isfinite(loss) ? norm : loss) ? "NaN" : "infinite", (long long)step_));
  const double lr = lr_at(step_);
  AdamWParams p;
  p.lr = static_cast<float>(lr);
  p.beta1 = opts_.beta1;
  p.beta2 = opts_.beta2;
  p.eps = opts_.eps;
  p.step = step_ + 1;
  for (int k = 0; k < n; ++k) {
    const Part& part = parts[k];
    if (part.grad.numel() == 0) continue;
    p.weight_decay = part.decay ? opts_.weight_decay : 0.0f;
    p.grad_scale = static_cast<float>(factor * part.scale);
    ELMO_RETURN_IF_ERROR(be.adamw_update(part.param, part.grad, part.m, part.v, p));
  }
  ++step_;
  // The forward's weight copies from the updated parameters (LoRA: after merging the adapters).
  ELMO_RETURN_IF_ERROR(opts_.lora ? model_->lora_apply() : model_->refresh_compute_weights());
  out->loss = loss;
  out->grad_norm = norm;
  out->lr = lr;
  out->step = step_;
  return Status::ok();
}

// ---- joint task (intent + emotion + slots) -------------------------------------------------

Status Trainer::check_joint(const TrainBatch& b, int index, int64_t counts[3]) const {
  const BertConfig& c = model_->config();
  const BertHeads& h = model_->heads();
  const int B = b.in.B;
  const int64_t T = b.in.T;
  const int Li = opts_.joint_intents;
  const int64_t Le = (h.classifier ? c.num_labels : 0) - Li;
  counts[0] = counts[1] = counts[2] = 0;
  ELMO_CHECK(b.in.ids != nullptr && b.in.offsets != nullptr && B >= 1 && T >= 1, Code::kInput,
             "step: micro-batch %d is empty", index);
  ELMO_CHECK(!(b.intents && b.intent_probs), Code::kInput,
             "Expected intents or intentProbs, not both (micro-batch %d)", index);
  if (b.intents || b.intent_probs) {
    ELMO_CHECK(Li > 0, Code::kInput, "Expected no intent labels for a model without an intent head (micro-batch %d)", index);
  }
  if (b.intents) {
    ELMO_CHECK(b.n_intents == B, Code::kShape, "Expected %d intents (one per sequence) but received %lld (micro-batch %d)",
               B, (long long)b.n_intents, index);
    for (int i = 0; i < B; ++i) {
      const int32_t y = b.intents[i];
      ELMO_CHECK(y == kIgnore || (y >= 0 && y < Li), Code::kInput,
                 "Expected intents in [0, %d) or -100 but received intents[%d] = %d (micro-batch %d)", Li, i, y, index);
      if (y != kIgnore) ++counts[0];
    }
  }
  if (b.intent_probs) {
    ELMO_CHECK(b.n_intent_probs == int64_t(B) * Li, Code::kShape,
               "Expected %lld intentProbs ([B, intents] = [%d, %d]) but received %lld (micro-batch %d)",
               (long long)B * Li, B, Li, (long long)b.n_intent_probs, index);
    for (int i = 0; i < B; ++i) {
      const float* q = b.intent_probs + int64_t(i) * Li;
      if (q[0] < 0) continue;
      double sum = 0;
      for (int j = 0; j < Li; ++j) {
        ELMO_CHECK(std::isfinite(q[j]) && q[j] >= 0 && q[j] <= 1, Code::kInput,
                   "Expected intentProbs in [0, 1] but received %g in row %d (micro-batch %d)", static_cast<double>(q[j]), i, index);
        sum += q[j];
      }
      ELMO_CHECK(std::fabs(sum - 1.0) < 1e-3, Code::kInput,
                 "Expected intentProbs rows to sum to 1 but row %d sums to %g (micro-batch %d)", i, sum, index);
      ++counts[0];
    }
  }
  if (b.emotions) {
    ELMO_CHECK(Le > 0, Code::kInput, "Expected no emotion labels for a model without an emotion head (micro-batch %d)", index);
    ELMO_CHECK(b.n_emotions == B * Le, Code::kShape,
               "Expected %lld emotions ([B, emotions] = [%d, %lld]) but received %lld (micro-batch %d)", (long long)(B * Le),
               B, (long long)Le, (long long)b.n_emotions, index);
    for (int i = 0; i < B; ++i) {
      const float* y = b.emotions + i * Le;
      if (y[0] < 0) continue;
      for (int64_t j = 0; j < Le; ++j)
        ELMO_CHECK(y[j] >= 0 && y[j] <= 1, Code::kInput, "Expected emotion targets in [0, 1] but received %g in row %d (micro-batch %d)",
                   static_cast<double>(y[j]), i, index);
      ++counts[1];
    }
  }
  if (b.slots) {
    ELMO_CHECK(h.slots, Code::kInput, "Expected no slot labels for a model without a slot classifier (micro-batch %d)", index);
    ELMO_CHECK(b.n_slots == T, Code::kShape, "Expected %lld slot tags (one per token, -100 = ignore) but received %lld (micro-batch %d)",
               (long long)T, (long long)b.n_slots, index);
    for (int64_t t = 0; t < T; ++t) {
      const int32_t y = b.slots[t];
      ELMO_CHECK(y == kIgnore || (y >= 0 && y < c.num_slot_labels), Code::kInput,
                 "Expected slot tags in [0, %d) or -100 but received slots[%lld] = %d (micro-batch %d)", c.num_slot_labels,
                 (long long)t, y, index);
      if (y != kIgnore) ++counts[2];
    }
  }
  return Status::ok();
}

namespace {

// Softmax cross-entropy of one row of logits against a class (y >= 0) or a distribution q;
// writes scale * (softmax - target) into g (may alias z) and returns the loss. Double sums.
double softmax_xent_row(const float* z, int64_t n, int32_t y, const float* q, double scale, float* g) {
  double mx = z[0];
  for (int64_t j = 1; j < n; ++j) mx = std::max(mx, static_cast<double>(z[j]));
  double se = 0;
  for (int64_t j = 0; j < n; ++j) se += std::exp(static_cast<double>(z[j]) - mx);
  const double lse = mx + std::log(se);
  double loss = 0;
  for (int64_t j = 0; j < n; ++j) {
    const double logp = static_cast<double>(z[j]) - lse;
    const double t = q ? static_cast<double>(q[j]) : (j == y ? 1.0 : 0.0);
    if (t > 0) loss -= t * logp;
    g[j] = static_cast<float>(scale * (std::exp(logp) - t));
  }
  return loss;
}

}  // namespace

Status Trainer::run_micro_joint(const TrainBatch& b, bool train, uint64_t seed, const int64_t counts[3], double sums[3]) {
  Backend& be = *model_->backend();
  const BertConfig& c = model_->config();
  const BertHeads& h = model_->heads();
  const int B = b.in.B;
  const int64_t T = b.in.T;
  const int Li = opts_.joint_intents;
  const int64_t L = h.classifier ? c.num_labels : 0, Le = L - Li, S = c.num_slot_labels;
  BertInputs in = b.in;
  in.mlm_positions = nullptr;
  in.n_mlm = 0;
  ForwardOptions fo;
  fo.training = train;
  fo.cls_only = !b.slots;  // taken only where no token-level head needs the other rows
  fo.seed = seed;
  fo.hidden_dropout = opts_.hidden_dropout;
  fo.attention_dropout = opts_.attention_dropout;
  BertOutputs out;
  ELMO_RETURN_IF_ERROR(model_->forward(in, fo, &out));
  BertHeadGrads hg;
  const bool seq = L > 0 && (b.intents || b.intent_probs || b.emotions);
  if (seq) {
    host_g_.resize(static_cast<size_t>(B * L));
    ELMO_RETURN_IF_ERROR(be.download(host_g_.data(), out.logits, host_g_.size() * 4));
    ELMO_RETURN_IF_ERROR(be.sync());
    const double si = counts[0] > 0 ? opts_.loss_weights[0] / static_cast<double>(counts[0]) : 0.0;
    const double se = counts[1] > 0 ? opts_.loss_weights[1] / (static_cast<double>(counts[1]) * static_cast<double>(Le)) : 0.0;
    for (int i = 0; i < B; ++i) {
      float* z = host_g_.data() + i * L;  // logits in, gradients out
      const int32_t y = b.intents ? b.intents[i] : kIgnore;
      const float* q = b.intent_probs ? b.intent_probs + int64_t(i) * Li : nullptr;
      if (Li > 0) {
        if (y != kIgnore || (q && q[0] >= 0)) sums[0] += softmax_xent_row(z, Li, y, q, si, z);
        else std::fill(z, z + Li, 0.0f);
      }
      const float* e = b.emotions ? b.emotions + i * Le : nullptr;
      for (int64_t j = 0; j < Le; ++j) {
        float* zj = z + Li + j;
        if (!e || e[0] < 0) {
          *zj = 0.0f;
          continue;
        }
        // BCE with logits, the stable form: max(x, 0) - x y + log(1 + e^-|x|).
        const double x = *zj, t = e[j];
        sums[1] += std::max(x, 0.0) - x * t + std::log1p(std::exp(-std::fabs(x)));
        *zj = static_cast<float>(se * (1.0 / (1.0 + std::exp(-x)) - t));
      }
    }
    if (train) {
      ELMO_RETURN_IF_ERROR(be.upload(out.logits, host_g_.data(), host_g_.size() * 4));
      hg.dlogits = out.logits;
    }
  }
  if (b.slots && S > 0) {
    host_s_.resize(static_cast<size_t>(T * S));
    ELMO_RETURN_IF_ERROR(be.download(host_s_.data(), out.slot_logits, host_s_.size() * 4));
    ELMO_RETURN_IF_ERROR(be.sync());
    const double ss = counts[2] > 0 ? opts_.loss_weights[2] / static_cast<double>(counts[2]) : 0.0;
    for (int64_t t = 0; t < T; ++t) {
      float* z = host_s_.data() + t * S;
      if (b.slots[t] == kIgnore) std::fill(z, z + S, 0.0f);
      else sums[2] += softmax_xent_row(z, S, b.slots[t], nullptr, ss, z);
    }
    if (train) {
      ELMO_RETURN_IF_ERROR(be.upload(out.slot_logits, host_s_.data(), host_s_.size() * 4));
      hg.dslot_logits = out.slot_logits;
    }
  }
  ELMO_RETURN_IF_ERROR(be.sync());
  if (train && (!hg.dlogits.empty() || !hg.dslot_logits.empty())) ELMO_RETURN_IF_ERROR(model_->backward(hg));
  return Status::ok();
}

Status Trainer::step_joint(const TrainBatch* micro, int n, StepResult* out) {
  int64_t counts[3] = {0, 0, 0};
  for (int i = 0; i < n; ++i) {
    int64_t c[3];
    ELMO_RETURN_IF_ERROR(check_joint(micro[i], i, c));
    for (int k = 0; k < 3; ++k) counts[k] += c[k];
  }
  ELMO_CHECK(counts[0] + counts[1] + counts[2] > 0, Code::kInput,
             "step: no labels in the batch (no intent, no emotions and every slot tag -100)");
  ELMO_RETURN_IF_ERROR(model_->zero_gradients());
  double sums[3] = {0, 0, 0};
  for (int i = 0; i < n; ++i)
    ELMO_RETURN_IF_ERROR(run_micro_joint(micro[i], true, step_seed(opts_.seed, step_, i), counts, sums));
  const BertConfig& c = model_->config();
  const int64_t Le = (model_->heads().classifier ? c.num_labels : 0) - opts_.joint_intents;
  const double denom[3] = {static_cast<double>(counts[0]), static_cast<double>(counts[1]) * static_cast<double>(Le),
                           static_cast<double>(counts[2])};
  double loss = 0;
  for (int k = 0; k < 3; ++k) {
    out->head_loss[k] = counts[k] > 0 ? sums[k] / denom[k] : 0.0;
    out->head_count[k] = counts[k];
    loss += opts_.loss_weights[k] * out->head_loss[k];
  }
  out->count = counts[0] + counts[1] + counts[2];
  return apply_update(loss, out);
}

Status Trainer::eval_loss(const TrainBatch& batch, double* loss, int64_t* count) {
  ELMO_CHECK(loss != nullptr && count != nullptr, Code::kInput, "eval_loss: null output");
  if (opts_.task == TrainTask::kJoint) {
    int64_t counts[3];
    ELMO_RETURN_IF_ERROR(check_joint(batch, 0, counts));
    double sums[3] = {0, 0, 0};
    *count = counts[0] + counts[1] + counts[2];
    if (*count > 0) ELMO_RETURN_IF_ERROR(run_micro_joint(batch, false, 0, counts, sums));
    const BertConfig& c = model_->config();
    const int64_t Le = (model_->heads().classifier ? c.num_labels : 0) - opts_.joint_intents;
    const double denom[3] = {static_cast<double>(counts[0]), static_cast<double>(counts[1]) * static_cast<double>(Le),
                             static_cast<double>(counts[2])};
    *loss = 0;
    for (int k = 0; k < 3; ++k)
      if (counts[k] > 0) *loss += opts_.loss_weights[k] * sums[k] / denom[k];
    return Status::ok();
  }
  ELMO_RETURN_IF_ERROR(check_batch(batch, 0, count));
  double sum = 0;
  if (*count > 0) ELMO_RETURN_IF_ERROR(run_micro(batch, false, 0, *count, &sum));
  *loss = *count > 0 ? sum / static_cast<double>(*count) : 0.0;
  return Status::ok();
}

Status Trainer::save_state(const std::string& path) const {
  ELMO_CHECK(!opts_.lora, Code::kUnsupported, "save_state: the optimizer state of LoRA training is not saved (train again)");
  Backend& be = *model_->backend();
  const std::vector<Bert::Param>& params = model_->parameters();
  const Tensor& pbase = model_->decay_region();
  std::vector<std::vector<float>> host;
  host.reserve(params.size() * 2);
  std::vector<StWriteItem> items;
  for (const Bert::Param& p : params) {
    for (int k = 0; k < 2; ++k) {
      const Tensor& region = k == 0 ? m_decay_ : v_decay_;
      const Tensor t = rebase(p.value, pbase, region);  // m and v mirror the parameter layout
      host.emplace_back(static_cast<size_t>(t.numel()));
      ELMO_RETURN_IF_ERROR(be.download(host.back().data(), t, host.back().size() * 4));
      items.push_back({p.name + (k == 0 ? ".exp_avg" : ".exp_avg_sq"), StDType::kF32,
                       std::vector<int64_t>(t.shape, t.shape + t.ndim), host.back().data()});
    }
  }
  ELMO_RETURN_IF_ERROR(be.sync());
  return write_safetensors(path, items, {{"format", "elmo-adamw"}, {"step", std::to_string(step_)}});
}

Status Trainer::load_state(const std::string& path) {
  std::unique_ptr<SafetensorsFile> file;
  ELMO_RETURN_IF_ERROR(SafetensorsFile::open(path, &file));
  const auto& meta = file->index().metadata;
  auto it = meta.find("step");
  ELMO_CHECK(it != meta.end(), Code::kCheckpoint, "%s: no \"step\" in the metadata (not an elmo optimizer state)", path.c_str());
  char* end = nullptr;
  const long long step = std::strtoll(it->second.c_str(), &end, 10);
  ELMO_CHECK(end && *end == '\0' && step >= 0, Code::kCheckpoint, "%s: step \"%s\" is not a count", path.c_str(), it->second.c_str());
  Backend& be = *model_->backend();
  const Tensor& pbase = model_->decay_region();
  // Check everything before changing anything.
  for (int pass = 0; pass < 2; ++pass)
    for (const Bert::Param& p : model_->parameters())
      for (int k = 0; k < 2; ++k) {
        const std::string name = p.name + (k == 0 ? ".exp_avg" : ".exp_avg_sq");
        const StTensor* st = file->find(name);
        const Tensor t = rebase(p.value, pbase, k == 0 ? m_decay_ : v_decay_);
        const std::vector<int64_t> dims(t.shape, t.shape + t.ndim);
        if (pass == 0) {
          ELMO_CHECK(st != nullptr, Code::kCheckpoint, "%s: %s: missing (the optimizer state of another model?)", path.c_str(), name.c_str());
          ELMO_CHECK(st->dtype == StDType::kF32 && st->shape == dims, Code::kCheckpoint,
                     "%s: %s: expected f32 of the parameter's shape", path.c_str(), name.c_str());
        } else {
          ELMO_RETURN_IF_ERROR(be.upload(t, st->data, st->nbytes()));
        }
      }
  ELMO_RETURN_IF_ERROR(be.sync());
  step_ = step;
  return Status::ok();
}

}  // namespace elmo
