// CudaBackend: one device, one stream, grow-once scratch buffers; each op lives in its own
// .cu file (ops.h). Host copies go through a pinned staging buffer owned by the backend and
// are synchronous (download returns when the data is on the host).
#include "elmo/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <new>

#include "gemm.h"
#include "ops.h"

namespace elmo {
namespace cuda {

Status launch_status(const char* op) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return Status(Code::kCuda, strformat("%s: %s", op, cudaGetErrorString(e)));
  return Status::ok();
}

Status flag_reset(const Ctx& c, const char* op) {
  cudaError_t e = cudaMemsetAsync(c.flag, 0, sizeof(int), c.stream);
  if (e != cudaSuccess) return Status(Code::kCuda, strformat("%s: %s", op, cudaGetErrorString(e)));
  return Status::ok();
}

Status flag_check(const Ctx& c, const char* op, const char* what) {
  cudaError_t e = cudaMemcpyAsync(c.flag_host, c.flag, sizeof(int), cudaMemcpyDeviceToHost, c.stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(c.stream);
  if (e != cudaSuccess) return Status(Code::kCuda, strformat("%s: %s", op, cudaGetErrorString(e)));
  if (*c.flag_host != 0) return input_error(strformat("%s: %s", op, what));
  return Status::ok();
}

}  // namespace cuda

namespace {

Status cuda_error(const char* op, cudaError_t e) {
  return Status(Code::kCuda, strformat("%s: %s", op, cudaGetErrorString(e)));
}

// Every tensor handed to an op must live on the device; a host pointer would fault the kernel
// and poison the context.
Status on_device(const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    if (!t->empty() && t->device != Device::kCuda)
      return input_error(strformat("%s: tensor %s is not on the CUDA device", op, t->describe().c_str()));
  return Status::ok();
}

Status offsets_on_device(const char* op, const Offsets& o) {
  ELMO_CHECK(o.host != nullptr && o.dev != nullptr, Code::kInput, "%s: offsets are missing", op);
  cudaPointerAttributes attr{};
  cudaError_t e = cudaPointerGetAttributes(&attr, o.dev);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return input_error(strformat("%s: offsets.dev is not device memory (%s)", op, cudaGetErrorString(e)));
  }
  ELMO_CHECK(attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged, Code::kInput,
             "%s: offsets.dev must point to device memory (upload the offsets first)", op);
  return Status::ok();
}

// Replaces *buf (of *cap bytes) by a device buffer of `want` bytes; the old contents are not
// kept. Out of memory: ERR_OOM naming `what`, the bytes asked and those free; *buf is then null.
Status regrow_device(void** buf, size_t* cap, size_t want, const char* what) {
  if (*buf) cudaFree(*buf);
  *buf = nullptr;
  *cap = 0;
  if (cudaMalloc(buf, want) != cudaSuccess) {
    cudaGetLastError();
    *buf = nullptr;
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    return Status(Code::kOom, strformat("%s: out of device memory asking for %zu bytes (%zu free)", what, want, free_b));
  }
  *cap = want;
  return Status::ok();
}

// Device and pinned buffers that only grow. Growing frees the old buffer (cudaFree waits
// for the device), so a pointer handed out earlier must not be used after a later call.
class GrowBuffers final : public cuda::Scratch {
 public:
  ~GrowBuffers() override {
    if (dev_) cudaFree(dev_);
    if (host_) cudaFreeHost(host_);
  }
  Status device(size_t bytes, void** out) override {
    if (bytes > dev_bytes_) {
      ++allocs_;
      ELMO_RETURN_IF_ERROR(regrow_device(&dev_, &dev_bytes_, std::max(bytes, dev_bytes_ + dev_bytes_ / 2), "scratch"));
    }
    *out = dev_;
    return Status::ok();
  }
  Status pinned(size_t bytes, void** out) override {
    if (bytes > host_bytes_) {
      if (host_) cudaFreeHost(host_);
      host_ = nullptr;
      host_bytes_ = 0;
      ++allocs_;
      if (cudaHostAlloc(&host_, bytes, cudaHostAllocDefault) != cudaSuccess) {
        cudaGetLastError();
        return Status(Code::kOom, strformat("scratch: out of pinned host memory asking for %zu bytes", bytes));
      }
      host_bytes_ = bytes;
    }
    *out = host_;
    return Status::ok();
  }
  // Allocations asked for so far (device and pinned).
  uint64_t allocs() const { return allocs_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> allocs_{0};
  void* dev_ = nullptr;
  size_t dev_bytes_ = 0;
  void* host_ = nullptr;
  size_t host_bytes_ = 0;
};

constexpr size_t kStagingBytes = 8u << 20;

class CudaBackend final : public Backend {
 public:
  CudaBackend() = default;
  ~CudaBackend() override {
    if (stream_) {
      cudaSetDevice(device_);
      cudaStreamSynchronize(stream_);
    }
    if (gemm_ws_) cudaFree(gemm_ws_);
    if (flag_) cudaFree(flag_);
    if (flag_host_) cudaFreeHost(flag_host_);
    if (staging_) cudaFreeHost(staging_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  Status init(const CudaOptions& opts) {
    device_ = opts.device;
    compute_ = opts.compute;
    bf16_activations_ = opts.bf16_activations;
    if (opts.bf16_hidden != 0) {
      bf16_hidden_ = opts.bf16_hidden > 0;
    } else {
      const char* v = std::getenv("ELMO_CUDA_BF16_HIDDEN");
      bf16_hidden_ = v != nullptr && std::strcmp(v, "1") == 0;
    }
    cudaError_t e = cudaSetDevice(device_);
    if (e != cudaSuccess) return cuda_error("make_cuda_backend: cudaSetDevice", e);
    cudaDeviceProp prop{};
    e = cudaGetDeviceProperties(&prop, device_);
    if (e != cudaSuccess) return cuda_error("make_cuda_backend: cudaGetDeviceProperties", e);
    device_name_ = prop.name;
    e = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking);
    if (e != cudaSuccess) return cuda_error("make_cuda_backend: cudaStreamCreate", e);
    if (cudaMalloc(&flag_, sizeof(int)) != cudaSuccess || cudaHostAlloc(&flag_host_, sizeof(int), 0) != cudaSuccess ||
        cudaHostAlloc(&staging_, kStagingBytes, 0) != cudaSuccess) {
      cudaGetLastError();
      return Status(Code::kOom, "make_cuda_backend: cannot allocate the backend's buffers");
    }
    ctx_.stream = stream_;
    ctx_.flag = static_cast<int*>(flag_);
    ctx_.flag_host = static_cast<int*>(flag_host_);
    ctx_.scratch = &scratch_;
    ctx_.sm_count = prop.multiProcessorCount;
    ctx_.max_smem_optin = prop.sharedMemPerBlockOptin;
    ctx_.compute = compute_;
    ctx_.attention_rows = opts.attention_rows;
    return Status::ok();
  }

  Device device() const override { return Device::kCuda; }
  std::string name() const override { return strformat("cuda:%d (%s)", device_, device_name_.c_str()); }

  // ---- memory ----------------------------------------------------------------------------
  Status alloc(Tensor* out, DType dtype, std::initializer_list<int64_t> dims) override {
    ELMO_CHECK(out != nullptr, Code::kInput, "alloc: output tensor is missing");
    ELMO_CHECK(static_cast<int>(dims.size()) <= kMaxDims, Code::kShape, "alloc: more than %d dimensions", kMaxDims);
    Tensor t(nullptr, dtype, dims, Device::kCuda);
    double total = static_cast<double>(dtype_size(dtype));
    for (int64_t d : dims) {
      ELMO_CHECK(d >= 0, Code::kShape, "alloc: negative dimension %lld", static_cast<long long>(d));
      total *= static_cast<double>(d);
    }
    ELMO_CHECK(total < 9.0e18, Code::kOom, "alloc: %s is too large to address", t.describe().c_str());
    const size_t bytes = t.nbytes();
    if (bytes > 0) {
      cudaSetDevice(device_);
      void* p = nullptr;
      ++allocations_;
      cudaError_t e = cudaMalloc(&p, bytes);
      if (e != cudaSuccess) {
        cudaGetLastError();  // an allocation failure is not sticky; clear it
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        return Status(Code::kOom, strformat("alloc: out of device memory asking for %zu bytes for %s (%zu bytes free)",
                                            bytes, t.describe().c_str(), free_b));
      }
      t.data = p;
    }
    *out = t;
    return Status::ok();
  }

  void free(Tensor* t) override {
    if (t == nullptr) return;
    if (t->data && t->device == Device::kCuda) cudaFree(t->data);
    *t = Tensor();
  }
  uint64_t allocations() const override {
    return allocations_.load(std::memory_order_relaxed) + scratch_.allocs();
  }

  Status upload(Tensor dst, const void* src, size_t bytes) override {
    ELMO_CHECK(dst.device == Device::kCuda && (bytes == 0 || !dst.empty()), Code::kInput,
               "upload: destination is not a CUDA tensor");
    ELMO_CHECK(bytes <= dst.nbytes(), Code::kShape, "upload: %zu bytes into %s", bytes, dst.describe().c_str());
    ELMO_CHECK(bytes == 0 || src != nullptr, Code::kInput, "upload: source is null");
    const char* s = static_cast<const char*>(src);
    char* d = static_cast<char*>(dst.data);
    for (size_t off = 0; off < bytes; off += kStagingBytes) {
      const size_t n = std::min(kStagingBytes, bytes - off);
      std::memcpy(staging_, s + off, n);  // the previous chunk's copy finished (synchronized below)
      cudaError_t e = cudaMemcpyAsync(d + off, staging_, n, cudaMemcpyHostToDevice, stream_);
      if (e == cudaSuccess) e = cudaStreamSynchronize(stream_);
      if (e != cudaSuccess) return cuda_error("upload", e);
    }
    return Status::ok();
  }

  Status download(void* dst, Tensor src, size_t bytes) override {
    ELMO_CHECK(src.device == Device::kCuda && (bytes == 0 || !src.empty()), Code::kInput,
               "download: source is not a CUDA tensor");
    ELMO_CHECK(bytes <= src.nbytes(), Code::kShape, "download: %zu bytes from %s", bytes, src.describe().c_str());
    ELMO_CHECK(bytes == 0 || dst != nullptr, Code::kInput, "download: destination is null");
    char* d = static_cast<char*>(dst);
    const char* s = static_cast<const char*>(src.data);
    for (size_t off = 0; off < bytes; off += kStagingBytes) {
      const size_t n = std::min(kStagingBytes, bytes - off);
      cudaError_t e = cudaMemcpyAsync(staging_, s + off, n, cudaMemcpyDeviceToHost, stream_);
      if (e == cudaSuccess) e = cudaStreamSynchronize(stream_);
      if (e != cudaSuccess) return cuda_error("download", e);
      std::memcpy(d + off, staging_, n);
    }
    return Status::ok();
  }

  Status fill(Tensor t, float value) override {
    ELMO_RETURN_IF_ERROR(on_device("fill", {&t}));
    return cuda::fill(ctx_, t, value);
  }
  Status convert(Tensor out, Tensor in) override {
    ELMO_RETURN_IF_ERROR(on_device("convert", {&out, &in}));
    return cuda::convert(ctx_, out, in);
  }
  Status sync() override {
    cudaError_t e = cudaStreamSynchronize(stream_);
    if (e != cudaSuccess) return cuda_error("sync", e);
    return Status::ok();
  }

  // ---- ops ---------------------------------------------------------------------------------
  Status embedding_forward(Tensor out, Tensor ids, Tensor type_ids, const Offsets& o, Tensor wte, Tensor wpe,
                           Tensor wtt) override {
    ELMO_RETURN_IF_ERROR(on_device("embedding_forward", {&out, &ids, &type_ids, &wte, &wpe, &wtt}));
    ELMO_RETURN_IF_ERROR(offsets_on_device("embedding_forward", o));
    return cuda::embedding_forward(ctx_, out, ids, type_ids, o, wte, wpe, wtt);
  }
  Status embedding_backward(Tensor dwte, Tensor dwpe, Tensor dwtt, Tensor dout, Tensor ids, Tensor type_ids,
                            const Offsets& o) override {
    ELMO_RETURN_IF_ERROR(on_device("embedding_backward", {&dwte, &dwpe, &dwtt, &dout, &ids, &type_ids}));
    ELMO_RETURN_IF_ERROR(offsets_on_device("embedding_backward", o));
    return cuda::embedding_backward(ctx_, dwte, dwpe, dwtt, dout, ids, type_ids, o);
  }
  Status layernorm_forward(Tensor out, Tensor sum_out, Tensor mean, Tensor rstd, Tensor inp, Tensor residual,
                           Tensor weight, Tensor bias, float eps) override {
    ELMO_RETURN_IF_ERROR(on_device("layernorm_forward", {&out, &sum_out, &mean, &rstd, &inp, &residual, &weight, &bias}));
    return cuda::layernorm_forward(ctx_, out, sum_out, mean, rstd, inp, residual, weight, bias, eps);
  }
  Status layernorm_backward(Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout, Tensor x, Tensor weight,
                            Tensor mean, Tensor rstd) override {
    ELMO_RETURN_IF_ERROR(on_device("layernorm_backward", {&dinp, &dweight, &dbias, &dout, &x, &weight, &mean, &rstd}));
    return cuda::layernorm_backward(ctx_, dinp, dweight, dbias, dout, x, weight, mean, rstd);
  }

  Status gemm(Tensor out, Tensor pre_gelu, Tensor a, Tensor b, Tensor bias, Tensor residual, GemmOp op,
              Epilogue ep, bool accumulate) override {
    ELMO_RETURN_IF_ERROR(on_device("gemm", {&out, &pre_gelu, &a, &b, &bias, &residual}));
    if (a.panel != 0 || b.panel != 0)
      return Status(Code::kInput, "gemm: the CUDA backend reads row-major operands, received a packed weight");
    size_t lead = 0;
    // compute = bf16 with two f32 operands (a model without bf16 weight copies, a backward GEMM):
    // both are rounded into the workspace here and run on the bf16 tensor cores (fp32
    // accumulate). A bf16 operand, e.g. a model's bf16 weight copy as b, is never converted
    // again: cuda::gemm rounds only the f32 side into its share of the workspace.
    const bool to_bf16 = compute_ == DType::kBF16 && a.dtype == DType::kF32 && b.dtype == DType::kF32 &&
                         !a.empty() && !b.empty();
    if (to_bf16) lead = round_up(a.numel() * 2) + round_up(b.numel() * 2);
    Tensor a2 = a, b2 = b;
    if (to_bf16) {
      a2.dtype = DType::kBF16;
      b2.dtype = DType::kBF16;
    }
    const size_t need = lead + cuda::gemm_workspace_bytes(a2, b2);
    ELMO_RETURN_IF_ERROR(grow_gemm_workspace(need));
    if (to_bf16) {
      a2.data = gemm_ws_;
      b2.data = static_cast<char*>(gemm_ws_) + round_up(a.numel() * 2);
      ELMO_RETURN_IF_ERROR(cuda::convert(ctx_, a2, a));
      ELMO_RETURN_IF_ERROR(cuda::convert(ctx_, b2, b));
    }
    cuda::GemmConfig cfg;
    cfg.workspace = static_cast<char*>(gemm_ws_) + lead;
    cfg.workspace_bytes = gemm_ws_bytes_ - lead;
    return cuda::gemm(stream_, cfg, out, pre_gelu, a2, b2, bias, residual, op, ep, accumulate);
  }
  bool gemm_bf16_activations() const override { return bf16_activations_; }
  bool bf16_hidden_states() const override { return bf16_hidden_ && compute_ == DType::kBF16; }
  // attention_forward's tensor-core kernels round f32 q/k/v to bf16 under bf16 compute.
  bool attention_bf16_io(int head_dim) const override {
    return bf16_activations_ && compute_ == DType::kBF16 && cuda::attention_tensor_core_head_size(head_dim);
  }
  // The tensor-core GEMM reads row-major weights directly (weight_panel() == 0).
  Status pack_weight(Tensor* w, bool packed) override {
    if (w == nullptr) return Status(Code::kInput, "pack_weight: null tensor");
    if (packed || w->panel != 0)
      return Status(Code::kUnsupported, "pack_weight: the CUDA backend keeps weights row-major");
    return Status::ok();
  }
  Status bias_backward(Tensor dbias, Tensor dout) override {
    ELMO_RETURN_IF_ERROR(on_device("bias_backward", {&dbias, &dout}));
    return cuda::bias_backward(ctx_, dbias, dout);
  }

  Status attention_forward(Tensor out, Tensor lse, Tensor qkv, const Offsets& o, int NH, int HD, float p,
                           uint64_t seed, uint64_t stream) override {
    ELMO_RETURN_IF_ERROR(on_device("attention_forward", {&out, &lse, &qkv}));
    ELMO_RETURN_IF_ERROR(offsets_on_device("attention_forward", o));
    return cuda::attention_forward(ctx_, out, lse, qkv, o, NH, HD, p, seed, stream);
  }
  Status attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse, const Offsets& o, int NH,
                            int HD, float p, uint64_t seed, uint64_t stream) override {
    ELMO_RETURN_IF_ERROR(on_device("attention_backward", {&dqkv, &dout, &qkv, &out, &lse}));
    ELMO_RETURN_IF_ERROR(offsets_on_device("attention_backward", o));
    return cuda::attention_backward(ctx_, dqkv, dout, qkv, out, lse, o, NH, HD, p, seed, stream);
  }

