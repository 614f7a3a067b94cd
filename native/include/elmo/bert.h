// BERT encoder (Hugging Face layout and names), written against the Backend interface only,
// so the same graph runs on the CPU and the CUDA backend.
//
// Parameters live in one flat f32 buffer in backend memory, in two regions: weights that take
// weight decay (matrices, embeddings) then those that do not (biases, LayerNorm), so a fused
// optimizer can run over each region in one call. Q, K and V are fused at load into one
// [3H, H] weight and [3H] bias (rows q | k | v) so attention reads qkv [T, 3H].
// With bf16 precision (BertOptions) the model also keeps bf16 copies of its GEMM weights in one
// more buffer; the f32 parameters stay the master copy.
//
// Forward runs over packed batches (ids, type_ids, offsets: B sequences, T tokens, no padding)
// into an activation arena allocated once per capacity and grown only when a batch needs more.
// With `training` set it keeps, per layer, what the backward pass needs: LayerNorm inputs and
// mean/rstd, qkv, attention output and log-sum-exp, the pre-GELU activations.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "elmo/backend.h"
#include "elmo/json.h"

namespace elmo {

enum class ProblemType : uint8_t { kNone = 0, kSingleLabel, kMultiLabel, kRegression };
const char* problem_type_name(ProblemType p);  // HF spelling, "" for kNone

// config.json, Hugging Face field names. Defaults are bert-base.
struct BertConfig {
  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int num_layers = 12;         // num_hidden_layers
  int num_heads = 12;          // num_attention_heads
  int64_t intermediate_size = 3072;
  int64_t max_position = 512;  // max_position_embeddings
  int64_t type_vocab_size = 2;
  float layer_norm_eps = 1e-12f;
  float hidden_dropout = 0.1f;     // hidden_dropout_prob
  float attention_dropout = 0.1f;  // attention_probs_dropout_prob
  float classifier_dropout = -1;   // classifier_dropout; < 0 (null): use hidden_dropout
  float initializer_range = 0.02f;
  int pad_token_id = 0;
  int num_labels = 0;               // classifier outputs (id2label size, or num_labels)
  std::vector<std::string> labels;  // id2label in id order; may be empty
  ProblemType problem_type = ProblemType::kNone;
  // Rows of the slot classifier (BertHeads::slots); config.json "num_slot_labels", an elmo field
  // transformers keeps as an attribute and ignores.
  int num_slot_labels = 0;
  std::vector<std::string> architectures;
  // Attention heads removed from each layer (config.json "elmo_pruned_heads": {"<layer>":
  // [head, ...]}, an elmo field transformers keeps as an attribute and ignores); empty, or one
  // sorted list per layer, every layer keeping at least one head. The model holds only the
  // kept heads (their q/k/v rows and attention-output columns, in head order); the checkpoint
  // keeps full-size tensors with the pruned heads' rows and columns zero, which is what
  // transformers loads and what elmo writes back.
  std::vector<std::vector<int>> pruned_heads;
  json::Value raw;  // the parsed file: unknown fields are written back by save()

