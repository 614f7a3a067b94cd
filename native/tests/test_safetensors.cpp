// safetensors: write -> mmap read round trip, and one test per malformed-file case.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "elmo/safetensors.h"
#include "harness.h"

using elmo::Code;
using elmo::StDType;

static std::string tmp_dir() {
  char tmpl[] = "/tmp/elmo-st-XXXXXX";
  const char* d = mkdtemp(tmpl);
  CHECK(d != nullptr);
  return d ? d : "/tmp";
}

// Builds an image from a header string and a data section.
static std::vector<uint8_t> image(const std::string& header, size_t data_bytes, uint64_t declared = UINT64_MAX) {
  const uint64_t n = declared == UINT64_MAX ? header.size() : declared;
  std::vector<uint8_t> img(8);
  for (int i = 0; i < 8; ++i) img[i] = static_cast<uint8_t>(n >> (8 * i));
  img.insert(img.end(), header.begin(), header.end());
  for (size_t i = 0; i < data_bytes; ++i) img.push_back(static_cast<uint8_t>(i * 7 + 1));
  return img;
}
static elmo::Status parse(const std::vector<uint8_t>& img, elmo::StIndex* idx = nullptr) {
  elmo::StIndex local;
  return elmo::parse_safetensors(img.data(), img.size(), idx ? idx : &local);
}
static void expect_bad(const std::string& header, size_t data_bytes, const char* needle) {
  elmo::Status st = parse(image(header, data_bytes));
  CHECK(st.code() == Code::kCheckpoint);
  if (st.message().find(needle) == std::string::npos) {
    ++elmo_test::failures();
    std::fprintf(stderr, "  header %s: message \"%s\" lacks \"%s\"\n", header.c_str(), st.message().c_str(), needle);
  }
}

TEST_CASE(write_then_mmap_read) {
  const std::string dir = tmp_dir();
  const std::string path = dir + "/m.safetensors";
  std::vector<float> a = elmo_test::random_vec(3 * 5, 1);
  std::vector<uint16_t> b{1, 2, 3, 0xffff, 0x3c00};
  std::vector<int32_t> c{7, -8};
  std::vector<int64_t> d{1, 2, 3};
  std::vector<elmo::StWriteItem> items{
      {"w.a", StDType::kF32, {3, 5}, a.data()},
      {"w.b", StDType::kF16, {5}, b.data()},
      {"w.c", StDType::kI32, {2}, c.data()},
      {"w.d", StDType::kI64, {1, 3}, d.data()},
      {"w.empty", StDType::kF32, {0, 4}, nullptr},
  };
  CHECK_OK(elmo::write_safetensors(path, items, {{"format", "pt"}}));
  std::unique_ptr<elmo::SafetensorsFile> f;
  CHECK_OK(elmo::SafetensorsFile::open(path, &f));
  if (!f) return;
  CHECK(f->tensors().size() == 5);
  CHECK(f->index().metadata.at("format") == "pt");
  const elmo::StTensor* ta = f->find("w.a");
  CHECK(ta && ta->dtype == StDType::kF32 && ta->shape == std::vector<int64_t>({3, 5}));
  if (ta) {
    CHECK(reinterpret_cast<uintptr_t>(ta->data) % 8 == 0);  // header padding keeps data aligned
    elmo::Tensor v;
    CHECK_OK(ta->view(&v));
    CHECK(v.ndim == 2 && v.shape[0] == 3 && v.shape[1] == 5 && v.dtype == elmo::DType::kF32);
    elmo_test::bit_equal("w.a", v.f32(), a.data(), 15);
  }
  const elmo::StTensor* td = f->find("w.d");
  CHECK(td && td->nbytes() == 24 && std::memcmp(td->data, d.data(), 24) == 0);
  elmo::Tensor v;
  if (td) CHECK_STATUS(td->view(&v), Code::kCheckpoint);  // I64 has no tensor dtype
  CHECK(f->find("w.empty") && f->find("w.empty")->nbytes() == 0);
  CHECK(f->find("nope") == nullptr);
  // Header length is a multiple of 8.
  FILE* fp = std::fopen(path.c_str(), "rb");
  uint64_t n = 0;
  CHECK(fp && std::fread(&n, 8, 1, fp) == 1);
  if (fp) std::fclose(fp);
  CHECK(n % 8 == 0);
  // No temp files are left behind.
  std::unique_ptr<elmo::SafetensorsFile> g;
  CHECK_OK(elmo::write_safetensors(path, {{"x", StDType::kF32, {1}, a.data()}}));  // overwrite
  CHECK_OK(elmo::SafetensorsFile::open(path, &g));
  CHECK(g && g->tensors().size() == 1);
  CHECK(std::system(("test $(ls -A " + dir + " | wc -l) -eq 1").c_str()) == 0);
  std::system(("rm -rf " + dir).c_str());
}

