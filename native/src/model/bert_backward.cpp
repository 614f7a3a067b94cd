// The BERT graph's backward pass and its training memory.
//
// Accumulation contract (backend.h): parameter gradients +=, activation gradients =. The
// residual stream's gradient is added through the GEMM's residual epilogue.
//
// Per layer, the forward (bert.cpp) in reverse; x the layer input, dy = dL/dh2 [T, H]:
//   dln2  = LayerNorm2_backward(dy)                    (dln2_w, dln2_b +=)
//   dffn  = dropout_backward(dln2)
//   dW2  += dffnᵀ act,  db2 += Σ dffn,  dact = dffn W2
//   dpre  = gelu_backward(dact, pre_gelu)
//   dW1  += dpreᵀ h1,   db1 += Σ dpre,  dh1 = dpre W1 + dln2          (residual)
//   dln1  = LayerNorm1_backward(dh1)                   (dln1_w, dln1_b +=)
//   dproj = dropout_backward(dln1)
//   dWo  += dprojᵀ att, dbo += Σ dproj, datt = dproj Wo
//   dqkv  = attention_backward(datt)
//   dWqkv += dqkvᵀ x,   dbqkv += Σ dqkv, dx = dqkv Wqkv + dln1          (residual)
// The key bias gets exactly zero: softmax ignores a constant added to every score of a row,
// so its true gradient is 0, and the column sums of dk are only rounding noise that AdamW's
// normalization would blow up to a full-size update.
#include <cstring>

#include "elmo/bert.h"
#include "model/views.h"

