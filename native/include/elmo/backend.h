// Backend: one virtual method per op and direction. CpuBackend (native/src/cpu) and
// CudaBackend (cuda/) implement the same signatures: outputs, then inputs, then dims.
//
// Accumulation contract (as in llm.c):
//   * parameter gradients (dweight, dbias, dwte, ...) are ACCUMULATED (+=), so a caller
//     zeroes them once per optimizer step and micro-batches add up;
//   * activation gradients (dinp, dqkv, dlogits, ...) are WRITTEN (=). Where a gradient
//     must also flow down a residual branch the caller adds it through the GEMM's residual
//     epilogue.
// Every op validates shapes and dtypes first and returns a Status (ERR_SHAPE / ERR_DTYPE /
// ERR_INPUT) instead of touching memory it was not given. An empty Tensor means "not given"
// for arguments documented as optional.
//
// Packed batches: activations are [T, ...] where T is the total number of real tokens of
// all B sequences; `Offsets` (cu_seqlens) delimits them. No work is spent on padding.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "elmo/status.h"
#include "elmo/tensor.h"

namespace elmo {

// Sequence boundaries of a packed batch: B sequences, T tokens, sequence b is rows
// [host[b], host[b+1]). `host` is always valid host memory (used for checks and for
// scheduling work); `dev` is the same array in the backend's memory (== host on the CPU).
struct Offsets {
  const int32_t* host = nullptr;
  const int32_t* dev = nullptr;
  int B = 0;
  int64_t T = 0;
  int max_len = 0;  // longest sequence
};
// Validates offsets[0] == 0, non-decreasing, offsets[B] == T and fills max_len.
Status make_offsets(Offsets* out, const int32_t* host, const int32_t* dev, int B, int64_t T);

// out[M,N] = op(a) · op(b), then the epilogue.
//   kNN: a [M,K], b [K,N]
//   kNT: a [M,K], b [N,K]   (a linear layer: x [T,in] · W[out,in]ᵀ)
//   kTN: a [K,M], b [K,N]   (a weight gradient: dyᵀ [out,T] · x [T,in])
enum class GemmOp : uint8_t { kNN = 0, kNT, kTN };
// Applied in this order: acc += bias[n]; pre_gelu = acc, acc = gelu(acc); acc += residual[m,n];
// out = accumulate ? out + acc : acc.
enum class Epilogue : uint8_t { kNone = 0, kBias, kBiasGelu, kResidual, kBiasResidual };
const char* gemm_op_name(GemmOp op);     // "NN", "NT", "TN"
const char* epilogue_name(Epilogue ep);  // "none", "bias", "bias_gelu", "residual", "bias_residual"

struct AdamWParams {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;  // decoupled; the caller passes 0 for no-decay tensors
  int64_t step = 1;           // 1-based, for bias correction
  float grad_scale = 1.0f;    // multiplies the gradient first (global-norm clipping, loss scale)
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;  // "cpu(avx512, 2 threads)", "cuda:0 (NVIDIA H200)"

  // ---- memory --------------------------------------------------------------------------
  // Allocates a contiguous tensor on this backend. Fails with ERR_OOM (bytes asked, free).
  virtual Status alloc(Tensor* out, DType dtype, std::initializer_list<int64_t> dims) = 0;
  virtual void free(Tensor* t) = 0;  // idempotent; leaves t empty
  // How many allocations the backend has made so far: every alloc(), and on CUDA also its own
  // device scratch, GEMM workspace and pinned staging as they grow. A warmed-up forward of a
  // batch no larger than before adds none (tests check it).
  virtual uint64_t allocations() const = 0;
  virtual Status upload(Tensor dst, const void* host_src, size_t bytes) = 0;
  virtual Status download(void* host_dst, Tensor src, size_t bytes) = 0;
  virtual Status fill(Tensor t, float value) = 0;           // f32, bf16, f16 (and i32: exact ints)
  virtual Status convert(Tensor out, Tensor in) = 0;        // between f32, bf16, f16; same numel
  virtual Status sync() = 0;

  // ---- embeddings ------------------------------------------------------------------------
  // out[t] = wte[ids[t]] + wpe[t - offsets[b]] + wtt[type_ids[t]]  (type_ids optional → 0)
  // out [T,H]; ids, type_ids i32 [T]; wte [V,H]; wpe [P,H]; wtt [TV,H].
  // An id outside its table or a sequence longer than P → ERR_INPUT.
  virtual Status embedding_forward(Tensor out, Tensor ids, Tensor type_ids, const Offsets& offsets,
                                   Tensor wte, Tensor wpe, Tensor wtt) = 0;
  // dwte, dwpe, dwtt += scatter of dout [T,H]. Deterministic (fixed summation order).
  virtual Status embedding_backward(Tensor dwte, Tensor dwpe, Tensor dwtt, Tensor dout, Tensor ids,
                                    Tensor type_ids, const Offsets& offsets) = 0;

