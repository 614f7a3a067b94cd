// CpuBackend: owns the thread pool and the chosen ISA; each op lives in its own file.
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <utility>

#include "cpu/ops.h"
#include "elmo/backend.h"
#include "elmo/half.h"

namespace elmo {
namespace {

class CpuBackend final : public Backend {
 public:
  CpuBackend(std::shared_ptr<ThreadPool> pool, Isa isa) : pool_(std::move(pool)), ctx_{pool_.get(), isa} {}

  Device device() const override { return Device::kCpu; }
  std::string name() const override {
    return strformat("cpu(%s, %d threads)", isa_name(ctx_.isa), pool_->threads());
  }

  Status alloc(Tensor* out, DType dtype, std::initializer_list<int64_t> dims) override {
    Tensor t(nullptr, dtype, dims, Device::kCpu);
    if (static_cast<int>(dims.size()) > kMaxDims) return shape_error("alloc: more than 4 dimensions");
    for (int64_t d : dims)
      if (d < 0) return shape_error("alloc: negative dimension");
    size_t bytes = t.nbytes();
    size_t rounded = (bytes + 63) / 64 * 64;
    void* p = rounded ? std::aligned_alloc(64, rounded) : nullptr;
    if (rounded && !p) return Status(Code::kOom, strformat("alloc: out of host memory asking for %zu bytes", bytes));
    if (p) ++allocations_;
    t.data = p;
    *out = t;
    return Status::ok();
  }
  void free(Tensor* t) override {
    if (t && t->data) std::free(t->data);
    if (t) *t = Tensor();
  }
  uint64_t allocations() const override { return allocations_.load(std::memory_order_relaxed); }
  Status upload(Tensor dst, const void* src, size_t bytes) override {
    ELMO_CHECK(bytes <= dst.nbytes(), Code::kShape, "upload: %zu bytes into %s", bytes, dst.describe().c_str());
    if (bytes) std::memcpy(dst.data, src, bytes);
    return Status::ok();
  }
  Status download(void* dst, Tensor src, size_t bytes) override {
    ELMO_CHECK(bytes <= src.nbytes(), Code::kShape, "download: %zu bytes from %s", bytes, src.describe().c_str());
    if (bytes) std::memcpy(dst, src.data, bytes);
    return Status::ok();
  }
  Status fill(Tensor t, float value) override {
    ELMO_CHECK(!t.empty(), Code::kInput, "fill: tensor is missing");
    const int64_t n = t.numel();
    switch (t.dtype) {
      case DType::kF32: for (int64_t i = 0; i < n; ++i) t.f32()[i] = value; break;
      case DType::kBF16: { uint16_t h = f32_to_bf16(value); for (int64_t i = 0; i < n; ++i) t.u16()[i] = h; break; }
      case DType::kF16: { uint16_t h = f32_to_f16(value); for (int64_t i = 0; i < n; ++i) t.u16()[i] = h; break; }
      case DType::kI32: for (int64_t i = 0; i < n; ++i) t.i32()[i] = static_cast<int32_t>(value); break;
      case DType::kI8: std::memset(t.data, static_cast<int8_t>(value), static_cast<size_t>(n)); break;
    }
    return Status::ok();
  }
  Status convert(Tensor out, Tensor in) override {
    ELMO_CHECK(!out.empty() && !in.empty(), Code::kInput, "convert: tensor is missing");
    ELMO_CHECK(out.numel() == in.numel(), Code::kShape, "convert: %s into %s", in.describe().c_str(),
               out.describe().c_str());
    const int64_t n = in.numel();
    auto get = [&](int64_t i) -> float {
      switch (in.dtype) {
        case DType::kF32: return in.f32()[i];
        case DType::kBF16: return bf16_to_f32(in.u16()[i]);
        case DType::kF16: return f16_to_f32(in.u16()[i]);
        default: return 0.f;
      }
    };
    auto floating = [](DType t) { return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16; };
    ELMO_CHECK(floating(in.dtype) && floating(out.dtype), Code::kDType, "convert: %s -> %s not supported",
               dtype_name(in.dtype), dtype_name(out.dtype));
    for (int64_t i = 0; i < n; ++i) {
      const float v = get(i);
      if (out.dtype == DType::kF32) out.f32()[i] = v;
      else if (out.dtype == DType::kBF16) out.u16()[i] = f32_to_bf16(v);
      else out.u16()[i] = f32_to_f16(v);
    }
    return Status::ok();
  }
  Status sync() override { return Status::ok(); }

