// Trainer: one optimizer step of a Bert on packed batches — forward, loss, backward over one
// or more micro-batches (gradient accumulation), global-norm clipping, AdamW, the learning-rate
// schedule — in one native call. Hugging Face conventions throughout, so that a step here and
// a step of transformers + torch.optim.AdamW on the same batch agree (tests/test_trainer.cpp):
//
//   loss         sequence: cross-entropy, mean over sequences; multi-label: BCE with logits,
//                mean over B x L; regression: MSE, mean over B x L; token / mlm: cross-entropy,
//                mean over the labelled tokens (label -100 ignored). With micro-batches the
//                mean is over all of them (one big batch's gradient, whatever the split).
//   clipping     g *= max_norm / (‖g‖ + 1e-6) when ‖g‖ > max_norm (torch.nn.utils.clip_grad_norm_)
//   AdamW        decoupled weight decay on matrices and embeddings only (no decay on biases and
//                LayerNorm: Bert's decay / no-decay regions), bias-corrected moments.
//   schedule     lr(s) = lr * f(s) at optimizer step s = 0, 1, ...: warmup f = s / warmup, then
//                constant 1, linear (total - s) / (total - warmup), or cosine
//                0.5 (1 + cos(pi progress)) — transformers' get_*_schedule_with_warmup.
//   mlm          the vocabulary projection and the loss run only on the labelled positions.
//
// Memory: the model's training memory (Bert::enable_training), the AdamW moments (two buffers
// laid out like the parameters) and a small loss scratch that grows with the batch. A step of
// a batch no larger than an earlier one allocates nothing.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "elmo/bert.h"

namespace elmo {

enum class TrainTask : uint8_t { kSequence = 0, kMultiLabel, kRegression, kToken, kMlm, kJoint };
enum class LrSchedule : uint8_t { kConstant = 0, kLinear, kCosine };
const char* train_task_name(TrainTask t);  // "sequence", "multi-label", "regression", "token", "mlm", "joint"

struct TrainerOptions {
  TrainTask task = TrainTask::kSequence;
  float lr = 5e-5f;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float weight_decay = 0.0f;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;  // needed by linear and cosine
  LrSchedule schedule = LrSchedule::kLinear;
  float max_grad_norm = 1.0f;  // <= 0: no clipping (the norm is still reported)
  float hidden_dropout = -1;   // < 0: the config's
  float attention_dropout = -1;
  uint64_t seed = 0;           // dropout masks: Philox streams keyed by (seed, step, micro-batch)
  // Joint task (intent + emotion + slots in one forward): the sequence classifier's first
  // `joint_intents` columns are one single-label head (softmax cross-entropy), the other
  // columns one multi-label head (BCE with logits); the slot classifier a token head (cross-
  // entropy). Each head's loss is the mean over its labelled rows (tokens, for slots; rows x
  // columns, for the multi-label head) of the whole step, and the step's loss is the sum of the
  // three weighted by loss_weights (intent, emotion, slots).
  int joint_intents = 0;
  float loss_weights[3] = {1.0f, 1.0f, 1.0f};
  // Train the model's LoRA adapters (Bert::lora_enable) and its heads after the pooler
  // (classifier, slot classifier: PEFT's modules_to_save); every other weight stays frozen.
  bool lora = false;
};

// One micro-batch: the packed inputs and its labels (HF conventions):
//   sequence    labels_i32 [B] in [0, L)
//   multi-label labels_f32 [B, L] in [0, 1]
//   regression  labels_f32 [B, L]
//   token, mlm  labels_i32 [T], -100 = ignored, else in [0, L) / [0, V)
struct TrainBatch {
  BertInputs in;  // in.mlm_positions / n_mlm are ignored (taken from the labels)
  const int32_t* labels_i32 = nullptr;
  const float* labels_f32 = nullptr;
  int64_t n_labels = 0;  // elements in the labels array
  // Joint task: any subset of the heads' labels, each with its own "no label" marker.
  const int32_t* intents = nullptr;       // [B] in [0, joint_intents), -100 = none
  const float* intent_probs = nullptr;    // [B, joint_intents] soft targets (distillation), rows summing
                                          // to 1; a row whose first entry is negative = none
  const float* emotions = nullptr;        // [B, L - joint_intents] in [0, 1]; first entry negative = none
  const int32_t* slots = nullptr;         // [T] in [0, num_slot_labels), -100 = ignored
  int64_t n_intents = 0, n_intent_probs = 0, n_emotions = 0, n_slots = 0;  // elements
};

struct StepResult {
  double loss = 0;       // mean loss of the step (over all its micro-batches)
  double grad_norm = 0;  // global L2 norm of the gradient before clipping
  double lr = 0;         // learning rate the step used
  int64_t step = 0;      // optimizer steps done, this one included
  int64_t count = 0;     // what the mean is over (sequences, label cells or labelled tokens)
  // Joint task: each head's mean loss (0 where it had no labels) and its labelled rows
  // (sequences, sequences, tokens); `loss` is their weighted sum, `count` the rows' sum.
  double head_loss[3] = {0, 0, 0};
  int64_t head_count[3] = {0, 0, 0};
};

class Trainer {
 public:
  // Enables training memory on `model` (which must outlive the trainer) and allocates the
  // moments (zero). Options are validated here (ERR_INPUT naming the option).
  static Status create(Bert* model, const TrainerOptions& opts, std::unique_ptr<Trainer>* out);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // One optimizer step over `n` micro-batches. Labels are checked first: nothing changes on
  // ERR_INPUT. A non-finite loss or gradient stops before the update with ERR_NONFINITE
  // naming the step; the weights are those of the previous step.
  Status step(const TrainBatch* micro, int n, StepResult* out);
  // Forward and loss only (no gradient, no dropout): evaluation loss on a batch.
  Status eval_loss(const TrainBatch& batch, double* loss, int64_t* count);

