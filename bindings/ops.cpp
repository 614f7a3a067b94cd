// ops: a few CPU backend kernels run synchronously on caller memory, in place. Arguments are
// Float32Array / Int32Array (or tensor handles) viewed with no copy; dims come from the
// caller and every length is checked against them before a kernel sees a pointer. The
// kernels validate again (shapes, dtypes, offsets) and their Status becomes a typed JS error.
// Positional arguments; lib/tensor.ts wraps them in option objects.
#include <cstdint>
#include <string>

#include "addon.h"

namespace elmo::node {
namespace {

constexpr int64_t kMaxDim = INT32_MAX;

GemmOp gemm_op_arg(Napi::Value v) {
  if (v.IsString()) {
    const std::string s = v.As<Napi::String>().Utf8Value();
    if (s == "nn") return GemmOp::kNN;
    if (s == "nt") return GemmOp::kNT;
    if (s == "tn") return GemmOp::kTN;
  }
  throw_expected(v.Env(), "ERR_INPUT", "one of 'nn', 'nt', 'tn'", "op", v);
}

Epilogue epilogue_arg(Napi::Value v) {
  if (v.IsString()) {
    const std::string s = v.As<Napi::String>().Utf8Value();
    if (s == "none") return Epilogue::kNone;
    if (s == "bias") return Epilogue::kBias;
    if (s == "bias-gelu") return Epilogue::kBiasGelu;
    if (s == "residual") return Epilogue::kResidual;
    if (s == "bias-residual") return Epilogue::kBiasResidual;
  }
  throw_expected(v.Env(), "ERR_INPUT", "one of 'none', 'bias', 'bias-gelu', 'residual', 'bias-residual'",
                 "epilogue", v);
}

// gemm(out, a, b, M, N, K, op, epilogue, bias?, residual?, preGelu?, accumulate)
//   nn: a [M,K] b [K,N];  nt: a [M,K] b [N,K];  tn: a [K,M] b [K,N];  out [M,N]
//   bias [N], residual [M,N], preGelu [M,N] (written with 'bias-gelu').
Napi::Value gemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t M = int_arg(info[3], "M", 0, kMaxDim);
  const int64_t N = int_arg(info[4], "N", 0, kMaxDim);
  const int64_t K = int_arg(info[5], "K", 0, kMaxDim);
  const GemmOp op = gemm_op_arg(info[6]);
  const Epilogue ep = epilogue_arg(info[7]);
  const bool accumulate = bool_arg(info[11], "accumulate");
  Tensor out = f32_view(info[0], "out", {M, N});
  Tensor a = op == GemmOp::kTN ? f32_view(info[1], "a", {K, M}) : f32_view(info[1], "a", {M, K});
  Tensor b = op == GemmOp::kNT ? f32_view(info[2], "b", {N, K}) : f32_view(info[2], "b", {K, N});
  Tensor bias = f32_view_optional(info[8], "bias", {N});
  Tensor residual = f32_view_optional(info[9], "residual", {M, N});
  Tensor pre_gelu = f32_view_optional(info[10], "preGelu", {M, N});
  throw_if_error(env, cpu_backend(env)->gemm(out, pre_gelu, a, b, bias, residual, op, ep, accumulate));
  return env.Undefined();
}

// layernormForward(out, inp, weight, bias, T, C, eps, residual?, sumOut?, mean?, rstd?)
//   out, inp, residual, sumOut [T,C]; weight, bias [C]; mean, rstd [T]
Napi::Value layernorm_forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t T = int_arg(info[4], "T", 0, kMaxDim);
  const int64_t C = int_arg(info[5], "C", 1, kMaxDim);
  const float eps = static_cast<float>(number_arg(info[6], "eps"));
  Tensor out = f32_view(info[0], "out", {T, C});
  Tensor inp = f32_view(info[1], "inp", {T, C});
  Tensor weight = f32_view(info[2], "weight", {C});
  Tensor bias = f32_view(info[3], "bias", {C});
  Tensor residual = f32_view_optional(info[7], "residual", {T, C});
  Tensor sum_out = f32_view_optional(info[8], "sumOut", {T, C});
  Tensor mean = f32_view_optional(info[9], "mean", {T});
  Tensor rstd = f32_view_optional(info[10], "rstd", {T});
  throw_if_error(env, cpu_backend(env)->layernorm_forward(out, sum_out, mean, rstd, inp, residual, weight, bias, eps));
  return env.Undefined();
}

