// A small strict JSON parser (RFC 8259) for config.json and safetensors headers, and a
// writer helper for strings. Hostile input is expected: nesting depth and input size are
// bounded, every error names the byte position, duplicate object keys are refused.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "elmo/status.h"

namespace elmo::json {

enum class Type : uint8_t { kNull = 0, kBool, kNumber, kString, kArray, kObject };
const char* type_name(Type t);  // "null", "bool", ...

class Value {
 public:
  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_number() const { return type_ == Type::kNumber; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }
  // A number written without fraction or exponent that fits int64 exactly.
  bool is_int() const { return type_ == Type::kNumber && is_int_; }

  bool as_bool() const { return bool_; }
  double as_double() const { return num_; }
  int64_t as_int() const { return int_; }  // valid when is_int()
  const std::string& as_string() const { return str_; }
  const std::vector<Value>& items() const { return items_; }                          // array
  const std::vector<std::pair<std::string, Value>>& members() const { return members_; }  // object, file order
  size_t size() const { return type_ == Type::kArray ? items_.size() : members_.size(); }
  // Object member by key, nullptr when absent (or when this is not an object).
  const Value* find(const std::string& key) const;

  static Value null() { return Value(); }
  static Value boolean(bool b);
  static Value number(double d);
  static Value integer(int64_t i);
  static Value string(std::string s);
  static Value array(std::vector<Value> items);
  static Value object(std::vector<std::pair<std::string, Value>> members);

 private:
  friend class Parser;
  Type type_ = Type::kNull;
  bool bool_ = false;
  bool is_int_ = false;
  double num_ = 0;
  int64_t int_ = 0;
  std::string str_;
  std::vector<Value> items_;
  std::vector<std::pair<std::string, Value>> members_;
};

struct Limits {
  size_t max_bytes = size_t(64) << 20;  // whole document
  int max_depth = 64;                   // nested arrays/objects
};

// Parses exactly one JSON value (surrounded by optional whitespace). Errors are
// ERR_INPUT "json: <what> at byte <n>"; callers reading checkpoints re-code them.
Status parse(const char* data, size_t size, Value* out, const Limits& limits = {});
inline Status parse(const std::string& text, Value* out, const Limits& limits = {}) {
  return parse(text.data(), text.size(), out, limits);
}

// Serialization: compact unless indent > 0. Numbers that are integers print without a
// fraction; others with enough digits to round-trip a double. Non-finite numbers -> null.
std::string dump(const Value& v, int indent = 0);
// Appends s as a quoted JSON string (escapes ", \, control characters).
void append_quoted(std::string* out, const std::string& s);

}  // namespace elmo::json