  // ---- layer norm fused with the residual add --------------------------------------------
  // x = inp + residual (residual optional); out = (x - mean) * rstd * weight + bias.
  // sum_out (optional) receives x; mean, rstd [T] (optional, for backward) receive the stats.
  // All [T,C] f32; statistics in f32 with a two-pass mean/variance.
  virtual Status layernorm_forward(Tensor out, Tensor sum_out, Tensor mean, Tensor rstd, Tensor inp,
                                   Tensor residual, Tensor weight, Tensor bias, float eps) = 0;
  // dinp = dL/dx (=); dweight, dbias +=. x is the LN input (inp + residual of the forward).
  virtual Status layernorm_backward(Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout, Tensor x,
                                    Tensor weight, Tensor mean, Tensor rstd) = 0;

  // ---- GEMM -----------------------------------------------------------------------------
  // See GemmOp / Epilogue. bias [N], residual [M,N] (may alias out), pre_gelu [M,N] (optional,
  // written only with kBiasGelu). accumulate only with kNone.
  virtual Status gemm(Tensor out, Tensor pre_gelu, Tensor a, Tensor b, Tensor bias, Tensor residual,
                      GemmOp op, Epilogue epilogue, bool accumulate) = 0;
  // dbias [N] += column sums of dout [M,N].
  virtual Status bias_backward(Tensor dbias, Tensor dout) = 0;
  // bf16 activations at inference, for a bf16 model (one whose GEMMs read bf16 weight copies).
  // gemm_bf16_activations: gemm writes a bf16 `out` (its epilogue rounding once, to nearest
  // even) and rounds an f32 `a` beside a bf16 `b` the same way (CUDA). The FFN activation,
  // which only feeds the down-projection, is then produced in bf16.
  // attention_bf16_io(HD): attention_forward rounds f32 q/k/v to bf16 anyway for this head size
  // (CUDA with bf16 compute, tensor-core head sizes). qkv and the attention output are then
  // bf16 too: the QKV projection's epilogue and attention's output round exactly as their
  // consumers rounded the f32 values before.
  // Either way the results are the same bits, with less memory traffic and no conversion passes.
  virtual bool gemm_bf16_activations() const { return false; }
  virtual bool attention_bf16_io(int head_dim) const {
    (void)head_dim;
    return false;
  }
  // bf16_hidden_states: a bf16 model at inference also keeps its hidden states in bf16 (the
  // embeddings, each LayerNorm's input and output, the residuals), as a bf16 PyTorch model
  // does. Unlike the two above this changes results: the residual sums are rounded to bf16.
  // The model's outputs stay f32 (hidden and cls are converted once at the end). It needs
  // embedding_forward, layernorm_forward and gather_rows on bf16 and a gemm whose bf16 `out`
  // takes a bf16 residual. An opt-in of the CUDA backend (CudaOptions::bf16_hidden).
  virtual bool bf16_hidden_states() const { return false; }

  // ---- int8 weights (dynamic quantization at inference: BertOptions::precision kI8) -------------
  // A quantized weight is a Tensor of dtype i8 and W's shape [N, K] whose memory (64-byte
  // aligned, quantized_weight_bytes(N, K) bytes) holds a per-row f32 scale sw[n] = max_k |W[n,k]|
  // / 127, the rows' int32 sums, and q[n,k] = round(W[n,k] / sw[n]) in [-127, 127] in the kernel's
  // panels (`panel` set). gemm with such a b (op NT, a f32, no accumulate) quantizes each row of
  // a the same way at every call and forms out = float(sum_k qa qw) * sa[m] * sw[n], then its
  // epilogue. quantized_weight_bytes is 0 on a backend without an int8 GEMM.
  virtual int64_t quantized_weight_bytes(int64_t N, int64_t K) const {
    (void)N, (void)K;
    return 0;
  }
  // out: i8 [N, K] over quantized_weight_bytes(N, K) bytes, its `panel` set on success; w: f32
  // [N, K] row-major. A weight holding NaN or infinity is ERR_INPUT.
  virtual Status quantize_weight(Tensor* out, Tensor w) {
    (void)out, (void)w;
    return Status(Code::kUnsupported, name() + " has no int8 GEMM (precision int8 runs on the CPU)");
  }

  // ---- weight layout for the linear-layer GEMM ----------------------------------------------
  // A linear layer reads its weight W [N, K] as gemm's b with op kNT on every call. A backend
  // whose GEMM repacks b into micro-panels each call (the CPU) can keep W packed instead:
  // weight_panel() is that panel width (0: nothing to gain, W stays row-major), and
  // pack_weight rewrites W in place, with no second copy, into N / panel panels [K][panel]
  // (packed = true) or back to row-major (false), setting w->panel to match. N must be a
  // multiple of the panel width and W 64-byte aligned. As a matrix, a packed W is read only by
  // gemm (b, op kNT); ops that read rows refuse it (check_tensor). Elementwise ops (AdamW, fill)
  // do not depend on the order. Unpack before a backward pass or before reading W as rows.
  virtual int weight_panel() const { return 0; }
  virtual Status pack_weight(Tensor* w, bool packed) = 0;