  int64_t head_dim() const { return hidden_size / num_heads; }
  // Heads layer l keeps, and the width of its attention (q, k, v each; attention output).
  int heads_in_layer(int l) const {
    return pruned_heads.empty() ? num_heads : num_heads - static_cast<int>(pruned_heads[static_cast<size_t>(l)].size());
  }
  int64_t attention_width(int l) const { return heads_in_layer(l) * head_dim(); }
  // The heads layer l keeps, ascending.
  std::vector<int> kept_heads(int l) const;
  bool has_pruned_heads() const {
    for (const auto& p : pruned_heads)
      if (!p.empty()) return true;
    return false;
  }
  // hidden % heads == 0, positive sizes, supported activation and position type.
  Status validate() const;
  // From config.json text / file. Errors are ERR_CHECKPOINT "config.json: <field>: ...".
  static Status parse(const std::string& text, BertConfig* out);
  static Status load(const std::string& path, BertConfig* out);
  // HF config.json text for the given head set (architectures derived from it).
  std::string to_json(bool classifier, bool mlm, bool token_classifier = false) const;
};

// Which heads sit on the encoder.
struct BertHeads {
  bool pooler = true;       // tanh(dense([CLS]))
  bool classifier = false;  // sequence classification on the pooled row (needs pooler)
  bool mlm = false;         // masked-LM: dense + GELU + LayerNorm, decoder tied to word embeddings
  // Token classification (BertForTokenClassification): the same `classifier.*` tensors applied
  // to every token's last hidden state; no pooler. Exclusive with `classifier`.
  bool token_classifier = false;
  // A second classifier on every token's last hidden state, beside the sequence classifier
  // (joint intent + emotion + slots in one forward): `slot_classifier.*` tensors,
  // [num_slot_labels, H]. Exclusive with `token_classifier`.
  bool slots = false;
};

// A packed batch in host memory: B sequences, T tokens; sequence b is rows [offsets[b], offsets[b+1]).
struct BertInputs {
  const int32_t* ids = nullptr;       // [T]
  const int32_t* type_ids = nullptr;  // [T] or nullptr (all 0)
  const int32_t* offsets = nullptr;   // [B+1]
  int B = 0;
  int64_t T = 0;
  const int32_t* mlm_positions = nullptr;  // [n_mlm] packed row indices for MLM logits
  int n_mlm = 0;
};

struct ForwardOptions {
  bool training = false;  // dropout on, activations kept for backward
  uint64_t seed = 0;      // dropout RNG seed (Philox); streams are fixed per site
  // Inference with a pooler and no masked-LM positions: the last layer computes its output rows
  // only for each sequence's [CLS] token, all that the pooler, the classifier and [CLS] pooling
  // read. Its attention still reads every token's keys and values, so the results are those
  // of the full forward: bit for bit on the CPU's scalar and AVX-512 paths (each output row of
  // a GEMM, LayerNorm or GELU depends only on its input row) and on AVX2 with packed weights;
  // to rounding on AVX2 for a weight left row-major (a width not a multiple of 16, or
  // set_weights_packed(false)), whose products of up to 32 rows stream and sum in another
  // order. The last layer's output-projection, FFN and LayerNorm work drops from T rows to B.
  // BertOutputs::hidden is then empty and ::cls holds the rows.
  // Training too (the Trainer sets it for sequence-level tasks): backward then runs the last
  // layer's tail on the B [CLS] rows and attention's backward with a gradient on those query
  // rows only. The loss and every gradient are those of the full forward (the other rows of
  // the last layer's output reach no loss); the dropout masks of that tail are drawn over its
  // [B, ...] tensors.
  // Ignored (full forward) without a pooler, with a token or slot classifier, with n_mlm > 0, or where
  // the last layer's attention output or the hidden states are not f32 (bf16 activations or
  // hidden states on CUDA).
  bool cls_only = false;
  // Training: dropout probabilities for this forward; < 0 takes the config's (hidden_dropout,
  // attention_dropout; the classifier's follows classifier_dropout, else the hidden one).
  float hidden_dropout = -1;
  float attention_dropout = -1;
};

// Views into the model's arena (backend memory), valid until the next forward.
struct BertOutputs {
  Tensor hidden;      // [T, H] last hidden state (empty under ForwardOptions::cls_only)
  Tensor cls;         // [B, H] last hidden state of each sequence's [CLS] row (pooler), or empty
  Tensor pooled;      // [B, H] (pooler) or empty
  Tensor logits;      // [B, num_labels] (classifier), [T, num_labels] (token classifier) or empty
  Tensor slot_logits; // [T, num_slot_labels] (slot classifier) or empty
  Tensor mlm_logits;  // [n_mlm, V] or empty
};

// How a model runs; given to Bert::load / load_weights / create.
struct BertOptions {
  // Matrix-product precision.
  //   kF32 (default): the f32 parameters are the GEMM operands.
  //   kBF16: the model also keeps bf16 copies of its GEMM weight matrices (each layer's Q/K/V,
  //     attention output and both FFN matrices; the pooler, classifier and MLM transform) in one
  //     contiguous buffer, and every linear layer runs as gemm(a = f32 activations, b = bf16
  //     copy): bf16 operands (the backend rounds a), fp32 sums, half the weight bytes read. The
  //     f32 parameters remain the master copy: save() writes them, an optimizer updates them, and
  //     refresh_compute_weights() re-derives the copies. The word embeddings (read by the lookup
  //     and by the tied MLM decoder) stay f32 only: a copy would add a [V, H] table used by the
  //     pretraining head alone.
  //   kI8: dynamic quantization for inference. Each encoder layer's four matrices are also kept
  //     as per-row int8 copies (Backend::quantize_weight) and their GEMMs quantize the
  //     activations per row at each call (int32 sums, f32 scales); LayerNorm, softmax,
  //     attention, GELU, the pooler and the heads stay f32. The f32 parameters remain the
  //     master copy (save() writes them). Not for training (enable_training refuses it); CPU only.
  DType precision = DType::kF32;
};

// Dropout RNG streams of the forward (the backward recomputes masks from the same ones).
inline uint64_t bert_dropout_stream(int layer, int site) { return (static_cast<uint64_t>(layer) + 1) * 8 + site; }
enum : int { kStreamEmbedding = 0, kStreamClassifier = 1, kStreamSlots = 2 };  // with layer = -1 (token classifier: 1 too)

// What Bert::backward starts from: the loss gradient of each head that took part, written by
// the caller (a Trainer) over the model's own output views. Empty: that head had no loss.
struct BertHeadGrads {
  Tensor dlogits;      // [B, L] (classifier) or [T, L] (token classifier); may be BertOutputs::logits
  Tensor dmlm_logits;  // [n_mlm, V]; may be BertOutputs::mlm_logits
  Tensor dslot_logits; // [T, num_slot_labels]; may be BertOutputs::slot_logits
};
enum : int { kSiteAttention = 0, kSiteAttnOut = 1, kSiteFfnOut = 2 };

class Bert {
 public:
  // dir/config.json + dir/model.safetensors. f32/f16/bf16 weights (converted to f32), HF names,
  // with or without the "bert." prefix. Missing or unexpected tensors and shape mismatches are
  // ERR_CHECKPOINT naming the tensor. Heads the config lists under elmo_pruned_heads are left
  // out of the model (their rows and columns of the full-size tensors are not read).
  static Status load(const std::string& dir, Backend* backend, std::unique_ptr<Bert>* out,
                     const BertOptions& opts = {});
  // Weights from a safetensors file under a given config; heads inferred from the tensors
  // when the config names no architecture.
  static Status load_weights(const std::string& safetensors_path, const BertConfig& config, Backend* backend,
                             std::unique_ptr<Bert>* out, const BertOptions& opts = {});
  // Fresh weights as HF initializes them: N(0, initializer_range) matrices and embeddings,
  // zero biases, unit LayerNorm. Deterministic in `seed`.
  static Status create(const BertConfig& config, const BertHeads& heads, uint64_t seed, Backend* backend,
                       std::unique_ptr<Bert>* out, const BertOptions& opts = {});
  ~Bert();
  Bert(const Bert&) = delete;
  Bert& operator=(const Bert&) = delete;

