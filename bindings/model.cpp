// NativeModel: a BERT encoder (elmo::Bert) with its own backend and its own worker thread.
//
//   new NativeModel({ device: 'cpu' | 'cuda', threads?, cudaDevice?, precision?: 'fp32' | 'bf16' | 'int8',
//                     inlineMaxMs? })
//   load(dir) -> Promise<void>          config.json + model.safetensors, on the worker thread
//   create(config, heads, seed)         fresh weights, synchronously
//   save(dir) -> Promise<void>          atomic writes by the native writer, on the worker thread
//   forward(ids, typeIds | null, offsets, { hidden, pooling, scores }) -> Promise<outputs>
//   dispose()                           idempotent; deferred while an operation runs
//
// Threading. Work runs on a thread the model owns, not on the libuv pool: that pool is small
// (4 threads by default) and shared with fs, DNS and zlib, and a forward pass of a large batch
// would hold one of its slots for the whole run. Each operation gets a thread-safe function
// that lives exactly as long as the operation, so a pending forward keeps the event loop alive
// and an idle model does not. Calls queue: operations run one at a time, in the order they
// were made (a predict issued during a training step waits for it). While operations are
// queued or running the wrapper holds a strong reference to itself, so a model dropped by JS
// mid-forward is not collected under the worker.
//
// Short forwards run inline. Handing a call to the worker and its result back costs two
// thread wake-ups (an interprocessor interrupt each on a VM): BERT-mini at 32 tokens takes
// 0.569 ms that way and 0.537 ms inline (`npm run bench:latency`, the two side by side). A CPU
// forward whose estimated time is at most inlineMaxMs (default 1 ms; 0: never) runs on the
// calling JS thread instead, as onnxruntime-node runs every call, and its promise is resolved
// before it is returned. The estimate is the call's
// FLOPs over the rate this model's forwards have reached so far (an average over the
// completed ones, inline or not), so the first forward always runs on the worker, and a
// large batch never blocks the event loop. CUDA forwards always run on the worker.
//
// Inputs (Int32Array ids / typeIds / offsets) are read in place by the worker; references to
// them are held until the operation settles. Callers must not modify them until then.
//
// Outputs. The model's activation arena is reused by the next forward, so it is never handed
// out: each output is copied (downloaded, for CUDA) once into a fresh host allocation that
// becomes an external ArrayBuffer owned by JS (freed by its finalizer), or a JS-owned copy
// where the runtime forbids external buffers. Pooling (CLS row or mean over each sequence's
// tokens) and the label scores (softmax or sigmoid, plus the arg-max) are computed on the
// worker by native/ (postprocess.h), so that neither lib/ nor bindings/ loops over elements.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "addon.h"
#include "elmo/bert.h"
#include "elmo/postprocess.h"
#include "elmo/trainer.h"
#ifdef ELMO_HAVE_CUDA
#include "elmo/cuda_backend.h"
#endif

namespace elmo::node {
namespace {

// The error object `throw_error` would throw, as a value (for rejecting promises).
Napi::Value error_value(Napi::Env env, const char* code, const std::string& message) {
  try {
    throw_error(env, code, message);
  } catch (const Napi::Error& e) {
    return e.Value();
  }
}

Napi::Value status_error_value(Napi::Env env, const Status& status) {
  return error_value(env, code_name(status.code()), status.message());
}

// DeviceUnavailableError takes (message, reason): built here rather than through throw_error,
// which passes the code as the second argument.
[[noreturn]] void throw_device_unavailable(Napi::Env env, const std::string& reason) {
  const std::string message = "CUDA device requested but unavailable: " + reason;
  AddonData& data = addon_data(env);
  if (!data.error_classes.IsEmpty()) {
    Napi::Value cls = data.error_classes.Value().Get("ERR_DEVICE_UNAVAILABLE");
    if (cls.IsFunction()) {
      Napi::Object err =
          cls.As<Napi::Function>().New({Napi::String::New(env, message), Napi::String::New(env, reason)});
      throw Napi::Error(env, err);
    }
  }
  throw_error(env, "ERR_DEVICE_UNAVAILABLE", message);
}

// A host allocation handed to JS as an external ArrayBuffer (or copied where forbidden).
struct HostBuffer {
  void* data = nullptr;
  size_t bytes = 0;

  HostBuffer() = default;
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  HostBuffer(HostBuffer&& o) noexcept : data(o.data), bytes(o.bytes) { o.data = nullptr, o.bytes = 0; }
  HostBuffer& operator=(HostBuffer&& o) noexcept {
    std::swap(data, o.data);
    std::swap(bytes, o.bytes);
    return *this;
  }
  ~HostBuffer() { std::free(data); }

  Status allocate(size_t n_bytes) {
    std::free(data);
    bytes = n_bytes;
    data = std::malloc(std::max<size_t>(n_bytes, 4));
    if (data == nullptr) {
      bytes = 0;
      return Status(Code::kOom, strformat("cannot allocate %zu bytes of host memory for the outputs", n_bytes));
    }
    return Status::ok();
  }
  float* f32() const { return static_cast<float*>(data); }
  int32_t* i32() const { return static_cast<int32_t*>(data); }

  // Moves the memory into an ArrayBuffer: zero-copy when external buffers are allowed.
  Napi::ArrayBuffer release_to_js(Napi::Env env) {
    if (addon_data(env).external_buffers && bytes > 0) {
      napi_value ab = nullptr;
      const napi_status st = napi_create_external_arraybuffer(
          env, data, bytes, [](napi_env, void* p, void*) { std::free(p); }, nullptr, &ab);
      if (st == napi_ok) {
        data = nullptr;
        bytes = 0;
        return Napi::ArrayBuffer(env, ab);
      }
      if (st != napi_no_external_buffers_allowed) throw Napi::Error::New(env);
    }
    Napi::ArrayBuffer copy = Napi::ArrayBuffer::New(env, bytes);
    if (bytes > 0) std::memcpy(copy.Data(), data, bytes);
    return copy;
  }
};

enum class Pooling : uint8_t { kNone, kCls, kMean };
enum class Scores : uint8_t { kNone, kSoftmax, kSigmoid, kJoint };

// A unit of work: `run` on the worker thread (no N-API), then `finish` on the JS thread.
struct Job;
class Model;
void call_js(Napi::Env env, Napi::Function, Model* model, Job* job);
using JobTsfn = Napi::TypedThreadSafeFunction<Model, Job, call_js>;

struct Job {
  std::function<Status()> run;
  double flops = 0;  // forwards: the estimate that calibrates inline runs; 0 for other work
  std::function<Napi::Value(Napi::Env)> finish;  // null: resolves undefined
  Napi::Promise::Deferred deferred;
  std::vector<Napi::Reference<Napi::Value>> keep;  // inputs read in place by `run`
  JobTsfn tsfn;
  Status status;
  explicit Job(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
};

// What one forward hands back.
struct ForwardResult {
  int B = 0;
  int64_t T = 0, H = 0, L = 0, logit_rows = 0;
  HostBuffer hidden, pooled, logits, embeddings, scores, best;
  int64_t S = 0;  // slot classifier labels
  HostBuffer slot_logits, slot_scores, slot_best;
};

class Model : public Napi::ObjectWrap<Model> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "NativeModel",
                       {
                           InstanceMethod<&Model::load>("load"),
                           InstanceMethod<&Model::create>("create"),
                           InstanceMethod<&Model::save>("save"),
                           InstanceMethod<&Model::forward>("forward"),
                           InstanceMethod<&Model::dispose>("dispose"),
                           InstanceMethod<&Model::load_encoder>("loadEncoder"),
                           InstanceMethod<&Model::trainer_create>("trainerCreate"),
                           InstanceMethod<&Model::train_step>("trainStep"),
                           InstanceMethod<&Model::eval_loss>("evalLoss"),
                           InstanceMethod<&Model::trainer_set_schedule>("trainerSetSchedule"),
                           InstanceMethod<&Model::trainer_save_state>("trainerSaveState"),
                           InstanceMethod<&Model::trainer_load_state>("trainerLoadState"),
                           InstanceMethod<&Model::trainer_dispose>("trainerDispose"),
                           InstanceMethod<&Model::lora_enable>("loraEnable"),
                           InstanceMethod<&Model::lora_disable>("loraDisable"),
                           InstanceMethod<&Model::lora_tensors>("loraTensors"),
                           InstanceMethod<&Model::lora_load>("loraLoad"),
                           InstanceAccessor<&Model::get_config>("config"),
                           InstanceAccessor<&Model::get_loaded>("loaded"),
                           InstanceAccessor<&Model::get_busy>("busy"),
                           InstanceAccessor<&Model::get_disposed>("disposed"),
                           InstanceAccessor<&Model::get_device>("device"),
                           InstanceAccessor<&Model::get_backend_name>("backendName"),
                       });
  }

