// ForwardingBackend: a Backend that hands every call to another one. Tests derive from it and
// override the few calls they change (a CPU backend that takes bf16 storage, one whose memory
// runs out at a chosen size), the rest behaving exactly as the inner backend.
#pragma once

#include <memory>
#include <string>
#include <utility>

#include "elmo/backend.h"

namespace elmo_test {

class ForwardingBackend : public elmo::Backend {
 public:
  explicit ForwardingBackend(std::unique_ptr<elmo::Backend> inner) : inner_(std::move(inner)) {}

  elmo::Device device() const override { return inner_->device(); }
  std::string name() const override { return inner_->name(); }
  elmo::Status alloc(elmo::Tensor* out, elmo::DType dtype, std::initializer_list<int64_t> dims) override {
    return inner_->alloc(out, dtype, dims);
  }
  void free(elmo::Tensor* t) override { inner_->free(t); }
  uint64_t allocations() const override { return inner_->allocations(); }
  elmo::Status upload(elmo::Tensor dst, const void* src, size_t bytes) override { return inner_->upload(dst, src, bytes); }
  elmo::Status download(void* dst, elmo::Tensor src, size_t bytes) override { return inner_->download(dst, src, bytes); }
  elmo::Status fill(elmo::Tensor t, float value) override { return inner_->fill(t, value); }
  elmo::Status convert(elmo::Tensor out, elmo::Tensor in) override { return inner_->convert(out, in); }
  elmo::Status sync() override { return inner_->sync(); }