  // Writes dir/config.json and dir/model.safetensors (f32, HF names, Q/K/V split), each
  // atomically; creates dir if needed. transformers loads the result: pruned heads are written
  // as zero rows and columns of full-size tensors, and listed under elmo_pruned_heads.
  Status save(const std::string& dir) const;
  // The encoder's weights (embeddings and layers; not the pooler or any head) from another
  // checkpoint's model.safetensors of the same configuration: fine-tuning a pretrained encoder
  // with a fresh head. heads_too: every parameter (restoring a saved checkpoint of this model).
  // Every tensor is checked before any is written (ERR_CHECKPOINT).
  Status load_encoder(const std::string& safetensors_path, bool heads_too = false);

  Status forward(const BertInputs& in, const ForwardOptions& opts, BertOutputs* out);


  const BertConfig& config() const { return config_; }
  const BertHeads& heads() const { return heads_; }
  Backend* backend() const { return backend_; }
  DType precision() const { return opts_.precision; }

  // Precision bf16 or int8: re-makes the weight copies from the f32 parameters (f32: nothing to do).
  // forward reads the copies, so call this after changing parameters in place, e.g. after an
  // optimizer step or a write through parameters().
  Status refresh_compute_weights();
  // Bytes held by the bf16 or int8 weight copies (0 with f32 precision).
  size_t compute_weight_bytes() const { return compute_buf_.nbytes(); }

  // One parameter: `name` is the HF name except the fused ".attention.self.qkv.{weight,bias}".
  struct Param {
    std::string name;
    Tensor value;    // view into the flat parameter buffer
    bool decay;      // takes weight decay
  };
  const std::vector<Param>& parameters() const { return params_; }

