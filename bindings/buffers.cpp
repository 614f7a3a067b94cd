// Zero-copy in both directions.
//   JS -> native: a Float32Array / Int32Array is read and written in place (its ArrayBuffer
//     memory becomes a Tensor view for the duration of the call); no copy, no allocation.
//   native -> JS: native memory is handed out as an external ArrayBuffer whose finalizer
//     drops a reference to the Storage; the memory is freed when the last view is collected.
//     A runtime may forbid external buffers (napi_no_external_buffers_allowed, e.g. Electron
//     with the V8 sandbox): then the data is copied into a JS-owned ArrayBuffer instead.
// TensorHandle: an f32 tensor allocated on the CPU backend, `data` its zero-copy view,
// `dispose()` idempotent. A view handed out before dispose() keeps the memory alive (it
// never dangles); the handle itself refuses every use after dispose() with ERR_DISPOSED.
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "addon.h"

namespace elmo::node {
namespace {

std::atomic<int64_t> g_live_storages{0};
// A non-null address for views of zero elements (kernels never read it).
alignas(64) float g_empty_view[16];

std::string describe_dims(std::initializer_list<int64_t> dims) {
  std::string s = "[";
  int i = 0;
  for (int64_t d : dims) s += (i++ ? ", " : "") + std::to_string(d);
  return s + "]";
}

// Product of dims, or -1 on overflow.
int64_t checked_numel(std::initializer_list<int64_t> dims) {
  int64_t n = 1;
  for (int64_t d : dims)
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return -1;
  return n;
}

class TensorHandle : public Napi::ObjectWrap<TensorHandle> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "TensorHandle",
                       {
                           InstanceAccessor<&TensorHandle::get_data>("data"),
                           InstanceAccessor<&TensorHandle::get_shape>("shape"),
                           InstanceAccessor<&TensorHandle::get_disposed>("disposed"),
                           InstanceAccessor<&TensorHandle::get_native>("native"),
                           InstanceMethod<&TensorHandle::dispose>("dispose"),
                       });
  }

  // new TensorHandle(shape: number[]): f32, 1 to 4 dims, zero-filled.
  explicit TensorHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorHandle>(info) {
    Napi::Env env = info.Env();
    Napi::Value shape = info[0];
    if (!shape.IsArray() || shape.As<Napi::Array>().Length() < 1 ||
        shape.As<Napi::Array>().Length() > static_cast<uint32_t>(kMaxDims))
      throw_expected(env, "ERR_SHAPE", "an array of 1 to 4 dimensions", "shape", shape);
    Napi::Array arr = shape.As<Napi::Array>();
    int64_t d[kMaxDims] = {1, 1, 1, 1};
    const int ndim = static_cast<int>(arr.Length());
    static const char* names[kMaxDims] = {"shape[0]", "shape[1]", "shape[2]", "shape[3]"};
    for (int i = 0; i < ndim; ++i) d[i] = int_arg(arr.Get(static_cast<uint32_t>(i)), names[i], 0, INT32_MAX);

    AddonData& data = addon_data(env);
    if (data.external_buffers) {
      std::shared_ptr<Backend> backend = cpu_backend(env);
      Tensor t;
      Status st;
      switch (ndim) {
        case 1: st = backend->alloc(&t, DType::kF32, {d[0]}); break;
        case 2: st = backend->alloc(&t, DType::kF32, {d[0], d[1]}); break;
        case 3: st = backend->alloc(&t, DType::kF32, {d[0], d[1], d[2]}); break;
        default: st = backend->alloc(&t, DType::kF32, {d[0], d[1], d[2], d[3]}); break;
      }
      throw_if_error(env, st);
      storage_ = std::make_shared<Storage>(backend, t);
      if (t.numel() > 0) throw_if_error(env, backend->fill(t, 0.0f));
      tensor_ = t;
    } else {
      // No external buffers in this runtime: the memory is a JS ArrayBuffer the handle keeps
      // alive, so `data` is still a view and kernels still write where JS reads.
      tensor_.dtype = DType::kF32;
      tensor_.ndim = ndim;
      for (int i = 0; i < ndim; ++i) tensor_.shape[i] = d[i];
      Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, tensor_.nbytes());  // zero-filled
      js_memory_ = Napi::Persistent(ab);
      tensor_.data = ab.Data();
    }
  }

  bool disposed() const { return disposed_; }
  const Tensor& tensor() const { return tensor_; }

 private:
  void check_live(Napi::Env env, const char* what) const {
    if (disposed_)
      throw_error(env, kErrDisposed,
                  std::string("Expected a live tensor for ") + what + " but received a disposed tensor");
  }

  Napi::Value get_data(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    check_live(env, "data");
    if (view_.IsEmpty()) {
      Napi::Float32Array view;
      if (storage_) {
        view = float32_from_storage(env, storage_);
      } else {
        view = Napi::Float32Array::New(env, static_cast<size_t>(tensor_.numel()), js_memory_.Value(), 0);
      }
      view_ = Napi::Persistent(view.As<Napi::Object>());
    }
    return view_.Value();
  }

  Napi::Value get_shape(const Napi::CallbackInfo& info) {
    Napi::Array out = Napi::Array::New(info.Env(), static_cast<size_t>(tensor_.ndim));
    for (int i = 0; i < tensor_.ndim; ++i)
      out.Set(static_cast<uint32_t>(i), Napi::Number::New(info.Env(), static_cast<double>(tensor_.shape[i])));
    return out;
  }

  Napi::Value get_disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), disposed_); }
  // true when the memory is native (external buffers), false when it is a JS ArrayBuffer.
  Napi::Value get_native(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), static_cast<bool>(storage_));
  }

  Napi::Value dispose(const Napi::CallbackInfo& info) {
    if (!disposed_) {
      disposed_ = true;
      view_.Reset();
      js_memory_.Reset();
      storage_.reset();  // freed now unless a handed-out view still holds it
      tensor_.data = nullptr;
    }
    return info.Env().Undefined();
  }

  Tensor tensor_;
  std::shared_ptr<Storage> storage_;           // native memory (external buffers allowed)
  Napi::Reference<Napi::ArrayBuffer> js_memory_;  // JS memory (external buffers forbidden)
  Napi::ObjectReference view_;                 // the cached Float32Array of `data`
  bool disposed_ = false;
};

