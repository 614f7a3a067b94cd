// JSON parser: valid documents, every class of error with its byte position, limits.
#include <string>

#include "elmo/json.h"
#include "harness.h"

using elmo::Code;
namespace json = elmo::json;

static json::Value parse_ok(const std::string& s) {
  json::Value v;
  CHECK_OK(json::parse(s, &v));
  return v;
}
static std::string parse_err(const std::string& s, const json::Limits& l = {}) {
  json::Value v;
  elmo::Status st = json::parse(s, &v, l);
  CHECK(!st.is_ok());
  CHECK(st.code() == Code::kInput);
  return st.message();
}

TEST_CASE(scalars_and_nesting) {
  json::Value v = parse_ok(" {\"a\": [1, -2.5e3, true, false, null, \"x\"], \"b\": {\"c\": {}} , \"d\": []} ");
  CHECK(v.is_object() && v.size() == 3);
  const json::Value* a = v.find("a");
  CHECK(a && a->is_array() && a->size() == 6);
  if (a && a->size() == 6) {
    CHECK(a->items()[0].is_int() && a->items()[0].as_int() == 1);
    CHECK(a->items()[1].is_number() && !a->items()[1].is_int() && a->items()[1].as_double() == -2500.0);
    CHECK(a->items()[2].is_bool() && a->items()[2].as_bool());
    CHECK(a->items()[3].is_bool() && !a->items()[3].as_bool());
    CHECK(a->items()[4].is_null());
    CHECK(a->items()[5].as_string() == "x");
  }
  CHECK(v.find("b") && v.find("b")->find("c") && v.find("b")->find("c")->is_object());
  CHECK(v.find("zz") == nullptr);
  // members keep file order
  CHECK(v.members()[0].first == "a" && v.members()[2].first == "d");
}

TEST_CASE(numbers) {
  CHECK(parse_ok("0").as_int() == 0);
  CHECK(parse_ok("-0").is_int());
  CHECK(parse_ok("9007199254740993").as_int() == 9007199254740993LL);  // beyond 2^53: exact int64
  CHECK(parse_ok("9223372036854775807").as_int() == INT64_MAX);
  CHECK(!parse_ok("9223372036854775808").is_int());  // too big for int64: still a number
  CHECK(parse_ok("1e-12").as_double() == 1e-12);
  CHECK(parse_ok("0.1").as_double() == 0.1);
  CHECK(!parse_ok("1.0").is_int());
  CHECK(parse_err("01").find("byte 1") != std::string::npos);
  parse_err("-");
  parse_err("1.");
  parse_err(".5");
  parse_err("1e");
  parse_err("+1");
  parse_err("1e999");
  parse_err("NaN");
  parse_err("Infinity");
}

TEST_CASE(strings_and_escapes) {
  CHECK(parse_ok("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"").as_string() == "a\"b\\c/d\b\f\n\r\t");
  CHECK(parse_ok("\"\\u00e9\"").as_string() == "\xc3\xa9");
  CHECK(parse_ok("\"\\u20AC\"").as_string() == "\xe2\x82\xac");
  CHECK(parse_ok("\"\\ud83d\\ude00\"").as_string() == "\xf0\x9f\x98\x80");  // surrogate pair
  CHECK(parse_ok("\"\xf0\x9f\x98\x80 raw\"").as_string() == "\xf0\x9f\x98\x80 raw");
  parse_err("\"\\ud83d\"");          // lone high surrogate
  parse_err("\"\\ude00\"");          // lone low surrogate
  parse_err("\"\\ud83d\\u0041\"");   // high surrogate + non-low
  parse_err("\"\\u12g4\"");
  parse_err("\"\\u12\"");
  parse_err("\"\\x\"");
  parse_err("\"a\nb\"");             // raw control character
  parse_err("\"\xc3\"");             // truncated UTF-8
  parse_err("\"\xc0\xaf\"");         // overlong
  parse_err("\"\xed\xa0\x80\"");     // encoded surrogate
  parse_err("\"\xff\"");
  CHECK(parse_err("\"abc").find("unterminated string") != std::string::npos);
}

TEST_CASE(structure_errors_with_positions) {
  CHECK(parse_err("{\"a\":1,}").find("byte 7") != std::string::npos);
  CHECK(parse_err("[1,2").find("unterminated array") != std::string::npos);
  CHECK(parse_err("{\"a\" 1}").find("expected ':'") != std::string::npos);
  CHECK(parse_err("{1:2}").find("expected a string key") != std::string::npos);
  CHECK(parse_err("{\"a\":1,\"a\":2}").find("duplicate key") != std::string::npos);
  CHECK(parse_err("[1] x").find("trailing") != std::string::npos);
  parse_err("");
  parse_err("   ");
  parse_err("[1,,2]");
  parse_err("tru");
  parse_err("nul");
  parse_err("[1 2]");
  json::Value v;
  CHECK_STATUS(json::parse(nullptr, 3, &v), Code::kInput);
}

TEST_CASE(limits) {
  std::string deep(100, '[');
  deep += std::string(100, ']');
  CHECK(parse_err(deep).find("nesting") != std::string::npos);
  json::Limits l;
  l.max_depth = 200;
  json::Value v;
  CHECK_OK(json::parse(deep, &v, l));
  l.max_bytes = 10;
  CHECK(parse_err("[1,2,3,4,5,6]", l).find("exceeds") != std::string::npos);
  // Deep nesting far past the limit must not blow the stack.
  std::string very(1 << 20, '[');
  parse_err(very);
}

TEST_CASE(dump_round_trip) {
  const std::string src =
      "{\"s\":\"q\\\"\\n\\u0001\xc3\xa9\",\"i\":-42,\"big\":9007199254740993,\"f\":1e-12,\"g\":0.1,\"a\":[true,false,null],"
      "\"o\":{}}";
  json::Value v = parse_ok(src);
  const std::string out = json::dump(v);
  json::Value w = parse_ok(out);
  CHECK(json::dump(w) == out);
  CHECK(w.find("s")->as_string() == "q\"\n\x01\xc3\xa9");
  CHECK(w.find("big")->as_int() == 9007199254740993LL);
  CHECK(w.find("f")->as_double() == 1e-12);
  CHECK(w.find("g")->as_double() == 0.1);
  const std::string pretty = json::dump(v, 2);
  CHECK(pretty.find('\n') != std::string::npos);
  CHECK(json::dump(parse_ok(pretty)) == out);
}

int main() { return elmo_test::run_all_tests(); }
