#include "elmo/status.h"

#include <cstdarg>
#include <cstdio>

namespace elmo {

const char* code_name(Code c) {
  switch (c) {
    case Code::kOk: return "OK";
    case Code::kShape: return "ERR_SHAPE";
    case Code::kDType: return "ERR_DTYPE";
    case Code::kOom: return "ERR_OOM";
    case Code::kCuda: return "ERR_CUDA";
    case Code::kCheckpoint: return "ERR_CHECKPOINT";
    case Code::kInput: return "ERR_INPUT";
    case Code::kUnsupported: return "ERR_UNSUPPORTED";
    case Code::kNonFinite: return "ERR_NONFINITE";
  }
  return "ERR_UNKNOWN";
}

std::string strformat(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char buf[512];
  int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return std::string(fmt);
  if (static_cast<size_t>(n) < sizeof buf) return std::string(buf, static_cast<size_t>(n));
  std::string s(static_cast<size_t>(n) + 1, '\0');
  va_start(ap, fmt);
  std::vsnprintf(&s[0], s.size(), fmt, ap);
  va_end(ap);
  s.resize(static_cast<size_t>(n));
  return s;
}

}  // namespace elmo
