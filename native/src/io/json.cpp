// Strict recursive-descent JSON parser with bounded depth and size; see elmo/json.h.
#include "elmo/json.h"

#include <charconv>
#include <cmath>
#include <cstdio>

namespace elmo::json {

const char* type_name(Type t) {
  switch (t) {
    case Type::kNull: return "null";
    case Type::kBool: return "bool";
    case Type::kNumber: return "number";
    case Type::kString: return "string";
    case Type::kArray: return "array";
    case Type::kObject: return "object";
  }
  return "?";
}

const Value* Value::find(const std::string& key) const {
  if (type_ != Type::kObject) return nullptr;
  for (const auto& m : members_)
    if (m.first == key) return &m.second;
  return nullptr;
}

Value Value::boolean(bool b) {
  Value v;
  v.type_ = Type::kBool;
  v.bool_ = b;
  return v;
}
Value Value::number(double d) {
  Value v;
  v.type_ = Type::kNumber;
  v.num_ = d;
  if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.2e18) {
    v.is_int_ = true;
    v.int_ = static_cast<int64_t>(d);
  }
  return v;
}
Value Value::integer(int64_t i) {
  Value v;
  v.type_ = Type::kNumber;
  v.num_ = static_cast<double>(i);
  v.is_int_ = true;
  v.int_ = i;
  return v;
}
Value Value::string(std::string s) {
  Value v;
  v.type_ = Type::kString;
  v.str_ = std::move(s);
  return v;
}
Value Value::array(std::vector<Value> items) {
  Value v;
  v.type_ = Type::kArray;
  v.items_ = std::move(items);
  return v;
}
Value Value::object(std::vector<std::pair<std::string, Value>> members) {
  Value v;
  v.type_ = Type::kObject;
  v.members_ = std::move(members);
  return v;
}

class Parser {
 public:
  Parser(const char* p, size_t n, const Limits& l) : p_(p), n_(n), limits_(l) {}

  Status parse_document(Value* out) {
    if (n_ > limits_.max_bytes)
      return input_error(strformat("json: document of %zu bytes exceeds the limit of %zu", n_, limits_.max_bytes));
    skip_ws();
    ELMO_RETURN_IF_ERROR(parse_value(out, 0));
    skip_ws();
    if (i_ != n_) return error("unexpected trailing characters");
    return Status::ok();
  }

 private:
  Status error(const char* what) const { return input_error(strformat("json: %s at byte %zu", what, i_)); }
  bool eof() const { return i_ >= n_; }
  char peek() const { return p_[i_]; }
  void skip_ws() {
    while (i_ < n_ && (p_[i_] == ' ' || p_[i_] == '\t' || p_[i_] == '\n' || p_[i_] == '\r')) ++i_;
  }
  bool consume_literal(const char* lit) {
    size_t k = 0;
    while (lit[k]) {
      if (i_ + k >= n_ || p_[i_ + k] != lit[k]) return false;
      ++k;
    }
    i_ += k;
    return true;
  }

  Status parse_value(Value* out, int depth) {
    if (eof()) return error("unexpected end of input, expected a value");
    const char c = peek();
    switch (c) {
      case '{': return parse_object(out, depth + 1);
      case '[': return parse_array(out, depth + 1);
      case '"': out->type_ = Type::kString; return parse_string(&out->str_);
      case 't':
        if (!consume_literal("true")) return error("invalid literal");
        *out = Value::boolean(true);
        return Status::ok();
      case 'f':
        if (!consume_literal("false")) return error("invalid literal");
        *out = Value::boolean(false);
        return Status::ok();
      case 'n':
        if (!consume_literal("null")) return error("invalid literal");
        *out = Value();
        return Status::ok();
      default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number(out);
        return error("unexpected character, expected a value");
    }
  }

  Status parse_object(Value* out, int depth) {
    if (depth > limits_.max_depth) return error("nesting deeper than the limit");
    ++i_;  // '{'
    *out = Value::object({});
    skip_ws();
    if (!eof() && peek() == '}') {
      ++i_;
      return Status::ok();
    }
    for (;;) {
      skip_ws();
      if (eof() || peek() != '"') return error("expected a string key");
      const size_t key_pos = i_;
      std::string key;
      ELMO_RETURN_IF_ERROR(parse_string(&key));
      for (const auto& m : out->members_)
        if (m.first == key) {
          i_ = key_pos;
          return input_error(strformat("json: duplicate key \"%.64s\" at byte %zu", key.c_str(), key_pos));
        }
      skip_ws();
      if (eof() || peek() != ':') return error("expected ':'");
      ++i_;
      skip_ws();
      Value v;
      ELMO_RETURN_IF_ERROR(parse_value(&v, depth));
      out->members_.emplace_back(std::move(key), std::move(v));
      skip_ws();
      if (eof()) return error("unterminated object");
      if (peek() == ',') {
        ++i_;
        continue;
      }
      if (peek() == '}') {
        ++i_;
        return Status::ok();
      }
      return error("expected ',' or '}'");
    }
  }