  // The linear layers' weights (Q/K/V, attention output, FFN, pooler, MLM transform, and the
  // classifier when its rows fit) kept in the backend's GEMM layout (Backend::pack_weight), in
  // place: no copy of the weights. load() and create() pack them on backends that gain from it
  // (the CPU); parameters() then shows those tensors with panel > 0. save() writes row-major
  // either way. Unpack (false) before reading them as matrices, e.g. for a backward pass.
  // A bf16 model (BertOptions) packs nothing: its GEMMs read the bf16 copies, kept row-major.
  Status set_weights_packed(bool packed);
  bool weights_packed() const { return packed_; }
  int64_t num_parameters() const;
  // The two flat regions (decay, no-decay) as 1-D f32 views.
  Tensor decay_region() const { return decay_region_; }
  Tensor no_decay_region() const { return no_decay_region_; }

  // ---- training (bert_backward.cpp) ---------------------------------------------------------
  // Training memory, apart from inference's:
  //   * parameter gradients: one flat f32 buffer laid out exactly like the parameters (same
  //     offsets, decay region then no-decay region), so an optimizer runs over the two regions
  //     of parameters, gradients and moments in lockstep; allocated by enable_training();
  //   * saved activations: the training layout of the activation arena (every layer's);
  //   * activation gradients: a second arena (layout_grads), grown with the first.
  // enable_training() also unpacks the linear layers' weights to row-major (HF layout), which
  // the backward NN GEMMs read; the packed f32 copies the forward reads instead are derived
  // from them (refresh_compute_weights) after each optimizer step. disable_training() frees
  // the training memory and packs the weights in place again for inference.
  Status enable_training();
  Status disable_training();
  bool training_enabled() const { return !grad_buf_.empty(); }
  Status zero_gradients();
  // Gradients of the last forward (with ForwardOptions::training) from the heads' loss
  // gradients, ACCUMULATED (+=) into the parameter gradients. Needs enable_training().
  Status backward(const BertHeadGrads& g);
  // Same names, shapes and order as parameters(); views into the gradient buffer.
  const std::vector<Param>& gradients() const { return grads_; }
  Tensor grad_decay_region() const { return grad_decay_region_; }
  Tensor grad_no_decay_region() const { return grad_no_decay_region_; }
  // Bytes of training memory (gradients, packed weight copies, activation-gradient arena).
  size_t training_bytes() const;

  // One parameter by name (as parameters() names it), row-major, to or from host memory;
  // packed weights and bf16 copies are handled (unpacked on read, re-derived on write).
  Status read_parameter(const std::string& name, std::vector<float>* out) const;
  Status write_parameter(const std::string& name, const float* data, int64_t n);

  // ---- LoRA (bert_lora.cpp) -------------------------------------------------------------------
  // Low-rank adapters on the query and value projections: W = W0 + (alpha / rank) B A per
  // layer, A [rank, H] and B [H, rank], kept merged in the parameters (forward and backward
  // unchanged) with W0 kept aside. lora_enable: A as PEFT initializes it, B = 0. lora_apply:
  // re-merges after A or B changed. lora_backward (after backward): the adapters' gradients,
  // WITHOUT the factor alpha / rank (see bert_lora.cpp). lora_disable: back to W0, or with
  // `merge` the merged weights become the model's.
  Status lora_enable(int rank, float alpha, uint64_t seed);
  Status lora_apply();
  Status lora_backward();
  Status lora_disable(bool merge);
  // One adapter tensor by name (PEFT's, less "base_model.model."), from host memory; then lora_apply.
  Status lora_set(const std::string& name, const float* data, int64_t n);
  bool lora_enabled() const { return lora_.rank > 0; }
  int lora_rank() const { return lora_.rank; }
  float lora_alpha() const { return lora_.alpha; }
  float lora_scale() const { return lora_.rank > 0 ? lora_.alpha / static_cast<float>(lora_.rank) : 0.0f; }
  // "bert.encoder.layer.{l}.attention.self.{query,value}.lora_{A,B}.weight", views into one buffer.
  const std::vector<Param>& lora_parameters() const { return lora_.params; }
  const std::vector<Param>& lora_gradients() const { return lora_.grads; }
  Tensor lora_region() const { return lora_.region; }
  Tensor lora_grad_region() const { return lora_.grad_region; }

  // Arena bookkeeping: bytes held and how many times it was (re)allocated.
  size_t arena_bytes() const { return arena_bytes_; }
  int arena_allocations() const { return arena_allocs_; }
  // FLOPs of one forward over a batch (2 per multiply-add): benchmarks, and the addon's estimate
  // of whether a forward is short enough to run inline. cls_only: as ForwardOptions::cls_only
  // runs it (the last layer's projection and FFN on B rows), where that applies.
  double forward_flops(const BertInputs& in, bool cls_only = false) const;

