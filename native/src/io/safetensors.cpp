// safetensors reader (mmap, hostile-file validation) and atomic writer; see elmo/safetensors.h.
#include "elmo/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

#include "elmo/json.h"

namespace elmo {

namespace {
struct DTypeInfo {
  StDType t;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {StDType::kF64, "F64", 8},  {StDType::kF32, "F32", 4}, {StDType::kF16, "F16", 2}, {StDType::kBF16, "BF16", 2},
    {StDType::kI64, "I64", 8},  {StDType::kI32, "I32", 4}, {StDType::kI16, "I16", 2}, {StDType::kI8, "I8", 1},
    {StDType::kU8, "U8", 1},    {StDType::kBool, "BOOL", 1},
};

Status ckpt(const std::string& name, const std::string& msg) { return Status(Code::kCheckpoint, name + ": " + msg); }
}  // namespace

const char* st_dtype_name(StDType t) {
  for (const auto& d : kDTypes)
    if (d.t == t) return d.name;
  return "?";
}
size_t st_dtype_size(StDType t) {
  for (const auto& d : kDTypes)
    if (d.t == t) return d.size;
  return 0;
}
bool parse_st_dtype(const std::string& s, StDType* out) {
  for (const auto& d : kDTypes)
    if (s == d.name) {
      *out = d.t;
      return true;
    }
  return false;
}
bool st_to_dtype(StDType t, DType* out) {
  switch (t) {
    case StDType::kF32: *out = DType::kF32; return true;
    case StDType::kF16: *out = DType::kF16; return true;
    case StDType::kBF16: *out = DType::kBF16; return true;
    case StDType::kI32: *out = DType::kI32; return true;
    case StDType::kI8: *out = DType::kI8; return true;
    default: return false;
  }
}
StDType dtype_to_st(DType t) {
  switch (t) {
    case DType::kF32: return StDType::kF32;
    case DType::kBF16: return StDType::kBF16;
    case DType::kF16: return StDType::kF16;
    case DType::kI32: return StDType::kI32;
    case DType::kI8: return StDType::kI8;
  }
  return StDType::kF32;
}

int64_t StTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Status StTensor::view(Tensor* out) const {
  DType t;
  if (!st_to_dtype(dtype, &t)) return ckpt(name, strformat("dtype %s has no tensor equivalent", st_dtype_name(dtype)));
  if (shape.size() > static_cast<size_t>(kMaxDims))
    return ckpt(name, strformat("rank %zu exceeds %d", shape.size(), kMaxDims));
  Tensor v;
  v.data = const_cast<uint8_t*>(data);
  v.dtype = t;
  v.device = Device::kCpu;
  v.ndim = static_cast<int>(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) v.shape[i] = shape[i];
  if (shape.empty()) {  // a scalar: one element
    v.ndim = 1;
    v.shape[0] = 1;
  }
  *out = v;
  return Status::ok();
}

const StTensor* StIndex::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

Status parse_safetensors(const uint8_t* data, size_t size, StIndex* out) {
  const std::string file = "safetensors";
  if (data == nullptr || size < 8) return ckpt(file, strformat("file of %zu bytes is too short for the header length", size));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > kStMaxHeaderBytes)
    return ckpt(file, strformat("header length %llu exceeds the limit of %llu bytes", (unsigned long long)n,
                                (unsigned long long)kStMaxHeaderBytes));
  if (n > size - 8)
    return ckpt(file, strformat("header length %llu exceeds the %zu bytes after the length field", (unsigned long long)n,
                                size - 8));
  if (n < 2 || data[8] != '{') return ckpt(file, "header is not a JSON object");
  json::Value root;
  json::Limits limits;
  limits.max_bytes = kStMaxHeaderBytes;
  limits.max_depth = 8;
  Status st = json::parse(reinterpret_cast<const char*>(data + 8), static_cast<size_t>(n), &root, limits);
  if (!st) return ckpt(file, "header: " + st.message());
  if (!root.is_object()) return ckpt(file, "header is not a JSON object");