// geluForward(out, inp, n): n elements each; out may be inp.
Napi::Value gelu_forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t n = int_arg(info[2], "n", 0, INT64_C(1) << 40);
  Tensor out = f32_view(info[0], "out", {n});
  Tensor inp = f32_view(info[1], "inp", {n});
  throw_if_error(env, cpu_backend(env)->gelu_forward(out, inp));
  return env.Undefined();
}

// softmaxForward(out, inp, N, V): rows of length V.
Napi::Value softmax_forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t N = int_arg(info[2], "N", 0, kMaxDim);
  const int64_t V = int_arg(info[3], "V", 1, kMaxDim);
  Tensor out = f32_view(info[0], "out", {N, V});
  Tensor inp = f32_view(info[1], "inp", {N, V});
  throw_if_error(env, cpu_backend(env)->softmax_forward(out, inp));
  return env.Undefined();
}

// attentionForward(out, lse, qkv, offsets, NH, HD, dropoutP, seed, stream)
//   offsets Int32Array [B+1] (B >= 1), T = offsets[B]; qkv [T, 3*NH*HD]; out [T, NH*HD]; lse [NH, T]
Napi::Value attention_forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t NH = int_arg(info[4], "NH", 1, 1 << 16);
  const int64_t HD = int_arg(info[5], "HD", 1, 1 << 16);
  const double dropout_p = number_arg(info[6], "dropoutP");
  if (!(dropout_p >= 0.0 && dropout_p < 1.0)) throw_expected(env, "ERR_INPUT", "a number in [0, 1)", "dropoutP", info[6]);
  const uint64_t seed = u64_arg(info[7], "seed");
  const uint64_t stream = u64_arg(info[8], "stream");
  Napi::Value off = info[3];
  if (!off.IsTypedArray() || off.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
      off.As<Napi::TypedArray>().ElementLength() < 2)
    throw_expected(env, off.IsTypedArray() && off.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array
                            ? "ERR_DTYPE" : "ERR_INPUT",
                   "an Int32Array of at least 2 offsets", "offsets", off);
  const int64_t B = static_cast<int64_t>(off.As<Napi::TypedArray>().ElementLength()) - 1;
  if (B > INT32_MAX) throw_expected(env, "ERR_SHAPE", "at most 2^31-1 sequences", "offsets", off);
  Tensor offsets = i32_view(off, "offsets", {B + 1});
  const int64_t T = offsets.i32()[B];
  Offsets o;
  throw_if_error(env, make_offsets(&o, offsets.i32(), offsets.i32(), static_cast<int>(B), T));
  const int64_t C = NH * HD;
  Tensor out = f32_view(info[0], "out", {T, C});
  Tensor lse = f32_view(info[1], "lse", {NH, T});
  Tensor qkv = f32_view(info[2], "qkv", {T, 3 * C});
  throw_if_error(env, cpu_backend(env)->attention_forward(out, lse, qkv, o, static_cast<int>(NH), static_cast<int>(HD),
                                                          static_cast<float>(dropout_p), seed, stream));
  return env.Undefined();
}

}  // namespace

void init_ops(Napi::Env env, Napi::Object exports) {
  Napi::Object ops = Napi::Object::New(env);
  ops.Set("gemm", Napi::Function::New(env, gemm, "gemm"));
  ops.Set("layernormForward", Napi::Function::New(env, layernorm_forward, "layernormForward"));
  ops.Set("geluForward", Napi::Function::New(env, gelu_forward, "geluForward"));
  ops.Set("softmaxForward", Napi::Function::New(env, softmax_forward, "softmaxForward"));
  ops.Set("attentionForward", Napi::Function::New(env, attention_forward, "attentionForward"));
  exports.Set("ops", ops);
}

}  // namespace elmo::node
