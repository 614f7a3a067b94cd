// CPU kernels, one file per op (native/src/cpu/<op>.cpp). CpuBackend forwards to these.
// Each function validates its arguments (shapes, dtypes, indices) before touching memory and
// follows the accumulation contract of elmo/backend.h.
#pragma once

#include "elmo/backend.h"
#include "elmo/cpu.h"

namespace elmo::cpu {

struct Ctx {
  ThreadPool* pool;
  Isa isa;
};

// embedding.cpp
Status embedding_forward(const Ctx& c, Tensor out, Tensor ids, Tensor type_ids, const Offsets& o, Tensor wte,
                         Tensor wpe, Tensor wtt);
Status embedding_backward(const Ctx& c, Tensor dwte, Tensor dwpe, Tensor dwtt, Tensor dout, Tensor ids,
                          Tensor type_ids, const Offsets& o);
// layernorm.cpp
Status layernorm_forward(const Ctx& c, Tensor out, Tensor sum_out, Tensor mean, Tensor rstd, Tensor inp,
                         Tensor residual, Tensor weight, Tensor bias, float eps);
Status layernorm_backward(const Ctx& c, Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout, Tensor x,
                          Tensor weight, Tensor mean, Tensor rstd);
// gemm.cpp
Status gemm(const Ctx& c, Tensor out, Tensor pre_gelu, Tensor a, Tensor b, Tensor bias, Tensor residual, GemmOp op,
            Epilogue ep, bool accumulate);
Status bias_backward(const Ctx& c, Tensor dbias, Tensor dout);
// The panel width of this context's GEMM kernel (its NR), and the in-place weight packing of
// Backend::pack_weight.
int gemm_weight_panel(const Ctx& c);
Status pack_weight(const Ctx& c, Tensor* w, bool packed);
// gemm_bf16.cpp: out[M,N] = a[M,K] (f32, rounded to bf16) . b[N,K]^T (bf16), op NT only, fp32
// sums, the epilogues of gemm. Any other operand combination with bf16 is ERR_DTYPE.
Status gemm_bf16(const Ctx& c, Tensor out, Tensor pre_gelu, Tensor a, Tensor b, Tensor bias, Tensor residual,
                 GemmOp op, Epilogue ep, bool accumulate);
// The kernel gemm_bf16 runs on the given path: "avx512_bf16", "avx2" or "scalar".
const char* gemm_bf16_kernel_name(Isa isa);
// Backend::pack_weight for a bf16 weight: packed in place into the bf16 kernel's panels (N a
// multiple of its NR, K of its k step). One way only: unpacking is ERR_UNSUPPORTED.
int gemm_bf16_weight_panel(const Ctx& c);
Status pack_weight_bf16(const Ctx& c, Tensor* w, bool packed);
// gemm_q8.cpp: int8 weights (dynamic quantization; Backend::quantize_weight). gemm_q8 takes an
// f32 a and a quantized b, op NT, no accumulate, the epilogues of gemm.
int64_t q8_weight_bytes(int64_t N, int64_t K);
Status quantize_weight_q8(const Ctx& c, Tensor* out, Tensor w);
Status gemm_q8(const Ctx& c, Tensor out, Tensor pre_gelu, Tensor a, Tensor b, Tensor bias, Tensor residual,
               GemmOp op, Epilogue ep, bool accumulate);
// The kernel gemm_q8 runs on the given path: "avx512_vnni", "avx2" or "scalar".
const char* gemm_q8_kernel_name(Isa isa);
// Raw single-precision GEMM on row-major pointers, for kernels that need one internally:
// C[M,N] (ldc) = alpha * op(A) op(B) + beta * C, op per GemmOp as in backend.h; lda/ldb are the
// row strides of A and B as stored. Deterministic for any thread count.
void sgemm(const Ctx& c, GemmOp op, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
// attention.cpp
Status attention_forward(const Ctx& c, Tensor out, Tensor lse, Tensor qkv, const Offsets& o, int NH, int HD,
                         float dropout_p, uint64_t seed, uint64_t stream);
Status attention_backward(const Ctx& c, Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                          const Offsets& o, int NH, int HD, float dropout_p, uint64_t seed, uint64_t stream);
// elementwise.cpp
Status gelu_forward(const Ctx& c, Tensor out, Tensor inp);
Status gelu_backward(const Ctx& c, Tensor dinp, Tensor dout, Tensor inp);
Status tanh_forward(const Ctx& c, Tensor out, Tensor inp);
Status tanh_backward(const Ctx& c, Tensor dinp, Tensor dout, Tensor out);
Status dropout_forward(const Ctx& c, Tensor out, Tensor inp, float p, uint64_t seed, uint64_t stream);
Status dropout_backward(const Ctx& c, Tensor dinp, Tensor dout, float p, uint64_t seed, uint64_t stream);
Status softmax_forward(const Ctx& c, Tensor out, Tensor inp);
// gather.cpp
Status gather_rows(const Ctx& c, Tensor out, Tensor inp, Tensor idx);
Status scatter_add_rows(const Ctx& c, Tensor dinp, Tensor dout, Tensor idx);
// loss.cpp
Status cross_entropy_forward(const Ctx& c, Tensor losses, Tensor lse, Tensor logits, Tensor targets,
                             int ignore_index);
Status cross_entropy_backward(const Ctx& c, Tensor dlogits, Tensor logits, Tensor lse, Tensor targets, float scale,
                              int ignore_index);
Status bce_forward(const Ctx& c, Tensor losses, Tensor logits, Tensor targets);
Status bce_backward(const Ctx& c, Tensor dlogits, Tensor logits, Tensor targets, float scale);
// adamw.cpp
Status adamw_update(const Ctx& c, Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWParams& p);
Status sum_squares(const Ctx& c, double* result, Tensor x);

}  // namespace elmo::cpu