  Status gelu_forward(Tensor out, Tensor inp) override {
    ELMO_RETURN_IF_ERROR(on_device("gelu_forward", {&out, &inp}));
    return cuda::gelu_forward(ctx_, out, inp);
  }
  Status gelu_backward(Tensor dinp, Tensor dout, Tensor inp) override {
    ELMO_RETURN_IF_ERROR(on_device("gelu_backward", {&dinp, &dout, &inp}));
    return cuda::gelu_backward(ctx_, dinp, dout, inp);
  }
  Status tanh_forward(Tensor out, Tensor inp) override {
    ELMO_RETURN_IF_ERROR(on_device("tanh_forward", {&out, &inp}));
    return cuda::tanh_forward(ctx_, out, inp);
  }
  Status tanh_backward(Tensor dinp, Tensor dout, Tensor out) override {
    ELMO_RETURN_IF_ERROR(on_device("tanh_backward", {&dinp, &dout, &out}));
    return cuda::tanh_backward(ctx_, dinp, dout, out);
  }
  Status dropout_forward(Tensor out, Tensor inp, float p, uint64_t seed, uint64_t stream) override {
    ELMO_RETURN_IF_ERROR(on_device("dropout_forward", {&out, &inp}));
    return cuda::dropout_forward(ctx_, out, inp, p, seed, stream);
  }
  Status dropout_backward(Tensor dinp, Tensor dout, float p, uint64_t seed, uint64_t stream) override {
    ELMO_RETURN_IF_ERROR(on_device("dropout_backward", {&dinp, &dout}));
    return cuda::dropout_backward(ctx_, dinp, dout, p, seed, stream);
  }
  Status softmax_forward(Tensor out, Tensor inp) override {
    ELMO_RETURN_IF_ERROR(on_device("softmax_forward", {&out, &inp}));
    return cuda::softmax_forward(ctx_, out, inp);
  }
  Status gather_rows(Tensor out, Tensor inp, Tensor idx) override {
    ELMO_RETURN_IF_ERROR(on_device("gather_rows", {&out, &inp, &idx}));
    return cuda::gather_rows(ctx_, out, inp, idx);
  }
  Status scatter_add_rows(Tensor dinp, Tensor dout, Tensor idx) override {
    ELMO_RETURN_IF_ERROR(on_device("scatter_add_rows", {&dinp, &dout, &idx}));
    return cuda::scatter_add_rows(ctx_, dinp, dout, idx);
  }
  Status cross_entropy_forward(Tensor losses, Tensor lse, Tensor logits, Tensor targets, int ignore) override {
    ELMO_RETURN_IF_ERROR(on_device("cross_entropy_forward", {&losses, &lse, &logits, &targets}));
    return cuda::cross_entropy_forward(ctx_, losses, lse, logits, targets, ignore);
  }
  Status cross_entropy_backward(Tensor dlogits, Tensor logits, Tensor lse, Tensor targets, float scale,
                                int ignore) override {
    ELMO_RETURN_IF_ERROR(on_device("cross_entropy_backward", {&dlogits, &logits, &lse, &targets}));
    return cuda::cross_entropy_backward(ctx_, dlogits, logits, lse, targets, scale, ignore);
  }
  Status bce_forward(Tensor losses, Tensor logits, Tensor targets) override {
    ELMO_RETURN_IF_ERROR(on_device("bce_forward", {&losses, &logits, &targets}));
    return cuda::bce_forward(ctx_, losses, logits, targets);
  }
  Status bce_backward(Tensor dlogits, Tensor logits, Tensor targets, float scale) override {
    ELMO_RETURN_IF_ERROR(on_device("bce_backward", {&dlogits, &logits, &targets}));
    return cuda::bce_backward(ctx_, dlogits, logits, targets, scale);
  }
  Status adamw_update(Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWParams& p) override {
    ELMO_RETURN_IF_ERROR(on_device("adamw_update", {&param, &grad, &m, &v}));
    return cuda::adamw_update(ctx_, param, grad, m, v, p);
  }
  Status sum_squares(double* result, Tensor x) override {
    ELMO_RETURN_IF_ERROR(on_device("sum_squares", {&x}));
    return cuda::sum_squares(ctx_, result, x);
  }