  Status parse_array(Value* out, int depth) {
    if (depth > limits_.max_depth) return error("nesting deeper than the limit");
    ++i_;  // '['
    *out = Value::array({});
    skip_ws();
    if (!eof() && peek() == ']') {
      ++i_;
      return Status::ok();
    }
    for (;;) {
      skip_ws();
      Value v;
      ELMO_RETURN_IF_ERROR(parse_value(&v, depth));
      out->items_.push_back(std::move(v));
      skip_ws();
      if (eof()) return error("unterminated array");
      if (peek() == ',') {
        ++i_;
        continue;
      }
      if (peek() == ']') {
        ++i_;
        return Status::ok();
      }
      return error("expected ',' or ']'");
    }
  }

  static void append_utf8(std::string* s, uint32_t cp) {
    if (cp < 0x80) {
      s->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      s->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      s->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      s->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  Status parse_hex4(uint32_t* out) {
    if (n_ - i_ < 4) return error("truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = p_[i_];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<uint32_t>(c - 'A' + 10);
      else return error("invalid hex digit in \\u escape");
      ++i_;
    }
    *out = v;
    return Status::ok();
  }

  // Validates one UTF-8 sequence starting at i_ (a lead byte >= 0x80) and copies it.
  Status copy_utf8(std::string* s) {
    const auto b0 = static_cast<unsigned char>(p_[i_]);
    int len;
    uint32_t cp = 0, min = 0;
    if ((b0 & 0xE0) == 0xC0) { len = 2; cp = b0 & 0x1F; min = 0x80; }
    else if ((b0 & 0xF0) == 0xE0) { len = 3; cp = b0 & 0x0F; min = 0x800; }
    else if ((b0 & 0xF8) == 0xF0) { len = 4; cp = b0 & 0x07; min = 0x10000; }
    else return error("invalid UTF-8 lead byte in string");
    if (n_ - i_ < static_cast<size_t>(len)) return error("truncated UTF-8 sequence in string");
    for (int k = 1; k < len; ++k) {
      const auto b = static_cast<unsigned char>(p_[i_ + k]);
      if ((b & 0xC0) != 0x80) return error("invalid UTF-8 continuation byte in string");
      cp = (cp << 6) | (b & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return error("invalid UTF-8 code point in string");
    s->append(p_ + i_, static_cast<size_t>(len));
    i_ += static_cast<size_t>(len);
    return Status::ok();
  }

  Status parse_string(std::string* s) {
    ++i_;  // opening quote
    s->clear();
    for (;;) {
      if (eof()) return error("unterminated string");
      const auto c = static_cast<unsigned char>(p_[i_]);
      if (c == '"') {
        ++i_;
        return Status::ok();
      }
      if (c < 0x20) return error("control character in string");
      if (c >= 0x80) {
        ELMO_RETURN_IF_ERROR(copy_utf8(s));
        continue;
      }
      if (c != '\\') {
        s->push_back(static_cast<char>(c));
        ++i_;
        continue;
      }
      ++i_;
      if (eof()) return error("unterminated escape");
      const char e = p_[i_++];
      switch (e) {
        case '"': s->push_back('"'); break;
        case '\\': s->push_back('\\'); break;
        case '/': s->push_back('/'); break;
        case 'b': s->push_back('\b'); break;
        case 'f': s->push_back('\f'); break;
        case 'n': s->push_back('\n'); break;
        case 'r': s->push_back('\r'); break;
        case 't': s->push_back('\t'); break;
        case 'u': {
          uint32_t cp = 0;
          ELMO_RETURN_IF_ERROR(parse_hex4(&cp));
          if (cp >= 0xDC00 && cp <= 0xDFFF) return error("unpaired low surrogate in \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (n_ - i_ < 2 || p_[i_] != '\\' || p_[i_ + 1] != 'u') return error("unpaired high surrogate in \\u escape");
            i_ += 2;
            uint32_t lo = 0;
            ELMO_RETURN_IF_ERROR(parse_hex4(&lo));
            if (lo < 0xDC00 || lo > 0xDFFF) return error("high surrogate not followed by a low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(s, cp);
          break;
        }
        default: --i_; return error("invalid escape character");
      }
    }
  }

  Status parse_number(Value* out) {
    const size_t start = i_;
    bool integral = true;
    if (p_[i_] == '-') ++i_;
    if (eof()) return error("truncated number");
    if (p_[i_] == '0') {
      ++i_;
    } else if (p_[i_] >= '1' && p_[i_] <= '9') {
      while (!eof() && p_[i_] >= '0' && p_[i_] <= '9') ++i_;
    } else {
      return error("invalid number");
    }
    if (!eof() && p_[i_] == '.') {
      integral = false;
      ++i_;
      if (eof() || p_[i_] < '0' || p_[i_] > '9') return error("digit expected after decimal point");
      while (!eof() && p_[i_] >= '0' && p_[i_] <= '9') ++i_;
    }
    if (!eof() && (p_[i_] == 'e' || p_[i_] == 'E')) {
      integral = false;
      ++i_;
      if (!eof() && (p_[i_] == '+' || p_[i_] == '-')) ++i_;
      if (eof() || p_[i_] < '0' || p_[i_] > '9') return error("digit expected in exponent");
      while (!eof() && p_[i_] >= '0' && p_[i_] <= '9') ++i_;
    }
    double d = 0;
    const auto r = std::from_chars(p_ + start, p_ + i_, d);
    if (r.ec == std::errc::result_out_of_range) {
      i_ = start;
      return error("number out of range");
    }
    if (r.ec != std::errc() || r.ptr != p_ + i_) {
      i_ = start;
      return error("invalid number");
    }
    *out = Value::number(d);
    out->is_int_ = false;
    if (integral) {
      int64_t v = 0;
      const auto ri = std::from_chars(p_ + start, p_ + i_, v);
      if (ri.ec == std::errc() && ri.ptr == p_ + i_) {
        out->is_int_ = true;
        out->int_ = v;
      }
    }
    return Status::ok();
  }

  const char* p_;
  size_t n_;
  Limits limits_;
  size_t i_ = 0;
};

Status parse(const char* data, size_t size, Value* out, const Limits& limits) {
  if (data == nullptr && size != 0) return input_error("json: null input");
  Value v;
  Parser p(data ? data : "", size, limits);
  ELMO_RETURN_IF_ERROR(p.parse_document(&v));
  *out = std::move(v);
  return Status::ok();
}

void append_quoted(std::string* out, const std::string& s) {
  out->push_back('"');
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      case '\b': *out += "\\b"; break;
      case '\f': *out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          *out += buf;
        } else {
          out->push_back(ch);
        }
    }
  }
  out->push_back('"');
}

namespace {
void newline(std::string* out, int indent, int level) {
  if (indent <= 0) return;
  out->push_back('\n');
  out->append(static_cast<size_t>(indent * level), ' ');
}
void dump_to(std::string* out, const Value& v, int indent, int level) {
  switch (v.type()) {
    case Type::kNull: *out += "null"; break;
    case Type::kBool: *out += v.as_bool() ? "true" : "false"; break;
    case Type::kNumber: {
      if (v.is_int()) {
        *out += std::to_string(v.as_int());
      } else if (!std::isfinite(v.as_double())) {
        *out += "null";
      } else {
        char buf[40];
        const auto r = std::to_chars(buf, buf + sizeof buf, v.as_double());
        std::string s(buf, r.ptr);
        // Keep it a JSON number that reads back as a float ("1e-12", "0.1").
        *out += s;
      }
      break;
    }
    case Type::kString: append_quoted(out, v.as_string()); break;
    case Type::kArray: {
      out->push_back('[');
      bool first = true;
      for (const Value& x : v.items()) {
        if (!first) out->push_back(',');
        first = false;
        newline(out, indent, level + 1);
        dump_to(out, x, indent, level + 1);
      }
      if (!v.items().empty()) newline(out, indent, level);
      out->push_back(']');
      break;
    }
    case Type::kObject: {
      out->push_back('{');
      bool first = true;
      for (const auto& m : v.members()) {
        if (!first) out->push_back(',');
        first = false;
        newline(out, indent, level + 1);
        append_quoted(out, m.first);
        *out += indent > 0 ? ": " : ":";
        dump_to(out, m.second, indent, level + 1);
      }
      if (!v.members().empty()) newline(out, indent, level);
      out->push_back('}');
      break;
    }
  }
}
}  // namespace

std::string dump(const Value& v, int indent) {
  std::string out;
  dump_to(&out, v, indent, 0);
  return out;
}

}  // namespace elmo::json