  explicit Model(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Model>(info) {
    Napi::Env env = info.Env();
    Napi::Value opts = info[0];
    if (!is_absent(opts) && !opts.IsObject()) throw_expected(env, "ERR_INPUT", "an object", "options", opts);
    std::string device = "cpu";
    int threads = 0;
    int cuda_device = 0;
    std::string precision = "fp32";
    double inline_max_ms = 1.0;
    if (opts.IsObject()) {
      Napi::Object o = opts.As<Napi::Object>();
      if (!is_absent(o.Get("device"))) device = string_arg(o.Get("device"), "options.device");
      if (!is_absent(o.Get("threads"))) threads = static_cast<int>(int_arg(o.Get("threads"), "options.threads", 0, 1024));
      if (!is_absent(o.Get("cudaDevice")))
        cuda_device = static_cast<int>(int_arg(o.Get("cudaDevice"), "options.cudaDevice", 0, 1023));
      if (!is_absent(o.Get("precision"))) precision = string_arg(o.Get("precision"), "options.precision");
      Napi::Value ms = o.Get("inlineMaxMs");
      if (!is_absent(ms)) {
        if (!ms.IsNumber() || !std::isfinite(ms.As<Napi::Number>().DoubleValue()) || ms.As<Napi::Number>().DoubleValue() < 0)
          throw_expected(env, "ERR_INPUT", "a finite number >= 0", "options.inlineMaxMs", ms);
        inline_max_ms = ms.As<Napi::Number>().DoubleValue();
      }
    }
    inline_max_us_ = inline_max_ms * 1000.0;
    if (precision != "fp32" && precision != "bf16" && precision != "int8")
      throw_expected(env, "ERR_INPUT", "one of 'fp32', 'bf16', 'int8'", "options.precision",
                     Napi::String::New(env, precision));
    if (precision == "int8" && device != "cpu")
      throw_expected(env, "ERR_INPUT", "'fp32' or 'bf16' on a CUDA device (int8 runs on the CPU)",
                     "options.precision", Napi::String::New(env, precision));
    // bf16: the model keeps bf16 copies of its GEMM weights (BertOptions); on CUDA attention
    // also runs on bf16 operands (CudaOptions::compute). int8: per-row int8 copies of the
    // encoder's matrices and activations quantized per call (dynamic quantization).
    options_.precision = precision == "bf16" ? DType::kBF16 : precision == "int8" ? DType::kI8 : DType::kF32;
    std::unique_ptr<Backend> backend;
    if (device == "cpu") {
      CpuOptions co;
      co.threads = threads;
      co.shared_pool = true;  // every model of the process takes turns on one pool per thread count
      throw_if_error(env, make_cpu_backend(&backend, co));
    } else if (device == "cuda") {
#ifdef ELMO_HAVE_CUDA
      std::vector<CudaDeviceInfo> found;
      std::string reason;
      const Status listed = cuda_devices(&found, &reason);
      if (!listed.is_ok()) throw_device_unavailable(env, listed.message());
      if (found.empty()) throw_device_unavailable(env, reason.empty() ? "no CUDA device found" : reason);
      if (cuda_device >= static_cast<int>(found.size()))
        throw_device_unavailable(env, strformat("device %d requested but %zu found", cuda_device, found.size()));
      CudaOptions co;
      co.device = cuda_device;
      co.compute = precision == "bf16" ? DType::kBF16 : DType::kF32;
      const Status made = make_cuda_backend(&backend, co);
      if (!made.is_ok()) throw_device_unavailable(env, made.message());
#else
      (void)cuda_device;
      throw_device_unavailable(env, "not compiled with CUDA (the addon was built without the CUDA backend)");
#endif
    } else {
      throw_expected(env, "ERR_INPUT", "one of 'cpu', 'cuda'", "options.device", Napi::String::New(env, device));
    }
    backend_ = std::move(backend);
    device_ = device;
    worker_ = std::thread([this] { worker_loop(); });
  }

  ~Model() override { teardown(); }

  void finish_job(Napi::Env env, Job* raw) {
    std::unique_ptr<Job> job(raw);
    try {
      if (!job->status.is_ok()) {
        job->deferred.Reject(status_error_value(env, job->status));
      } else {
        job->deferred.Resolve(job->finish ? job->finish(env) : env.Undefined());
      }
    } catch (const Napi::Error& e) {
      job->deferred.Reject(e.Value());
    }
    job->keep.clear();
    busy_ = --outstanding_ > 0;
    if (dispose_pending_ && outstanding_ == 0) teardown();
    Unref();  // may make the wrapper collectable; nothing touches `this` after this line
  }

 private:
  // ---- lifecycle ---------------------------------------------------------------------------
  void worker_loop() {
    for (;;) {
      Job* job = nullptr;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stop_ with nothing queued
        job = queue_.front();
        queue_.pop_front();
      }
      job->status = timed_run(job);
      JobTsfn tsfn = job->tsfn;
      // Not napi_ok only while the environment shuts down; the job is then left behind
      // (its references cannot be released off the JS thread).
      tsfn.BlockingCall(job);
      tsfn.Release();
    }
  }

  // Stops the worker and frees the model and backend. Only when no operation runs.
  void teardown() {
    if (torn_down_) return;
    torn_down_ = true;
    disposed_ = true;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (worker_.joinable()) worker_.join();
    trainer_.reset();  // before the model it trains
    bert_.reset();     // before the backend that owns its memory
    backend_.reset();
  }

  // Throws ERR_DISPOSED after dispose() (including one deferred behind a running operation).
  void check_live(Napi::Env env, const char* what) const {
    if (disposed_ || dispose_pending_)
      throw_error(env, kErrDisposed, std::string("Expected a live model for ") + what + " but received a disposed model");
  }
  void check_loaded(Napi::Env env, const char* what) const {
    if (!bert_)
      throw_error(env, "ERR_INPUT",
                  std::string("Expected a loaded model for ") + what + " but received a model with no weights");
  }