 private:
  struct Layer {
    // Hl = the layer's attention width, H less head_dim per pruned head (BertConfig::pruned_heads).
    Tensor qkv_w, qkv_b;        // [3Hl, H], [3Hl]
    Tensor attn_out_w, attn_out_b;  // [H, Hl], [H]
    Tensor ln1_w, ln1_b;        // [H]
    Tensor ffn_in_w, ffn_in_b;  // [I, H], [I]
    Tensor ffn_out_w, ffn_out_b;  // [H, I], [H]
    Tensor ln2_w, ln2_b;        // [H]
    // The GEMM operand of each matrix: the f32 parameter itself, or its bf16 copy.
    Tensor qkv_wc, attn_out_wc, ffn_in_wc, ffn_out_wc;
  };
  struct Weights {
    Tensor wte, wpe, wtt;       // [V, H], [P, H], [TV, H]
    Tensor emb_ln_w, emb_ln_b;  // [H]
    std::vector<Layer> layers;
    Tensor pool_w, pool_b;      // [H, H], [H]
    Tensor cls_w, cls_b;        // [L, H], [L]
    Tensor mlm_w, mlm_b;        // [H, H], [H]
    Tensor mlm_ln_w, mlm_ln_b;  // [H]
    Tensor mlm_bias;            // [V] (decoder bias; decoder weight = wte)
    Tensor slot_w, slot_b;      // [S, H], [S]
    Tensor pool_wc, cls_wc, mlm_wc, slot_wc;  // GEMM operands, as Layer::qkv_wc
  };
  // Activation gradients of a batch (training), [T, ...] unless noted.
  struct GradActs {
    Tensor dy, dx;                  // [T, H]: a layer's output and input (they swap per layer)
    Tensor dln, dtmp, dh1;          // [T, H]: LayerNorm input, dropout input, h1
    Tensor dact;                    // [T, I]
    Tensor dqkv;                    // [T, 3H]
    Tensor datt;                    // [T, H]
    Tensor dpin, dpooled, dpool_pre, dcls;  // [B, H]
    Tensor dmlm_ln, dmlm_pre, dmlm_in;      // [N, H]
    Tensor pad_row, zero_idx;               // [1, H] f32, [1] i32: the pad row's saved gradient
  };
  // What the last training forward used, for backward.
  struct TrainedForward {
    bool valid = false;
    int B = 0, N = 0;
    int64_t T = 0;
    float p_hidden = 0, p_att = 0, p_cls = 0;
    uint64_t seed = 0;
    bool has_type_ids = false;
    bool cls_only = false;  // the last layer past attention ran on the [CLS] rows (cls_layer)
  };
  // Activations of one encoder layer; one set in inference, one per layer in training.
  struct LayerActs {
    Tensor qkv;       // [T, 3Hl] (Hl: the layer's attention width; inference: sized for H)
    Tensor att;       // [T, Hl] attention output (before the output projection)
    Tensor lse;       // [NHl, T]
    Tensor proj;      // [T, H] attention projection after dropout (training)
    Tensor ln1_in;    // [T, H] LN1 input x + proj
    Tensor ln1_mean, ln1_rstd;  // [T]
    Tensor h1;        // [T, H]
    Tensor pre_gelu;  // [T, I]
    Tensor act;       // [T, I]
    Tensor ffn;       // [T, H] FFN output after dropout (training)
    Tensor ln2_in;    // [T, H]
    Tensor ln2_mean, ln2_rstd;  // [T]
    Tensor h2;        // [T, H] layer output
  };
  struct Acts {
    Tensor ids, type_ids, offsets, cls_idx, mlm_pos;  // i32 [T], [T], [B+1], [B], [N]
    Tensor emb_sum, emb_out, emb_drop;                // [T, H]
    Tensor emb_mean, emb_rstd;                        // [T]
    std::vector<LayerActs> layers;
    Tensor cls, pool_pre, pooled, pooled_drop;        // [B, H]
    // ForwardOptions::cls_only (with a pooler): the last layer past attention on the [CLS] rows,
    // from cls_x (its input rows) and cls_layer.att; cls_layer.h2 is `cls`.
    Tensor cls_x;                                     // [B, H]
    LayerActs cls_layer;                              // [B, ...]: att, ln1_in, h1, act, ln2_in, h2
    // bf16 hidden states (Backend::bf16_hidden_states): f32 copies of hidden [T, H] and cls
    // [B, H] for the outputs, over the memory of emb_out and cls_x.
    Tensor hidden_f32, cls_f32;
    Tensor logits;                                    // [B, L] or [T, L] (token classifier)
    Tensor tok_drop;                                  // [T, H] token classifier input (training)
    Tensor slot_logits;                               // [T, S]
    Tensor slot_drop;                                 // [T, H] slot classifier input (training)
    Tensor mlm_in, mlm_pre, mlm_act, mlm_ln;          // [N, H]
    Tensor mlm_mean, mlm_rstd;                        // [N]
    Tensor mlm_logits;                                // [N, V]
  };

