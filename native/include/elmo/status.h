// Status: how native/ and cuda/ report failure. Never exit(), never throw across the
// library boundary. bindings/ maps a Status code to a JS error class with the same code.
#pragma once

#include <string>
#include <utility>

namespace elmo {

enum class Code : int {
  kOk = 0,
  kShape,       // ERR_SHAPE: tensor shapes disagree with each other or with the dims
  kDType,       // ERR_DTYPE: a tensor has a dtype the op does not take
  kOom,         // ERR_OOM: an allocation failed
  kCuda,        // ERR_CUDA: a CUDA call or launch failed
  kCheckpoint,  // ERR_CHECKPOINT: a weights/config file is malformed
  kInput,       // ERR_INPUT: any other bad argument (null pointer, bad option value)
  kUnsupported, // ERR_UNSUPPORTED: the backend does not implement this op/variant
  kNonFinite,   // ERR_NONFINITE: a training step met a NaN or infinite loss or gradient
};

const char* code_name(Code c);  // "ERR_SHAPE", ...

class Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status ok() { return Status(); }
  bool is_ok() const { return code_ == Code::kOk; }
  explicit operator bool() const { return is_ok(); }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

// printf-style message builder for errors.
std::string strformat(const char* fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

inline Status shape_error(const std::string& m) { return Status(Code::kShape, m); }
inline Status dtype_error(const std::string& m) { return Status(Code::kDType, m); }
inline Status input_error(const std::string& m) { return Status(Code::kInput, m); }

}  // namespace elmo

// Propagate a non-ok Status to the caller.
#define ELMO_RETURN_IF_ERROR(expr)          \
  do {                                      \
    ::elmo::Status _st = (expr);            \
    if (!_st.is_ok()) return _st;           \
  } while (0)

// Check a condition; on failure return a Status with the given code and formatted message.
#define ELMO_CHECK(cond, code, ...)                                        \
  do {                                                                     \
    if (!(cond)) return ::elmo::Status((code), ::elmo::strformat(__VA_ARGS__)); \
  } while (0)
