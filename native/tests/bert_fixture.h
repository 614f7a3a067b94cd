// The transformers parity fixtures (test/fixtures/bert-*, written by scripts/gen_bert_fixtures.py):
// a checkpoint, a packed batch and the float64 reference outputs as little-endian f32 files,
// described by manifest.json. Shared by the CPU and the CUDA model tests.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "elmo/bert.h"
#include "elmo/json.h"
#include "tests/harness.h"

namespace bert_fixture {

inline std::string fixtures_dir() {
  const char* e = std::getenv("ELMO_FIXTURES");
  return e ? e : "test/fixtures";
}

inline std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline std::vector<int32_t> int_array(const elmo::json::Value* v) {
  std::vector<int32_t> out;
  if (v)
    for (const auto& x : v->items()) out.push_back(static_cast<int32_t>(x.as_int()));
  return out;
}

struct Expected {
  std::vector<float> values;
  std::vector<int64_t> shape;
};

struct Fixture {
  std::string dir;
  std::vector<int32_t> ids, type_ids, offsets, mlm_positions;
  std::map<std::string, Expected> outputs;
  elmo::BertInputs inputs() const {
    elmo::BertInputs in;
    in.ids = ids.data();
    in.type_ids = type_ids.data();
    in.offsets = offsets.data();
    in.B = static_cast<int>(offsets.size()) - 1;
    in.T = static_cast<int64_t>(ids.size());
    in.mlm_positions = mlm_positions.empty() ? nullptr : mlm_positions.data();
    in.n_mlm = static_cast<int>(mlm_positions.size());
    return in;
  }
};

inline bool load_fixture(const std::string& name, Fixture* f) {
  f->dir = fixtures_dir() + "/" + name;
  elmo::json::Value m;
  elmo::Status st = elmo::json::parse(read_text(f->dir + "/manifest.json"), &m);
  if (!st.is_ok()) {
    ++elmo_test::failures();
    std::fprintf(stderr, "  %s: manifest: %s\n", name.c_str(), st.message().c_str());
    return false;
  }
  f->ids = int_array(m.find("ids"));
  f->type_ids = int_array(m.find("type_ids"));
  f->offsets = int_array(m.find("offsets"));
  f->mlm_positions = int_array(m.find("mlm_positions"));
  for (const auto& kv : m.find("outputs")->members()) {
    Expected e;
    int64_t n = 1;
    for (const auto& d : kv.second.find("shape")->items()) {
      e.shape.push_back(d.as_int());
      n *= d.as_int();
    }
    const std::string bytes = read_text(f->dir + "/" + kv.second.find("file")->as_string());
    CHECK(bytes.size() == static_cast<size_t>(n) * 4);
    e.values.resize(static_cast<size_t>(n));
    std::memcpy(e.values.data(), bytes.data(), std::min(bytes.size(), e.values.size() * 4));
    f->outputs[kv.first] = std::move(e);
  }
  return true;
}

// t's elements copied to host memory (f32).
inline std::vector<float> download(elmo::Backend& be, const elmo::Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  CHECK_OK(be.download(v.data(), t, v.size() * 4));
  return v;
}

// Every parameter of a and b is the same bits (names, sizes and values, in order). Both must hold
// their weights in the same layout (set_weights_packed).
inline void check_same_parameters(elmo::Backend& be, const elmo::Bert& a, const elmo::Bert& b) {
  CHECK(a.parameters().size() == b.parameters().size());
  for (size_t i = 0; i < a.parameters().size() && i < b.parameters().size(); ++i) {
    const auto x = download(be, a.parameters()[i].value), y = download(be, b.parameters()[i].value);
    CHECK(a.parameters()[i].name == b.parameters()[i].name && x.size() == y.size());
    if (x.size() == y.size())
      elmo_test::bit_equal(a.parameters()[i].name.c_str(), x.data(), y.data(), static_cast<int64_t>(x.size()));
  }
}

}  // namespace bert_fixture