  Bert(const BertConfig& config, const BertHeads& heads, Backend* backend, const BertOptions& opts);
  Status allocate_parameters();
  Status make_compute_weights();  // once the parameters hold their values
  Status make_quantized_weights();  // precision int8: the encoder layers' int8 copies
  // Every weight read as a GEMM's b (op NT), with the GEMM operand the forward passes for it.
  std::vector<std::pair<Tensor*, Tensor*>> gemm_weights();
  Status ensure_arena(int64_t T, int B, int N, bool training);
  // A layer past attention: the output projection of `att` plus the residual `x` (dropout p on
  // the projection and the FFN output), LN1 into la.h1, the FFN, LN2 into la.h2. Layer l picks
  // the dropout streams.
  Status layer_tail(int l, const LayerActs& la, Tensor att, Tensor x, float p, uint64_t seed);
  size_t layout_acts(char* base, int64_t T, int B, int N, bool training, Acts* a) const;
  size_t layout_grads(char* base, int64_t T, int B, int N, GradActs* g) const;
  Status ensure_grad_arena();
  Status layer_backward(int l, Tensor dx_out, Tensor dy, Tensor x);
  Status cls_layer_backward(int l, Tensor dx_out, Tensor dcls, Tensor x);
  Status attention_qkv_backward(int l, Tensor x);
  Status tail_backward(int l, const LayerActs& ta, Tensor dy, Tensor dln, Tensor dtmp, Tensor dact, Tensor dh1,
                       Tensor dln1, Tensor datt);
  Status check_inputs(const BertInputs& in) const;
  // la's qkv, att and lse as layer l's attention width: [rows, 3Hl], [rows, Hl], [NHl, rows],
  // over the first elements of buffers sized for the widest layer (inference) or for this one.
  LayerActs layer_view(const LayerActs& la, int l) const;
  // Rows [part·H, (part+1)·H) of a fused [3H, H] qkv matrix (0 query, 2 value) as an [H, H] view.
  Tensor qkv_rows(const Tensor& qkv, int part) const;

  struct LoraState {
    int rank = 0;
    float alpha = 0;
    Tensor buf, grad_buf, base_buf, scaled_b;
    Tensor region, grad_region;
    std::vector<Param> params, grads;
    struct LayerLora {
      Tensor aq, bq, av, bv;          // [r, H], [H, r]
      Tensor gaq, gbq, gav, gbv;      // their gradients
      Tensor base_q, base_v;          // W0 rows [H, H]
    };
    std::vector<LayerLora> layers;
  };
  LoraState lora_;

  BertConfig config_;
  BertHeads heads_;
  Backend* backend_;
  BertOptions opts_;
  Tensor param_buf_;
  Tensor decay_region_, no_decay_region_;
  std::vector<Param> params_;
  bool packed_ = false;
  Weights w_;
  // Precision bf16: one buffer of bf16 weight copies, and each (f32 master, bf16 copy) pair.
  Tensor compute_buf_;
  struct ComputeCopy {
    Tensor master;
    Tensor* copy;  // the view forward reads (in w_), packed for the GEMM where the backend can
  };
  std::vector<ComputeCopy> compute_copies_;
  Tensor arena_;
  size_t arena_bytes_ = 0;
  int arena_allocs_ = 0;
  int64_t cap_T_ = 0;
  int cap_B_ = 0, cap_N_ = 0;
  bool cap_training_ = false;
  Acts a_;
  std::vector<int32_t> host_offsets_, host_cls_;
  // Training (bert_backward.cpp).
  Tensor grad_buf_, grad_decay_region_, grad_no_decay_region_;
  std::vector<Param> grads_;
  Weights g_;  // parameter gradients, the same views as w_ over grad_buf_
  Tensor grad_arena_;
  size_t grad_arena_bytes_ = 0;
  int64_t grad_cap_T_ = 0;
  int grad_cap_B_ = 0, grad_cap_N_ = 0;
  GradActs ga_;
  TrainedForward tf_;
};

}  // namespace elmo