TensorHandle* unwrap_tensor(Napi::Value v) {
  if (!v.IsObject()) return nullptr;
  AddonData& data = addon_data(v.Env());
  if (data.tensor_ctor.IsEmpty() || !v.As<Napi::Object>().InstanceOf(data.tensor_ctor.Value())) return nullptr;
  return TensorHandle::Unwrap(v.As<Napi::Object>());
}

Tensor view_of(Napi::Value v, const char* what, DType dtype, std::initializer_list<int64_t> dims) {
  Napi::Env env = v.Env();
  const bool f32 = dtype == DType::kF32;
  const char* kind = f32 ? "Float32Array" : "Int32Array";
  const int64_t want = checked_numel(dims);
  if (want < 0) throw_error(env, "ERR_SHAPE", std::string(what) + ": dimensions " + describe_dims(dims) + " overflow");
  void* ptr = nullptr;
  int64_t len = 0;
  if (v.IsTypedArray()) {
    Napi::TypedArray ta = v.As<Napi::TypedArray>();
    if (ta.TypedArrayType() != (f32 ? napi_float32_array : napi_int32_array))
      throw_expected(env, "ERR_DTYPE", std::string("a ") + kind, what, v);
    len = static_cast<int64_t>(ta.ElementLength());
    Napi::ArrayBuffer ab = ta.ArrayBuffer();
    if (ab.Data() != nullptr) ptr = static_cast<uint8_t*>(ab.Data()) + ta.ByteOffset();
  } else if (TensorHandle* h = f32 ? unwrap_tensor(v) : nullptr) {
    if (h->disposed())
      throw_error(env, kErrDisposed, std::string("Expected a live tensor for ") + what + " but received a disposed tensor");
    len = h->tensor().numel();
    ptr = h->tensor().data;
  } else {
    throw_expected(env, "ERR_INPUT", f32 ? "a Float32Array or a tensor" : "an Int32Array", what, v);
  }
  if (len != want)
    throw_expected(env, "ERR_SHAPE",
                   std::string(kind) + " of length " + std::to_string(want) + " " + describe_dims(dims), what, v);
  if (ptr == nullptr) ptr = g_empty_view;  // only when len == want == 0
  return Tensor(ptr, dtype, dims, Device::kCpu);
}

// ---- testing hooks ------------------------------------------------------------------------
Napi::Value testing_live_storages(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(live_storages()));
}

// nativeFloat32(n, value): n floats of native memory filled with value by the backend,
// handed to JS through float32_from_storage (external, or a copy where forbidden).
Napi::Value testing_native_float32(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t n = int_arg(info[0], "n", 0, INT32_MAX);
  const double value = number_arg(info[1], "value");
  std::shared_ptr<Backend> backend = cpu_backend(env);
  Tensor t;
  throw_if_error(env, backend->alloc(&t, DType::kF32, {n}));
  auto storage = std::make_shared<Storage>(backend, t);
  if (n > 0) throw_if_error(env, backend->fill(t, static_cast<float>(value)));
  return float32_from_storage(env, storage);
}

Napi::Value testing_set_external_buffers(const Napi::CallbackInfo& info) {
  addon_data(info.Env()).external_buffers = bool_arg(info[0], "allowed");
  return info.Env().Undefined();
}

}  // namespace