  elmo::Status embedding_forward(elmo::Tensor out, elmo::Tensor ids, elmo::Tensor type_ids,
                                 const elmo::Offsets& offsets, elmo::Tensor wte, elmo::Tensor wpe,
                                 elmo::Tensor wtt) override {
    return inner_->embedding_forward(out, ids, type_ids, offsets, wte, wpe, wtt);
  }
  elmo::Status embedding_backward(elmo::Tensor dwte, elmo::Tensor dwpe, elmo::Tensor dwtt, elmo::Tensor dout,
                                  elmo::Tensor ids, elmo::Tensor type_ids, const elmo::Offsets& offsets) override {
    return inner_->embedding_backward(dwte, dwpe, dwtt, dout, ids, type_ids, offsets);
  }
  elmo::Status layernorm_forward(elmo::Tensor out, elmo::Tensor sum_out, elmo::Tensor mean, elmo::Tensor rstd,
                                 elmo::Tensor inp, elmo::Tensor residual, elmo::Tensor weight, elmo::Tensor bias,
                                 float eps) override {
    return inner_->layernorm_forward(out, sum_out, mean, rstd, inp, residual, weight, bias, eps);
  }
  elmo::Status layernorm_backward(elmo::Tensor dinp, elmo::Tensor dweight, elmo::Tensor dbias, elmo::Tensor dout,
                                  elmo::Tensor x, elmo::Tensor weight, elmo::Tensor mean, elmo::Tensor rstd) override {
    return inner_->layernorm_backward(dinp, dweight, dbias, dout, x, weight, mean, rstd);
  }
  elmo::Status gemm(elmo::Tensor out, elmo::Tensor pre_gelu, elmo::Tensor a, elmo::Tensor b, elmo::Tensor bias,
                    elmo::Tensor residual, elmo::GemmOp op, elmo::Epilogue ep, bool accumulate) override {
    return inner_->gemm(out, pre_gelu, a, b, bias, residual, op, ep, accumulate);
  }
  elmo::Status bias_backward(elmo::Tensor dbias, elmo::Tensor dout) override { return inner_->bias_backward(dbias, dout); }
  bool gemm_bf16_activations() const override { return inner_->gemm_bf16_activations(); }
  bool attention_bf16_io(int head_dim) const override { return inner_->attention_bf16_io(head_dim); }
  bool bf16_hidden_states() const override { return inner_->bf16_hidden_states(); }
  int64_t quantized_weight_bytes(int64_t N, int64_t K) const override { return inner_->quantized_weight_bytes(N, K); }
  elmo::Status quantize_weight(elmo::Tensor* out, elmo::Tensor w) override { return inner_->quantize_weight(out, w); }
  int weight_panel() const override { return inner_->weight_panel(); }
  elmo::Status pack_weight(elmo::Tensor* w, bool packed) override { return inner_->pack_weight(w, packed); }
  elmo::Status attention_forward(elmo::Tensor out, elmo::Tensor lse, elmo::Tensor qkv, const elmo::Offsets& offsets,
                                 int NH, int HD, float p, uint64_t seed, uint64_t stream) override {
    return inner_->attention_forward(out, lse, qkv, offsets, NH, HD, p, seed, stream);
  }
  elmo::Status attention_backward(elmo::Tensor dqkv, elmo::Tensor dout, elmo::Tensor qkv, elmo::Tensor out,
                                  elmo::Tensor lse, const elmo::Offsets& offsets, int NH, int HD, float p,
                                  uint64_t seed, uint64_t stream) override {
    return inner_->attention_backward(dqkv, dout, qkv, out, lse, offsets, NH, HD, p, seed, stream);
  }
  elmo::Status gelu_forward(elmo::Tensor out, elmo::Tensor inp) override { return inner_->gelu_forward(out, inp); }
  elmo::Status gelu_backward(elmo::Tensor dinp, elmo::Tensor dout, elmo::Tensor inp) override {
    return inner_->gelu_backward(dinp, dout, inp);
  }
  elmo::Status tanh_forward(elmo::Tensor out, elmo::Tensor inp) override { return inner_->tanh_forward(out, inp); }
  elmo::Status tanh_backward(elmo::Tensor dinp, elmo::Tensor dout, elmo::Tensor out) override {
    return inner_->tanh_backward(dinp, dout, out);
  }
  elmo::Status dropout_forward(elmo::Tensor out, elmo::Tensor inp, float p, uint64_t seed, uint64_t stream) override {
    return inner_->dropout_forward(out, inp, p, seed, stream);
  }
  elmo::Status dropout_backward(elmo::Tensor dinp, elmo::Tensor dout, float p, uint64_t seed,
                                uint64_t stream) override {
    return inner_->dropout_backward(dinp, dout, p, seed, stream);
  }
  elmo::Status softmax_forward(elmo::Tensor out, elmo::Tensor inp) override { return inner_->softmax_forward(out, inp); }
  elmo::Status gather_rows(elmo::Tensor out, elmo::Tensor inp, elmo::Tensor idx) override {
    return inner_->gather_rows(out, inp, idx);
  }
  elmo::Status scatter_add_rows(elmo::Tensor dinp, elmo::Tensor dout, elmo::Tensor idx) override {
    return inner_->scatter_add_rows(dinp, dout, idx);
  }
  elmo::Status cross_entropy_forward(elmo::Tensor losses, elmo::Tensor lse, elmo::Tensor logits,
                                     elmo::Tensor targets, int ignore_index) override {
    return inner_->cross_entropy_forward(losses, lse, logits, targets, ignore_index);
  }
  elmo::Status cross_entropy_backward(elmo::Tensor dlogits, elmo::Tensor logits, elmo::Tensor lse,
                                      elmo::Tensor targets, float scale, int ignore_index) override {
    return inner_->cross_entropy_backward(dlogits, logits, lse, targets, scale, ignore_index);
  }
  elmo::Status bce_forward(elmo::Tensor losses, elmo::Tensor logits, elmo::Tensor targets) override {
    return inner_->bce_forward(losses, logits, targets);
  }
  elmo::Status bce_backward(elmo::Tensor dlogits, elmo::Tensor logits, elmo::Tensor targets, float scale) override {
    return inner_->bce_backward(dlogits, logits, targets, scale);
  }
  elmo::Status adamw_update(elmo::Tensor param, elmo::Tensor grad, elmo::Tensor m, elmo::Tensor v,
                            const elmo::AdamWParams& p) override {
    return inner_->adamw_update(param, grad, m, v, p);
  }
  elmo::Status sum_squares(double* result, elmo::Tensor x) override { return inner_->sum_squares(result, x); }

 protected:
  elmo::Backend& inner() { return *inner_; }

 private:
  std::unique_ptr<elmo::Backend> inner_;
};

}  // namespace elmo_test
