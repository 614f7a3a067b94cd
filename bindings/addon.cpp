// Module init: per-environment state, the CPU backend, build info, and registration of each
// entry point area. Safe to load in several worker threads (no process-wide JS state).
#include "addon.h"

#ifndef ELMO_BUILD_FLAGS
#define ELMO_BUILD_FLAGS "unknown"
#endif

namespace elmo::node {

void init_model(Napi::Env env, Napi::Object exports);  // model.cpp

AddonData& addon_data(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

std::shared_ptr<Backend> cpu_backend(Napi::Env env) {
  AddonData& data = addon_data(env);
  if (!data.cpu) {
    std::unique_ptr<Backend> backend;
    CpuOptions co;
    co.shared_pool = true;  // the same pool as the models of the default thread count
    throw_if_error(env, make_cpu_backend(&backend, co));
    data.cpu = std::move(backend);
  }
  return data.cpu;
}

namespace {

// buildInfo(): how this binary was built (for `elmo info` and bug reports).
Napi::Value build_info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("flags", Napi::String::New(env, ELMO_BUILD_FLAGS));
#ifdef ELMO_HAVE_CUDA
  out.Set("cuda", Napi::Boolean::New(env, true));
#else
  out.Set("cuda", Napi::Boolean::New(env, false));
#endif
#if defined(__clang__)
  out.Set("compiler", Napi::String::New(env, "clang " __clang_version__));
#elif defined(__GNUC__)
  out.Set("compiler", Napi::String::New(env, "gcc " __VERSION__));
#else
  out.Set("compiler", Napi::String::New(env, "unknown"));
#endif
  out.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  return out;
}

// cpuBackendName(): "cpu(avx512, 2 threads)" — creates the backend, so ELMO_ISA errors surface.
Napi::Value cpu_backend_name(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), cpu_backend(info.Env())->name());
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new AddonData());
  exports.Set("testing", Napi::Object::New(env));
  init_errors(env, exports);
  init_buffers(env, exports);
  init_devices(env, exports);
  init_ops(env, exports);
  init_model(env, exports);
  exports.Set("buildInfo", Napi::Function::New(env, build_info, "buildInfo"));
  exports.Set("cpuBackendName", Napi::Function::New(env, cpu_backend_name, "cpuBackendName"));
  return exports;
}

}  // namespace
}  // namespace elmo::node

static Napi::Object elmo_init(Napi::Env env, Napi::Object exports) { return elmo::node::init(env, exports); }
NODE_API_MODULE(elmo, elmo_init)