// release() drops a consumed tensor's pages; the bytes read back the same afterwards.
TEST_CASE(release_keeps_data_readable) {
  const std::string dir = tmp_dir();
  const std::string path = dir + "/big.safetensors";
  const int64_t n = 3 * 4096 + 17;  // several pages, not page-aligned
  std::vector<float> a = elmo_test::random_vec(n, 3), b = elmo_test::random_vec(n, 4);
  CHECK_OK(elmo::write_safetensors(path, {{"a", StDType::kF32, {n}, a.data()}, {"b", StDType::kF32, {n}, b.data()}}));
  std::unique_ptr<elmo::SafetensorsFile> f;
  CHECK_OK(elmo::SafetensorsFile::open(path, &f));
  if (!f) return;
  const elmo::StTensor* ta = f->find("a");
  const elmo::StTensor* tb = f->find("b");
  CHECK(ta && tb);
  if (!ta || !tb) return;
  CHECK(std::memcmp(ta->data, a.data(), n * 4) == 0);
  f->release(*ta);
  CHECK(std::memcmp(ta->data, a.data(), n * 4) == 0);  // faulted back in from the file
  CHECK(std::memcmp(tb->data, b.data(), n * 4) == 0);  // the neighbour is untouched
  f->release(*tb);
  f->release(*tb);  // idempotent
  CHECK(std::memcmp(tb->data, b.data(), n * 4) == 0);
  std::system(("rm -rf " + dir).c_str());
}

TEST_CASE(writer_rejects_bad_items) {
  const std::string dir = tmp_dir();
  float x = 1;
  CHECK_STATUS(elmo::write_safetensors(dir + "/a", {{"a", StDType::kF32, {1}, &x}, {"a", StDType::kF32, {1}, &x}}),
               Code::kCheckpoint);
  CHECK_STATUS(elmo::write_safetensors(dir + "/a", {{"__metadata__", StDType::kF32, {1}, &x}}), Code::kCheckpoint);
  CHECK_STATUS(elmo::write_safetensors(dir + "/a", {{"a", StDType::kF32, {-1}, &x}}), Code::kCheckpoint);
  CHECK_STATUS(elmo::write_safetensors("/nonexistent-dir/x", {{"a", StDType::kF32, {1}, &x}}), Code::kCheckpoint);
  std::system(("rm -rf " + dir).c_str());
}

TEST_CASE(open_errors) {
  std::unique_ptr<elmo::SafetensorsFile> f;
  CHECK_STATUS(elmo::SafetensorsFile::open("/nonexistent/x.safetensors", &f), Code::kCheckpoint);
  CHECK_STATUS(elmo::SafetensorsFile::open("/tmp", &f), Code::kCheckpoint);
  const std::string dir = tmp_dir();
  FILE* fp = std::fopen((dir + "/short").c_str(), "wb");
  std::fwrite("abc", 1, 3, fp);
  std::fclose(fp);
  CHECK_STATUS(elmo::SafetensorsFile::open(dir + "/short", &f), Code::kCheckpoint);
  fp = std::fopen((dir + "/empty").c_str(), "wb");
  std::fclose(fp);
  CHECK_STATUS(elmo::SafetensorsFile::open(dir + "/empty", &f), Code::kCheckpoint);
  CHECK(!f);
  std::system(("rm -rf " + dir).c_str());
}