  // ---- attention (fused, FlashAttention-style) --------------------------------------------
  // qkv [T, 3C] with C = NH*HD holds rows [q | k | v], head h at columns h*HD.. of each part.
  // For each sequence and head: P = softmax(q kᵀ / sqrt(HD)) over the sequence's own keys,
  // dropout on P (Philox, see philox.h: element (h, i, j) with i, j packed row indices, the
  // counter e = (h*T + i)*T + j, stream `stream`), out = P v.  out [T, C].
  // lse [NH, T] f32 receives the log-sum-exp of the scaled scores — the only thing saved.
  virtual Status attention_forward(Tensor out, Tensor lse, Tensor qkv, const Offsets& offsets, int NH,
                                   int HD, float dropout_p, uint64_t seed, uint64_t stream) = 0;
  // dqkv [T, 3C] (=). Recomputes P tile by tile from qkv and lse; never stores [T, T].
  virtual Status attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                                    const Offsets& offsets, int NH, int HD, float dropout_p,
                                    uint64_t seed, uint64_t stream) = 0;

  // ---- elementwise ------------------------------------------------------------------------
  // GELU, erf form: x * 0.5 * (1 + erf(x / sqrt(2))). out may alias inp.
  virtual Status gelu_forward(Tensor out, Tensor inp) = 0;
  virtual Status gelu_backward(Tensor dinp, Tensor dout, Tensor inp) = 0;  // dinp may alias dout
  virtual Status tanh_forward(Tensor out, Tensor inp) = 0;
  virtual Status tanh_backward(Tensor dinp, Tensor dout, Tensor out) = 0;  // uses tanh output
  // Inverted dropout: element e kept when philox_uniform(seed, stream, e) >= p, scaled 1/(1-p).
  // p == 0 copies. The mask is recomputed in backward, never stored.
  virtual Status dropout_forward(Tensor out, Tensor inp, float p, uint64_t seed, uint64_t stream) = 0;
  virtual Status dropout_backward(Tensor dinp, Tensor dout, float p, uint64_t seed, uint64_t stream) = 0;
  // Row softmax: out [N,V] = softmax(inp [N,V]) along V.
  virtual Status softmax_forward(Tensor out, Tensor inp) = 0;

  // ---- row gather / scatter (masked-LM positions, [CLS] rows) -----------------------------
  // out [N,C] = inp [T,C] rows idx [N] (i32). Index out of range → ERR_INPUT.
  virtual Status gather_rows(Tensor out, Tensor inp, Tensor idx) = 0;
  // dinp [T,C] += scatter of dout [N,C] into rows idx; deterministic for repeated indices.
  virtual Status scatter_add_rows(Tensor dinp, Tensor dout, Tensor idx) = 0;

  // ---- losses -----------------------------------------------------------------------------
  // Softmax cross-entropy per row: losses[i] = lse_i - logits[i, targets[i]], 0 where
  // targets[i] == ignore_index. lse [N] saved for backward. logits [N,V] f32, targets i32 [N].
  // A target outside [0, V) other than ignore_index → ERR_INPUT.
  virtual Status cross_entropy_forward(Tensor losses, Tensor lse, Tensor logits, Tensor targets,
                                       int ignore_index) = 0;
  // dlogits (=) = (softmax(logits) - onehot(target)) * scale; zero rows where ignored.
  // (For a mean loss over n counted rows, scale = 1/n.) dlogits may alias logits.
  virtual Status cross_entropy_backward(Tensor dlogits, Tensor logits, Tensor lse, Tensor targets,
                                        float scale, int ignore_index) = 0;
  // Multi-label: losses [N,L] = softplus(x) - x*y computed stably; targets f32 in [0,1].
  virtual Status bce_forward(Tensor losses, Tensor logits, Tensor targets) = 0;
  // dlogits (=) = (sigmoid(x) - y) * scale.
  virtual Status bce_backward(Tensor dlogits, Tensor logits, Tensor targets, float scale) = 0;

  // ---- optimizer ----------------------------------------------------------------------------
  // g = grad*grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²;
  // param -= lr * ( (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps) + weight_decay * param ).
  virtual Status adamw_update(Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWParams& p) = 0;
  // *result += Σ x² in double, deterministic order (fixed chunks). Synchronizes.
  virtual Status sum_squares(double* result, Tensor x) = 0;
};

// ---- factories ---------------------------------------------------------------------------
struct CpuOptions {
  int threads = 0;           // 0: ELMO_NUM_THREADS or the machine's cores
  const char* isa = nullptr; // nullptr: ELMO_ISA or the best the CPU has ("scalar"|"avx2"|"avx512")
  bool shared_pool = false;  // the process's pool of that many threads (shared_thread_pool)
};
Status make_cpu_backend(std::unique_ptr<Backend>* out, const CpuOptions& opts = {});

// Global-norm clipping: returns the factor (<= 1) to pass as AdamWParams::grad_scale so
// that the gradients' global L2 norm is at most max_norm. total_norm receives the norm.
float clip_factor(double sum_of_squares, float max_norm, double* total_norm);

}  // namespace elmo