  // Runs a job and, for a forward that succeeded, folds its FLOP rate into rate_ (either thread;
  // one operation at a time).
  Status timed_run(Job* job) {
    const auto t0 = std::chrono::steady_clock::now();
    Status st = job->run();
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    if (st.is_ok() && job->flops > 0 && us > 0) {
      const double r = job->flops / us, prev = rate_.load(std::memory_order_relaxed);
      rate_.store(prev > 0 ? 0.75 * prev + 0.25 * r : r, std::memory_order_relaxed);
    }
    return st;
  }

  // Runs `job` on the JS thread; its promise is settled on return.
  Napi::Value run_inline(Napi::Env env, std::unique_ptr<Job> job) {
    Napi::Promise promise = job->deferred.Promise();
    busy_ = true;
    ++outstanding_;
    Ref();  // finish_job's Unref
    job->status = timed_run(job.get());
    finish_job(env, job.release());
    return promise;
  }

  // Queues `job` on the worker and returns its promise.
  Napi::Value start(Napi::Env env, std::unique_ptr<Job> job) {
    job->tsfn = JobTsfn::New(env, "elmo.model", 0, 1, this);
    Napi::Promise promise = job->deferred.Promise();
    busy_ = true;
    ++outstanding_;
    Ref();
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(job.release());
    }
    cv_.notify_one();
    return promise;
  }

  // Runs `body` (which may throw a Napi::Error for bad arguments) and turns a throw into a
  // rejected promise: promise-returning methods never throw.
  template <typename F>
  Napi::Value as_promise(Napi::Env env, F&& body) {
    try {
      return body();
    } catch (const Napi::Error& e) {
      Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
      d.Reject(e.Value());
      return d.Promise();
    }
  }

  // ---- entry points --------------------------------------------------------------------------
  Napi::Value load(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return as_promise(env, [&]() -> Napi::Value {
      check_live(env, "load");
      const std::string dir = string_arg(info[0], "dir");
      auto job = std::make_unique<Job>(env);
      auto loaded = std::make_shared<std::unique_ptr<Bert>>();
      Backend* backend = backend_.get();
      const BertOptions options = options_;
      job->run = [dir, backend, loaded, options]() { return Bert::load(dir, backend, loaded.get(), options); };
      job->finish = [this, loaded](Napi::Env e) -> Napi::Value {
        bert_ = std::move(*loaded);
        return e.Undefined();
      };
      return start(env, std::move(job));
    });
  }

  // create(config, heads, seed): fresh weights (see Bert::create).
  Napi::Value create(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    check_live(env, "create");
    if (outstanding_ > 0)
      throw_error(env, kErrBusy, "Expected an idle model for create (it runs synchronously) but received a model with queued operations");
    if (!info[0].IsObject()) throw_expected(env, "ERR_INPUT", "an object", "config", info[0]);
    if (!info[1].IsObject()) throw_expected(env, "ERR_INPUT", "an object", "heads", info[1]);
    Napi::Object c = info[0].As<Napi::Object>();
    Napi::Object h = info[1].As<Napi::Object>();
    BertConfig cfg;
    constexpr int64_t kMax = INT32_MAX;
    cfg.vocab_size = int_arg(c.Get("vocabSize"), "config.vocabSize", 1, kMax);
    cfg.hidden_size = int_arg(c.Get("hiddenSize"), "config.hiddenSize", 1, kMax);
    cfg.num_layers = static_cast<int>(int_arg(c.Get("numLayers"), "config.numLayers", 1, 4096));
    cfg.num_heads = static_cast<int>(int_arg(c.Get("numHeads"), "config.numHeads", 1, 4096));
    cfg.intermediate_size = int_arg(c.Get("intermediateSize"), "config.intermediateSize", 1, kMax);
    cfg.max_position = int_arg(c.Get("maxPositions"), "config.maxPositions", 1, kMax);
    cfg.type_vocab_size = int_arg(c.Get("typeVocabSize"), "config.typeVocabSize", 1, kMax);
    auto opt_float = [&](const char* key, const char* what, float* dst) {
      Napi::Value v = c.Get(key);
      if (!is_absent(v)) *dst = static_cast<float>(number_arg(v, what));
    };
    opt_float("layerNormEps", "config.layerNormEps", &cfg.layer_norm_eps);
    opt_float("hiddenDropout", "config.hiddenDropout", &cfg.hidden_dropout);
    opt_float("attentionDropout", "config.attentionDropout", &cfg.attention_dropout);
    opt_float("initializerRange", "config.initializerRange", &cfg.initializer_range);
    if (!is_absent(c.Get("padTokenId")))
      cfg.pad_token_id = static_cast<int>(int_arg(c.Get("padTokenId"), "config.padTokenId", 0, kMax));
    if (!is_absent(c.Get("numLabels")))
      cfg.num_labels = static_cast<int>(int_arg(c.Get("numLabels"), "config.numLabels", 0, 1 << 20));
    Napi::Value labels = c.Get("labels");
    if (!is_absent(labels)) {
      if (!labels.IsArray()) throw_expected(env, "ERR_INPUT", "an array of strings", "config.labels", labels);
      Napi::Array arr = labels.As<Napi::Array>();
      for (uint32_t i = 0; i < arr.Length(); ++i) cfg.labels.push_back(string_arg(arr.Get(i), "config.labels[i]"));
      if (cfg.num_labels == 0) cfg.num_labels = static_cast<int>(cfg.labels.size());
      if (static_cast<int>(cfg.labels.size()) != cfg.num_labels)
        throw_expected(env, "ERR_INPUT", strformat("%d labels (config.numLabels)", cfg.num_labels), "config.labels",
                       labels);
    }
    Napi::Value pt = c.Get("problemType");
    if (!is_absent(pt)) {
      const std::string s = pt.IsString() ? pt.As<Napi::String>().Utf8Value() : "";
      if (s == "single_label_classification") cfg.problem_type = ProblemType::kSingleLabel;
      else if (s == "multi_label_classification") cfg.problem_type = ProblemType::kMultiLabel;
      else if (s == "regression") cfg.problem_type = ProblemType::kRegression;
      else
        throw_expected(env, "ERR_INPUT",
                       "one of 'single_label_classification', 'multi_label_classification', 'regression'",
                       "config.problemType", pt);
    }
    BertHeads heads;
    heads.pooler = is_absent(h.Get("pooler")) ? true : bool_arg(h.Get("pooler"), "heads.pooler");
    heads.classifier = is_absent(h.Get("classifier")) ? cfg.num_labels > 0 : bool_arg(h.Get("classifier"), "heads.classifier");
    heads.mlm = is_absent(h.Get("mlm")) ? false : bool_arg(h.Get("mlm"), "heads.mlm");
    heads.token_classifier =
        is_absent(h.Get("tokenClassifier")) ? false : bool_arg(h.Get("tokenClassifier"), "heads.tokenClassifier");
    if (heads.token_classifier) heads.classifier = false;
    if (!is_absent(c.Get("numSlotLabels")))
      cfg.num_slot_labels = static_cast<int>(int_arg(c.Get("numSlotLabels"), "config.numSlotLabels", 0, 1 << 20));
    heads.slots = is_absent(h.Get("slots")) ? cfg.num_slot_labels > 0 : bool_arg(h.Get("slots"), "heads.slots");
    const uint64_t seed = is_absent(info[2]) ? 0 : u64_arg(info[2], "seed");
    std::unique_ptr<Bert> fresh;
    throw_if_error(env, Bert::create(cfg, heads, seed, backend_.get(), &fresh, options_));
    bert_ = std::move(fresh);
    return env.Undefined();
  }

  Napi::Value save(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return as_promise(env, [&]() -> Napi::Value {
      check_live(env, "save");
      check_loaded(env, "save");
      const std::string dir = string_arg(info[0], "dir");
      auto job = std::make_unique<Job>(env);
      const Bert* bert = bert_.get();
      job->run = [dir, bert]() { return bert->save(dir); };
      return start(env, std::move(job));
    });
  }

  static const int32_t* int32_data(Napi::Value v, const char* what, int64_t* length, int64_t min_length) {
    Napi::Env env = v.Env();
    if (!v.IsTypedArray()) throw_expected(env, "ERR_INPUT", "an Int32Array", what, v);
    Napi::TypedArray ta = v.As<Napi::TypedArray>();
    if (ta.TypedArrayType() != napi_int32_array) throw_expected(env, "ERR_DTYPE", "an Int32Array", what, v);
    *length = static_cast<int64_t>(ta.ElementLength());
    if (*length < min_length)
      throw_expected(env, "ERR_INPUT", "an Int32Array of at least " + std::to_string(min_length) + " elements", what, v);
    return v.As<Napi::Int32Array>().Data();
  }

  // forward(ids, typeIds | null, offsets, { hidden?, pooling?, scores? })
  Napi::Value forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return as_promise(env, [&]() -> Napi::Value {
      check_live(env, "forward");
      check_loaded(env, "forward");
      int64_t T = 0, T_types = 0, n_offsets = 0;
      BertInputs in;
      in.ids = int32_data(info[0], "ids", &T, 1);
      if (!is_absent(info[1])) {
        in.type_ids = int32_data(info[1], "typeIds", &T_types, 1);
        if (T_types != T)
          throw_expected(env, "ERR_SHAPE", "an Int32Array of length " + std::to_string(T) + " (ids.length)", "typeIds",
                         info[1]);
      }
      in.offsets = int32_data(info[2], "offsets", &n_offsets, 2);
      if (n_offsets - 1 > INT32_MAX) throw_expected(env, "ERR_SHAPE", "at most 2^31-1 sequences", "offsets", info[2]);
      in.B = static_cast<int>(n_offsets - 1);
      in.T = T;

      bool want_hidden = true;
      Pooling pooling = Pooling::kNone;
      Scores scores = Scores::kNone;
      int64_t joint_intents = 0;
      Napi::Value opts = info[3];
      if (!is_absent(opts)) {
        if (!opts.IsObject()) throw_expected(env, "ERR_INPUT", "an object", "options", opts);
        Napi::Object o = opts.As<Napi::Object>();
        if (!is_absent(o.Get("hidden"))) want_hidden = bool_arg(o.Get("hidden"), "options.hidden");
        Napi::Value p = o.Get("pooling");
        if (!is_absent(p)) {
          const std::string s = p.IsString() ? p.As<Napi::String>().Utf8Value() : "";
          if (s == "cls") pooling = Pooling::kCls;
          else if (s == "mean") pooling = Pooling::kMean;
          else if (s != "none") throw_expected(env, "ERR_INPUT", "one of 'none', 'cls', 'mean'", "options.pooling", p);
        }
        Napi::Value sc = o.Get("scores");
        if (!is_absent(sc)) {
          const std::string s = sc.IsString() ? sc.As<Napi::String>().Utf8Value() : "";
          if (s == "softmax") scores = Scores::kSoftmax;
          else if (s == "sigmoid") scores = Scores::kSigmoid;
          else if (s == "joint") scores = Scores::kJoint;
          else if (s != "none") throw_expected(env, "ERR_INPUT", "one of 'none', 'softmax', 'sigmoid', 'joint'", "options.scores", sc);
        }
        if (!is_absent(o.Get("jointIntents")))
          joint_intents = int_arg(o.Get("jointIntents"), "options.jointIntents", 0, bert_->config().num_labels);
      }
      if (scores != Scores::kNone && scores != Scores::kJoint && !bert_->heads().classifier && !bert_->heads().token_classifier)
        throw_error(env, "ERR_INPUT", "Expected a model with a sequence-classification head for options.scores but received a model without one");

      // predict and embed({pooling: 'cls'}) read only the [CLS] rows of the last layer
      // (ForwardOptions::cls_only); on the CPU only, where it is verified to give the same bits.
      const bool cls_only = !want_hidden && pooling != Pooling::kMean && device_ == "cpu" && !bert_->heads().slots;
      auto job = std::make_unique<Job>(env);
      job->flops = bert_->forward_flops(in, cls_only);
      const double rate = rate_.load(std::memory_order_relaxed);  // FLOPs per microsecond
      const bool inline_run = device_ == "cpu" && outstanding_ == 0 && rate > 0 && job->flops <= inline_max_us_ * rate;
      if (!inline_run)
        for (int i = 0; i < 3; ++i)
          if (!is_absent(info[static_cast<size_t>(i)])) job->keep.push_back(Napi::Persistent(info[static_cast<size_t>(i)]));
      auto result = std::make_shared<ForwardResult>();
      Bert* bert = bert_.get();
      job->run = [bert, in, want_hidden, pooling, scores, joint_intents, cls_only, result]() {
        return run_forward(bert, in, want_hidden, pooling, scores, joint_intents, cls_only, result.get());
      };
      job->finish = [result](Napi::Env e) -> Napi::Value { return forward_outputs(e, result.get()); };
      return inline_run ? run_inline(env, std::move(job)) : start(env, std::move(job));
    });
  }

  // Worker thread: forward, then copy what was asked for out of the arena.
  static Status run_forward(Bert* bert, const BertInputs& in, bool want_hidden, Pooling pooling, Scores scores,
                            int64_t joint_intents, bool cls_only, ForwardResult* r) {
    BertOutputs out;
    ForwardOptions fo;
    fo.cls_only = cls_only;
    ELMO_RETURN_IF_ERROR(bert->forward(in, fo, &out));
    // [CLS] pooling reads the rows the pooler gathered (all cls_only computes); a model without
    // a pooler has none, and pools from the hidden rows.
    const bool cls_rows = pooling == Pooling::kCls && !out.cls.empty();
    Backend* be = bert->backend();
    const int B = in.B;
    const int64_t T = in.T, H = bert->config().hidden_size;
    r->B = B;
    r->T = T;
    r->H = H;
    const size_t row_bytes = static_cast<size_t>(H) * sizeof(float);
    // The hidden rows are needed on the host for the output or for pooling.
    HostBuffer hidden;
    if (cls_rows) {
      ELMO_RETURN_IF_ERROR(r->embeddings.allocate(static_cast<size_t>(B) * row_bytes));
      ELMO_RETURN_IF_ERROR(be->download(r->embeddings.data, out.cls, r->embeddings.bytes));
    }
    if (want_hidden || (pooling != Pooling::kNone && !cls_rows)) {
      ELMO_RETURN_IF_ERROR(hidden.allocate(static_cast<size_t>(T) * row_bytes));
      ELMO_RETURN_IF_ERROR(be->download(hidden.data, out.hidden, hidden.bytes));
    }
    if (!out.pooled.empty()) {
      ELMO_RETURN_IF_ERROR(r->pooled.allocate(static_cast<size_t>(B) * row_bytes));
      ELMO_RETURN_IF_ERROR(be->download(r->pooled.data, out.pooled, r->pooled.bytes));
    }
    if (!out.logits.empty()) {
      r->L = out.logits.shape[1];
      r->logit_rows = out.logits.shape[0];  // B, or T for a token classifier
      ELMO_RETURN_IF_ERROR(r->logits.allocate(static_cast<size_t>(r->logit_rows * r->L) * sizeof(float)));
      ELMO_RETURN_IF_ERROR(be->download(r->logits.data, out.logits, r->logits.bytes));
    }
    if (!out.slot_logits.empty()) {
      r->S = out.slot_logits.shape[1];
      ELMO_RETURN_IF_ERROR(r->slot_logits.allocate(static_cast<size_t>(T * r->S) * sizeof(float)));
      ELMO_RETURN_IF_ERROR(be->download(r->slot_logits.data, out.slot_logits, r->slot_logits.bytes));
    }
    ELMO_RETURN_IF_ERROR(be->sync());

    if (pooling != Pooling::kNone && !cls_rows) {
      // [B, H]: the [CLS] row of each sequence, or the mean of its rows (postprocess.h).
      ELMO_RETURN_IF_ERROR(r->embeddings.allocate(static_cast<size_t>(B) * row_bytes));
      if (pooling == Pooling::kCls) first_rows(r->embeddings.f32(), hidden.f32(), in.offsets, B, H);
      else mean_pool_rows(r->embeddings.f32(), hidden.f32(), in.offsets, B, H);
    }
    if (scores != Scores::kNone) {
      // Probabilities and the arg-max per row: sequences, or tokens for a token classifier.
      const int64_t L = r->L, R = r->logit_rows;
      ELMO_RETURN_IF_ERROR(r->scores.allocate(static_cast<size_t>(R * L) * sizeof(float)));
      ELMO_RETURN_IF_ERROR(r->best.allocate(static_cast<size_t>(R) * sizeof(int32_t)));
      if (scores == Scores::kJoint) score_rows_split(r->scores.f32(), r->best.i32(), r->logits.f32(), R, L, joint_intents);
      else score_rows(r->scores.f32(), r->best.i32(), r->logits.f32(), R, L, scores == Scores::kSigmoid);
    }
    if (scores == Scores::kJoint && r->S > 0) {  // per token: softmax over the slot tags
      ELMO_RETURN_IF_ERROR(r->slot_scores.allocate(static_cast<size_t>(T * r->S) * sizeof(float)));
      ELMO_RETURN_IF_ERROR(r->slot_best.allocate(static_cast<size_t>(T) * sizeof(int32_t)));
      score_rows(r->slot_scores.f32(), r->slot_best.i32(), r->slot_logits.f32(), T, r->S, false);
    }
    if (want_hidden) r->hidden = std::move(hidden);
    return Status::ok();
  }

  // JS thread: the outputs as typed arrays over their own ArrayBuffers.
  static Napi::Value forward_outputs(Napi::Env env, ForwardResult* r) {
    Napi::Object out = Napi::Object::New(env);
    auto f32 = [&](const char* key, HostBuffer& buf, size_t n) {
      if (buf.data == nullptr) return;
      out.Set(key, Napi::Float32Array::New(env, n, buf.release_to_js(env), 0));
    };
    const size_t B = static_cast<size_t>(r->B), T = static_cast<size_t>(r->T), H = static_cast<size_t>(r->H),
                 L = static_cast<size_t>(r->L);
    f32("hidden", r->hidden, T * H);
    f32("pooled", r->pooled, B * H);
    f32("logits", r->logits, static_cast<size_t>(r->logit_rows) * L);
    f32("embeddings", r->embeddings, B * H);
    const size_t R = static_cast<size_t>(r->logit_rows);
    f32("scores", r->scores, R * L);
    if (r->best.data != nullptr) out.Set("best", Napi::Int32Array::New(env, R, r->best.release_to_js(env), 0));
    const size_t S = static_cast<size_t>(r->S);
    f32("slotLogits", r->slot_logits, T * S);
    f32("slotScores", r->slot_scores, T * S);
    if (r->slot_best.data != nullptr) out.Set("slotBest", Napi::Int32Array::New(env, T, r->slot_best.release_to_js(env), 0));
    return out;
  }

  // ---- LoRA ----------------------------------------------------------------------------------
  // loraEnable(rank, alpha, seed) -> Promise<void>: fresh adapters on query and value.
  Napi::Value lora_enable(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return as_promise(env, [&]() -> Napi::Value {
      check_live(env, "loraEnable");
      check_loaded(env, "loraEnable");
      const int rank = static_cast<int>(int_arg(info[0], "rank", 1, 1 << 16));
      const float alpha = static_cast<float>(number_arg(info[1], "alpha"));
      const uint64_t seed = is_absent(info[2]) ? 0 : u64_arg(info[2], "seed");
      auto job = std::make_unique<Job>(env);
      Bert* bert = bert_.get();
      job->run = [bert, rank, alpha, seed]() { return bert->lora_enable(rank, alpha, seed); };
      return start(env, std::move(job));
    });
  }

  // loraDisable(merge) -> Promise<void>: back to the base weights, or keep the merged ones.
  Napi::Value lora_disable(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return as_promise(env, [&]() -> Napi::Value {
      check_live(env, "loraDisable");
      check_loaded(env, "loraDisable");
      const bool merge = bool_arg(info[0], "merge");
      auto job = std::make_unique<Job>(env);
      Bert* bert = bert_.get();
      job->run = [bert, merge]() { return bert->lora_disable(merge); };
      return start(env, std::move(job));
    });
  }

  // loraTensors() -> Promise<{ [name]: Float32Array }>: the adapters (when enabled) and the heads
  // after the pooler (classifier.*, slot_classifier.*), row-major copies.
  Napi::Value lora_tensors(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return as_promise(env, [&]() -> Napi::Value {
      check_live(env, "loraTensors");
      check_loaded(env, "loraTensors");
      auto job = std::make_unique<Job>(env);
      auto out = std::make_shared<std::vector<std::pair<std::string, std::vector<float>>>>();
      Bert* bert = bert_.get();
      job->run = [bert, out]() -> Status {
        Backend& be = *bert->backend();
        for (const Bert::Param& p : bert->lora_parameters()) {
          out->emplace_back(p.name, std::vector<float>(static_cast<size_t>(p.value.numel())));
          ELMO_RETURN_IF_ERROR(be.download(out->back().second.data(), p.value, out->back().second.size() * 4));
        }
        ELMO_RETURN_IF_ERROR(be.sync());
        for (const Bert::Param& p : bert->parameters()) {
          if (p.name.rfind("classifier.", 0) != 0 && p.name.rfind("slot_classifier.", 0) != 0) continue;
          out->emplace_back(p.name, std::vector<float>());
          ELMO_RETURN_IF_ERROR(bert->read_parameter(p.name, &out->back().second));
        }
        return Status::ok();
      };
      job->finish = [out](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        for (const auto& [name, v] : *out) {
          Napi::Float32Array a = Napi::Float32Array::New(e, v.size());
          std::memcpy(a.Data(), v.data(), v.size() * 4);
          o.Set(name, a);
        }
        return o;
      };
      return start(env, std::move(job));
    });
  }

  // loraLoad({ [name]: Float32Array }) -> Promise<void>: adapter tensors (".lora_" names) and
  // head parameters by name, then the adapters merged again. Names and sizes are checked first.
  Napi::Value lora_load(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return as_promise(env, [&]() -> Napi::Value {
      check_live(env, "loraLoad");
      check_loaded(env, "loraLoad");
      if (!info[0].IsObject()) throw_expected(env, "ERR_INPUT", "an object of Float32Arrays", "tensors", info[0]);
      Napi::Object o = info[0].As<Napi::Object>();
      auto items = std::make_shared<std::vector<std::pair<std::string, std::vector<float>>>>();
      Napi::Array keys = o.GetPropertyNames();
      for (uint32_t k = 0; k < keys.Length(); ++k) {
        const std::string name = keys.Get(k).As<Napi::String>().Utf8Value();
        Napi::Value v = o.Get(name);
        if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
          throw_expected(env, "ERR_INPUT", "a Float32Array", ("tensors." + name).c_str(), v);
        Napi::Float32Array a = v.As<Napi::Float32Array>();
        items->emplace_back(name, std::vector<float>(a.Data(), a.Data() + a.ElementLength()));
      }
      auto job = std::make_unique<Job>(env);
      Bert* bert = bert_.get();
      job->run = [bert, items]() -> Status {
        // Check every name and size before writing anything.
        for (const auto& [name, v] : *items) {
          bool found = false;
          int64_t n = 0;
          for (const Bert::Param& p : bert->lora_parameters())
            if (p.name == name) found = true, n = p.value.numel();
          for (const Bert::Param& p : bert->parameters())
            if (p.name == name && (name.rfind("classifier.", 0) == 0 || name.rfind("slot_classifier.", 0) == 0))
              found = true, n = p.value.numel();
          ELMO_CHECK(found, Code::kCheckpoint, "%s: not an adapter tensor or head of this model", name.c_str());
          ELMO_CHECK(n == static_cast<int64_t>(v.size()), Code::kCheckpoint, "%s: %zu values, expected %lld", name.c_str(),
                     v.size(), (long long)n);
        }
        for (const auto& [name, v] : *items) {
          if (name.find(".lora_") != std::string::npos)
            ELMO_RETURN_IF_ERROR(bert->lora_set(name, v.data(), static_cast<int64_t>(v.size())));
          else
            ELMO_RETURN_IF_ERROR(bert->write_parameter(name, v.data(), static_cast<int64_t>(v.size())));
        }
        return bert->lora_enabled() ? bert->lora_apply() : Status::ok();
      };
      return start(env, std::move(job));
    });
  }

  // loadEncoder(safetensorsPath) -> Promise<void>: the encoder's weights from another checkpoint
  // (Bert::load_encoder), on the worker.
  Napi::Value load_encoder(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return as_promise(env, [&]() -> Napi::Value {
      check_live(env, "loadEncoder");
      check_loaded(env, "loadEncoder");
      const std::string path = string_arg(info[0], "path");
      auto job = std::make_unique<Job>(env);
      Bert* bert = bert_.get();
      const bool heads = !is_absent(info[1]) && bool_arg(info[1], "heads");
      job->run = [bert, path, heads]() { return bert->load_encoder(path, heads); };
      return start(env, std::move(job));
    });
  }

  // ---- training ------------------------------------------------------------------------------
  // The model has at most one trainer. Every call below queues behind the model's other
  // operations and runs on its worker, where the trainer lives.

  // trainerCreate({ task, learningRate, beta1, beta2, eps, weightDecay, warmupSteps, totalSteps,
  //                 schedule, maxGradNorm, dropout, attentionDropout, seed }) -> Promise<void>
  // Values arrive validated by lib/ (types, ranges of the public options); Trainer::create
  // checks the combinations (task vs heads, schedule vs totalSteps).
  Napi::Value trainer_create(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return as_promise(env, [&]() -> Napi::Value {
      check_live(env, "trainer");
      check_loaded(env, "trainer");
      if (!info[0].IsObject()) throw_expected(env, "ERR_INPUT", "an object", "options", info[0]);
      Napi::Object o = info[0].As<Napi::Object>();
      TrainerOptions t;
      const std::string task = string_arg(o.Get("task"), "options.task");
      if (task == "sequence") t.task = TrainTask::kSequence;
      else if (task == "multi-label") t.task = TrainTask::kMultiLabel;
      else if (task == "regression") t.task = TrainTask::kRegression;
      else if (task == "token") t.task = TrainTask::kToken;
      else if (task == "mlm") t.task = TrainTask::kMlm;
      else if (task == "joint") t.task = TrainTask::kJoint;
      else throw_expected(env, "ERR_INPUT", "one of 'sequence', 'multi-label', 'regression', 'token', 'mlm', 'joint'", "options.task", o.Get("task"));
      if (!is_absent(o.Get("jointIntents")))
        t.joint_intents = static_cast<int>(int_arg(o.Get("jointIntents"), "options.jointIntents", 0, 1 << 20));
      if (!is_absent(o.Get("lora"))) t.lora = bool_arg(o.Get("lora"), "options.lora");
      Napi::Value lw = o.Get("lossWeights");
      if (!is_absent(lw)) {
        if (!lw.IsArray() || lw.As<Napi::Array>().Length() != 3)
          throw_expected(env, "ERR_INPUT", "an array of 3 numbers [intent, emotion, slots]", "options.lossWeights", lw);
        for (uint32_t k = 0; k < 3; ++k)
          t.loss_weights[k] = static_cast<float>(number_arg(lw.As<Napi::Array>().Get(k), "options.lossWeights[k]"));
      }
      auto f = [&](const char* key, float* dst) {
        Napi::Value v = o.Get(key);
        if (!is_absent(v)) *dst = static_cast<float>(number_arg(v, key));
      };
      auto i = [&](const char* key, int64_t* dst) {
        Napi::Value v = o.Get(key);
        if (!is_absent(v)) *dst = int_arg(v, key, 0, INT64_C(1) << 50);
      };
      f("learningRate", &t.lr);
      f("beta1", &t.beta1);
      f("beta2", &t.beta2);
      f("eps", &t.eps);
      f("weightDecay", &t.weight_decay);
      f("maxGradNorm", &t.max_grad_norm);
      f("dropout", &t.hidden_dropout);
      f("attentionDropout", &t.attention_dropout);
      i("warmupSteps", &t.warmup_steps);
      i("totalSteps", &t.total_steps);
      t.schedule = schedule_arg(o.Get("schedule"));
      if (!is_absent(o.Get("seed"))) t.seed = u64_arg(o.Get("seed"), "options.seed");
      auto job = std::make_unique<Job>(env);
      Bert* bert = bert_.get();
      job->run = [this, bert, t]() {
        trainer_.reset();
        return Trainer::create(bert, t, &trainer_);
      };
      has_trainer_ = true;
      return start(env, std::move(job));
    });
  }

  static LrSchedule schedule_arg(Napi::Value v) {
    if (is_absent(v)) return LrSchedule::kLinear;
    const std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
    if (s == "constant") return LrSchedule::kConstant;
    if (s == "linear") return LrSchedule::kLinear;
    if (s == "cosine") return LrSchedule::kCosine;
    throw_expected(v.Env(), "ERR_INPUT", "one of 'constant', 'linear', 'cosine'", "options.schedule", v);
  }

  // One packed batch { ids, typeIds?, offsets, labels } read in place (references kept).
  static TrainBatch batch_arg(Napi::Value v, const std::string& what, std::vector<Napi::Reference<Napi::Value>>* keep) {
    Napi::Env env = v.Env();
    if (!v.IsObject()) throw_expected(env, "ERR_INPUT", "an object { ids, typeIds?, offsets, labels }", what.c_str(), v);
    Napi::Object o = v.As<Napi::Object>();
    TrainBatch b;
    int64_t T = 0, T_types = 0, n_offsets = 0;
    b.in.ids = int32_data(o.Get("ids"), (what + ".ids").c_str(), &T, 1);
    if (!is_absent(o.Get("typeIds"))) {
      b.in.type_ids = int32_data(o.Get("typeIds"), (what + ".typeIds").c_str(), &T_types, 1);
      if (T_types != T)
        throw_expected(env, "ERR_SHAPE", "an Int32Array of length " + std::to_string(T) + " (ids.length)",
                       (what + ".typeIds").c_str(), o.Get("typeIds"));
    }
    b.in.offsets = int32_data(o.Get("offsets"), (what + ".offsets").c_str(), &n_offsets, 2);
    if (n_offsets - 1 > INT32_MAX) throw_expected(env, "ERR_SHAPE", "at most 2^31-1 sequences", (what + ".offsets").c_str(), o.Get("offsets"));
    b.in.B = static_cast<int>(n_offsets - 1);
    b.in.T = T;
    // The joint task's labels: intents [B] / intentProbs [B, Li], emotions [B, Le], slots [T].
    bool joint = false;
    auto f32_data = [&](const char* key, int64_t* n) -> const float* {
      Napi::Value v = o.Get(key);
      if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
        throw_expected(env, "ERR_DTYPE", "a Float32Array", (what + "." + key).c_str(), v);
      *n = static_cast<int64_t>(v.As<Napi::TypedArray>().ElementLength());
      return v.As<Napi::Float32Array>().Data();
    };
    if (!is_absent(o.Get("intents"))) b.intents = int32_data(o.Get("intents"), (what + ".intents").c_str(), &b.n_intents, 0), joint = true;
    if (!is_absent(o.Get("intentProbs"))) b.intent_probs = f32_data("intentProbs", &b.n_intent_probs), joint = true;
    if (!is_absent(o.Get("emotions"))) b.emotions = f32_data("emotions", &b.n_emotions), joint = true;
    if (!is_absent(o.Get("slots"))) b.slots = int32_data(o.Get("slots"), (what + ".slots").c_str(), &b.n_slots, 0), joint = true;
    for (const char* k : {"intents", "intentProbs", "emotions", "slots"})
      if (!is_absent(o.Get(k))) keep->push_back(Napi::Persistent(o.Get(k)));
    Napi::Value labels = o.Get("labels");
    if (joint && is_absent(labels)) {
      for (const char* k : {"ids", "typeIds", "offsets"})
        if (!is_absent(o.Get(k))) keep->push_back(Napi::Persistent(o.Get(k)));
      return b;
    }
    if (!labels.IsTypedArray())
      throw_expected(env, "ERR_INPUT", "an Int32Array or Float32Array", (what + ".labels").c_str(), labels);
    Napi::TypedArray ta = labels.As<Napi::TypedArray>();
    if (ta.TypedArrayType() == napi_int32_array) b.labels_i32 = labels.As<Napi::Int32Array>().Data();
    else if (ta.TypedArrayType() == napi_float32_array) b.labels_f32 = labels.As<Napi::Float32Array>().Data();
    else throw_expected(env, "ERR_DTYPE", "an Int32Array or Float32Array", (what + ".labels").c_str(), labels);
    b.n_labels = static_cast<int64_t>(ta.ElementLength());
    for (const char* k : {"ids", "typeIds", "offsets", "labels"})
      if (!is_absent(o.Get(k))) keep->push_back(Napi::Persistent(o.Get(k)));
    return b;
  }

  void check_trainer(Napi::Env env, const char* what) const {
    if (!has_trainer_)
      throw_error(env, "ERR_INPUT", std::string("Expected a model with a trainer for ") + what +
                                        " but received a model without one (create it with trainer())");
  }

  // trainStep(batch | batch[]) -> Promise<{ loss, gradNorm, lr, step, count }>
  // An array is one optimizer step over its micro-batches (gradient accumulation).
  Napi::Value train_step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return as_promise(env, [&]() -> Napi::Value {
      check_live(env, "trainStep");
      check_trainer(env, "trainStep");
      auto job = std::make_unique<Job>(env);
      auto batches = std::make_shared<std::vector<TrainBatch>>();
      if (info[0].IsArray()) {
        Napi::Array a = info[0].As<Napi::Array>();
        if (a.Length() == 0) throw_expected(env, "ERR_INPUT", "at least one micro-batch", "batches", info[0]);
        for (uint32_t k = 0; k < a.Length(); ++k)
          batches->push_back(batch_arg(a.Get(k), "batches[" + std::to_string(k) + "]", &job->keep));
      } else {
        batches->push_back(batch_arg(info[0], "batch", &job->keep));
      }
      auto result = std::make_shared<StepResult>();
      job->run = [this, batches, result]() {
        if (!trainer_) return Status(Code::kInput, "trainStep: the trainer could not be created");
        return trainer_->step(batches->data(), static_cast<int>(batches->size()), result.get());
      };
      job->finish = [result](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        o.Set("loss", Napi::Number::New(e, result->loss));
        o.Set("gradNorm", Napi::Number::New(e, result->grad_norm));
        o.Set("lr", Napi::Number::New(e, result->lr));
        o.Set("step", Napi::Number::New(e, static_cast<double>(result->step)));
        o.Set("count", Napi::Number::New(e, static_cast<double>(result->count)));
        Napi::Array hl = Napi::Array::New(e, 3), hc = Napi::Array::New(e, 3);
        for (uint32_t k = 0; k < 3; ++k) {
          hl.Set(k, Napi::Number::New(e, result->head_loss[k]));
          hc.Set(k, Napi::Number::New(e, static_cast<double>(result->head_count[k])));
        }
        o.Set("headLoss", hl);
        o.Set("headCount", hc);
        return o;
      };
      return start(env, std::move(job));
    });
  }

  // evalLoss(batch) -> Promise<{ loss, count }>: forward and loss, no dropout, no gradient.
  Napi::Value eval_loss(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return as_promise(env, [&]() -> Napi::Value {
      check_live(env, "evalLoss");
      check_trainer(env, "evalLoss");
      auto job = std::make_unique<Job>(env);
      const TrainBatch b = batch_arg(info[0], "batch", &job->keep);
      auto result = std::make_shared<std::pair<double, int64_t>>();
      job->run = [this, b, result]() {
        if (!trainer_) return Status(Code::kInput, "evalLoss: the trainer could not be created");
        return trainer_->eval_loss(b, &result->first, &result->second);
      };
      job->finish = [result](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        o.Set("loss", Napi::Number::New(e, result->first));
        o.Set("count", Napi::Number::New(e, static_cast<double>(result->second)));
        return o;
      };
      return start(env, std::move(job));
    });
  }

  // trainerSetSchedule(learningRate, warmupSteps, totalSteps, schedule) -> Promise<void>
  Napi::Value trainer_set_schedule(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return as_promise(env, [&]() -> Napi::Value {
      check_live(env, "trainerSetSchedule");
      check_trainer(env, "trainerSetSchedule");
      const float lr = static_cast<float>(number_arg(info[0], "learningRate"));
      const int64_t warmup = int_arg(info[1], "warmupSteps", 0, INT64_C(1) << 50);
      const int64_t total = int_arg(info[2], "totalSteps", 0, INT64_C(1) << 50);
      const LrSchedule sch = schedule_arg(info[3]);
      auto job = std::make_unique<Job>(env);
      job->run = [this, lr, warmup, total, sch]() {
        if (!trainer_) return Status(Code::kInput, "trainerSetSchedule: no trainer");
        return trainer_->set_schedule(lr, warmup, total, sch);
      };
      return start(env, std::move(job));
    });
  }

  // trainerSaveState(path) / trainerLoadState(path) -> Promise<number>: the optimizer state
  // (AdamW moments and step count; Trainer::save_state); resolves with the step count.
  Napi::Value trainer_save_state(const Napi::CallbackInfo& info) { return trainer_state(info, true); }
  Napi::Value trainer_load_state(const Napi::CallbackInfo& info) { return trainer_state(info, false); }
  Napi::Value trainer_state(const Napi::CallbackInfo& info, bool save) {
    Napi::Env env = info.Env();
    return as_promise(env, [&]() -> Napi::Value {
      check_live(env, save ? "trainerSaveState" : "trainerLoadState");
      check_trainer(env, save ? "trainerSaveState" : "trainerLoadState");
      const std::string path = string_arg(info[0], "path");
      auto job = std::make_unique<Job>(env);
      auto step = std::make_shared<int64_t>(0);
      job->run = [this, path, save, step]() {
        if (!trainer_) return Status(Code::kInput, "no trainer");
        const Status st = save ? trainer_->save_state(path) : trainer_->load_state(path);
        *step = trainer_->steps_done();
        return st;
      };
      job->finish = [step](Napi::Env e) -> Napi::Value { return Napi::Number::New(e, static_cast<double>(*step)); };
      return start(env, std::move(job));
    });
  }

  // trainerDispose() -> Promise<void>: frees the trainer and the model's training memory; the
  // model packs its weights for inference again.
  Napi::Value trainer_dispose(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return as_promise(env, [&]() -> Napi::Value {
      check_live(env, "trainerDispose");
      auto job = std::make_unique<Job>(env);
      Bert* bert = bert_.get();
      job->run = [this, bert]() {
        trainer_.reset();
        return bert ? bert->disable_training() : Status::ok();
      };
      has_trainer_ = false;
      return start(env, std::move(job));
    });
  }

  Napi::Value dispose(const Napi::CallbackInfo& info) {
    if (busy_) dispose_pending_ = true;  // torn down when the running operation settles
    else teardown();
    return info.Env().Undefined();
  }

  Napi::Value get_config(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    check_live(env, "config");
    if (!bert_) return env.Null();
    const BertConfig& c = bert_->config();
    const BertHeads& h = bert_->heads();
    Napi::Object o = Napi::Object::New(env);
    auto num = [&](const char* k, double v) { o.Set(k, Napi::Number::New(env, v)); };
    // A float field as the shortest decimal that round-trips (1e-12, not 9.99999996e-13).
    auto f2d = [](float f) {
      for (int digits = 6; digits < 9; ++digits) {
        const double d = std::stod(strformat("%.*g", digits, static_cast<double>(f)));
        if (static_cast<float>(d) == f) return d;
      }
      return static_cast<double>(f);
    };
    num("vocabSize", static_cast<double>(c.vocab_size));
    num("hiddenSize", static_cast<double>(c.hidden_size));
    num("numLayers", c.num_layers);
    num("numHeads", c.num_heads);
    num("intermediateSize", static_cast<double>(c.intermediate_size));
    num("maxPositions", static_cast<double>(c.max_position));
    num("typeVocabSize", static_cast<double>(c.type_vocab_size));
    num("layerNormEps", f2d(c.layer_norm_eps));
    num("hiddenDropout", f2d(c.hidden_dropout));
    num("attentionDropout", f2d(c.attention_dropout));
    num("initializerRange", f2d(c.initializer_range));
    num("padTokenId", c.pad_token_id);
    const bool any_classifier = h.classifier || h.token_classifier;
    num("numLabels", any_classifier ? c.num_labels : 0);
    Napi::Array labels = Napi::Array::New(env);
    if (any_classifier)
      for (int i = 0; i < c.num_labels; ++i)
        labels.Set(static_cast<uint32_t>(i),
                   Napi::String::New(env, i < static_cast<int>(c.labels.size()) ? c.labels[static_cast<size_t>(i)]
                                                                                 : "LABEL_" + std::to_string(i)));
    o.Set("labels", labels);
    o.Set("problemType", c.problem_type == ProblemType::kNone ? env.Null()
                                                               : Napi::String::New(env, problem_type_name(c.problem_type)));
    Napi::Object heads = Napi::Object::New(env);
    heads.Set("pooler", Napi::Boolean::New(env, h.pooler));
    heads.Set("classifier", Napi::Boolean::New(env, h.classifier));
    heads.Set("mlm", Napi::Boolean::New(env, h.mlm));
    heads.Set("tokenClassifier", Napi::Boolean::New(env, h.token_classifier));
    heads.Set("slots", Napi::Boolean::New(env, h.slots));
    if (bert_->lora_enabled()) {
      Napi::Object lora = Napi::Object::New(env);
      lora.Set("rank", Napi::Number::New(env, bert_->lora_rank()));
      lora.Set("alpha", Napi::Number::New(env, bert_->lora_alpha()));
      o.Set("lora", lora);
    } else {
      o.Set("lora", env.Null());
    }
    num("numSlotLabels", h.slots ? c.num_slot_labels : 0);
    o.Set("heads", heads);
    Napi::Object pruned = Napi::Object::New(env);  // config.json's elmo_pruned_heads
    for (size_t l = 0; l < c.pruned_heads.size(); ++l) {
      if (c.pruned_heads[l].empty()) continue;
      Napi::Array list = Napi::Array::New(env, c.pruned_heads[l].size());
      for (size_t i = 0; i < c.pruned_heads[l].size(); ++i)
        list.Set(static_cast<uint32_t>(i), Napi::Number::New(env, c.pruned_heads[l][i]));
      pruned.Set(std::to_string(l), list);
    }
    o.Set("prunedHeads", pruned);
    num("numParameters", static_cast<double>(bert_->num_parameters()));
    return o;
  }

  Napi::Value get_loaded(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), bert_ != nullptr); }
  Napi::Value get_busy(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), busy_); }
  Napi::Value get_disposed(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), disposed_ || dispose_pending_);
  }
  Napi::Value get_device(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), device_); }
  Napi::Value get_backend_name(const Napi::CallbackInfo& info) {
    check_live(info.Env(), "backendName");
    return Napi::String::New(info.Env(), backend_->name());
  }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Bert> bert_;  // null until load() or create()
  BertOptions options_;         // how load() and create() make the model
  std::string device_;
  bool busy_ = false;             // JS thread only
  bool has_trainer_ = false;      // JS thread only: trainerCreate was called (and not disposed)
  bool disposed_ = false;         // JS thread only
  bool dispose_pending_ = false;  // dispose() called while busy
  bool torn_down_ = false;

  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  double inline_max_us_ = 1000.0;          // forwards estimated to take at most this run inline
  std::atomic<double> rate_{0.0};          // FLOPs per microsecond of this model's forwards
  std::deque<Job*> queue_;  // guarded by mu_
  bool stop_ = false;       // guarded by mu_
  int outstanding_ = 0;     // JS thread: operations queued or running
  std::unique_ptr<Trainer> trainer_;  // worker thread only (created and used by queued jobs)
};

void call_js(Napi::Env env, Napi::Function, Model* model, Job* job) {
  if (env == nullptr || model == nullptr) return;  // environment shutting down: left behind
  model->finish_job(env, job);
}

}  // namespace

void init_model(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeModel", Model::define(env));
}

}  // namespace elmo::node