 private:
  static size_t round_up(int64_t bytes) { return (static_cast<size_t>(bytes) + 255) / 256 * 256; }

  Status grow_gemm_workspace(size_t bytes) {
    if (bytes <= gemm_ws_bytes_) return Status::ok();
    ++allocations_;
    return regrow_device(&gemm_ws_, &gemm_ws_bytes_, bytes, "gemm workspace");
  }

  int device_ = 0;
  DType compute_ = DType::kF32;
  bool bf16_activations_ = true;
  bool bf16_hidden_ = false;
  std::string device_name_;
  cudaStream_t stream_ = nullptr;
  void* flag_ = nullptr;
  void* flag_host_ = nullptr;
  void* staging_ = nullptr;
  void* gemm_ws_ = nullptr;
  size_t gemm_ws_bytes_ = 0;
  std::atomic<uint64_t> allocations_{0};  // alloc() and the GEMM workspace; scratch_ counts its own
  GrowBuffers scratch_;
  cuda::Ctx ctx_;
};

}  // namespace

Status cuda_devices(std::vector<CudaDeviceInfo>* out, std::string* reason) {
  ELMO_CHECK(out != nullptr, Code::kInput, "cuda_devices: output list is missing");
  out->clear();
  if (reason) reason->clear();
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    if (reason) {
      const char* what = (e == cudaErrorNoDevice) ? "no CUDA device" : "no CUDA driver";
      *reason = strformat("%s: cudaGetDeviceCount -> %s", what, cudaGetErrorString(e));
    }
    return Status::ok();
  }
  if (count == 0) {
    if (reason) *reason = "no CUDA device: cudaGetDeviceCount -> 0";
    return Status::ok();
  }
  int prev = 0;
  cudaGetDevice(&prev);
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    CudaDeviceInfo info;
    info.index = i;
    info.name = prop.name;
    info.total_bytes = prop.totalGlobalMem;
    info.cc_major = prop.major;
    info.cc_minor = prop.minor;
    info.sm_count = prop.multiProcessorCount;
    size_t free_b = 0, total_b = 0;
    if (cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
      info.free_bytes = free_b;
    } else {
      cudaGetLastError();
    }
    out->push_back(info);
  }
  cudaSetDevice(prev);
  if (out->empty() && reason) *reason = "no usable CUDA device: cudaGetDeviceProperties failed for all";
  return Status::ok();
}