  double lr_at(int64_t step) const;  // the schedule, 0-based optimizer step
  int64_t steps_done() const { return step_; }
  const TrainerOptions& options() const { return opts_; }
  // Changes the schedule's length / base rate (e.g. when the epoch count becomes known).
  Status set_schedule(float lr, int64_t warmup_steps, int64_t total_steps, LrSchedule schedule);

  // optimizer.safetensors: per parameter "<name>.exp_avg" and "<name>.exp_avg_sq" (f32, the
  // parameter's shape; the fused ".attention.self.qkv" as the model names it), metadata
  // "step". Written atomically. load_state checks every tensor's presence and shape.
  Status save_state(const std::string& path) const;
  Status load_state(const std::string& path);

 private:
  Trainer(Bert* model, const TrainerOptions& opts) : model_(model), opts_(opts) {}
  Status check_batch(const TrainBatch& b, int index, int64_t* count) const;
  Status ensure_scratch(int64_t rows, int64_t cells);
  // Forward (training or not), then the loss; with `grad`, dlogits scaled by 1/total_count
  // written over the logits and the model's backward.
  Status run_micro(const TrainBatch& b, bool train, uint64_t seed, int64_t total_count, double* loss_sum);
  // The joint task's versions: labelled rows per head, and the micro-batch's loss sums per
  // head with gradients scaled by loss_weights[k] / counts[k] (computed on the host: the
  // heads' logits are small).
  Status check_joint(const TrainBatch& b, int index, int64_t counts[3]) const;
  Status run_micro_joint(const TrainBatch& b, bool train, uint64_t seed, const int64_t counts[3], double sums[3]);
  Status step_joint(const TrainBatch* micro, int n, StepResult* out);
  Status apply_update(double loss, StepResult* out);

  Bert* model_;
  TrainerOptions opts_;
  Tensor moments_;  // [2 x parameters]: m then v
  Tensor m_decay_, m_no_decay_, v_decay_, v_no_decay_;
  // LoRA: the adapters' moments, and the trainable tails (the heads) of each region.
  Tensor lora_moments_, lora_m_, lora_v_;
  size_t head_decay_offset_ = 0, head_no_decay_offset_ = 0;  // bytes into the regions
  Tensor scratch_;  // losses, lse, targets
  int64_t scratch_rows_ = 0, scratch_cells_ = 0;
  Tensor losses_, lse_, targets_i32_, targets_f32_, positions_;
  int64_t step_ = 0;
  std::vector<int32_t> host_pos_, host_tgt_;
  std::vector<float> host_f_, host_g_, host_s_;
  std::vector<double> host_losses_;
};

}  // namespace elmo