  Status embedding_forward(Tensor out, Tensor ids, Tensor type_ids, const Offsets& o, Tensor wte, Tensor wpe,
                           Tensor wtt) override {
    return cpu::embedding_forward(ctx_, out, ids, type_ids, o, wte, wpe, wtt);
  }
  Status embedding_backward(Tensor dwte, Tensor dwpe, Tensor dwtt, Tensor dout, Tensor ids, Tensor type_ids,
                            const Offsets& o) override {
    return cpu::embedding_backward(ctx_, dwte, dwpe, dwtt, dout, ids, type_ids, o);
  }
  Status layernorm_forward(Tensor out, Tensor sum_out, Tensor mean, Tensor rstd, Tensor inp, Tensor residual,
                           Tensor weight, Tensor bias, float eps) override {
    return cpu::layernorm_forward(ctx_, out, sum_out, mean, rstd, inp, residual, weight, bias, eps);
  }
  Status layernorm_backward(Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout, Tensor x, Tensor weight,
                            Tensor mean, Tensor rstd) override {
    return cpu::layernorm_backward(ctx_, dinp, dweight, dbias, dout, x, weight, mean, rstd);
  }
  Status gemm(Tensor out, Tensor pre_gelu, Tensor a, Tensor b, Tensor bias, Tensor residual, GemmOp op,
              Epilogue ep, bool accumulate) override {
    // A bf16 operand (a model's bf16 weight copy as b) has its own kernels; f32 stays on gemm.
    if (a.dtype == DType::kBF16 || b.dtype == DType::kBF16)
      return cpu::gemm_bf16(ctx_, out, pre_gelu, a, b, bias, residual, op, ep, accumulate);
    // An int8 b is a quantized weight (quantize_weight).
    if (b.dtype == DType::kI8) return cpu::gemm_q8(ctx_, out, pre_gelu, a, b, bias, residual, op, ep, accumulate);
    return cpu::gemm(ctx_, out, pre_gelu, a, b, bias, residual, op, ep, accumulate);
  }
  Status bias_backward(Tensor dbias, Tensor dout) override { return cpu::bias_backward(ctx_, dbias, dout); }
  int64_t quantized_weight_bytes(int64_t N, int64_t K) const override { return cpu::q8_weight_bytes(N, K); }
  Status quantize_weight(Tensor* out, Tensor w) override { return cpu::quantize_weight_q8(ctx_, out, w); }
  int weight_panel() const override { return cpu::gemm_weight_panel(ctx_); }
  Status pack_weight(Tensor* w, bool packed) override {
    if (w != nullptr && w->dtype == DType::kBF16) return cpu::pack_weight_bf16(ctx_, w, packed);
    return cpu::pack_weight(ctx_, w, packed);
  }
  Status attention_forward(Tensor out, Tensor lse, Tensor qkv, const Offsets& o, int NH, int HD, float p,
                           uint64_t seed, uint64_t stream) override {
    return cpu::attention_forward(ctx_, out, lse, qkv, o, NH, HD, p, seed, stream);
  }
  Status attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse, const Offsets& o, int NH,
                            int HD, float p, uint64_t seed, uint64_t stream) override {
    return cpu::attention_backward(ctx_, dqkv, dout, qkv, out, lse, o, NH, HD, p, seed, stream);
  }
  Status gelu_forward(Tensor out, Tensor inp) override { return cpu::gelu_forward(ctx_, out, inp); }
  Status gelu_backward(Tensor dinp, Tensor dout, Tensor inp) override {
    return cpu::gelu_backward(ctx_, dinp, dout, inp);
  }
  Status tanh_forward(Tensor out, Tensor inp) override { return cpu::tanh_forward(ctx_, out, inp); }
  Status tanh_backward(Tensor dinp, Tensor dout, Tensor out) override {
    return cpu::tanh_backward(ctx_, dinp, dout, out);
  }
  Status dropout_forward(Tensor out, Tensor inp, float p, uint64_t seed, uint64_t stream) override {
    return cpu::dropout_forward(ctx_, out, inp, p, seed, stream);
  }
  Status dropout_backward(Tensor dinp, Tensor dout, float p, uint64_t seed, uint64_t stream) override {
    return cpu::dropout_backward(ctx_, dinp, dout, p, seed, stream);
  }
  Status softmax_forward(Tensor out, Tensor inp) override { return cpu::softmax_forward(ctx_, out, inp); }
  Status gather_rows(Tensor out, Tensor inp, Tensor idx) override { return cpu::gather_rows(ctx_, out, inp, idx); }
  Status scatter_add_rows(Tensor dinp, Tensor dout, Tensor idx) override {
    return cpu::scatter_add_rows(ctx_, dinp, dout, idx);
  }
  Status cross_entropy_forward(Tensor losses, Tensor lse, Tensor logits, Tensor targets, int ignore) override {
    return cpu::cross_entropy_forward(ctx_, losses, lse, logits, targets, ignore);
  }
  Status cross_entropy_backward(Tensor dlogits, Tensor logits, Tensor lse, Tensor targets, float scale,
                                int ignore) override {
    return cpu::cross_entropy_backward(ctx_, dlogits, logits, lse, targets, scale, ignore);
  }
  Status bce_forward(Tensor losses, Tensor logits, Tensor targets) override {
    return cpu::bce_forward(ctx_, losses, logits, targets);
  }
  Status bce_backward(Tensor dlogits, Tensor logits, Tensor targets, float scale) override {
    return cpu::bce_backward(ctx_, dlogits, logits, targets, scale);
  }
  Status adamw_update(Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWParams& p) override {
    return cpu::adamw_update(ctx_, param, grad, m, v, p);
  }
  Status sum_squares(double* result, Tensor x) override { return cpu::sum_squares(ctx_, result, x); }

 private:
  std::shared_ptr<ThreadPool> pool_;
  cpu::Ctx ctx_;
  std::atomic<uint64_t> allocations_{0};
};

}  // namespace

Status make_cpu_backend(std::unique_ptr<Backend>* out, const CpuOptions& opts) {
  Isa isa = best_isa();
  const char* want = opts.isa ? opts.isa : std::getenv("ELMO_ISA");
  if (want && *want) ELMO_RETURN_IF_ERROR(parse_isa(want, &isa));
  const int threads = opts.threads > 0 ? opts.threads : default_threads();
  std::shared_ptr<ThreadPool> pool = opts.shared_pool ? shared_thread_pool(threads) : std::make_shared<ThreadPool>(threads);
  out->reset(new (std::nothrow) CpuBackend(std::move(pool), isa));
  if (!*out) return Status(Code::kOom, "make_cpu_backend: out of memory");
  return Status::ok();
}

}  // namespace elmo