Status make_cuda_backend(std::unique_ptr<Backend>* out, const CudaOptions& opts) {
  ELMO_CHECK(out != nullptr, Code::kInput, "make_cuda_backend: output is missing");
  ELMO_CHECK(opts.compute == DType::kF32 || opts.compute == DType::kBF16, Code::kInput,
             "make_cuda_backend: compute must be f32 or bf16, received %s", dtype_name(opts.compute));
  ELMO_CHECK(opts.attention_rows == 0 || opts.attention_rows == -1 || opts.attention_rows == 16 ||
                 opts.attention_rows == 32,
             Code::kInput, "make_cuda_backend: attention_rows must be 0, -1, 16 or 32, received %d",
             opts.attention_rows);
  std::vector<CudaDeviceInfo> devs;
  std::string reason;
  ELMO_RETURN_IF_ERROR(cuda_devices(&devs, &reason));
  if (devs.empty()) return Status(Code::kCuda, strformat("make_cuda_backend: %s", reason.c_str()));
  ELMO_CHECK(opts.device >= 0 && opts.device < static_cast<int>(devs.size()), Code::kInput,
             "make_cuda_backend: device %d does not exist (%zu devices)", opts.device, devs.size());
  std::unique_ptr<CudaBackend> b(new (std::nothrow) CudaBackend());
  if (!b) return Status(Code::kOom, "make_cuda_backend: out of host memory");
  ELMO_RETURN_IF_ERROR(b->init(opts));
  *out = std::move(b);
  return Status::ok();
}

}  // namespace elmo