  const uint8_t* base = data + 8 + n;
  const uint64_t data_size = size - 8 - n;
  StIndex index;
  for (const auto& m : root.members()) {
    const std::string& name = m.first;
    const json::Value& v = m.second;
    if (name == "__metadata__") {
      if (!v.is_object()) return ckpt(name, "must be an object of strings");
      for (const auto& kv : v.members()) {
        if (!kv.second.is_string()) return ckpt(name, "value of \"" + kv.first + "\" is not a string");
        index.metadata[kv.first] = kv.second.as_string();
      }
      continue;
    }
    if (name.empty()) return ckpt("(empty name)", "tensor name is empty");
    if (!v.is_object()) return ckpt(name, "entry is not an object");
    StTensor t;
    t.name = name;
    const json::Value* dt = v.find("dtype");
    const json::Value* shape = v.find("shape");
    const json::Value* offs = v.find("data_offsets");
    if (!dt || !shape || !offs) return ckpt(name, "entry needs dtype, shape and data_offsets");
    if (v.size() != 3) return ckpt(name, "entry has keys other than dtype, shape and data_offsets");
    if (!dt->is_string() || !parse_st_dtype(dt->as_string(), &t.dtype))
      return ckpt(name, dt->is_string() ? "unknown dtype \"" + dt->as_string().substr(0, 16) + "\"" : "dtype is not a string");
    if (!shape->is_array()) return ckpt(name, "shape is not an array");
    if (shape->size() > 8) return ckpt(name, strformat("rank %zu is too large", shape->size()));
    // numel with overflow checks: every dim and the product stay below 2^62 / dtype size.
    const uint64_t esize = st_dtype_size(t.dtype);
    uint64_t bytes = esize;
    for (const json::Value& d : shape->items()) {
      if (!d.is_int() || d.as_int() < 0) return ckpt(name, "shape entries must be non-negative integers");
      const uint64_t dim = static_cast<uint64_t>(d.as_int());
      if (dim != 0 && bytes > (uint64_t(1) << 62) / dim) return ckpt(name, "shape is too large");
      bytes *= dim;
      t.shape.push_back(d.as_int());
    }
    if (!offs->is_array() || offs->size() != 2 || !offs->items()[0].is_int() || !offs->items()[1].is_int() ||
        offs->items()[0].as_int() < 0 || offs->items()[1].as_int() < 0)
      return ckpt(name, "data_offsets must be [begin, end] non-negative integers");
    t.begin = static_cast<uint64_t>(offs->items()[0].as_int());
    t.end = static_cast<uint64_t>(offs->items()[1].as_int());
    if (t.end < t.begin)
      return ckpt(name, strformat("data_offsets [%llu, %llu] end before begin", (unsigned long long)t.begin,
                                  (unsigned long long)t.end));
    if (t.end > data_size)
      return ckpt(name, strformat("data_offsets [%llu, %llu] outside the %llu-byte data section",
                                  (unsigned long long)t.begin, (unsigned long long)t.end, (unsigned long long)data_size));
    if (t.end - t.begin != bytes)
      return ckpt(name, strformat("shape x %s is %llu bytes but data_offsets span %llu", st_dtype_name(t.dtype),
                                  (unsigned long long)bytes, (unsigned long long)(t.end - t.begin)));
    t.data = base + t.begin;
    index.tensors.push_back(std::move(t));
  }
  // Sorted by range, the tensors must tile the data section exactly.
  std::vector<const StTensor*> order;
  for (const auto& t : index.tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const StTensor* a, const StTensor* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t pos = 0;
  for (const StTensor* t : order) {
    if (t->begin < pos) return ckpt(t->name, strformat("data_offsets [%llu, %llu] overlap another tensor",
                                                       (unsigned long long)t->begin, (unsigned long long)t->end));
    if (t->begin > pos) return ckpt(t->name, strformat("gap of %llu bytes before data_offsets [%llu, %llu]",
                                                       (unsigned long long)(t->begin - pos),
                                                       (unsigned long long)t->begin, (unsigned long long)t->end));
    pos = t->end;
  }
  if (pos != data_size)
    return ckpt(file, strformat("data section has %llu bytes but tensors cover %llu", (unsigned long long)data_size,
                                (unsigned long long)pos));
  *out = std::move(index);
  return Status::ok();
}

Status SafetensorsFile::open(const std::string& path, std::unique_ptr<SafetensorsFile>* out) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ckpt(path, strformat("cannot open: %s", std::strerror(errno)));
  struct stat sb;
  if (::fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    ::close(fd);
    return ckpt(path, "not a regular file");
  }
  const size_t size = static_cast<size_t>(sb.st_size);
  if (size < 8) {
    ::close(fd);
    return ckpt(path, strformat("file of %zu bytes is too short for the header length", size));
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return ckpt(path, strformat("mmap failed: %s", std::strerror(errno)));
  std::unique_ptr<SafetensorsFile> f(new (std::nothrow) SafetensorsFile());
  if (!f) {
    ::munmap(map, size);
    return Status(Code::kOom, "safetensors: out of memory");
  }
  f->path_ = path;
  f->map_ = map;
  f->size_ = size;
  Status st = parse_safetensors(static_cast<const uint8_t*>(map), size, &f->index_);
  if (!st) return Status(st.code(), path + ": " + st.message());
  *out = std::move(f);
  return Status::ok();
}

void SafetensorsFile::release(const StTensor& t) const { release(t.data, t.nbytes()); }

void SafetensorsFile::release(const void* p, size_t n) const {
  if (!map_ || p == nullptr) return;
  const uintptr_t base = reinterpret_cast<uintptr_t>(map_);
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p), end = begin + n;
  if (begin < base || end > base + size_) return;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t lo = (begin + page - 1) / page * page, hi = end / page * page;
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, size_);
}