// ---- argument conversion --------------------------------------------------------------------
bool is_absent(Napi::Value v) { return v.IsEmpty() || v.IsUndefined() || v.IsNull(); }

int64_t int_arg(Napi::Value v, const char* what, int64_t lo, int64_t hi) {
  if (v.IsNumber()) {
    const double x = v.As<Napi::Number>().DoubleValue();
    if (std::isfinite(x) && std::floor(x) == x && x >= static_cast<double>(lo) && x <= static_cast<double>(hi))
      return static_cast<int64_t>(x);
  }
  std::string expected = hi >= INT32_MAX ? "an integer >= " + std::to_string(lo)
                                         : "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  throw_expected(v.Env(), "ERR_INPUT", expected, what, v);
}

double number_arg(Napi::Value v, const char* what) {
  if (v.IsNumber()) {
    const double x = v.As<Napi::Number>().DoubleValue();
    if (std::isfinite(x)) return x;
  }
  throw_expected(v.Env(), "ERR_INPUT", "a finite number", what, v);
}

bool bool_arg(Napi::Value v, const char* what) {
  if (!v.IsBoolean()) throw_expected(v.Env(), "ERR_INPUT", "a boolean", what, v);
  return v.As<Napi::Boolean>().Value();
}

std::string string_arg(Napi::Value v, const char* what) {
  if (!v.IsString()) throw_expected(v.Env(), "ERR_INPUT", "a string", what, v);
  return v.As<Napi::String>().Utf8Value();
}

uint64_t u64_arg(Napi::Value v, const char* what) {
  if (v.IsNumber()) {
    const double x = v.As<Napi::Number>().DoubleValue();
    if (std::isfinite(x) && std::floor(x) == x && x >= 0 && x <= 9007199254740991.0) return static_cast<uint64_t>(x);
  } else if (v.IsBigInt()) {
    bool lossless = false;
    const uint64_t x = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (lossless) return x;
  }
  throw_expected(v.Env(), "ERR_INPUT", "a non-negative safe integer or a bigint below 2^64", what, v);
}

Tensor f32_view(Napi::Value v, const char* what, std::initializer_list<int64_t> dims) {
  return view_of(v, what, DType::kF32, dims);
}
Tensor i32_view(Napi::Value v, const char* what, std::initializer_list<int64_t> dims) {
  return view_of(v, what, DType::kI32, dims);
}
Tensor f32_view_optional(Napi::Value v, const char* what, std::initializer_list<int64_t> dims) {
  return is_absent(v) ? Tensor() : view_of(v, what, DType::kF32, dims);
}

// ---- native memory handed to JS ------------------------------------------------------------
Storage::Storage(std::shared_ptr<Backend> b, Tensor t) : backend(std::move(b)), tensor(t) { ++g_live_storages; }
Storage::~Storage() {
  backend->free(&tensor);
  --g_live_storages;
}
int64_t live_storages() { return g_live_storages.load(); }

Napi::Float32Array float32_from_storage(Napi::Env env, const std::shared_ptr<Storage>& storage) {
  const size_t n = static_cast<size_t>(storage->tensor.numel());
  const size_t bytes = n * sizeof(float);
  if (addon_data(env).external_buffers && bytes > 0) {
    auto* hint = new std::shared_ptr<Storage>(storage);
    napi_value ab = nullptr;
    const napi_status st = napi_create_external_arraybuffer(
        env, storage->tensor.data, bytes,
        [](napi_env, void*, void* h) { delete static_cast<std::shared_ptr<Storage>*>(h); }, hint, &ab);
    if (st == napi_ok) return Napi::Float32Array::New(env, n, Napi::ArrayBuffer(env, ab), 0);
    delete hint;
    if (st != napi_no_external_buffers_allowed) throw Napi::Error::New(env);
  }
  Napi::ArrayBuffer copy = Napi::ArrayBuffer::New(env, bytes);
  if (bytes > 0) std::memcpy(copy.Data(), storage->tensor.data, bytes);
  return Napi::Float32Array::New(env, n, copy, 0);
}

std::string describe_tensor_handle(Napi::Value v) {
  TensorHandle* h = unwrap_tensor(v);
  if (h == nullptr) return "";
  return h->disposed() ? "a disposed tensor" : "tensor " + h->tensor().describe();
}

void init_buffers(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = TensorHandle::define(env);
  addon_data(env).tensor_ctor = Napi::Persistent(ctor);
  exports.Set("TensorHandle", ctor);
  Napi::Object testing = exports.Get("testing").As<Napi::Object>();
  testing.Set("liveStorages", Napi::Function::New(env, testing_live_storages, "liveStorages"));
  testing.Set("nativeFloat32", Napi::Function::New(env, testing_native_float32, "nativeFloat32"));
  testing.Set("setExternalBuffers", Napi::Function::New(env, testing_set_external_buffers, "setExternalBuffers"));
}

}  // namespace elmo::node
