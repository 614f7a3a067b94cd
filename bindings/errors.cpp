// Status -> JS error. lib/errors.ts hands its classes to the addon once, at load (as
// better-sqlite3 does), so native code throws the project's own ElmoError subclasses and a
// caller can rely on `instanceof` and `err.code` for errors from either side.
#include <cmath>
#include <string>

#include "addon.h"

namespace elmo::node {

void throw_error(Napi::Env env, const char* code, const std::string& message) {
  AddonData& data = addon_data(env);
  Napi::Value cls;
  if (!data.error_classes.IsEmpty()) {
    Napi::Value registered = data.error_classes.Value().Get(code);
    if (registered.IsFunction()) {
      cls = registered;
    } else if (!data.error_fallback.IsEmpty()) {
      cls = data.error_fallback.Value();
    }
  }
  if (!cls.IsEmpty()) {
    // Subclasses take (message) and know their code; the base class takes (message, code).
    Napi::Object err = cls.As<Napi::Function>().New({Napi::String::New(env, message), Napi::String::New(env, code)});
    throw Napi::Error(env, err);
  }
  // Before init(): a plain Error that still carries the code.
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  throw err;
}

void throw_status(Napi::Env env, const Status& status) {
  throw_error(env, code_name(status.code()), status.message());
}

static const char* typed_array_name(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array: return "Int8Array";
    case napi_uint8_array: return "Uint8Array";
    case napi_uint8_clamped_array: return "Uint8ClampedArray";
    case napi_int16_array: return "Int16Array";
    case napi_uint16_array: return "Uint16Array";
    case napi_int32_array: return "Int32Array";
    case napi_uint32_array: return "Uint32Array";
    case napi_float32_array: return "Float32Array";
    case napi_float64_array: return "Float64Array";
    case napi_bigint64_array: return "BigInt64Array";
    case napi_biguint64_array: return "BigUint64Array";
    default: return "TypedArray";
  }
}

std::string describe_value(Napi::Value v) {
  if (v.IsEmpty() || v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsTypedArray()) {
    Napi::TypedArray ta = v.As<Napi::TypedArray>();
    return std::string(typed_array_name(ta.TypedArrayType())) + "(" + std::to_string(ta.ElementLength()) + ")";
  }
  if (v.IsArrayBuffer()) return "ArrayBuffer(" + std::to_string(v.As<Napi::ArrayBuffer>().ByteLength()) + " bytes)";
  if (v.IsDataView()) return "DataView";
  if (v.IsArray()) return "Array(" + std::to_string(v.As<Napi::Array>().Length()) + ")";
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? "boolean true" : "boolean false";
  if (v.IsNumber()) {
    const double x = v.As<Napi::Number>().DoubleValue();
    if (std::isnan(x)) return "number NaN";
    if (std::isinf(x)) return x > 0 ? "number Infinity" : "number -Infinity";
    return "number " + v.ToString().Utf8Value();
  }
  if (v.IsString()) {
    std::string s = v.As<Napi::String>().Utf8Value();
    if (s.size() > 24) s = s.substr(0, 21) + "...";
    return "string '" + s + "'";
  }
  if (v.IsBigInt()) return "bigint " + v.ToString().Utf8Value();
  if (v.IsFunction()) return "a function";
  if (v.IsObject()) {
    const std::string handle = describe_tensor_handle(v);
    if (!handle.empty()) return handle;
    Napi::Value ctor = v.As<Napi::Object>().Get("constructor");
    if (ctor.IsFunction()) {
      const std::string name = ctor.As<Napi::Function>().Get("name").ToString().Utf8Value();
      if (!name.empty() && name != "Object") return "an instance of " + name;
    }
    return "an object";
  }
  return "a value of another type";
}

void throw_expected(Napi::Env env, const char* code, const std::string& expected, const char* what,
                    Napi::Value got) {
  throw_error(env, code, "Expected " + expected + " for " + what + " but received " + describe_value(got));
}

// init(classesByCode, ElmoError): called once by lib/native.ts right after loading.
static Napi::Value init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw_expected(env, "ERR_INPUT", "an object of error classes", "classes", info[0]);
  if (!info[1].IsFunction()) throw_expected(env, "ERR_INPUT", "a function", "ElmoError", info[1]);
  AddonData& data = addon_data(env);
  data.error_classes = Napi::Persistent(info[0].As<Napi::Object>());
  data.error_fallback = Napi::Persistent(info[1].As<Napi::Function>());
  return env.Undefined();
}

// Throws the error registered for a code: lets tests check the mapping end to end.
static Napi::Value throw_code(const Napi::CallbackInfo& info) {
  const std::string code = string_arg(info[0], "code");
  const std::string message = string_arg(info[1], "message");
  throw_error(info.Env(), code.c_str(), message);
}

void init_errors(Napi::Env env, Napi::Object exports) {
  exports.Set("init", Napi::Function::New(env, init, "init"));
  Napi::Object testing = exports.Get("testing").As<Napi::Object>();
  testing.Set("throwCode", Napi::Function::New(env, throw_code, "throwCode"));
}

}  // namespace elmo::node