namespace {
Status write_all(int fd, const void* p, size_t n, const std::string& path) {
  const auto* c = static_cast<const uint8_t*>(p);
  while (n > 0) {
    const ssize_t w = ::write(fd, c, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return ckpt(path, strformat("write failed: %s", std::strerror(errno)));
    }
    c += w;
    n -= static_cast<size_t>(w);
  }
  return Status::ok();
}
std::string dir_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}
}  // namespace

// Writes header + tensor bytes through one callback-free path shared with config.json.
static Status write_parts_atomic(const std::string& path, const std::vector<std::pair<const void*, size_t>>& parts) {
  std::string tmpl = dir_of(path) + "/.elmo-tmp-XXXXXX";
  std::vector<char> name(tmpl.begin(), tmpl.end());
  name.push_back('\0');
  const int fd = ::mkstemp(name.data());
  if (fd < 0) return ckpt(path, strformat("cannot create a temp file next to it: %s", std::strerror(errno)));
  const std::string tmp(name.data());
  Status st;
  for (const auto& p : parts) {
    st = write_all(fd, p.first, p.second, path);
    if (!st) break;
  }
  if (st && ::fchmod(fd, 0644) != 0) st = ckpt(path, strformat("fchmod failed: %s", std::strerror(errno)));
  if (st && ::fsync(fd) != 0) st = ckpt(path, strformat("fsync failed: %s", std::strerror(errno)));
  if (::close(fd) != 0 && st) st = ckpt(path, strformat("close failed: %s", std::strerror(errno)));
  if (st && ::rename(tmp.c_str(), path.c_str()) != 0) st = ckpt(path, strformat("rename failed: %s", std::strerror(errno)));
  if (!st) {
    ::unlink(tmp.c_str());
    return st;
  }
  const int dfd = ::open(dir_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);  // best effort: the rename is durable once the directory is synced
    ::close(dfd);
  }
  return Status::ok();
}

Status write_file_atomic(const std::string& path, const void* data, size_t size) {
  return write_parts_atomic(path, {{data, size}});
}

Status write_safetensors(const std::string& path, const std::vector<StWriteItem>& items,
                         const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, json::Value>> members;
  if (!metadata.empty()) {
    std::vector<std::pair<std::string, json::Value>> md;
    for (const auto& kv : metadata) md.emplace_back(kv.first, json::Value::string(kv.second));
    members.emplace_back("__metadata__", json::Value::object(std::move(md)));
  }
  std::vector<std::pair<const void*, size_t>> parts;
  uint64_t offset = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const StWriteItem& it = items[i];
    if (it.name.empty() || it.name == "__metadata__") return ckpt(path, "invalid tensor name \"" + it.name + "\"");
    for (size_t j = 0; j < i; ++j)
      if (items[j].name == it.name) return ckpt(it.name, "written twice");
    uint64_t bytes = st_dtype_size(it.dtype);
    std::vector<json::Value> shape;
    for (int64_t d : it.shape) {
      if (d < 0) return ckpt(it.name, "negative dimension");
      bytes *= static_cast<uint64_t>(d);
      shape.push_back(json::Value::integer(d));
    }
    if (bytes && !it.data) return ckpt(it.name, "no data");
    std::vector<json::Value> offs{json::Value::integer(static_cast<int64_t>(offset)),
                                  json::Value::integer(static_cast<int64_t>(offset + bytes))};
    members.emplace_back(it.name, json::Value::object({{"dtype", json::Value::string(st_dtype_name(it.dtype))},
                                                       {"shape", json::Value::array(std::move(shape))},
                                                       {"data_offsets", json::Value::array(std::move(offs))}}));
    parts.emplace_back(it.data, static_cast<size_t>(bytes));
    offset += bytes;
  }
  std::string header = json::dump(json::Value::object(std::move(members)));
  header.append((8 - header.size() % 8) % 8, ' ');  // data section starts 8-byte aligned
  uint8_t len[8];
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  parts.insert(parts.begin(), {{len, 8}, {header.data(), header.size()}});
  return write_parts_atomic(path, parts);
}

}  // namespace elmo
