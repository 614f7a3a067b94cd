// devices(): what this process can run on. The CPU entry reports the ISA path and thread
// count the CPU backend uses (ELMO_ISA / ELMO_NUM_THREADS honoured) and the kernel of bf16
// matrix products; the CUDA entry lists
// devices when the addon was built with the CUDA backend, and otherwise (or with no driver,
// no device) says why not. A failed device query means zero devices, never a crash.
#include <cstdlib>
#include <vector>

#include "addon.h"
#include "cpu/ops.h"
#include "elmo/cpu.h"
#ifdef ELMO_HAVE_CUDA
#include "elmo/cuda_backend.h"
#endif

namespace elmo::node {
namespace {

// The ISA path the CPU backend runs (ELMO_ISA honoured).
Isa selected_isa(Napi::Env env) {
  Isa isa = best_isa();
  const char* want = std::getenv("ELMO_ISA");
  if (want && *want) throw_if_error(env, parse_isa(want, &isa));
  return isa;
}

Napi::Object cpu_info(Napi::Env env) {
  const Isa isa = selected_isa(env);
  const CpuFeatures& f = cpu_features();
  const std::pair<const char*, bool> flags[] = {
      {"avx2", f.avx2},         {"fma", f.fma},           {"avx512f", f.avx512f},
      {"avx512bw", f.avx512bw}, {"avx512vl", f.avx512vl}, {"avx512dq", f.avx512dq},
      {"avx512_bf16", f.avx512_bf16}, {"avx512_vnni", f.avx512_vnni},
  };
  Napi::Array features = Napi::Array::New(env);
  uint32_t n = 0;
  for (const auto& [name, on] : flags)
    if (on) features.Set(n++, Napi::String::New(env, name));
  Napi::Object cpu = Napi::Object::New(env);
  cpu.Set("isa", Napi::String::New(env, isa_name(isa)));
  cpu.Set("bestIsa", Napi::String::New(env, isa_name(best_isa())));
  cpu.Set("threads", Napi::Number::New(env, default_threads()));
  cpu.Set("features", features);
  cpu.Set("bf16Kernel", Napi::String::New(env, cpu::gemm_bf16_kernel_name(isa)));
  cpu.Set("int8Kernel", Napi::String::New(env, cpu::gemm_q8_kernel_name(isa)));
  return cpu;
}

Napi::Object cuda_info(Napi::Env env) {
  Napi::Object cuda = Napi::Object::New(env);
  Napi::Array list = Napi::Array::New(env);
#ifdef ELMO_HAVE_CUDA
  std::vector<CudaDeviceInfo> found;
  std::string reason;
  const Status st = cuda_devices(&found, &reason);
  if (!st.is_ok()) {
    found.clear();
    reason = st.message();
  }
  for (size_t i = 0; i < found.size(); ++i) {
    Napi::Object d = Napi::Object::New(env);
    d.Set("index", Napi::Number::New(env, found[i].index));
    d.Set("name", Napi::String::New(env, found[i].name));
    d.Set("memoryBytes", Napi::Number::New(env, static_cast<double>(found[i].total_bytes)));
    d.Set("computeCapability", Napi::String::New(env, std::to_string(found[i].cc_major) + "." +
                                                          std::to_string(found[i].cc_minor)));
    d.Set("multiprocessors", Napi::Number::New(env, found[i].sm_count));
    list.Set(static_cast<uint32_t>(i), d);
  }
  if (found.empty() && reason.empty()) reason = "no CUDA device found";
  cuda.Set("compiled", Napi::Boolean::New(env, true));
#else
  const std::string reason = "not compiled with CUDA (the addon was built without the CUDA backend: no nvcc, or ELMO_CUDA=OFF)";
  cuda.Set("compiled", Napi::Boolean::New(env, false));
#endif
  cuda.Set("available", Napi::Boolean::New(env, list.Length() > 0));
  cuda.Set("devices", list);
  if (list.Length() == 0) cuda.Set("reason", Napi::String::New(env, reason));
  return cuda;
}

Napi::Value devices(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("cpu", cpu_info(env));
  out.Set("cuda", cuda_info(env));
  return out;
}

// cpuPeak(seconds): the measured arithmetic peak of the CPU backend's threads on its ISA path
// (measure_cpu_peak, which refuses seconds outside (0, 60] with ERR_INPUT). Runs on the calling
// thread for about 2 x seconds: meant for `elmo info --peak` and benchmarks, not for a
// server's event loop.
Napi::Value cpu_peak(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double seconds = 0.25;
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    if (!info[0].IsNumber())
      throw_expected(env, "ERR_INPUT", "a number of seconds in (0, 60]", "measureCpuPeak", info[0]);
    seconds = info[0].As<Napi::Number>().DoubleValue();
  }
  CpuPeak peak;
  throw_if_error(env, measure_cpu_peak(default_threads(), selected_isa(env), seconds, &peak));
  Napi::Object out = Napi::Object::New(env);
  out.Set("isa", Napi::String::New(env, isa_name(peak.isa)));
  out.Set("threads", Napi::Number::New(env, peak.threads));
  out.Set("fp32Gflops", Napi::Number::New(env, peak.fp32_gflops));
  out.Set("bf16Gflops", Napi::Number::New(env, peak.bf16_gflops));
  return out;
}

}  // namespace

void init_devices(Napi::Env env, Napi::Object exports) {
  exports.Set("devices", Napi::Function::New(env, devices, "devices"));
  exports.Set("cpuPeak", Napi::Function::New(env, cpu_peak, "cpuPeak"));
}

}  // namespace elmo::node
