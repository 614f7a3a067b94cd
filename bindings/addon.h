// Shared declarations of the Node addon. bindings/ is the only place that includes napi.h:
// it converts JS values into elmo::Tensor views and plain C++ values on the JS thread, calls
// the Backend, and turns a failed Status into one of the project's own JS error classes.
//
// One file per JS entry point area:
//   addon.cpp    module init, per-environment state, build info
//   errors.cpp   Status -> JS error (classes handed in by lib/errors.ts), value descriptions
//   buffers.cpp  zero-copy typed-array views, native buffers exposed to JS, tensor handles
//   devices.cpp  devices(): CPU ISA/threads/features, CUDA devices or the reason there are none
//   ops.cpp      a few CPU backend kernels run in place on caller typed arrays
#pragma once

#include <napi.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>

#include "elmo/backend.h"
#include "elmo/status.h"
#include "elmo/tensor.h"

namespace elmo::node {

// Codes that only exist on the JS side of the boundary (the native core has no notion of a
// disposed handle or a busy model).
inline constexpr const char* kErrDisposed = "ERR_DISPOSED";
inline constexpr const char* kErrBusy = "ERR_BUSY";
inline constexpr const char* kErrAborted = "ERR_ABORTED";

// Per-environment state (the main thread and every worker thread get their own).
struct AddonData {
  Napi::ObjectReference error_classes;     // { [code]: class } from lib/errors.ts; empty before init()
  Napi::FunctionReference error_fallback;  // ElmoError, for codes the map does not name
  Napi::FunctionReference tensor_ctor;     // the wrapped tensor handle class
  std::shared_ptr<Backend> cpu;            // created on first use; shared with live buffers
  bool external_buffers = true;            // false: behave as a runtime that forbids them
};
AddonData& addon_data(Napi::Env env);
// The CPU backend of this environment (ELMO_ISA / ELMO_NUM_THREADS honoured); throws on failure.
std::shared_ptr<Backend> cpu_backend(Napi::Env env);

// ---- errors.cpp -------------------------------------------------------------------------
// Throws an instance of the class registered for `code` (ElmoError subclass) with `message`.
[[noreturn]] void throw_error(Napi::Env env, const char* code, const std::string& message);
[[noreturn]] void throw_status(Napi::Env env, const Status& status);
inline void throw_if_error(Napi::Env env, const Status& status) {
  if (!status.is_ok()) throw_status(env, status);
}
// "Float64Array(6)", "number 3.5", "string", "null", "an object", ...
std::string describe_value(Napi::Value v);
// Throws "Expected <expected> for <what> but received <describe(got)>" with `code`.
[[noreturn]] void throw_expected(Napi::Env env, const char* code, const std::string& expected, const char* what,
                                 Napi::Value got);
void init_errors(Napi::Env env, Napi::Object exports);

// ---- argument conversion (buffers.cpp) ------------------------------------------------
// An integer in [lo, hi] (a JS number with no fraction); ERR_INPUT otherwise.
int64_t int_arg(Napi::Value v, const char* what, int64_t lo, int64_t hi);
double number_arg(Napi::Value v, const char* what);
bool bool_arg(Napi::Value v, const char* what);
std::string string_arg(Napi::Value v, const char* what);
// A 64-bit seed: a non-negative safe integer or a BigInt below 2^64.
uint64_t u64_arg(Napi::Value v, const char* what);
bool is_absent(Napi::Value v);  // undefined or null

// A Float32Array / Int32Array (or, for f32, a live tensor handle) viewed in place as a
// tensor of shape `dims`. The length must equal the product of dims: ERR_INPUT for a value
// that is not a typed array, ERR_DTYPE for the wrong kind of typed array, ERR_SHAPE for the
// wrong length, ERR_DISPOSED for a disposed handle. The view is valid while the JS value is
// reachable, i.e. for the duration of the native call that received it.
Tensor f32_view(Napi::Value v, const char* what, std::initializer_list<int64_t> dims);
Tensor i32_view(Napi::Value v, const char* what, std::initializer_list<int64_t> dims);
// Same, but undefined / null give an empty Tensor ("not given").
Tensor f32_view_optional(Napi::Value v, const char* what, std::initializer_list<int64_t> dims);

// Native memory shared between a tensor handle and the ArrayBuffers that view it: freed
// through the backend when the last owner lets go.
struct Storage {
  Storage(std::shared_ptr<Backend> backend, Tensor tensor);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  std::shared_ptr<Backend> backend;
  Tensor tensor;
};
// "tensor f32[3, 4]" / "a disposed tensor" for a tensor handle, "" for anything else.
std::string describe_tensor_handle(Napi::Value v);
// Storages alive in this process (tests check that finalizers free them).
int64_t live_storages();
// A Float32Array over storage->tensor's memory with no copy; the ArrayBuffer's finalizer
// releases its reference. Where the runtime forbids external buffers, a copy.
Napi::Float32Array float32_from_storage(Napi::Env env, const std::shared_ptr<Storage>& storage);
void init_buffers(Napi::Env env, Napi::Object exports);

// ---- devices.cpp / ops.cpp ------------------------------------------------------------
void init_devices(Napi::Env env, Napi::Object exports);
void init_ops(Napi::Env env, Napi::Object exports);

}  // namespace elmo::node
