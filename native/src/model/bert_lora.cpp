// LoRA on the query and value projections (the targets PEFT picks for BERT), kept merged.
//
//   W_q = W0_q + s · B_q A_q,   W_v = W0_v + s · B_v A_v,   s = alpha / r
//   A [r, H] (PEFT's kaiming-uniform init: U(±1/sqrt(H))), B [H, r] (zero), per layer.
//
// The merged weights live in the model's own parameters (rows [0, H) and [2H, 3H) of each fused
// qkv matrix), so the forward and the backward run exactly as without LoRA; W0 is kept aside.
// After a backward, the weight gradient dW of those rows gives the adapters' gradients:
//   dB = s · dW Aᵀ   [H, r],    dA = s · Bᵀ dW   [r, H]
// lora_backward writes them without the factor s (gemm has no scale); the trainer folds s into
// AdamW's gradient scale and s² into the clipping norm. With LoRA dropout 0 (the only one
// supported) this is LoRA's gradient exactly; the price is that the frozen weights' gradients
// are still computed (the backward is that of full fine-tuning), while the optimizer state is
// the adapters' and the heads' only.
#include <cmath>

#include "elmo/bert.h"
#include "model/views.h"

namespace elmo {

using views::make_view;
using views::round_up;

namespace {

uint64_t mix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

Tensor Bert::qkv_rows(const Tensor& qkv, int part) const {
  const int64_t H = config_.hidden_size;
  return make_view(qkv.data, static_cast<size_t>(part * H * H) * 4, DType::kF32, {H, H}, backend_->device());
}

Status Bert::lora_enable(int rank, float alpha, uint64_t seed) {
  ELMO_CHECK(!lora_enabled(), Code::kInput, "lora_enable: the model already has an adapter (lora_disable first)");
  // PEFT's adapters are [H, r] over full-width query and value projections.
  ELMO_CHECK(!config_.has_pruned_heads(), Code::kUnsupported,
             "lora_enable: LoRA on a model with pruned attention heads (elmo_pruned_heads) is not supported");
  ELMO_CHECK(rank >= 1 && rank <= config_.hidden_size, Code::kInput, "Expected a LoRA rank in [1, %lld] but received %d",
             (long long)config_.hidden_size, rank);
  ELMO_CHECK(std::isfinite(alpha) && alpha > 0, Code::kInput, "Expected a LoRA alpha > 0 but received %g",
             static_cast<double>(alpha));
  const int64_t H = config_.hidden_size, r = rank;
  const int L = config_.num_layers;
  Backend& be = *backend_;
  LoraState s;
  s.rank = rank;
  s.alpha = alpha;
  // Per layer: A_q, B_q, A_v, B_v (each 64-byte aligned), then the W0 rows in their own buffer.
  const size_t per = 2 * (round_up(static_cast<size_t>(r * H) * 4) + round_up(static_cast<size_t>(H * r) * 4));
  const int64_t n = static_cast<int64_t>(per * L / 4);
  ELMO_RETURN_IF_ERROR(be.alloc(&s.buf, DType::kF32, {n}));
  Status st = be.alloc(&s.grad_buf, DType::kF32, {n});
  if (st) st = be.alloc(&s.base_buf, DType::kF32, {2 * L * H * H});
  if (st) st = be.alloc(&s.scaled_b, DType::kF32, {H * r});
  if (st) st = be.fill(s.buf, 0.0f);
  if (st) st = be.fill(s.grad_buf, 0.0f);
  if (!st) {
    be.free(&s.buf), be.free(&s.grad_buf), be.free(&s.base_buf), be.free(&s.scaled_b);
    return st;
  }
  const Device dev = be.device();
  // Row-major weights to read W0 from (and to write the merged rows into).
  const bool was_packed = packed_;
  if (was_packed) ELMO_RETURN_IF_ERROR(set_weights_packed(false));
  std::vector<float> host(static_cast<size_t>(r * H));
  const double bound = 1.0 / std::sqrt(static_cast<double>(H));
  size_t off = 0;
  for (int l = 0; l < L; ++l) {
    LoraState::LayerLora ll;
    const std::string p = "bert.encoder.layer." + std::to_string(l) + ".attention.self.";
    for (int k = 0; k < 2; ++k) {  // query, value
      Tensor a = make_view(s.buf.data, off, DType::kF32, {r, H}, dev);
      Tensor ga = make_view(s.grad_buf.data, off, DType::kF32, {r, H}, dev);
      off += round_up(static_cast<size_t>(r * H) * 4);
      Tensor b = make_view(s.buf.data, off, DType::kF32, {H, r}, dev);
      Tensor gb = make_view(s.grad_buf.data, off, DType::kF32, {H, r}, dev);
      off += round_up(static_cast<size_t>(H * r) * 4);
      // A ~ U(-1/sqrt(H), 1/sqrt(H)), deterministic in (seed, layer, which).
      uint64_t state = mix(seed ^ (static_cast<uint64_t>(l) * 2 + static_cast<uint64_t>(k) + 1) * 0x9E37ull);
      for (float& x : host) {
        state = mix(state);
        x = static_cast<float>((((state >> 11) + 0.5) * (1.0 / 9007199254740992.0) * 2.0 - 1.0) * bound);
      }
      ELMO_RETURN_IF_ERROR(be.upload(a, host.data(), host.size() * 4));
      const std::string name = p + (k == 0 ? "query" : "value");
      s.params.push_back({name + ".lora_A.weight", a, true});
      s.params.push_back({name + ".lora_B.weight", b, true});
      s.grads.push_back({name + ".lora_A.weight", ga, true});
      s.grads.push_back({name + ".lora_B.weight", gb, true});
      Tensor base = make_view(s.base_buf.data, static_cast<size_t>((2 * l + k) * H * H) * 4, DType::kF32, {H, H}, dev);
      ELMO_RETURN_IF_ERROR(be.convert(base, qkv_rows(w_.layers[static_cast<size_t>(l)].qkv_w, k == 0 ? 0 : 2)));
      if (k == 0) ll.aq = a, ll.bq = b, ll.gaq = ga, ll.gbq = gb, ll.base_q = base;
      else ll.av = a, ll.bv = b, ll.gav = ga, ll.gbv = gb, ll.base_v = base;
    }
    s.layers.push_back(ll);
  }
  s.region = make_view(s.buf.data, 0, DType::kF32, {n}, dev);
  s.grad_region = make_view(s.grad_buf.data, 0, DType::kF32, {n}, dev);
  ELMO_RETURN_IF_ERROR(be.sync());
  lora_ = std::move(s);
  if (was_packed) ELMO_RETURN_IF_ERROR(set_weights_packed(true));
  return Status::ok();  // B = 0: the merged weights are W0, nothing to apply
}

Status Bert::lora_apply() {
  ELMO_CHECK(lora_enabled(), Code::kInput, "lora_apply: the model has no adapter");
  Backend& be = *backend_;
  const int64_t H = config_.hidden_size, r = lora_.rank;
  const float scale = lora_scale();
  const bool was_packed = packed_;
  if (was_packed) ELMO_RETURN_IF_ERROR(set_weights_packed(false));
  std::vector<float> host(static_cast<size_t>(H * r));
  for (size_t l = 0; l < lora_.layers.size(); ++l) {
    const LoraState::LayerLora& ll = lora_.layers[l];
    for (int k = 0; k < 2; ++k) {
      // W = W0 + (s B) A: B scaled on the host (H·r values), then one GEMM with W0 as residual.
      ELMO_RETURN_IF_ERROR(be.download(host.data(), k == 0 ? ll.bq : ll.bv, host.size() * 4));
      ELMO_RETURN_IF_ERROR(be.sync());
      for (float& x : host) x *= scale;
      ELMO_RETURN_IF_ERROR(be.upload(lora_.scaled_b, host.data(), host.size() * 4));
      Tensor sb = lora_.scaled_b;
      sb.ndim = 2, sb.shape[0] = H, sb.shape[1] = r;
      ELMO_RETURN_IF_ERROR(be.gemm(qkv_rows(w_.layers[l].qkv_w, k == 0 ? 0 : 2), Tensor(), sb, k == 0 ? ll.aq : ll.av,
                                   Tensor(), k == 0 ? ll.base_q : ll.base_v, GemmOp::kNN, Epilogue::kResidual, false));
    }
  }
  ELMO_RETURN_IF_ERROR(be.sync());
  if (was_packed) return set_weights_packed(true);
  return refresh_compute_weights();
}

Status Bert::lora_backward() {
  ELMO_CHECK(lora_enabled(), Code::kInput, "lora_backward: the model has no adapter");
  ELMO_CHECK(training_enabled(), Code::kInput, "lora_backward: training is not enabled on this model");
  Backend& be = *backend_;
  for (size_t l = 0; l < lora_.layers.size(); ++l) {
    const LoraState::LayerLora& ll = lora_.layers[l];
    for (int k = 0; k < 2; ++k) {
      const Tensor dw = qkv_rows(g_.layers[l].qkv_w, k == 0 ? 0 : 2);  // [H, H]
      const Tensor a = k == 0 ? ll.aq : ll.av, b = k == 0 ? ll.bq : ll.bv;
      // dB [H, r] = dW Aᵀ;  dA [r, H] = Bᵀ dW   (without s; see the file comment)
      ELMO_RETURN_IF_ERROR(be.gemm(k == 0 ? ll.gbq : ll.gbv, Tensor(), dw, a, Tensor(), Tensor(), GemmOp::kNT,
                                   Epilogue::kNone, false));
      ELMO_RETURN_IF_ERROR(be.gemm(k == 0 ? ll.gaq : ll.gav, Tensor(), b, dw, Tensor(), Tensor(), GemmOp::kTN,
                                   Epilogue::kNone, false));
    }
  }
  return Status::ok();
}

Status Bert::lora_disable(bool merge) {
  if (!lora_enabled()) return Status::ok();
  Backend& be = *backend_;
  if (!merge) {  // back to W0
    const bool was_packed = packed_;
    if (was_packed) ELMO_RETURN_IF_ERROR(set_weights_packed(false));
    for (size_t l = 0; l < lora_.layers.size(); ++l) {
      ELMO_RETURN_IF_ERROR(be.convert(qkv_rows(w_.layers[l].qkv_w, 0), lora_.layers[l].base_q));
      ELMO_RETURN_IF_ERROR(be.convert(qkv_rows(w_.layers[l].qkv_w, 2), lora_.layers[l].base_v));
    }
    ELMO_RETURN_IF_ERROR(be.sync());
    if (was_packed) ELMO_RETURN_IF_ERROR(set_weights_packed(true));
    else ELMO_RETURN_IF_ERROR(refresh_compute_weights());
  }
  // merge: the merged rows simply stay as the weights.
  be.free(&lora_.buf), be.free(&lora_.grad_buf), be.free(&lora_.base_buf), be.free(&lora_.scaled_b);
  lora_ = LoraState();
  return Status::ok();
}

Status Bert::lora_set(const std::string& name, const float* data, int64_t n) {
  ELMO_CHECK(lora_enabled(), Code::kInput, "lora_set: the model has no adapter");
  for (const Param& p : lora_.params) {
    if (p.name != name) continue;
    ELMO_CHECK(n == p.value.numel(), Code::kShape, "lora_set: %s has %lld values, expected %lld", name.c_str(),
               (long long)n, (long long)p.value.numel());
    return backend_->upload(p.value, data, static_cast<size_t>(n) * 4);
  }
  return Status(Code::kInput, "lora_set: no adapter tensor " + name);
}

Status Bert::read_parameter(const std::string& name, std::vector<float>* out) const {
  for (const Param& p : params_) {
    if (p.name != name) continue;
    out->resize(static_cast<size_t>(p.value.numel()));
    ELMO_RETURN_IF_ERROR(backend_->download(out->data(), p.value, out->size() * 4));
    ELMO_RETURN_IF_ERROR(backend_->sync());
    if (p.value.panel > 0) unpack_weight_panels(out->data(), p.value.shape[0], p.value.shape[1], p.value.panel);
    return Status::ok();
  }
  return Status(Code::kInput, "read_parameter: no parameter " + name);
}

Status Bert::write_parameter(const std::string& name, const float* data, int64_t n) {
  for (const Param& p : params_) {
    if (p.name != name) continue;
    ELMO_CHECK(n == p.value.numel(), Code::kShape, "write_parameter: %s has %lld values, expected %lld", name.c_str(),
               (long long)n, (long long)p.value.numel());
    const bool was_packed = packed_;
    if (was_packed) ELMO_RETURN_IF_ERROR(set_weights_packed(false));
    Tensor t = p.value;
    t.panel = 0;
    ELMO_RETURN_IF_ERROR(backend_->upload(t, data, static_cast<size_t>(n) * 4));
    ELMO_RETURN_IF_ERROR(backend_->sync());
    if (was_packed) return set_weights_packed(true);
    return refresh_compute_weights();
  }
  return Status(Code::kInput, "write_parameter: no parameter " + name);
}

}  // namespace elmo