TEST_CASE(valid_edge_cases) {
  elmo::StIndex idx;
  CHECK_OK(parse(image("{}", 0), &idx));
  CHECK(idx.tensors.empty());
  CHECK_OK(parse(image("{\"__metadata__\":{\"a\":\"b\"}}    ", 0), &idx));  // trailing space padding
  CHECK_OK(parse(image("{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4), &idx));  // scalar
  CHECK(idx.tensors.size() == 1 && idx.tensors[0].numel() == 1);
  // Out of file order is fine as long as the ranges tile the data.
  CHECK_OK(parse(image("{\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[4,8]},"
                       "\"a\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                       8),
                 &idx));
  CHECK(idx.tensors[0].name == "b" && idx.tensors[0].data == idx.tensors[1].data + 4);
}

TEST_CASE(malformed_headers) {
  CHECK_STATUS(elmo::parse_safetensors(nullptr, 0, nullptr), Code::kCheckpoint);
  CHECK_STATUS(parse(std::vector<uint8_t>(7, 0)), Code::kCheckpoint);
  // header length beyond the file / beyond the limit
  CHECK(parse(image("{}", 0, 3)).code() == Code::kCheckpoint);
  CHECK(parse(image("{}", 0, UINT64_MAX - 1)).message().find("exceeds") != std::string::npos);
  CHECK(parse(image("{}", 0, uint64_t(1) << 40)).message().find("exceeds") != std::string::npos);
  expect_bad("[]", 0, "not a JSON object");
  expect_bad("{\"a\":", 0, "json");
  expect_bad("{\"a\":1,\"a\":2}", 0, "duplicate");
  expect_bad("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} junk", 4, "trailing");
  expect_bad("{\"x\":5}", 0, "x: entry is not an object");
  expect_bad("{\"x\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "x: entry needs");
  expect_bad("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"z\":1}}", 4, "x: entry has keys");
  expect_bad("{\"x\":{\"dtype\":\"F8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "x: unknown dtype");
  expect_bad("{\"x\":{\"dtype\":3,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "x: dtype is not a string");
  expect_bad("{\"x\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4, "x: shape is not an array");
  expect_bad("{\"x\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "x: shape entries");
  expect_bad("{\"x\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "x: shape entries");
  expect_bad("{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4,
             "x: shape is too large");
  expect_bad("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "x: data_offsets must be");
  expect_bad("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "x: data_offsets must be");
  expect_bad("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "x: data_offsets [4, 0] end before");
  expect_bad("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "x: data_offsets [0, 8] outside");
  expect_bad("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "x: shape x F32 is 8 bytes");
  expect_bad("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
             "\"y\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}",
             8, "y: data_offsets [2, 6] overlap");
  expect_bad("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "x: gap of 4 bytes");
  expect_bad("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "tensors cover 4");
  expect_bad("{\"__metadata__\":{\"a\":1}}", 0, "__metadata__: value of \"a\"");
  expect_bad("{\"__metadata__\":[]}", 0, "__metadata__: must be an object");
  expect_bad("{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "name is empty");
  expect_bad("{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "x: rank 9");
  // A rank the Tensor view cannot hold parses, but refuses a view.
  elmo::StIndex idx;
  CHECK_OK(parse(image("{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4), &idx));
  elmo::Tensor v;
  if (!idx.tensors.empty()) CHECK_STATUS(idx.tensors[0].view(&v), Code::kCheckpoint);
}

int main() { return elmo_test::run_all_tests(); }
