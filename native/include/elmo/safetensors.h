// safetensors: the Hugging Face weights format.
//
//   [8 bytes: N, little-endian u64][N bytes: JSON header, may be right-padded with spaces][data]
//   header = { "<name>": {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]},
//              ..., "__metadata__": {"<key>": "<string>", ...} }
//   offsets are relative to the start of the data section.
//
// The reader maps the file read-only (mmap) and hands out views into the mapping: no second
// copy of the weights. Files are treated as hostile: the header length is bounded by the file,
// the header must be valid JSON, dtypes known, shape x dtype size equal to the byte range,
// ranges inside the data section, sorted ranges neither overlapping nor leaving gaps (as the
// reference implementation requires). Every failure is ERR_CHECKPOINT "<tensor name>: ...".
//
// The writer is atomic: it writes a temp file in the target directory, fsyncs it, renames it
// over the target and fsyncs the directory. The header is padded with spaces so the data
// section starts 8-byte aligned.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "elmo/status.h"
#include "elmo/tensor.h"

namespace elmo {

enum class StDType : uint8_t { kF64 = 0, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };
const char* st_dtype_name(StDType t);  // "F32", ...
size_t st_dtype_size(StDType t);
bool parse_st_dtype(const std::string& s, StDType* out);
// The elmo dtype of a safetensors dtype, where one exists (F32, F16, BF16, I32, I8).
bool st_to_dtype(StDType t, DType* out);
StDType dtype_to_st(DType t);

struct StTensor {
  std::string name;
  StDType dtype = StDType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;     // byte range inside the data section
  const uint8_t* data = nullptr;   // into the mapping (or the caller's buffer)
  size_t nbytes() const { return static_cast<size_t>(end - begin); }
  int64_t numel() const;
  // A Tensor view of the bytes (host memory). ERR_CHECKPOINT when the dtype has no elmo
  // equivalent or the rank exceeds kMaxDims.
  Status view(Tensor* out) const;
};

// The parsed header of a safetensors image; tensors in file order.
struct StIndex {
  std::vector<StTensor> tensors;
  std::map<std::string, std::string> metadata;
  const StTensor* find(const std::string& name) const;
};

// Limits on the header (the data section is bounded by the file itself).
constexpr uint64_t kStMaxHeaderBytes = 100u << 20;

// Parses an in-memory image (the whole file). Views point into `data`, which must outlive
// the index. ERR_CHECKPOINT on any malformation; never reads outside [data, data+size).
Status parse_safetensors(const uint8_t* data, size_t size, StIndex* out);

// A read-only mapping of a safetensors file; views stay valid while it lives.
class SafetensorsFile {
 public:
  static Status open(const std::string& path, std::unique_ptr<SafetensorsFile>* out);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const StIndex& index() const { return index_; }
  const std::vector<StTensor>& tensors() const { return index_.tensors; }
  const StTensor* find(const std::string& name) const { return index_.find(name); }
  const std::string& path() const { return path_; }
  // Hints that `t`'s bytes were consumed: the pages wholly inside its range are dropped from
  // this process's resident set (they are file-backed and clean; a later read faults them back
  // in from the file). Loading calls it as each tensor is copied, a few MB at a time, so the
  // mapping and the weights in backend memory are never both resident in full.
  void release(const StTensor& t) const;
  void release(const void* p, size_t n) const;  // any byte range of the mapping

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  StIndex index_;
};

// One tensor to write; `data` is host memory of shape x dtype bytes.
struct StWriteItem {
  std::string name;
  StDType dtype = StDType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};
// Writes tensors in the given order (names must be unique) atomically to `path`.
Status write_safetensors(const std::string& path, const std::vector<StWriteItem>& items,
                         const std::map<std::string, std::string>& metadata = {});

// Writes bytes to `path` atomically (temp file in the same directory, fsync, rename, fsync
// of the directory). Used for config.json as well.
Status write_file_atomic(const std::string& path, const void* data, size_t size);

}  // namespace elmo
