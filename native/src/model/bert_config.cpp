// BertConfig: config.json (Hugging Face field names) in and out, with validation.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "elmo/bert.h"

namespace elmo {

const char* problem_type_name(ProblemType p) {
  switch (p) {
    case ProblemType::kNone: return "";
    case ProblemType::kSingleLabel: return "single_label_classification";
    case ProblemType::kMultiLabel: return "multi_label_classification";
    case ProblemType::kRegression: return "regression";
  }
  return "";
}

namespace {
Status cfg_error(const std::string& field, const std::string& msg) {
  return Status(Code::kCheckpoint, "config.json: " + field + ": " + msg);
}

// Reads an integer field; absent -> *out unchanged unless required.
Status get_int(const json::Value& root, const char* key, bool required, int64_t lo, int64_t hi, int64_t* out) {
  const json::Value* v = root.find(key);
  if (!v || v->is_null()) return required ? cfg_error(key, "missing") : Status::ok();
  if (!v->is_int()) return cfg_error(key, "expected an integer");
  if (v->as_int() < lo || v->as_int() > hi)
    return cfg_error(key, strformat("%lld is outside [%lld, %lld]", (long long)v->as_int(), (long long)lo, (long long)hi));
  *out = v->as_int();
  return Status::ok();
}
Status get_float(const json::Value& root, const char* key, double lo, double hi, float* out) {
  const json::Value* v = root.find(key);
  if (!v || v->is_null()) return Status::ok();
  if (!v->is_number()) return cfg_error(key, "expected a number");
  const double d = v->as_double();
  if (!(d >= lo && d <= hi)) return cfg_error(key, strformat("%g is outside [%g, %g]", d, lo, hi));
  *out = static_cast<float>(d);
  return Status::ok();
}
}  // namespace

Status BertConfig::validate() const {
  ELMO_CHECK(vocab_size > 0, Code::kCheckpoint, "config: vocab_size must be positive (got %lld)", (long long)vocab_size);
  ELMO_CHECK(hidden_size > 0, Code::kCheckpoint, "config: hidden_size must be positive (got %lld)", (long long)hidden_size);
  ELMO_CHECK(num_layers > 0, Code::kCheckpoint, "config: num_hidden_layers must be positive (got %d)", num_layers);
  ELMO_CHECK(num_heads > 0, Code::kCheckpoint, "config: num_attention_heads must be positive (got %d)", num_heads);
  ELMO_CHECK(hidden_size % num_heads == 0, Code::kCheckpoint,
             "config: hidden_size %lld is not a multiple of num_attention_heads %d", (long long)hidden_size, num_heads);
  ELMO_CHECK(intermediate_size > 0, Code::kCheckpoint, "config: intermediate_size must be positive");
  ELMO_CHECK(max_position > 0, Code::kCheckpoint, "config: max_position_embeddings must be positive");
  ELMO_CHECK(type_vocab_size > 0, Code::kCheckpoint, "config: type_vocab_size must be positive");
  ELMO_CHECK(layer_norm_eps > 0, Code::kCheckpoint, "config: layer_norm_eps must be positive");
  ELMO_CHECK(hidden_dropout >= 0 && hidden_dropout < 1 && attention_dropout >= 0 && attention_dropout < 1 &&
                 classifier_dropout < 1,
             Code::kCheckpoint, "config: dropout probabilities must be in [0, 1)");
  ELMO_CHECK(num_labels >= 0 && num_slot_labels >= 0, Code::kCheckpoint, "config: num_labels must be non-negative");
  ELMO_CHECK(labels.empty() || static_cast<int>(labels.size()) == num_labels, Code::kCheckpoint,
             "config: id2label has %zu entries but num_labels is %d", labels.size(), num_labels);
  ELMO_CHECK(pruned_heads.empty() || static_cast<int>(pruned_heads.size()) == num_layers, Code::kCheckpoint,
             "config: elmo_pruned_heads has %zu layers but the model %d", pruned_heads.size(), num_layers);
  for (size_t l = 0; l < pruned_heads.size(); ++l) {
    const std::vector<int>& p = pruned_heads[l];
    for (size_t i = 0; i < p.size(); ++i)
      ELMO_CHECK(p[i] >= 0 && p[i] < num_heads && (i == 0 || p[i] > p[i - 1]), Code::kCheckpoint,
                 "config: elmo_pruned_heads: layer %zu: heads must be distinct, ascending and in [0, %d)", l, num_heads);
    ELMO_CHECK(static_cast<int>(p.size()) < num_heads, Code::kCheckpoint,
               "config: elmo_pruned_heads: layer %zu lists all its %d heads (a layer keeps at least one)", l, num_heads);
  }
  // Sizes the kernels index with int32 and the activations with int64.
  ELMO_CHECK(vocab_size < (int64_t(1) << 31) && max_position < (int64_t(1) << 31) && hidden_size <= 65536 &&
                 intermediate_size <= (int64_t(1) << 20),
             Code::kCheckpoint, "config: sizes out of the supported range");
  return Status::ok();
}

Status BertConfig::parse(const std::string& text, BertConfig* out) {
  BertConfig c;
  Status st = json::parse(text, &c.raw);
  if (!st) return Status(Code::kCheckpoint, "config.json: " + st.message());
  const json::Value& r = c.raw;
  if (!r.is_object()) return Status(Code::kCheckpoint, "config.json: not a JSON object");
  const int64_t kBig = int64_t(1) << 31;
  int64_t v = 0;
  if (const json::Value* mt = r.find("model_type"); mt && !(mt->is_string() && mt->as_string() == "bert"))
    return cfg_error("model_type", "expected \"bert\"");
  ELMO_RETURN_IF_ERROR(get_int(r, "vocab_size", true, 1, kBig, &c.vocab_size));
  ELMO_RETURN_IF_ERROR(get_int(r, "hidden_size", true, 1, 65536, &c.hidden_size));
  v = c.num_layers;
  ELMO_RETURN_IF_ERROR(get_int(r, "num_hidden_layers", true, 1, 1024, &v));
  c.num_layers = static_cast<int>(v);
  v = c.num_heads;
  ELMO_RETURN_IF_ERROR(get_int(r, "num_attention_heads", true, 1, 1024, &v));
  c.num_heads = static_cast<int>(v);
  ELMO_RETURN_IF_ERROR(get_int(r, "intermediate_size", true, 1, int64_t(1) << 20, &c.intermediate_size));
  ELMO_RETURN_IF_ERROR(get_int(r, "max_position_embeddings", true, 1, kBig, &c.max_position));
  ELMO_RETURN_IF_ERROR(get_int(r, "type_vocab_size", false, 1, kBig, &c.type_vocab_size));
  v = c.pad_token_id;
  ELMO_RETURN_IF_ERROR(get_int(r, "pad_token_id", false, 0, kBig, &v));
  c.pad_token_id = static_cast<int>(v);
  ELMO_RETURN_IF_ERROR(get_float(r, "layer_norm_eps", 1e-30, 1, &c.layer_norm_eps));
  ELMO_RETURN_IF_ERROR(get_float(r, "hidden_dropout_prob", 0, 0.999, &c.hidden_dropout));
  ELMO_RETURN_IF_ERROR(get_float(r, "attention_probs_dropout_prob", 0, 0.999, &c.attention_dropout));
  ELMO_RETURN_IF_ERROR(get_float(r, "classifier_dropout", 0, 0.999, &c.classifier_dropout));
  ELMO_RETURN_IF_ERROR(get_float(r, "initializer_range", 0, 10, &c.initializer_range));
  if (const json::Value* act = r.find("hidden_act"); act && !(act->is_string() && act->as_string() == "gelu"))
    return cfg_error("hidden_act", "only \"gelu\" (erf form) is supported");
  if (const json::Value* pe = r.find("position_embedding_type");
      pe && !pe->is_null() && !(pe->is_string() && pe->as_string() == "absolute"))
    return cfg_error("position_embedding_type", "only \"absolute\" is supported");
  if (const json::Value* dec = r.find("is_decoder"); dec && dec->is_bool() && dec->as_bool())
    return cfg_error("is_decoder", "decoder models are not supported");

  // Labels: id2label {"0": "a", ...} with keys 0..n-1; label2id consistent; else num_labels.
  int64_t num_labels = -1;
  ELMO_RETURN_IF_ERROR(get_int(r, "num_labels", false, 0, 1 << 20, &num_labels));
  if (const json::Value* id2 = r.find("id2label"); id2 && !id2->is_null()) {
    if (!id2->is_object()) return cfg_error("id2label", "expected an object");
    const size_t n = id2->size();
    if (n > (1u << 20)) return cfg_error("id2label", "too many labels");
    std::vector<std::string> labels(n);
    std::vector<bool> seen(n, false);
    for (const auto& m : id2->members()) {
      int64_t id = -1;
      const std::string& k = m.first;
      bool digits = !k.empty() && k.size() < 10;
      for (char ch : k) digits = digits && ch >= '0' && ch <= '9';
      if (digits) id = std::stoll(k);
      if (id < 0 || id >= static_cast<int64_t>(n) || seen[static_cast<size_t>(id)])
        return cfg_error("id2label", "keys must be the ids 0.." + std::to_string(n - 1) + ", got \"" + k.substr(0, 32) + "\"");
      if (!m.second.is_string()) return cfg_error("id2label", "label of id " + k + " is not a string");
      seen[static_cast<size_t>(id)] = true;
      labels[static_cast<size_t>(id)] = m.second.as_string();
    }
    if (num_labels >= 0 && num_labels != static_cast<int64_t>(n))
      return cfg_error("num_labels", strformat("%lld disagrees with id2label (%zu entries)", (long long)num_labels, n));
    if (const json::Value* l2i = r.find("label2id"); l2i && !l2i->is_null()) {
      if (!l2i->is_object() || l2i->size() != n) return cfg_error("label2id", "must mirror id2label");
      for (const auto& m : l2i->members()) {
        if (!m.second.is_int() || m.second.as_int() < 0 || m.second.as_int() >= static_cast<int64_t>(n) ||
            labels[static_cast<size_t>(m.second.as_int())] != m.first)
          return cfg_error("label2id", "entry \"" + m.first.substr(0, 32) + "\" disagrees with id2label");
      }
    }
    c.labels = std::move(labels);
    c.num_labels = static_cast<int>(n);
  } else {
    c.num_labels = num_labels >= 0 ? static_cast<int>(num_labels) : 2;  // the transformers default
    for (int i = 0; i < c.num_labels; ++i) c.labels.push_back("LABEL_" + std::to_string(i));
  }
  int64_t num_slot_labels = 0;
  ELMO_RETURN_IF_ERROR(get_int(r, "num_slot_labels", false, 0, 1 << 20, &num_slot_labels));
  c.num_slot_labels = static_cast<int>(num_slot_labels);
  if (const json::Value* pt = r.find("problem_type"); pt && !pt->is_null()) {
    const std::string s = pt->is_string() ? pt->as_string() : "";
    if (s == "single_label_classification") c.problem_type = ProblemType::kSingleLabel;
    else if (s == "multi_label_classification") c.problem_type = ProblemType::kMultiLabel;
    else if (s == "regression") c.problem_type = ProblemType::kRegression;
    else return cfg_error("problem_type", "expected single_label_classification, multi_label_classification or regression");
  }
  if (const json::Value* ar = r.find("architectures"); ar && !ar->is_null()) {
    if (!ar->is_array()) return cfg_error("architectures", "expected an array of strings");
    for (const json::Value& a : ar->items()) {
      if (!a.is_string()) return cfg_error("architectures", "expected an array of strings");
      c.architectures.push_back(a.as_string());
    }
  }
  if (const json::Value* ph = r.find("elmo_pruned_heads"); ph && !ph->is_null()) {
    if (!ph->is_object()) return cfg_error("elmo_pruned_heads", "expected an object {\"<layer>\": [head, ...]}");
    c.pruned_heads.assign(static_cast<size_t>(c.num_layers), {});
    for (const auto& m : ph->members()) {
      const std::string& k = m.first;
      bool digits = !k.empty() && k.size() < 6;
      for (char ch : k) digits = digits && ch >= '0' && ch <= '9';
      const int64_t l = digits ? std::stoll(k) : -1;
      if (l < 0 || l >= c.num_layers)
        return cfg_error("elmo_pruned_heads", "key \"" + k.substr(0, 32) + "\" is not a layer in [0, " +
                                                  std::to_string(c.num_layers) + ")");
      if (!m.second.is_array()) return cfg_error("elmo_pruned_heads", "layer " + k + ": expected an array of heads");
      std::vector<int>& heads = c.pruned_heads[static_cast<size_t>(l)];
      for (const json::Value& h : m.second.items()) {
        if (!h.is_int() || h.as_int() < 0 || h.as_int() >= c.num_heads)
          return cfg_error("elmo_pruned_heads", "layer " + k + ": a head is not an integer in [0, " +
                                                    std::to_string(c.num_heads) + ")");
        heads.push_back(static_cast<int>(h.as_int()));
      }
      std::sort(heads.begin(), heads.end());
      heads.erase(std::unique(heads.begin(), heads.end()), heads.end());
      if (static_cast<int>(heads.size()) >= c.num_heads)
        return cfg_error("elmo_pruned_heads", "layer " + k + " lists all its " + std::to_string(c.num_heads) +
                                                  " heads (a layer keeps at least one)");
    }
    if (!c.has_pruned_heads()) c.pruned_heads.clear();
  }
  ELMO_RETURN_IF_ERROR(c.validate());
  *out = std::move(c);
  return Status::ok();
}

std::vector<int> BertConfig::kept_heads(int l) const {
  std::vector<int> kept;
  const std::vector<int>* pruned = pruned_heads.empty() ? nullptr : &pruned_heads[static_cast<size_t>(l)];
  for (int h = 0; h < num_heads; ++h)
    if (!pruned || !std::binary_search(pruned->begin(), pruned->end(), h)) kept.push_back(h);
  return kept;
}

Status BertConfig::load(const std::string& path, BertConfig* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status(Code::kCheckpoint, path + ": cannot open");
  std::ostringstream ss;
  ss << f.rdbuf();
  const std::string text = ss.str();
  if (text.size() > (size_t(16) << 20)) return Status(Code::kCheckpoint, path + ": larger than 16 MiB");
  Status st = parse(text, out);
  if (!st) return Status(st.code(), path + ": " + st.message());
  return Status::ok();
}

std::string BertConfig::to_json(bool classifier, bool mlm, bool token_classifier) const {
  std::vector<std::pair<std::string, json::Value>> m;
  if (raw.is_object()) m = raw.members();
  auto set = [&m](const std::string& key, json::Value v) {
    for (auto& kv : m)
      if (kv.first == key) {
        kv.second = std::move(v);
        return;
      }
    m.emplace_back(key, std::move(v));
  };
  auto erase = [&m](const std::string& key) {
    for (size_t i = 0; i < m.size(); ++i)
      if (m[i].first == key) {
        m.erase(m.begin() + static_cast<std::ptrdiff_t>(i));
        return;
      }
  };
  auto num = [](double d) { return json::Value::number(d); };
  const char* arch = classifier         ? "BertForSequenceClassification"
                     : token_classifier ? "BertForTokenClassification"
                     : mlm              ? "BertForMaskedLM"
                                        : "BertModel";
  set("architectures", json::Value::array({json::Value::string(arch)}));
  set("model_type", json::Value::string("bert"));
  set("vocab_size", json::Value::integer(vocab_size));
  set("hidden_size", json::Value::integer(hidden_size));
  set("num_hidden_layers", json::Value::integer(num_layers));
  set("num_attention_heads", json::Value::integer(num_heads));
  set("intermediate_size", json::Value::integer(intermediate_size));
  set("max_position_embeddings", json::Value::integer(max_position));
  set("type_vocab_size", json::Value::integer(type_vocab_size));
  set("hidden_act", json::Value::string("gelu"));
  set("position_embedding_type", json::Value::string("absolute"));
  // Floats are written through double of the float value's shortest decimal form.
  auto f2d = [](float f) { return std::stod(strformat("%.9g", f)); };
  set("layer_norm_eps", num(f2d(layer_norm_eps)));
  set("hidden_dropout_prob", num(f2d(hidden_dropout)));
  set("attention_probs_dropout_prob", num(f2d(attention_dropout)));
  set("classifier_dropout", classifier_dropout < 0 ? json::Value::null() : num(f2d(classifier_dropout)));
  set("initializer_range", num(f2d(initializer_range)));
  set("pad_token_id", json::Value::integer(pad_token_id));
  set("tie_word_embeddings", json::Value::boolean(true));
  erase("torch_dtype");
  set("dtype", json::Value::string("float32"));
  erase("num_labels");
  std::vector<std::pair<std::string, json::Value>> id2, l2i;
  for (int i = 0; i < num_labels; ++i) {
    const std::string name =
        i < static_cast<int>(labels.size()) ? labels[static_cast<size_t>(i)] : "LABEL_" + std::to_string(i);
    id2.emplace_back(std::to_string(i), json::Value::string(name));
    bool dup = false;
    for (const auto& kv : l2i) dup = dup || kv.first == name;
    if (!dup) l2i.emplace_back(name, json::Value::integer(i));
  }
  set("id2label", json::Value::object(std::move(id2)));
  set("label2id", json::Value::object(std::move(l2i)));
  if (num_slot_labels > 0) set("num_slot_labels", json::Value::integer(num_slot_labels));
  else erase("num_slot_labels");
  if (has_pruned_heads()) {
    std::vector<std::pair<std::string, json::Value>> layers;
    for (size_t l = 0; l < pruned_heads.size(); ++l) {
      if (pruned_heads[l].empty()) continue;
      std::vector<json::Value> heads;
      for (int h : pruned_heads[l]) heads.push_back(json::Value::integer(h));
      layers.emplace_back(std::to_string(l), json::Value::array(std::move(heads)));
    }
    set("elmo_pruned_heads", json::Value::object(std::move(layers)));
  } else {
    erase("elmo_pruned_heads");
  }
  if (problem_type == ProblemType::kNone) set("problem_type", json::Value::null());
  else set("problem_type", json::Value::string(problem_type_name(problem_type)));
  return json::dump(json::Value::object(std::move(m)), 2) + "\n";
}

}  // namespace elmo