namespace elmo {

using views::make_view;
using views::rebase;
using views::round_up;

Status Bert::enable_training() {
  if (training_enabled()) return Status::ok();
  ELMO_CHECK(opts_.precision != DType::kI8, Code::kInput,
             "enable_training: an int8 model is for inference; train it in fp32 (or bf16) and load it as int8");
  // Masters row-major (HF layout): the backward GEMMs read W as [out, in] rows.
  ELMO_RETURN_IF_ERROR(set_weights_packed(false));
  ELMO_RETURN_IF_ERROR(backend_->alloc(&grad_buf_, DType::kF32, {param_buf_.shape[0]}));
  Status st = backend_->fill(grad_buf_, 0.0f);
  if (!st) {
    backend_->free(&grad_buf_);
    return st;
  }
  grad_decay_region_ = rebase(decay_region_, param_buf_, grad_buf_);
  grad_no_decay_region_ = rebase(no_decay_region_, param_buf_, grad_buf_);
  grads_.clear();
  for (const Param& p : params_) grads_.push_back({p.name, rebase(p.value, param_buf_, grad_buf_), p.decay});
  auto g = [this](const Tensor& t) { return rebase(t, param_buf_, grad_buf_); };
  g_ = Weights();
  g_.wte = g(w_.wte), g_.wpe = g(w_.wpe), g_.wtt = g(w_.wtt);
  g_.emb_ln_w = g(w_.emb_ln_w), g_.emb_ln_b = g(w_.emb_ln_b);
  for (const Layer& ly : w_.layers) {
    Layer d;
    d.qkv_w = g(ly.qkv_w), d.qkv_b = g(ly.qkv_b);
    d.attn_out_w = g(ly.attn_out_w), d.attn_out_b = g(ly.attn_out_b);
    d.ln1_w = g(ly.ln1_w), d.ln1_b = g(ly.ln1_b);
    d.ffn_in_w = g(ly.ffn_in_w), d.ffn_in_b = g(ly.ffn_in_b);
    d.ffn_out_w = g(ly.ffn_out_w), d.ffn_out_b = g(ly.ffn_out_b);
    d.ln2_w = g(ly.ln2_w), d.ln2_b = g(ly.ln2_b);
    g_.layers.push_back(d);
  }
  g_.pool_w = g(w_.pool_w), g_.pool_b = g(w_.pool_b);
  g_.cls_w = g(w_.cls_w), g_.cls_b = g(w_.cls_b);
  g_.mlm_w = g(w_.mlm_w), g_.mlm_b = g(w_.mlm_b);
  g_.mlm_ln_w = g(w_.mlm_ln_w), g_.mlm_ln_b = g(w_.mlm_ln_b);
  g_.mlm_bias = g(w_.mlm_bias);
  g_.slot_w = g(w_.slot_w), g_.slot_b = g(w_.slot_b);

  // f32 on a backend that packs weights for its GEMM (the CPU): the forward reads packed
  // copies, re-derived from the row-major masters after each optimizer step. A bf16 model
  // already has its (packed) bf16 copies.
  const int panel = backend_->weight_panel();
  if (opts_.precision == DType::kF32 && panel > 0) {
    std::vector<std::pair<Tensor*, Tensor*>> mats;
    for (const auto& m : gemm_weights())
      if (m.first->shape[0] % panel == 0) mats.push_back(m);
    size_t total = 0;
    for (const auto& m : mats) total += round_up(m.first->nbytes());
    if (total > 0) {
      st = backend_->alloc(&compute_buf_, DType::kF32, {static_cast<int64_t>(total / 4)});
      if (!st) {
        backend_->free(&grad_buf_);
        return st;
      }
      size_t off = 0;
      compute_copies_.clear();
      for (const auto& m : mats) {
        const Tensor& w = *m.first;
        *m.second = make_view(compute_buf_.data, off, DType::kF32, {w.shape[0], w.shape[1]}, backend_->device());
        compute_copies_.push_back({w, m.second});
        off += round_up(w.nbytes());
      }
      ELMO_RETURN_IF_ERROR(refresh_compute_weights());
    }
  }
  return Status::ok();
}

Status Bert::disable_training() {
  if (!training_enabled()) return Status::ok();
  backend_->free(&grad_buf_);
  backend_->free(&grad_arena_);
  grad_arena_bytes_ = 0;
  grad_cap_T_ = 0, grad_cap_B_ = 0, grad_cap_N_ = 0;
  grads_.clear();
  g_ = Weights();
  ga_ = GradActs();
  tf_ = TrainedForward();
  if (opts_.precision == DType::kF32) {
    backend_->free(&compute_buf_);
    compute_copies_.clear();
    for (const auto& m : gemm_weights()) *m.second = *m.first;
    return set_weights_packed(true);
  }
  return Status::ok();
}

size_t Bert::training_bytes() const {
  size_t n = grad_buf_.nbytes() + grad_arena_bytes_;
  if (opts_.precision == DType::kF32) n += compute_buf_.nbytes();
  return n;
}

Status Bert::zero_gradients() {
  ELMO_CHECK(training_enabled(), Code::kInput, "zero_gradients: training is not enabled on this model");
  return backend_->fill(grad_buf_, 0.0f);
}

size_t Bert::layout_grads(char* base, int64_t T, int B, int N, GradActs* g) const {
  const int64_t H = config_.hidden_size, I = config_.intermediate_size;
  const Device dev = backend_->device();
  views::Arena arena{base, dev};
  auto take = [&arena](DType dt, const std::vector<int64_t>& dims) { return arena.take(dt, dims); };
  const DType F = DType::kF32;
  *g = GradActs();
  g->dy = take(F, {T, H});
  g->dln = take(F, {T, H});
  g->dtmp = take(F, {T, H});
  g->dh1 = take(F, {T, H});
  g->dx = take(F, {T, H});
  g->dact = take(F, {T, I});
  g->dqkv = take(F, {T, 3 * H});
  g->datt = take(F, {T, H});
  if (heads_.pooler) {
    g->dpin = take(F, {B, H});
    g->dpooled = take(F, {B, H});
    g->dpool_pre = take(F, {B, H});
    g->dcls = take(F, {B, H});
  }
  if (heads_.mlm) {
    g->dmlm_ln = take(F, {N, H});
    g->dmlm_pre = take(F, {N, H});
    g->dmlm_in = take(F, {N, H});
  }
  g->pad_row = take(F, {1, H});
  g->zero_idx = take(DType::kI32, {1});
  return arena.bytes;
}

// Sized by the activation arena's capacities, so it grows exactly when that arena does.
Status Bert::ensure_grad_arena() {
  if (grad_arena_.empty() || cap_T_ > grad_cap_T_ || cap_B_ > grad_cap_B_ || cap_N_ > grad_cap_N_) {
    backend_->free(&grad_arena_);
    grad_arena_bytes_ = 0;
    GradActs sizing;
    const size_t bytes = layout_grads(nullptr, cap_T_, cap_B_, cap_N_, &sizing);
    ELMO_RETURN_IF_ERROR(backend_->alloc(&grad_arena_, DType::kF32, {static_cast<int64_t>(bytes / 4)}));
    grad_arena_bytes_ = bytes;
    grad_cap_T_ = cap_T_, grad_cap_B_ = cap_B_, grad_cap_N_ = cap_N_;
  }
  layout_grads(static_cast<char*>(grad_arena_.data), tf_.T, tf_.B, tf_.N, &ga_);
  return Status::ok();
}

namespace {
// Rows [r0, r0 + n) of a row-major [R, C] tensor.
Tensor rows_of(const Tensor& t, int64_t r0, int64_t n) {
  Tensor v = t;
  v.data = static_cast<char*>(t.data) + r0 * t.shape[1] * static_cast<int64_t>(dtype_size(t.dtype));
  v.shape[0] = n;
  return v;
}
// Elements [e0, e0 + n) of a 1-D tensor.
Tensor slice_of(const Tensor& t, int64_t e0, int64_t n) {
  Tensor v = t;
  v.data = static_cast<char*>(t.data) + e0 * static_cast<int64_t>(dtype_size(t.dtype));
  v.shape[0] = n;
  return v;
}
}  // namespace

Status Bert::backward(const BertHeadGrads& hg) {
  ELMO_CHECK(training_enabled(), Code::kInput, "backward: training is not enabled on this model (enable_training)");
  ELMO_CHECK(tf_.valid, Code::kInput, "backward: no training forward to differentiate (forward with training = true)");
  const BertConfig& c = config_;
  const int64_t T = tf_.T;
  const int B = tf_.B;
  const uint64_t seed = tf_.seed;
  Backend& be = *backend_;
  ELMO_RETURN_IF_ERROR(ensure_grad_arena());
  const Acts& a = a_;
  const GradActs& d = ga_;
  Offsets offs;
  ELMO_RETURN_IF_ERROR(make_offsets(&offs, host_offsets_.data(), a.offsets.i32(), B, T));

  // dL/d(last hidden state) [T, H], built by the heads.
  Tensor dh = d.dy;
  ELMO_RETURN_IF_ERROR(be.fill(dh, 0.0f));
  const Tensor x_last = c.num_layers > 0 ? a.layers.back().h2 : (tf_.p_hidden > 0 ? a.emb_drop : a.emb_out);

  // The slot classifier first: its dropout's backward runs in place over all of dh, so dh must
  // hold its share alone then; the other heads add theirs after it.
  if (!hg.dslot_logits.empty()) {
    ELMO_CHECK(heads_.slots, Code::kInput, "backward: dslot_logits given but the model has no slot classifier");
    ELMO_CHECK(!tf_.cls_only, Code::kInput, "backward: the forward ran on the [CLS] rows only");
    ELMO_CHECK(hg.dslot_logits.ndim == 2 && hg.dslot_logits.shape[0] == T && hg.dslot_logits.shape[1] == c.num_slot_labels,
               Code::kShape, "backward: dslot_logits is %s, expected [%lld, %d]", hg.dslot_logits.describe().c_str(),
               (long long)T, c.num_slot_labels);
    // slot_logits [T, S] = dropout(hidden) Wsᵀ + bs
    const bool drop = tf_.p_cls > 0;
    const Tensor sin = drop ? a.slot_drop : x_last;
    ELMO_RETURN_IF_ERROR(be.gemm(g_.slot_w, Tensor(), hg.dslot_logits, sin, Tensor(), Tensor(), GemmOp::kTN, Epilogue::kNone, true));
    ELMO_RETURN_IF_ERROR(be.bias_backward(g_.slot_b, hg.dslot_logits));
    ELMO_RETURN_IF_ERROR(be.gemm(dh, Tensor(), hg.dslot_logits, w_.slot_w, Tensor(), Tensor(), GemmOp::kNN, Epilogue::kNone, false));
    if (drop) ELMO_RETURN_IF_ERROR(be.dropout_backward(dh, dh, tf_.p_cls, seed, bert_dropout_stream(-1, kStreamSlots)));
  }

  if (!hg.dlogits.empty()) {
    ELMO_CHECK(heads_.classifier || heads_.token_classifier, Code::kInput, "backward: dlogits given but the model has no classifier");
    const int64_t rows = heads_.token_classifier ? T : B;
    ELMO_CHECK(hg.dlogits.ndim == 2 && hg.dlogits.shape[0] == rows && hg.dlogits.shape[1] == c.num_labels, Code::kShape,
               "backward: dlogits is %s, expected [%lld, %d]", hg.dlogits.describe().c_str(), (long long)rows,
               c.num_labels);
    const bool drop = tf_.p_cls > 0;
    if (heads_.token_classifier) {
      // logits [T, L] = dropout(hidden) Wcᵀ + bc
      const Tensor tin = drop ? a.tok_drop : x_last;
      ELMO_RETURN_IF_ERROR(be.gemm(g_.cls_w, Tensor(), hg.dlogits, tin, Tensor(), Tensor(), GemmOp::kTN, Epilogue::kNone, true));
      ELMO_RETURN_IF_ERROR(be.bias_backward(g_.cls_b, hg.dlogits));
      ELMO_RETURN_IF_ERROR(be.gemm(dh, Tensor(), hg.dlogits, w_.cls_w, Tensor(), Tensor(), GemmOp::kNN, Epilogue::kNone, false));
      if (drop)
        ELMO_RETURN_IF_ERROR(be.dropout_backward(dh, dh, tf_.p_cls, seed, bert_dropout_stream(-1, kStreamClassifier)));
    } else {
      // logits [B, L] = dropout(pooled) Wcᵀ + bc;  pooled = tanh(cls Wpᵀ + bp);  cls = hidden[cls_idx]
      const Tensor pin = drop ? a.pooled_drop : a.pooled;
      ELMO_RETURN_IF_ERROR(be.gemm(g_.cls_w, Tensor(), hg.dlogits, pin, Tensor(), Tensor(), GemmOp::kTN, Epilogue::kNone, true));
      ELMO_RETURN_IF_ERROR(be.bias_backward(g_.cls_b, hg.dlogits));
      ELMO_RETURN_IF_ERROR(be.gemm(d.dpin, Tensor(), hg.dlogits, w_.cls_w, Tensor(), Tensor(), GemmOp::kNN, Epilogue::kNone, false));
      if (drop)
        ELMO_RETURN_IF_ERROR(be.dropout_backward(d.dpin, d.dpin, tf_.p_cls, seed, bert_dropout_stream(-1, kStreamClassifier)));
      ELMO_RETURN_IF_ERROR(be.tanh_backward(d.dpool_pre, d.dpin, a.pooled));
      ELMO_RETURN_IF_ERROR(be.gemm(g_.pool_w, Tensor(), d.dpool_pre, a.cls, Tensor(), Tensor(), GemmOp::kTN, Epilogue::kNone, true));
      ELMO_RETURN_IF_ERROR(be.bias_backward(g_.pool_b, d.dpool_pre));
      ELMO_RETURN_IF_ERROR(be.gemm(d.dcls, Tensor(), d.dpool_pre, w_.pool_w, Tensor(), Tensor(), GemmOp::kNN, Epilogue::kNone, false));
      if (!tf_.cls_only) ELMO_RETURN_IF_ERROR(be.scatter_add_rows(dh, d.dcls, a.cls_idx));
    }
  }
  if (!hg.dmlm_logits.empty()) {
    ELMO_CHECK(heads_.mlm, Code::kInput, "backward: dmlm_logits given but the model has no MLM head");
    ELMO_CHECK(tf_.N > 0 && hg.dmlm_logits.ndim == 2 && hg.dmlm_logits.shape[0] == tf_.N &&
                   hg.dmlm_logits.shape[1] == c.vocab_size,
               Code::kShape, "backward: dmlm_logits is %s, expected [%d, %lld]", hg.dmlm_logits.describe().c_str(),
               tf_.N, (long long)c.vocab_size);
    // logits [N, V] = LN(gelu(mlm_in Wtᵀ + bt)) wteᵀ + bias;  mlm_in = hidden[mlm_pos]
    ELMO_RETURN_IF_ERROR(be.gemm(g_.wte, Tensor(), hg.dmlm_logits, a.mlm_ln, Tensor(), Tensor(), GemmOp::kTN, Epilogue::kNone, true));
    ELMO_RETURN_IF_ERROR(be.bias_backward(g_.mlm_bias, hg.dmlm_logits));
    ELMO_RETURN_IF_ERROR(be.gemm(d.dmlm_ln, Tensor(), hg.dmlm_logits, w_.wte, Tensor(), Tensor(), GemmOp::kNN, Epilogue::kNone, false));
    ELMO_RETURN_IF_ERROR(be.layernorm_backward(d.dmlm_pre, g_.mlm_ln_w, g_.mlm_ln_b, d.dmlm_ln, a.mlm_act, w_.mlm_ln_w,
                                               a.mlm_mean, a.mlm_rstd));
    ELMO_RETURN_IF_ERROR(be.gelu_backward(d.dmlm_pre, d.dmlm_pre, a.mlm_pre));
    ELMO_RETURN_IF_ERROR(be.gemm(g_.mlm_w, Tensor(), d.dmlm_pre, a.mlm_in, Tensor(), Tensor(), GemmOp::kTN, Epilogue::kNone, true));
    ELMO_RETURN_IF_ERROR(be.bias_backward(g_.mlm_b, d.dmlm_pre));
    ELMO_RETURN_IF_ERROR(be.gemm(d.dmlm_in, Tensor(), d.dmlm_pre, w_.mlm_w, Tensor(), Tensor(), GemmOp::kNN, Epilogue::kNone, false));
    ELMO_RETURN_IF_ERROR(be.scatter_add_rows(dh, d.dmlm_in, a.mlm_pos));
  }

  // Encoder layers, last to first. dy and dx swap roles from layer to layer.
  Tensor dy = d.dy, dx = d.dx;
  int l = c.num_layers - 1;
  if (tf_.cls_only) {  // the last layer's tail ran on the [CLS] rows, whose gradient is dcls
    ELMO_CHECK(!hg.dlogits.empty() && hg.dmlm_logits.empty(), Code::kInput,
               "backward: a [CLS]-only forward takes a sequence-classification loss only");
    const Tensor x = l > 0 ? a.layers[static_cast<size_t>(l - 1)].h2 : (tf_.p_hidden > 0 ? a.emb_drop : a.emb_out);
    ELMO_RETURN_IF_ERROR(cls_layer_backward(l, dx, d.dcls, x));
    std::swap(dx, dy);
    --l;
  }
  for (; l >= 0; --l) {
    const Tensor x = l > 0 ? a.layers[static_cast<size_t>(l - 1)].h2 : (tf_.p_hidden > 0 ? a.emb_drop : a.emb_out);
    ELMO_RETURN_IF_ERROR(layer_backward(l, dx, dy, x));
    std::swap(dx, dy);  // this layer's input gradient is the next (lower) layer's output gradient
  }
  // Embeddings: emb_out = LN(emb_sum); x0 = dropout(emb_out).
  if (tf_.p_hidden > 0)
    ELMO_RETURN_IF_ERROR(be.dropout_backward(dy, dy, tf_.p_hidden, seed, bert_dropout_stream(-1, kStreamEmbedding)));
  ELMO_RETURN_IF_ERROR(be.layernorm_backward(d.dln, g_.emb_ln_w, g_.emb_ln_b, dy, a.emb_sum, w_.emb_ln_w, a.emb_mean,
                                             a.emb_rstd));
  // The pad token's embedding row takes no gradient from the lookup (nn.Embedding's
  // padding_idx, as transformers builds BERT); the tied MLM decoder's share stays.
  const bool pad = c.pad_token_id >= 0 && c.pad_token_id < c.vocab_size;
  Tensor pad_grad;
  if (pad) {
    pad_grad = rows_of(g_.wte, c.pad_token_id, 1);
    ELMO_RETURN_IF_ERROR(be.fill(d.zero_idx, 0.0f));
    ELMO_RETURN_IF_ERROR(be.gather_rows(d.pad_row, pad_grad, d.zero_idx));
  }
  const Tensor type_ids = tf_.has_type_ids ? a.type_ids : Tensor();
  ELMO_RETURN_IF_ERROR(be.embedding_backward(g_.wte, g_.wpe, g_.wtt, d.dln, a.ids, type_ids, offs));
  if (pad) ELMO_RETURN_IF_ERROR(be.gather_rows(pad_grad, d.pad_row, d.zero_idx));
  return Status::ok();
}

// A layer's tail in reverse, on the rows of `ta` (every token, or the [CLS] rows):
//   h2 = LN2(h1 + dropout(act W2ᵀ + b2)),  act = gelu(h1 W1ᵀ + b1),  h1 = LN1(x + dropout(att Woᵀ + bo))
// from dy (h2's gradient) to dln1 (LN1's input's: also the residual x's share) and datt (the
// attention output's); parameter gradients +=. dln, dtmp, dact, dh1 are scratch; dln1 may alias
// dy and datt may alias dln (each is written after the other is last read).
Status Bert::tail_backward(int l, const LayerActs& ta, Tensor dy, Tensor dln, Tensor dtmp, Tensor dact, Tensor dh1,
                           Tensor dln1, Tensor datt) {
  const Layer& w = w_.layers[static_cast<size_t>(l)];
  Layer& gw = g_.layers[static_cast<size_t>(l)];
  const float p = tf_.p_hidden;
  const uint64_t seed = tf_.seed;
  Backend& be = *backend_;
  ELMO_RETURN_IF_ERROR(be.layernorm_backward(dln, gw.ln2_w, gw.ln2_b, dy, ta.ln2_in, w.ln2_w, ta.ln2_mean, ta.ln2_rstd));
  Tensor dffn = dln;
  if (p > 0) {
    ELMO_RETURN_IF_ERROR(be.dropout_backward(dtmp, dln, p, seed, bert_dropout_stream(l, kSiteFfnOut)));
    dffn = dtmp;
  }
  ELMO_RETURN_IF_ERROR(be.gemm(gw.ffn_out_w, Tensor(), dffn, ta.act, Tensor(), Tensor(), GemmOp::kTN, Epilogue::kNone, true));
  ELMO_RETURN_IF_ERROR(be.bias_backward(gw.ffn_out_b, dffn));
  ELMO_RETURN_IF_ERROR(be.gemm(dact, Tensor(), dffn, w.ffn_out_w, Tensor(), Tensor(), GemmOp::kNN, Epilogue::kNone, false));
  ELMO_RETURN_IF_ERROR(be.gelu_backward(dact, dact, ta.pre_gelu));
  ELMO_RETURN_IF_ERROR(be.gemm(gw.ffn_in_w, Tensor(), dact, ta.h1, Tensor(), Tensor(), GemmOp::kTN, Epilogue::kNone, true));
  ELMO_RETURN_IF_ERROR(be.bias_backward(gw.ffn_in_b, dact));
  ELMO_RETURN_IF_ERROR(be.gemm(dh1, Tensor(), dact, w.ffn_in_w, Tensor(), dln, GemmOp::kNN, Epilogue::kResidual, false));
  ELMO_RETURN_IF_ERROR(be.layernorm_backward(dln1, gw.ln1_w, gw.ln1_b, dh1, ta.ln1_in, w.ln1_w, ta.ln1_mean, ta.ln1_rstd));
  Tensor dproj = dln1;
  if (p > 0) {
    ELMO_RETURN_IF_ERROR(be.dropout_backward(dtmp, dln1, p, seed, bert_dropout_stream(l, kSiteAttnOut)));
    dproj = dtmp;
  }
  ELMO_RETURN_IF_ERROR(be.gemm(gw.attn_out_w, Tensor(), dproj, ta.att, Tensor(), Tensor(), GemmOp::kTN, Epilogue::kNone, true));
  ELMO_RETURN_IF_ERROR(be.bias_backward(gw.attn_out_b, dproj));
  return be.gemm(datt, Tensor(), dproj, w.attn_out_w, Tensor(), Tensor(), GemmOp::kNN, Epilogue::kNone, false);
}

// dx_out (=) the layer input's gradient from dy (its output's); dy is overwritten.
Status Bert::layer_backward(int l, Tensor dx_out, Tensor dy, Tensor x) {
  const Layer& w = w_.layers[static_cast<size_t>(l)];
  const LayerActs la = layer_view(a_.layers[static_cast<size_t>(l)], l);
  const GradActs& d = ga_;
  const int64_t T = tf_.T, Hl = config_.attention_width(l);
  // dy is dead once LayerNorm2's backward has read it: it takes dln1.
  const Tensor dln1 = dy;
  ELMO_RETURN_IF_ERROR(tail_backward(l, la, dy, d.dln, d.dtmp, d.dact, d.dh1, dln1, views::reshape(d.datt, {T, Hl})));
  ELMO_RETURN_IF_ERROR(attention_qkv_backward(l, x));
  return backend_->gemm(dx_out, Tensor(), views::reshape(d.dqkv, {T, 3 * Hl}), w.qkv_w, Tensor(), dln1, GemmOp::kNN,
                        Epilogue::kResidual, false);
}

// att = attention(qkv), qkv = x Wqkvᵀ + bqkv, from datt (every row of the layer): dqkv (=), and
// the QKV parameters' gradients (+=) with the key bias's exactly zero (header).
Status Bert::attention_qkv_backward(int l, Tensor x) {
  Layer& gw = g_.layers[static_cast<size_t>(l)];
  const LayerActs la = layer_view(a_.layers[static_cast<size_t>(l)], l);
  const GradActs& d = ga_;
  const BertConfig& c = config_;
  const int64_t T = tf_.T, Hl = c.attention_width(l);  // H without pruned heads
  const int HD = static_cast<int>(c.head_dim());
  const uint64_t seed = tf_.seed;
  Backend& be = *backend_;
  const Tensor dqkv = views::reshape(d.dqkv, {T, 3 * Hl}), datt = views::reshape(d.datt, {T, Hl});
  Offsets offs;
  ELMO_RETURN_IF_ERROR(make_offsets(&offs, host_offsets_.data(), a_.offsets.i32(), tf_.B, tf_.T));
  ELMO_RETURN_IF_ERROR(be.attention_backward(dqkv, datt, la.qkv, la.att, la.lse, offs, c.heads_in_layer(l), HD,
                                             tf_.p_att, seed, bert_dropout_stream(l, kSiteAttention)));
  ELMO_RETURN_IF_ERROR(be.gemm(gw.qkv_w, Tensor(), dqkv, x, Tensor(), Tensor(), GemmOp::kTN, Epilogue::kNone, true));
  ELMO_RETURN_IF_ERROR(be.bias_backward(gw.qkv_b, dqkv));
  return be.fill(slice_of(gw.qkv_b, Hl, Hl), 0.0f);
}

// The last layer after a [CLS]-only forward (ForwardOptions::cls_only): its tail (output
// projection, LayerNorms, FFN) ran on the B [CLS] rows (cls_layer), attention on every row.
// dcls [B, H] is the gradient of those rows' output. The tail's backward runs on B rows; the
// attention output's gradient is dcls's share scattered to the [CLS] rows (zero elsewhere: no
// other row of this layer's output reaches the loss), so attention's backward gives dK, dV for
// every key and dQ for the [CLS] queries. dx_out (=) the layer input's gradient.
Status Bert::cls_layer_backward(int l, Tensor dx_out, Tensor dcls, Tensor x) {
  const Layer& w = w_.layers[static_cast<size_t>(l)];
  const LayerActs ca = layer_view(a_.cls_layer, l);  // the tail's rows [B, ...]
  const GradActs& d = ga_;
  const int B = tf_.B;
  const int64_t T = tf_.T, Hl = config_.attention_width(l);
  Backend& be = *backend_;
  // [B, ...] views of the [T, ...] gradient buffers (B <= T).
  const Tensor dln = rows_of(d.dln, 0, B), dtmp = rows_of(d.dtmp, 0, B), dh1 = rows_of(d.dh1, 0, B),
               dact = rows_of(d.dact, 0, B), dln1 = rows_of(d.dy, 0, B);
  const Tensor datt_cls = views::reshape(dln, {B, Hl});  // dead once dh1 is formed
  const Tensor datt = views::reshape(d.datt, {T, Hl});
  ELMO_RETURN_IF_ERROR(tail_backward(l, ca, dcls, dln, dtmp, dact, dh1, dln1, datt_cls));
  ELMO_RETURN_IF_ERROR(be.fill(datt, 0.0f));
  ELMO_RETURN_IF_ERROR(be.scatter_add_rows(datt, datt_cls, a_.cls_idx));
  ELMO_RETURN_IF_ERROR(attention_qkv_backward(l, x));
  ELMO_RETURN_IF_ERROR(be.gemm(dx_out, Tensor(), views::reshape(d.dqkv, {T, 3 * Hl}), w.qkv_w, Tensor(), Tensor(),
                               GemmOp::kNN, Epilogue::kNone, false));
  // The tail's residual input was x's [CLS] rows: their gradient dln1 goes back to those rows.
  return be.scatter_add_rows(dx_out, dln1, a_.cls_idx);
}

}  // namespace elmo
