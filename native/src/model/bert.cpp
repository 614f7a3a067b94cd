// The BERT graph over the Backend interface: parameters, checkpoint load/save, forward.
//
// Per layer (post-LN, as Hugging Face BERT), x [T, H] the layer input, Hl = NHl · head_dim the
// layer's attention width (H, less head_dim per head pruned from it: BertConfig::pruned_heads):
//   qkv    = x Wqkvᵀ + bqkv                          [T, 3Hl]
//   att    = attention(qkv, offsets)                  [T, Hl]  (lse [NHl, T] saved)
//   ln1_in = x + dropout(att Woᵀ + bo)                [T, H]
//   h1     = LayerNorm1(ln1_in)                       [T, H]   (mean, rstd saved)
//   act    = gelu(pre_gelu = h1 W1ᵀ + b1)             [T, I]
//   ln2_in = h1 + dropout(act W2ᵀ + b2)               [T, H]
//   h2     = LayerNorm2(ln2_in)                       [T, H]   -> next layer input
// Without dropout the residual adds fuse into the GEMM epilogue (kBiasResidual).
// Every weight matrix W above is the GEMM's b operand as the model's precision says: the f32
// parameter, or its bf16 copy (BertOptions).
#include "elmo/bert.h"

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <unordered_set>
#include <utility>

#include "elmo/half.h"
#include "elmo/safetensors.h"
#include "model/views.h"

namespace elmo {

namespace {

using views::make_view;
using views::round_up;

std::string dims_str(const std::vector<int64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

// One tensor in a checkpoint file that fills a range of a parameter. A layer with pruned heads
// (BertConfig::pruned_heads) holds only its kept heads: of the file's full-size query / key /
// value tensors ([H, H] weights, [H] biases) the rows of those heads, of the attention output
// weight [H, H] their columns, each head a block of head_dim rows or columns.
struct Piece {
  std::string file_name;
  int64_t elem_offset = 0;
  std::vector<int64_t> dims;  // the file tensor's shape
  enum Select : uint8_t { kAll, kRows, kCols } select = kAll;
  std::vector<int> heads;  // kRows / kCols: the kept heads, ascending
  int64_t head_dim = 0;
};

Piece whole(std::string file_name, int64_t elem_offset, std::vector<int64_t> dims) {
  Piece pc;
  pc.file_name = std::move(file_name);
  pc.elem_offset = elem_offset;
  pc.dims = std::move(dims);
  return pc;
}

// Elements of the parameter the piece fills.
int64_t piece_numel(const Piece& pc) {
  int64_t n = 1;
  for (int64_t d : pc.dims) n *= d;
  if (pc.select == Piece::kAll) return n;
  return n / pc.dims[0] * static_cast<int64_t>(pc.heads.size()) * pc.head_dim;  // rows, or columns (square)
}

// full (the file tensor, row-major) -> the kept heads' rows or columns, packed.
void select_heads(const Piece& pc, const float* full, float* out) {
  const int64_t d = pc.head_dim, R = pc.dims[0], C = pc.dims.size() > 1 ? pc.dims[1] : 1;
  const int64_t kept = static_cast<int64_t>(pc.heads.size()) * d;
  for (size_t i = 0; i < pc.heads.size(); ++i) {
    const int64_t h = pc.heads[i], at = static_cast<int64_t>(i) * d;
    if (pc.select == Piece::kRows)
      std::memcpy(out + at * C, full + h * d * C, static_cast<size_t>(d * C) * 4);
    else
      for (int64_t r = 0; r < R; ++r) std::memcpy(out + r * kept + at, full + r * C + h * d, static_cast<size_t>(d) * 4);
  }
}

// The inverse: the kept heads' rows or columns back in place, the pruned heads' zero.
void expand_heads(const Piece& pc, const float* packed, float* full) {
  const int64_t d = pc.head_dim, R = pc.dims[0], C = pc.dims.size() > 1 ? pc.dims[1] : 1;
  const int64_t kept = static_cast<int64_t>(pc.heads.size()) * d;
  std::fill(full, full + R * C, 0.0f);
  for (size_t i = 0; i < pc.heads.size(); ++i) {
    const int64_t h = pc.heads[i], at = static_cast<int64_t>(i) * d;
    if (pc.select == Piece::kRows)
      std::memcpy(full + h * d * C, packed + at * C, static_cast<size_t>(d * C) * 4);
    else
      for (int64_t r = 0; r < R; ++r) std::memcpy(full + r * C + h * d, packed + r * kept + at, static_cast<size_t>(d) * 4);
  }
}

// A file tensor's n elements as f32 in host memory (f16 and bf16 widened; the mapping may be
// only byte-aligned).
void read_f32(const StTensor& t, int64_t n, float* out) {
  if (t.dtype == StDType::kF32) {
    std::memcpy(out, t.data, static_cast<size_t>(n) * 4);
    return;
  }
  for (int64_t e = 0; e < n; ++e) {
    uint16_t h;
    std::memcpy(&h, t.data + e * 2, 2);
    out[e] = t.dtype == StDType::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
  }
}

// The layer of "bert.encoder.layer.{l}....", or -1.
int layer_of(const std::string& name) {
  const std::string key = "encoder.layer.";
  const size_t at = name.find(key);
  if (at == std::string::npos) return -1;
  return std::atoi(name.c_str() + at + key.size());
}

// The file tensors of a parameter: Q/K/V come apart, "bert." becomes `file_prefix`, and a layer
// with pruned heads takes the kept heads' part of full-size tensors.
std::vector<Piece> pieces_of(const Bert::Param& p, const std::string& file_prefix, const BertConfig& c) {
  const int64_t H = c.hidden_size;
  std::string name = p.name;
  if (starts_with(name, "bert.")) name = file_prefix + name.substr(5);
  std::vector<int64_t> dims(p.value.shape, p.value.shape + p.value.ndim);
  const int layer = layer_of(name);
  const bool pruned = layer >= 0 && c.heads_in_layer(layer) < c.num_heads;
  for (const char* kind : {"weight", "bias"}) {
    const std::string fused = std::string(".attention.self.qkv.") + kind;
    if (!ends_with(name, fused)) continue;
    const std::string base = name.substr(0, name.size() - 3 - std::strlen(kind) - 1);  // ".../self."
    const bool w = kind[0] == 'w';
    const int64_t Hl = pruned ? c.attention_width(layer) : H;
    const int64_t part = w ? Hl * H : Hl;
    std::vector<int64_t> pd = w ? std::vector<int64_t>{H, H} : std::vector<int64_t>{H};
    std::vector<Piece> out = {whole(base + "query." + kind, 0, pd), whole(base + "key." + kind, part, pd),
                              whole(base + "value." + kind, 2 * part, pd)};
    if (pruned)
      for (Piece& pc : out) pc.select = Piece::kRows, pc.heads = c.kept_heads(layer), pc.head_dim = c.head_dim();
    return out;
  }
  if (pruned && ends_with(name, ".attention.output.dense.weight")) {
    Piece pc = whole(name, 0, {H, H});
    pc.select = Piece::kCols, pc.heads = c.kept_heads(layer), pc.head_dim = c.head_dim();
    return {pc};
  }
  return {whole(name, 0, dims)};
}

// Deterministic normal samples for fresh weights (splitmix64 + Box-Muller).
struct InitRng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return ((next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
  double normal() {
    const double u1 = uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
};

Status ckpt(const std::string& name, const std::string& msg) { return Status(Code::kCheckpoint, name + ": " + msg); }

// A host copy of a weight packed by Backend::pack_weight ([N/panel][K][panel]) back to
// row-major [N, K], one panel at a time.
void unpack_panels(float* w, int64_t N, int64_t K, int panel) {
  std::vector<float> tmp(static_cast<size_t>(panel * K));
  for (int64_t g = 0; g < N / panel; ++g) {
    float* group = w + g * panel * K;
    std::copy(group, group + panel * K, tmp.begin());
    for (int j = 0; j < panel; ++j)
      for (int64_t k = 0; k < K; ++k) group[j * K + k] = tmp[static_cast<size_t>(k * panel + j)];
  }
}

}  // namespace

void unpack_weight_panels(float* w, int64_t N, int64_t K, int panel) { unpack_panels(w, N, K, panel); }

Bert::Bert(const BertConfig& config, const BertHeads& heads, Backend* backend, const BertOptions& opts)
    : config_(config), heads_(heads), backend_(backend), opts_(opts) {}

Bert::~Bert() {
  if (backend_) {
    backend_->free(&grad_arena_);  // training memory (bert_backward.cpp), if any
    backend_->free(&grad_buf_);
    backend_->free(&arena_);
    backend_->free(&compute_buf_);
    backend_->free(&param_buf_);
    backend_->free(&lora_.buf);
    backend_->free(&lora_.grad_buf);
    backend_->free(&lora_.base_buf);
    backend_->free(&lora_.scaled_b);
  }
}

static Status check_options(const BertOptions& opts) {
  ELMO_CHECK(opts.precision == DType::kF32 || opts.precision == DType::kBF16 || opts.precision == DType::kI8,
             Code::kInput, "Expected f32, bf16 or i8 for BertOptions::precision but received %s",
             dtype_name(opts.precision));
  return Status::ok();
}

std::vector<std::pair<Tensor*, Tensor*>> Bert::gemm_weights() {
  std::vector<std::pair<Tensor*, Tensor*>> mats;
  for (Layer& ly : w_.layers) {
    mats.push_back({&ly.qkv_w, &ly.qkv_wc});
    mats.push_back({&ly.attn_out_w, &ly.attn_out_wc});
    mats.push_back({&ly.ffn_in_w, &ly.ffn_in_wc});
    mats.push_back({&ly.ffn_out_w, &ly.ffn_out_wc});
  }
  if (heads_.pooler) mats.push_back({&w_.pool_w, &w_.pool_wc});
  if (heads_.classifier || heads_.token_classifier) mats.push_back({&w_.cls_w, &w_.cls_wc});
  if (heads_.mlm) mats.push_back({&w_.mlm_w, &w_.mlm_wc});
  if (heads_.slots) mats.push_back({&w_.slot_w, &w_.slot_wc});
  return mats;
}

Status Bert::make_compute_weights() {
  const std::vector<std::pair<Tensor*, Tensor*>> mats = gemm_weights();
  if (opts_.precision == DType::kF32) {
    for (const auto& m : mats) *m.second = *m.first;  // the parameter itself
    return Status::ok();
  }
  if (opts_.precision == DType::kI8) return make_quantized_weights();
  size_t total = 0;
  for (const auto& m : mats) total += round_up(m.first->nbytes() / 2);
  ELMO_RETURN_IF_ERROR(backend_->alloc(&compute_buf_, DType::kBF16, {static_cast<int64_t>(total / 2)}));
  size_t off = 0;
  compute_copies_.clear();
  for (const auto& m : mats) {
    const Tensor& w = *m.first;
    *m.second = make_view(compute_buf_.data, off, DType::kBF16, {w.shape[0], w.shape[1]}, backend_->device());
    compute_copies_.push_back({w, m.second});
    off += round_up(w.nbytes() / 2);
  }
  return refresh_compute_weights();
}

// int8: each encoder layer's four matrices quantized per row (Backend::quantize_weight), in one
// buffer; the pooler and the heads read their f32 parameters (small next to the layers, and
// the scores a user compares come out of them).
Status Bert::make_quantized_weights() {
  std::vector<std::pair<Tensor*, Tensor*>> quantized;
  for (const auto& m : gemm_weights()) *m.second = *m.first;
  for (Layer& ly : w_.layers)
    for (auto m : {std::make_pair(&ly.qkv_w, &ly.qkv_wc), std::make_pair(&ly.attn_out_w, &ly.attn_out_wc),
                   std::make_pair(&ly.ffn_in_w, &ly.ffn_in_wc), std::make_pair(&ly.ffn_out_w, &ly.ffn_out_wc)})
      quantized.push_back(m);
  size_t total = 0;
  for (const auto& m : quantized) {
    const int64_t bytes = backend_->quantized_weight_bytes(m.first->shape[0], m.first->shape[1]);
    if (bytes <= 0)
      return Status(Code::kUnsupported, backend_->name() + " has no int8 GEMM: precision int8 runs on the CPU");
    total += round_up(static_cast<size_t>(bytes));
  }
  ELMO_RETURN_IF_ERROR(backend_->alloc(&compute_buf_, DType::kI8, {static_cast<int64_t>(total)}));
  size_t off = 0;
  compute_copies_.clear();
  for (const auto& m : quantized) {
    const Tensor& w = *m.first;
    *m.second = make_view(compute_buf_.data, off, DType::kI8, {w.shape[0], w.shape[1]}, backend_->device());
    compute_copies_.push_back({w, m.second});
    off += round_up(static_cast<size_t>(backend_->quantized_weight_bytes(w.shape[0], w.shape[1])));
  }
  return refresh_compute_weights();
}

// Each copy is converted row-major, then packed in place for the GEMM where the backend keeps
// weights packed (the CPU); one whose shape does not fit the panels stays row-major. An int8
// copy is quantized from its (row-major) master.
Status Bert::refresh_compute_weights() {
  const bool pack = backend_->weight_panel() > 0;
  for (const ComputeCopy& c : compute_copies_) {
    if (c.copy->dtype == DType::kI8) {
      ELMO_RETURN_IF_ERROR(backend_->quantize_weight(c.copy, c.master));
      continue;
    }
    c.copy->panel = 0;
    ELMO_RETURN_IF_ERROR(backend_->convert(*c.copy, c.master));
    if (!pack) continue;
    const Status st = backend_->pack_weight(c.copy, true);
    if (!st && st.code() != Code::kShape) return st;
  }
  return backend_->sync();
}

int64_t Bert::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : params_) n += p.value.numel();
  return n;
}

Status Bert::allocate_parameters() {
  const BertConfig& c = config_;
  const int64_t V = c.vocab_size, H = c.hidden_size, I = c.intermediate_size, P = c.max_position,
                TV = c.type_vocab_size, L = c.num_labels;
  struct Slot {
    std::string name;
    std::vector<int64_t> dims;
    bool decay;
    Tensor* dst;
  };
  std::vector<Slot> slots;
  auto add = [&slots](std::string name, std::vector<int64_t> dims, Tensor* dst) {
    const bool decay = dims.size() >= 2;  // matrices and embeddings; not biases or LayerNorm
    slots.push_back({std::move(name), std::move(dims), decay, dst});
  };
  add("bert.embeddings.word_embeddings.weight", {V, H}, &w_.wte);
  add("bert.embeddings.position_embeddings.weight", {P, H}, &w_.wpe);
  add("bert.embeddings.token_type_embeddings.weight", {TV, H}, &w_.wtt);
  add("bert.embeddings.LayerNorm.weight", {H}, &w_.emb_ln_w);
  add("bert.embeddings.LayerNorm.bias", {H}, &w_.emb_ln_b);
  w_.layers.assign(static_cast<size_t>(c.num_layers), Layer());
  for (int l = 0; l < c.num_layers; ++l) {
    Layer& ly = w_.layers[static_cast<size_t>(l)];
    const std::string p = "bert.encoder.layer." + std::to_string(l) + ".";
    const int64_t Hl = c.attention_width(l);  // H, less head_dim per pruned head
    add(p + "attention.self.qkv.weight", {3 * Hl, H}, &ly.qkv_w);
    add(p + "attention.self.qkv.bias", {3 * Hl}, &ly.qkv_b);
    add(p + "attention.output.dense.weight", {H, Hl}, &ly.attn_out_w);
    add(p + "attention.output.dense.bias", {H}, &ly.attn_out_b);
    add(p + "attention.output.LayerNorm.weight", {H}, &ly.ln1_w);
    add(p + "attention.output.LayerNorm.bias", {H}, &ly.ln1_b);
    add(p + "intermediate.dense.weight", {I, H}, &ly.ffn_in_w);
    add(p + "intermediate.dense.bias", {I}, &ly.ffn_in_b);
    add(p + "output.dense.weight", {H, I}, &ly.ffn_out_w);
    add(p + "output.dense.bias", {H}, &ly.ffn_out_b);
    add(p + "output.LayerNorm.weight", {H}, &ly.ln2_w);
    add(p + "output.LayerNorm.bias", {H}, &ly.ln2_b);
  }
  if (heads_.pooler) {
    add("bert.pooler.dense.weight", {H, H}, &w_.pool_w);
    add("bert.pooler.dense.bias", {H}, &w_.pool_b);
  }
  if (heads_.classifier || heads_.token_classifier) {
    add("classifier.weight", {L, H}, &w_.cls_w);
    add("classifier.bias", {L}, &w_.cls_b);
  }
  if (heads_.mlm) {
    add("cls.predictions.transform.dense.weight", {H, H}, &w_.mlm_w);
    add("cls.predictions.transform.dense.bias", {H}, &w_.mlm_b);
    add("cls.predictions.transform.LayerNorm.weight", {H}, &w_.mlm_ln_w);
    add("cls.predictions.transform.LayerNorm.bias", {H}, &w_.mlm_ln_b);
    add("cls.predictions.bias", {V}, &w_.mlm_bias);
  }
  if (heads_.slots) {
    add("slot_classifier.weight", {c.num_slot_labels, H}, &w_.slot_w);
    add("slot_classifier.bias", {c.num_slot_labels}, &w_.slot_b);
  }
  // Layout: decay region, then no-decay region; every slot 64-byte aligned.
  size_t decay_bytes = 0, total = 0;
  std::vector<size_t> offset(slots.size());
  for (int pass = 0; pass < 2; ++pass)
    for (size_t i = 0; i < slots.size(); ++i) {
      if (slots[i].decay != (pass == 0)) continue;
      int64_t n = 1;
      for (int64_t d : slots[i].dims) n *= d;
      offset[i] = total;
      total += round_up(static_cast<size_t>(n) * 4);
      if (pass == 0) decay_bytes = total;
    }
  ELMO_RETURN_IF_ERROR(backend_->alloc(&param_buf_, DType::kF32, {static_cast<int64_t>(total / 4)}));
  ELMO_RETURN_IF_ERROR(backend_->fill(param_buf_, 0.0f));  // padding stays zero for the optimizer
  const Device dev = backend_->device();
  decay_region_ = make_view(param_buf_.data, 0, DType::kF32, {static_cast<int64_t>(decay_bytes / 4)}, dev);
  no_decay_region_ =
      make_view(param_buf_.data, decay_bytes, DType::kF32, {static_cast<int64_t>((total - decay_bytes) / 4)}, dev);
  params_.clear();
  for (size_t i = 0; i < slots.size(); ++i) {
    *slots[i].dst = make_view(param_buf_.data, offset[i], DType::kF32, slots[i].dims, dev);
    params_.push_back({slots[i].name, *slots[i].dst, slots[i].decay});
  }
  return Status::ok();
}

Status Bert::create(const BertConfig& config, const BertHeads& heads, uint64_t seed, Backend* backend,
                    std::unique_ptr<Bert>* out, const BertOptions& opts) {
  ELMO_CHECK(backend != nullptr && out != nullptr, Code::kInput, "Bert::create: null backend or output");
  ELMO_RETURN_IF_ERROR(check_options(opts));
  ELMO_RETURN_IF_ERROR(config.validate());
  ELMO_CHECK(!heads.classifier || (heads.pooler && config.num_labels > 0), Code::kInput,
             "Bert::create: a classifier needs the pooler and num_labels > 0");
  ELMO_CHECK(!heads.token_classifier || (!heads.classifier && config.num_labels > 0), Code::kInput,
             "Bert::create: a token classifier needs num_labels > 0 and no sequence classifier");
  ELMO_CHECK(!heads.slots || (!heads.token_classifier && config.num_slot_labels > 0), Code::kInput,
             "Bert::create: a slot classifier needs num_slot_labels > 0 and no token classifier");
  std::unique_ptr<Bert> m(new Bert(config, heads, backend, opts));
  ELMO_RETURN_IF_ERROR(m->allocate_parameters());
  InitRng rng{seed * 0x2545F4914F6CDD1Dull + 0x1234567ull};
  std::vector<float> host;
  for (const Param& p : m->params_) {
    host.assign(static_cast<size_t>(p.value.numel()), 0.0f);
    if (ends_with(p.name, "LayerNorm.weight")) {
      std::fill(host.begin(), host.end(), 1.0f);
    } else if (p.decay) {
      for (float& x : host) x = static_cast<float>(rng.normal() * config.initializer_range);
      if (p.name == "bert.embeddings.word_embeddings.weight" && config.pad_token_id < config.vocab_size)
        std::fill_n(host.begin() + static_cast<std::ptrdiff_t>(config.pad_token_id * config.hidden_size),
                    config.hidden_size, 0.0f);
    }
    ELMO_RETURN_IF_ERROR(backend->upload(p.value, host.data(), host.size() * 4));
  }
  ELMO_RETURN_IF_ERROR(m->make_compute_weights());
  ELMO_RETURN_IF_ERROR(m->set_weights_packed(true));
  *out = std::move(m);
  return Status::ok();
}

Status Bert::set_weights_packed(bool packed) {
  // A bf16 model's GEMMs read its bf16 copies (packed when they are made, from row-major f32
  // weights): the f32 weights stay as they are.
  if (opts_.precision != DType::kF32) return Status::ok();
  // Training keeps the masters row-major and the forward reads packed copies of them
  // (enable_training): the layout is not the caller's to change until disable_training.
  if (training_enabled()) {
    ELMO_CHECK(!packed, Code::kInput, "set_weights_packed: not while training (the weights stay row-major)");
    return Status::ok();
  }
  const int panel = backend_->weight_panel();
  if (panel == 0 && !packed_) return Status::ok();  // nothing to gain on this backend
  const std::vector<std::pair<Tensor*, Tensor*>> mats = gemm_weights();
  for (const auto& [w, operand] : mats) {
    if (packed && w->shape[0] % panel != 0) continue;  // e.g. a classifier with 3 labels stays row-major
    ELMO_RETURN_IF_ERROR(backend_->pack_weight(w, packed));
    for (Param& p : params_)
      if (p.value.data == w->data) p.value.panel = w->panel;
  }
  ELMO_RETURN_IF_ERROR(backend_->sync());
  packed_ = packed;
  for (const auto& [w, operand] : mats) *operand = *w;  // the GEMM operands follow the layout
  return Status::ok();
}

Status Bert::load(const std::string& dir, Backend* backend, std::unique_ptr<Bert>* out, const BertOptions& opts) {
  BertConfig config;
  ELMO_RETURN_IF_ERROR(BertConfig::load(dir + "/config.json", &config));
  return load_weights(dir + "/model.safetensors", config, backend, out, opts);
}

Status Bert::load_weights(const std::string& path, const BertConfig& config, Backend* backend,
                          std::unique_ptr<Bert>* out, const BertOptions& opts) {
  ELMO_CHECK(backend != nullptr && out != nullptr, Code::kInput, "Bert::load: null backend or output");
  ELMO_RETURN_IF_ERROR(check_options(opts));
  ELMO_RETURN_IF_ERROR(config.validate());
  std::unique_ptr<SafetensorsFile> file;
  ELMO_RETURN_IF_ERROR(SafetensorsFile::open(path, &file));
  auto has = [&file](const std::string& n) { return file->find(n) != nullptr; };

  // "bert." prefix (task models) or none (a bare BertModel).
  std::string prefix;
  if (has("bert.embeddings.word_embeddings.weight")) prefix = "bert.";
  else if (!has("embeddings.word_embeddings.weight")) return ckpt("bert.embeddings.word_embeddings.weight", "missing from " + path);

  BertHeads heads;
  heads.pooler = has(prefix + "pooler.dense.weight") || has(prefix + "pooler.dense.bias");
  heads.classifier = has("classifier.weight") || has("classifier.bias");
  heads.mlm = false;
  for (const StTensor& t : file->tensors())
    if (starts_with(t.name, "cls.predictions.")) heads.mlm = true;
  // BertForTokenClassification: the classifier reads every token and there is no pooler.
  bool token_arch = false;
  for (const std::string& arch : config.architectures) token_arch = token_arch || ends_with(arch, "ForTokenClassification");
  // The slot classifier of a joint (intent + emotion + slots) model.
  heads.slots = has("slot_classifier.weight") || has("slot_classifier.bias");
  if (heads.classifier && (token_arch || !heads.pooler)) {
    heads.token_classifier = true;
    heads.classifier = false;
  }
  // The architecture named in the config fixes which heads must be there.
  for (const std::string& arch : config.architectures) {
    if (ends_with(arch, "ForSequenceClassification")) {
      if (!heads.pooler) return ckpt(prefix + "pooler.dense.weight", "missing (" + arch + " needs the pooler)");
      if (!heads.classifier) return ckpt("classifier.weight", "missing (" + arch + ")");
    } else if (ends_with(arch, "ForTokenClassification")) {
      if (!heads.token_classifier) return ckpt("classifier.weight", "missing (" + arch + ")");
    } else if (ends_with(arch, "ForMaskedLM") || ends_with(arch, "ForPreTraining")) {
      if (!heads.mlm) return ckpt("cls.predictions.bias", "missing (" + arch + ")");
    }
  }
  if (heads.classifier && !heads.pooler) return ckpt(prefix + "pooler.dense.weight", "missing (the classifier reads the pooled row)");

  if (heads.slots && heads.token_classifier)
    return ckpt("slot_classifier.weight", "a slot classifier beside a token classifier (only beside a sequence classifier)");
  std::unique_ptr<Bert> m(new Bert(config, heads, backend, opts));
  if (heads.classifier || heads.token_classifier) {
    // num_labels comes from the config; the weight must agree.
    const StTensor* cw = file->find("classifier.weight");
    if (cw && cw->shape.size() == 2 && cw->shape[0] != config.num_labels)
      return ckpt("classifier.weight", strformat("has %lld rows but the config has num_labels %d",
                                                 (long long)cw->shape[0], config.num_labels));
  }
  if (heads.slots) {
    const StTensor* sw = file->find("slot_classifier.weight");
    if (config.num_slot_labels <= 0) return ckpt("slot_classifier.weight", "present but the config has no num_slot_labels");
    if (sw && sw->shape.size() == 2 && sw->shape[0] != config.num_slot_labels)
      return ckpt("slot_classifier.weight", strformat("has %lld rows but the config has num_slot_labels %d",
                                                      (long long)sw->shape[0], config.num_slot_labels));
  }
  ELMO_RETURN_IF_ERROR(m->allocate_parameters());

  std::unordered_set<std::string> used;
  const int64_t H = config.hidden_size;
  Tensor tmp;  // staging for f16/bf16 on a non-host backend or misaligned data
  for (const Param& p : m->params_) {
    for (const Piece& pc : pieces_of(p, prefix, config)) {
      const StTensor* t = file->find(pc.file_name);
      if (!t) return ckpt(pc.file_name, "missing from " + path);
      if (t->shape != pc.dims)
        return ckpt(pc.file_name, "expected shape " + dims_str(pc.dims) + " but the file has " + dims_str(t->shape));
      if (t->dtype != StDType::kF32 && t->dtype != StDType::kF16 && t->dtype != StDType::kBF16)
        return ckpt(pc.file_name, strformat("dtype %s is not a floating type (F32, F16, BF16)", st_dtype_name(t->dtype)));
      used.insert(pc.file_name);
      const int64_t n = piece_numel(pc);
      Tensor dst = make_view(p.value.data, static_cast<size_t>(pc.elem_offset) * 4, DType::kF32, {n}, backend->device());
      if (pc.select != Piece::kAll) {  // the kept heads of a full-size tensor (small: [H, H] at most)
        std::vector<float> full(static_cast<size_t>(t->numel())), kept(static_cast<size_t>(n));
        read_f32(*t, t->numel(), full.data());
        select_heads(pc, full.data(), kept.data());
        ELMO_RETURN_IF_ERROR(backend->upload(dst, kept.data(), kept.size() * 4));
        file->release(*t);
        continue;
      }
      // Copied in slices, each slice's file pages dropped right after, so the largest tensor
      // (the word embeddings, 94 MB in BERT-base) is never resident twice.
      constexpr int64_t kSlice = int64_t(1) << 20;  // elements
      if (t->dtype == StDType::kF32) {
        for (int64_t e0 = 0; e0 < n; e0 += kSlice) {
          const int64_t len = std::min(kSlice, n - e0);
          Tensor part = make_view(dst.data, static_cast<size_t>(e0) * 4, DType::kF32, {len}, backend->device());
          ELMO_RETURN_IF_ERROR(backend->upload(part, t->data + e0 * 4, static_cast<size_t>(len) * 4));
          file->release(t->data + e0 * 4, static_cast<size_t>(len) * 4);
        }
        file->release(*t);
        continue;
      }
      const DType src_dtype = t->dtype == StDType::kF16 ? DType::kF16 : DType::kBF16;
      if (backend->device() == Device::kCpu && reinterpret_cast<uintptr_t>(t->data) % 2 == 0) {
        // Straight from the mapping into backend memory.
        for (int64_t e0 = 0; e0 < n; e0 += kSlice) {
          const int64_t len = std::min(kSlice, n - e0);
          Tensor part = make_view(dst.data, static_cast<size_t>(e0) * 4, DType::kF32, {len}, Device::kCpu);
          Tensor src = make_view(const_cast<uint8_t*>(t->data), static_cast<size_t>(e0) * 2, src_dtype, {len},
                                 Device::kCpu);
          ELMO_RETURN_IF_ERROR(backend->convert(part, src));
          file->release(t->data + e0 * 2, static_cast<size_t>(len) * 2);
        }
      } else {
        ELMO_RETURN_IF_ERROR(backend->alloc(&tmp, src_dtype, {n}));
        Status st = backend->upload(tmp, t->data, t->nbytes());
        if (st) st = backend->convert(dst, tmp);
        backend->free(&tmp);
        ELMO_RETURN_IF_ERROR(st);
      }
      file->release(*t);
    }
  }
  // Everything else must be a known buffer or a tied/unused tensor.
  const int64_t V = config.vocab_size;
  for (const StTensor& t : file->tensors()) {
    if (used.count(t.name)) continue;
    if (t.name == prefix + "embeddings.position_ids") continue;  // a buffer in older checkpoints
    if (t.name == "cls.predictions.decoder.weight") {            // tied to the word embeddings
      if (t.shape != std::vector<int64_t>{V, H}) return ckpt(t.name, "expected shape " + dims_str({V, H}) + " but the file has " + dims_str(t.shape));
      continue;
    }
    if (t.name == "cls.predictions.decoder.bias") {  // tied to cls.predictions.bias
      if (t.shape != std::vector<int64_t>{V}) return ckpt(t.name, "expected shape " + dims_str({V}) + " but the file has " + dims_str(t.shape));
      continue;
    }
    if (starts_with(t.name, "cls.seq_relationship.")) continue;  // next-sentence head of pretraining checkpoints
    return ckpt(t.name, "unexpected tensor in " + path);
  }
  ELMO_RETURN_IF_ERROR(m->make_compute_weights());
  ELMO_RETURN_IF_ERROR(backend->sync());
  ELMO_RETURN_IF_ERROR(m->set_weights_packed(true));
  *out = std::move(m);
  return Status::ok();
}

Status Bert::load_encoder(const std::string& path, bool heads_too) {
  std::unique_ptr<SafetensorsFile> file;
  ELMO_RETURN_IF_ERROR(SafetensorsFile::open(path, &file));
  std::string prefix;
  if (file->find("bert.embeddings.word_embeddings.weight")) prefix = "bert.";
  else if (!file->find("embeddings.word_embeddings.weight"))
    return ckpt("bert.embeddings.word_embeddings.weight", "missing from " + path);
  if (heads_too && prefix.empty() && (heads_.classifier || heads_.token_classifier || heads_.mlm || heads_.slots))
    return ckpt("bert.embeddings.word_embeddings.weight", "missing from " + path + " (a bare encoder has no heads)");
  // Check every encoder tensor first, so that a mismatch changes nothing.
  for (int pass = 0; pass < 2; ++pass) {
    for (const Param& p : params_) {
      if (!heads_too && (!starts_with(p.name, "bert.") || starts_with(p.name, "bert.pooler."))) continue;
      for (const Piece& pc : pieces_of(p, prefix, config_)) {
        const StTensor* t = file->find(pc.file_name);
        if (pass == 0) {
          if (!t) return ckpt(pc.file_name, "missing from " + path);
          if (t->shape != pc.dims)
            return ckpt(pc.file_name, "expected shape " + dims_str(pc.dims) + " but the file has " + dims_str(t->shape) +
                                          " (an encoder of another configuration)");
          if (t->dtype != StDType::kF32 && t->dtype != StDType::kF16 && t->dtype != StDType::kBF16)
            return ckpt(pc.file_name, strformat("dtype %s is not a floating type (F32, F16, BF16)", st_dtype_name(t->dtype)));
          continue;
        }
        const int64_t n = piece_numel(pc);
        std::vector<float> host(static_cast<size_t>(t->numel()));
        read_f32(*t, t->numel(), host.data());
        if (pc.select != Piece::kAll) {  // the kept heads of a full-size tensor
          std::vector<float> kept(static_cast<size_t>(n));
          select_heads(pc, host.data(), kept.data());
          host.swap(kept);
        }
        Tensor dst = make_view(p.value.data, static_cast<size_t>(pc.elem_offset) * 4, DType::kF32, {n}, backend_->device());
        ELMO_RETURN_IF_ERROR(backend_->upload(dst, host.data(), host.size() * 4));
        ELMO_RETURN_IF_ERROR(backend_->sync());
      }
    }
    // Row-major while writing (training keeps the masters row-major already).
    if (pass == 0 && !training_enabled()) ELMO_RETURN_IF_ERROR(set_weights_packed(false));
  }
  // Training keeps the masters row-major (its packed copies are re-derived below).
  if (!training_enabled()) ELMO_RETURN_IF_ERROR(set_weights_packed(true));
  return refresh_compute_weights();
}

Status Bert::save(const std::string& dir) const {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
    return ckpt(dir, strformat("cannot create directory: %s", std::strerror(errno)));
  const std::string prefix = (heads_.classifier || heads_.token_classifier || heads_.mlm || heads_.slots) ? "bert." : "";
  std::vector<std::vector<float>> host(params_.size());
  std::vector<std::vector<float>> full;  // pruned heads: the full-size tensors, zero where pruned
  full.reserve(params_.size() * 3);
  std::vector<StWriteItem> items;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Param& p = params_[i];
    host[i].resize(static_cast<size_t>(p.value.numel()));
    ELMO_RETURN_IF_ERROR(backend_->download(host[i].data(), p.value, host[i].size() * 4));
    if (p.value.panel > 0) unpack_panels(host[i].data(), p.value.shape[0], p.value.shape[1], p.value.panel);
    for (const Piece& pc : pieces_of(p, prefix, config_)) {
      const float* data = host[i].data() + pc.elem_offset;
      if (pc.select != Piece::kAll) {
        int64_t n = 1;
        for (int64_t d : pc.dims) n *= d;
        full.emplace_back(static_cast<size_t>(n));
        expand_heads(pc, data, full.back().data());
        data = full.back().data();
      }
      items.push_back({pc.file_name, StDType::kF32, pc.dims, data});
    }
  }
  ELMO_RETURN_IF_ERROR(backend_->sync());
  const std::string cfg = config_.to_json(heads_.classifier, heads_.mlm, heads_.token_classifier);
  ELMO_RETURN_IF_ERROR(write_file_atomic(dir + "/config.json", cfg.data(), cfg.size()));
  return write_safetensors(dir + "/model.safetensors", items, {{"format", "pt"}});
}

// ---- forward --------------------------------------------------------------------------------

Status Bert::check_inputs(const BertInputs& in) const {
  ELMO_CHECK(in.ids && in.offsets, Code::kInput, "forward: ids and offsets are required");
  ELMO_CHECK(in.B >= 1 && in.T >= 1, Code::kInput, "forward: empty batch (B=%d, T=%lld)", in.B, (long long)in.T);
  ELMO_CHECK(in.T < (int64_t(1) << 31), Code::kInput, "forward: T=%lld exceeds int32 offsets", (long long)in.T);
  Offsets o;
  ELMO_RETURN_IF_ERROR(make_offsets(&o, in.offsets, in.offsets, in.B, in.T));
  for (int b = 0; b < in.B; ++b) {
    const int64_t len = in.offsets[b + 1] - in.offsets[b];
    ELMO_CHECK(len >= 1, Code::kInput, "forward: sequence %d is empty", b);
    ELMO_CHECK(len <= config_.max_position, Code::kInput,
               "forward: sequence %d has %lld tokens, more than max_position_embeddings %lld", b, (long long)len,
               (long long)config_.max_position);
  }
  for (int64_t t = 0; t < in.T; ++t) {
    ELMO_CHECK(in.ids[t] >= 0 && in.ids[t] < config_.vocab_size, Code::kInput,
               "forward: ids[%lld] = %d is outside the vocabulary [0, %lld)", (long long)t, in.ids[t],
               (long long)config_.vocab_size);
    if (in.type_ids)
      ELMO_CHECK(in.type_ids[t] >= 0 && in.type_ids[t] < config_.type_vocab_size, Code::kInput,
                 "forward: type_ids[%lld] = %d is outside [0, %lld)", (long long)t, in.type_ids[t],
                 (long long)config_.type_vocab_size);
  }
  ELMO_CHECK(in.n_mlm >= 0, Code::kInput, "forward: negative n_mlm");
  if (in.n_mlm > 0) {
    ELMO_CHECK(heads_.mlm, Code::kInput, "forward: MLM positions given but the model has no MLM head");
    ELMO_CHECK(in.mlm_positions != nullptr, Code::kInput, "forward: mlm_positions is null");
    for (int i = 0; i < in.n_mlm; ++i)
      ELMO_CHECK(in.mlm_positions[i] >= 0 && in.mlm_positions[i] < in.T, Code::kInput,
                 "forward: mlm_positions[%d] = %d is outside [0, %lld)", i, in.mlm_positions[i], (long long)in.T);
  }
  return Status::ok();
}

// Lays the activations of a batch (T tokens, B sequences, N masked positions) out from `base`
// and returns the bytes used; base == nullptr only measures (the views are then not usable).
// Training keeps every layer's activations for backward. Inference keeps one set of layer
// buffers and lets short-lived ones share memory, in the order the forward uses them:
//   scratch [T, max(4H, I)] holds qkv [T,3H] then att [T,H] after it (attention reads qkv
//   while writing att); ln1_in reuses qkv's first rows once attention is done; act [T,I]
//   reuses all of it once ln1_in has been normalized into h1 (qkv, att and act are bf16 for a
//   bf16 model on a backend that rounds them so anyway: Backend::gemm_bf16_activations,
//   attention_bf16_io);
//   ln2_in reuses emb_sum, dead since the embeddings' LayerNorm.
// For BERT-base at T = 4096 that is 101 MB instead of 177 MB.
size_t Bert::layout_acts(char* base, int64_t T, int B, int N, bool training, Acts* a) const {
  const BertConfig& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, NH = c.num_heads, L = c.num_labels, V = c.vocab_size;
  const Device dev = backend_->device();
  views::Arena arena{base, dev};
  auto take = [&arena](DType dt, const std::vector<int64_t>& dims) { return arena.take(dt, dims); };
  auto view_at = [&](const Tensor& region, int64_t elem_offset, std::vector<int64_t> dims, DType dt = DType::kF32) {
    return base ? make_view(region.data, static_cast<size_t>(elem_offset) * 4, dt, dims, dev) : Tensor();
  };
  const DType F = DType::kF32, I32 = DType::kI32;
  const bool bf16 = opts_.precision == DType::kBF16;
  // The hidden states (embeddings, LayerNorm inputs and outputs, residuals): bf16 at inference
  // of a bf16 model where the backend keeps them so (Backend::bf16_hidden_states).
  const DType R = !training && bf16 && backend_->bf16_hidden_states() ? DType::kBF16 : F;
  *a = Acts();
  a->ids = take(I32, {T});
  a->type_ids = take(I32, {T});
  a->offsets = take(I32, {B + 1});
  a->cls_idx = take(I32, {B});
  a->mlm_pos = take(I32, {N});
  a->emb_sum = take(R, {T, H});
  a->emb_out = take(R, {T, H});
  if (training) a->emb_drop = take(F, {T, H});
  a->emb_mean = take(F, {T});
  a->emb_rstd = take(F, {T});
  if (training) {
    a->layers.resize(static_cast<size_t>(c.num_layers));
    for (int l = 0; l < c.num_layers; ++l) {
      LayerActs& la = a->layers[static_cast<size_t>(l)];
      const int64_t Hl = c.attention_width(l);
      la.qkv = take(F, {T, 3 * Hl});
      la.att = take(F, {T, Hl});
      la.lse = take(F, {c.heads_in_layer(l), T});
      la.proj = take(F, {T, H});
      la.ln1_in = take(F, {T, H});
      la.ln1_mean = take(F, {T});
      la.ln1_rstd = take(F, {T});
      la.h1 = take(F, {T, H});
      la.pre_gelu = take(F, {T, I});
      la.act = take(F, {T, I});
      la.ffn = take(F, {T, H});
      la.ln2_in = take(F, {T, H});
      la.ln2_mean = take(F, {T});
      la.ln2_rstd = take(F, {T});
      la.h2 = take(F, {T, H});
    }
  } else {
    a->layers.resize(1);
    LayerActs& la = a->layers[0];
    const Tensor scratch = take(F, {T, std::max(4 * H, I)});
    // qkv, att and act in bf16 where the backend rounds them so anyway (Backend::
    // gemm_bf16_activations, attention_bf16_io); the offsets stay those of f32.
    const DType QA = bf16 && backend_->attention_bf16_io(static_cast<int>(H / NH)) ? DType::kBF16 : F;
    const DType A = bf16 && backend_->gemm_bf16_activations() ? DType::kBF16 : F;
    la.qkv = view_at(scratch, 0, {T, 3 * H}, QA);
    la.att = view_at(scratch, T * 3 * H, {T, H}, QA);
    la.ln1_in = view_at(scratch, 0, {T, H}, R);
    la.act = view_at(scratch, 0, {T, I}, A);
    la.lse = take(F, {NH, T});
    la.ln1_mean = take(F, {T});
    la.ln1_rstd = take(F, {T});
    la.h1 = take(R, {T, H});
    la.ln2_in = a->emb_sum;
    la.ln2_mean = take(F, {T});
    la.ln2_rstd = take(F, {T});
    la.h2 = take(R, {T, H});
    // bf16 hidden states: the f32 output over emb_out's memory (4 bytes per element, and dead
    // once the first layer has read it).
    if (R != F) a->hidden_f32 = view_at(a->emb_out, 0, {T, H});
  }
  if (heads_.pooler) {
    a->cls = take(R, {B, H});
    // cls_only's rows, in the training layout too (B rows: small), so that an inference layout
    // never exceeds the training layout of the same capacity (ensure_arena relies on it).
    a->cls_x = take(F, {B, H});
    LayerActs& c = a->cls_layer;
    c.att = take(F, {B, H});
    c.ln1_in = take(F, {B, H});
    c.h1 = take(F, {B, H});
    c.act = take(F, {B, I});
    c.ln2_in = take(F, {B, H});
    c.h2 = a->cls;
    if (training) {  // what the backward of the [CLS]-only last layer reads
      c.proj = take(F, {B, H});
      c.pre_gelu = take(F, {B, I});
      c.ffn = take(F, {B, H});
      c.ln1_mean = take(F, {B});
      c.ln1_rstd = take(F, {B});
      c.ln2_mean = take(F, {B});
      c.ln2_rstd = take(F, {B});
    }
    // bf16 hidden states: cls's f32 copy over cls_x's memory (cls_only needs f32 activations).
    if (R != F) a->cls_f32 = view_at(a->cls_x, 0, {B, H});
    a->pool_pre = take(F, {B, H});
    a->pooled = take(F, {B, H});
    if (training) a->pooled_drop = take(F, {B, H});
  }
  if (heads_.classifier) a->logits = take(F, {B, L});
  if (heads_.token_classifier) {
    a->logits = take(F, {T, L});
    if (training) a->tok_drop = take(F, {T, H});
  }
  if (heads_.slots) {
    a->slot_logits = take(F, {T, c.num_slot_labels});
    if (training) a->slot_drop = take(F, {T, H});
  }
  if (heads_.mlm) {
    a->mlm_in = take(R, {N, H});
    if (training) a->mlm_pre = take(F, {N, H});
    a->mlm_act = take(F, {N, H});
    a->mlm_ln = take(F, {N, H});
    a->mlm_mean = take(F, {N});
    a->mlm_rstd = take(F, {N});
    a->mlm_logits = take(F, {N, V});
  }
  return arena.bytes;
}

Status Bert::ensure_arena(int64_t T, int B, int N, bool training) {
  const bool grow = T > cap_T_ || B > cap_B_ || N > cap_N_ || (training && !cap_training_) || arena_.empty();
  if (grow) {
    // The old arena goes first (it and the new one may not fit together). The capacities change
    // only once an allocation has succeeded, so after ERR_OOM the arena is empty at the old
    // capacities and a batch that ran before runs again (its next call allocates them anew).
    backend_->free(&arena_);
    arena_bytes_ = 0;
    const bool tr = cap_training_ || training;
    auto allocate = [&](int64_t t, int b, int n) -> Status {
      Acts sizing;
      const size_t bytes = layout_acts(nullptr, t, b, n, tr, &sizing);
      ELMO_RETURN_IF_ERROR(backend_->alloc(&arena_, DType::kF32, {static_cast<int64_t>(bytes / 4)}));
      cap_T_ = t, cap_B_ = b, cap_N_ = n, cap_training_ = tr;
      arena_bytes_ = bytes;
      ++arena_allocs_;
      return Status::ok();
    };
    // With headroom, so that a slowly rising batch size does not reallocate every call; if that
    // does not fit, exactly this batch.
    const int64_t hT = std::max<int64_t>(T, cap_T_ > 0 && T > cap_T_ ? cap_T_ * 3 / 2 : cap_T_);
    const int hB = std::max(B, cap_B_ > 0 && B > cap_B_ ? cap_B_ * 3 / 2 : cap_B_);
    const int hN = std::max(N, cap_N_ > 0 && N > cap_N_ ? cap_N_ * 3 / 2 : cap_N_);
    Status st = allocate(hT, hB, hN);
    if (st.code() == Code::kOom && (hT != T || hB != B || hN != N)) st = allocate(T, B, N);
    ELMO_RETURN_IF_ERROR(st);
  }
  // The inference layout of a batch never exceeds the training layout of the same capacity, and
  // every layout grows with T, B and N, so the actual sizes fit.
  const size_t used = layout_acts(static_cast<char*>(arena_.data), T, B, N, training, &a_);
  if (used > arena_bytes_) return Status(Code::kShape, "Bert: activation arena layout overflow");  // invariant
  return Status::ok();
}

Status Bert::forward(const BertInputs& in, const ForwardOptions& opts, BertOutputs* out) {
  ELMO_CHECK(out != nullptr, Code::kInput, "forward: null output");
  ELMO_RETURN_IF_ERROR(check_inputs(in));
  const BertConfig& c = config_;
  const int64_t T = in.T;
  const int B = in.B, N = in.n_mlm;
  const int HD = static_cast<int>(c.head_dim());
  const float eps = c.layer_norm_eps;
  const bool train = opts.training;
  const float hidden_p = opts.hidden_dropout >= 0 ? opts.hidden_dropout : c.hidden_dropout;
  const float p_hidden = train ? hidden_p : 0.0f;
  const float p_att = train ? (opts.attention_dropout >= 0 ? opts.attention_dropout : c.attention_dropout) : 0.0f;
  const float p_cls = train ? (c.classifier_dropout >= 0 ? c.classifier_dropout : hidden_p) : 0.0f;
  ELMO_CHECK(p_hidden < 1 && p_att < 1 && p_cls < 1, Code::kInput, "forward: a dropout probability must be below 1");
  const uint64_t seed = opts.seed;
  Backend& be = *backend_;

  ELMO_RETURN_IF_ERROR(ensure_arena(T, B, N, train));
  tf_ = TrainedForward();
  if (train) tf_ = {false, B, N, T, p_hidden, p_att, p_cls, seed, in.type_ids != nullptr, false};  // valid once it completes
  Acts& a = a_;
  host_offsets_.assign(in.offsets, in.offsets + B + 1);
  host_cls_.assign(in.offsets, in.offsets + B);  // [CLS] is the first row of each sequence
  ELMO_RETURN_IF_ERROR(be.upload(a.ids, in.ids, static_cast<size_t>(T) * 4));
  Tensor type_ids;
  if (in.type_ids) {
    ELMO_RETURN_IF_ERROR(be.upload(a.type_ids, in.type_ids, static_cast<size_t>(T) * 4));
    type_ids = a.type_ids;
  }
  ELMO_RETURN_IF_ERROR(be.upload(a.offsets, host_offsets_.data(), host_offsets_.size() * 4));
  if (heads_.pooler) ELMO_RETURN_IF_ERROR(be.upload(a.cls_idx, host_cls_.data(), host_cls_.size() * 4));
  if (N > 0) ELMO_RETURN_IF_ERROR(be.upload(a.mlm_pos, in.mlm_positions, static_cast<size_t>(N) * 4));
  Offsets offs;
  ELMO_RETURN_IF_ERROR(make_offsets(&offs, host_offsets_.data(), a.offsets.i32(), B, T));

  // Embeddings: LayerNorm(word + position + token type), then dropout.
  ELMO_RETURN_IF_ERROR(be.embedding_forward(a.emb_sum, a.ids, type_ids, offs, w_.wte, w_.wpe, w_.wtt));
  ELMO_RETURN_IF_ERROR(be.layernorm_forward(a.emb_out, Tensor(), a.emb_mean, a.emb_rstd, a.emb_sum, Tensor(),
                                            w_.emb_ln_w, w_.emb_ln_b, eps));
  Tensor x = a.emb_out;  // [T, H]
  if (p_hidden > 0) {
    ELMO_RETURN_IF_ERROR(be.dropout_forward(a.emb_drop, a.emb_out, p_hidden, seed, bert_dropout_stream(-1, kStreamEmbedding)));
    x = a.emb_drop;
  }

  const bool cls_only = opts.cls_only && heads_.pooler && !heads_.token_classifier && !heads_.slots && N == 0 && a.layers[0].att.dtype == DType::kF32 &&
                        a.cls.dtype == DType::kF32;
  bool cls_done = false;  // a.cls holds the last layer's [CLS] rows
  for (int l = 0; l < c.num_layers; ++l) {
    const Layer& w = w_.layers[static_cast<size_t>(l)];
    const LayerActs la = layer_view(a.layers[train ? static_cast<size_t>(l) : 0], l);
    ELMO_RETURN_IF_ERROR(be.gemm(la.qkv, Tensor(), x, w.qkv_wc, w.qkv_b, Tensor(), GemmOp::kNT, Epilogue::kBias, false));
    ELMO_RETURN_IF_ERROR(be.attention_forward(la.att, la.lse, la.qkv, offs, c.heads_in_layer(l), HD, p_att, seed,
                                              bert_dropout_stream(l, kSiteAttention)));
    if (cls_only && l == c.num_layers - 1) {
      // The rest of the last layer on the [CLS] rows only (inference: no dropout).
      const Tensor cls_att = layer_view(a.cls_layer, l).att;
      ELMO_RETURN_IF_ERROR(be.gather_rows(a.cls_x, x, a.cls_idx));
      ELMO_RETURN_IF_ERROR(be.gather_rows(cls_att, la.att, a.cls_idx));
      ELMO_RETURN_IF_ERROR(layer_tail(l, a.cls_layer, cls_att, a.cls_x, p_hidden, seed));
      cls_done = true;
      break;
    }
    ELMO_RETURN_IF_ERROR(layer_tail(l, la, la.att, x, p_hidden, seed));
    x = la.h2;
  }
  *out = BertOutputs();
  if (!cls_done) out->hidden = x;
  if (!cls_done && x.dtype != DType::kF32) {  // bf16 hidden states: the output is f32
    ELMO_RETURN_IF_ERROR(be.convert(a.hidden_f32, x));
    out->hidden = a.hidden_f32;
  }

  if (heads_.pooler) {
    if (!cls_done) ELMO_RETURN_IF_ERROR(be.gather_rows(a.cls, x, a.cls_idx));
    out->cls = a.cls;
    if (a.cls.dtype != DType::kF32) {
      ELMO_RETURN_IF_ERROR(be.convert(a.cls_f32, a.cls));
      out->cls = a.cls_f32;
    }
    ELMO_RETURN_IF_ERROR(be.gemm(a.pool_pre, Tensor(), a.cls, w_.pool_wc, w_.pool_b, Tensor(), GemmOp::kNT,
                                 Epilogue::kBias, false));
    ELMO_RETURN_IF_ERROR(be.tanh_forward(a.pooled, a.pool_pre));
    out->pooled = a.pooled;
    if (heads_.classifier) {
      Tensor pin = a.pooled;
      if (p_cls > 0) {
        ELMO_RETURN_IF_ERROR(be.dropout_forward(a.pooled_drop, a.pooled, p_cls, seed,
                                                bert_dropout_stream(-1, kStreamClassifier)));
        pin = a.pooled_drop;
      }
      ELMO_RETURN_IF_ERROR(be.gemm(a.logits, Tensor(), pin, w_.cls_wc, w_.cls_b, Tensor(), GemmOp::kNT, Epilogue::kBias,
                                   false));
      out->logits = a.logits;
    }
  }
  if (heads_.mlm && N > 0) {
    ELMO_RETURN_IF_ERROR(be.gather_rows(a.mlm_in, x, a.mlm_pos));
    ELMO_RETURN_IF_ERROR(be.gemm(a.mlm_act, a.mlm_pre, a.mlm_in, w_.mlm_wc, w_.mlm_b, Tensor(), GemmOp::kNT,
                                 Epilogue::kBiasGelu, false));
    ELMO_RETURN_IF_ERROR(be.layernorm_forward(a.mlm_ln, Tensor(), a.mlm_mean, a.mlm_rstd, a.mlm_act, Tensor(),
                                              w_.mlm_ln_w, w_.mlm_ln_b, eps));
    // Decoder tied to the word embeddings: [N, H] x [V, H]ᵀ + bias.
    ELMO_RETURN_IF_ERROR(be.gemm(a.mlm_logits, Tensor(), a.mlm_ln, w_.wte, w_.mlm_bias, Tensor(), GemmOp::kNT,
                                 Epilogue::kBias, false));
    out->mlm_logits = a.mlm_logits;
  }
  if (heads_.token_classifier) {
    Tensor tin = x;
    if (p_cls > 0) {
      ELMO_RETURN_IF_ERROR(be.dropout_forward(a.tok_drop, x, p_cls, seed, bert_dropout_stream(-1, kStreamClassifier)));
      tin = a.tok_drop;
    }
    ELMO_RETURN_IF_ERROR(be.gemm(a.logits, Tensor(), tin, w_.cls_wc, w_.cls_b, Tensor(), GemmOp::kNT, Epilogue::kBias,
                                 false));
    out->logits = a.logits;
  }
  if (heads_.slots) {
    Tensor sin = x;
    if (p_cls > 0) {
      ELMO_RETURN_IF_ERROR(be.dropout_forward(a.slot_drop, x, p_cls, seed, bert_dropout_stream(-1, kStreamSlots)));
      sin = a.slot_drop;
    }
    ELMO_RETURN_IF_ERROR(be.gemm(a.slot_logits, Tensor(), sin, w_.slot_wc, w_.slot_b, Tensor(), GemmOp::kNT,
                                 Epilogue::kBias, false));
    out->slot_logits = a.slot_logits;
  }
  tf_.cls_only = cls_done;
  tf_.valid = train;
  return Status::ok();
}

Bert::LayerActs Bert::layer_view(const LayerActs& la, int l) const {
  const int64_t Hl = config_.attention_width(l);
  const int64_t rows = la.att.shape[0];
  LayerActs v = la;
  v.qkv = views::reshape(la.qkv, {rows, 3 * Hl});
  v.att = views::reshape(la.att, {rows, Hl});
  v.lse = views::reshape(la.lse, {config_.heads_in_layer(l), rows});
  return v;
}

Status Bert::layer_tail(int l, const LayerActs& la, Tensor att, Tensor x, float p, uint64_t seed) {
  const Layer& w = w_.layers[static_cast<size_t>(l)];
  const float eps = config_.layer_norm_eps;
  Backend& be = *backend_;
  if (p > 0) {
    // ln1_in holds the projection until the LayerNorm overwrites it with x + dropout(proj).
    ELMO_RETURN_IF_ERROR(be.gemm(la.ln1_in, Tensor(), att, w.attn_out_wc, w.attn_out_b, Tensor(), GemmOp::kNT,
                                 Epilogue::kBias, false));
    ELMO_RETURN_IF_ERROR(be.dropout_forward(la.proj, la.ln1_in, p, seed, bert_dropout_stream(l, kSiteAttnOut)));
    ELMO_RETURN_IF_ERROR(be.layernorm_forward(la.h1, la.ln1_in, la.ln1_mean, la.ln1_rstd, la.proj, x, w.ln1_w,
                                              w.ln1_b, eps));
  } else {
    ELMO_RETURN_IF_ERROR(be.gemm(la.ln1_in, Tensor(), att, w.attn_out_wc, w.attn_out_b, x, GemmOp::kNT,
                                 Epilogue::kBiasResidual, false));
    ELMO_RETURN_IF_ERROR(be.layernorm_forward(la.h1, Tensor(), la.ln1_mean, la.ln1_rstd, la.ln1_in, Tensor(),
                                              w.ln1_w, w.ln1_b, eps));
  }
  ELMO_RETURN_IF_ERROR(be.gemm(la.act, la.pre_gelu, la.h1, w.ffn_in_wc, w.ffn_in_b, Tensor(), GemmOp::kNT,
                               Epilogue::kBiasGelu, false));
  if (p > 0) {
    ELMO_RETURN_IF_ERROR(be.gemm(la.ln2_in, Tensor(), la.act, w.ffn_out_wc, w.ffn_out_b, Tensor(), GemmOp::kNT,
                                 Epilogue::kBias, false));
    ELMO_RETURN_IF_ERROR(be.dropout_forward(la.ffn, la.ln2_in, p, seed, bert_dropout_stream(l, kSiteFfnOut)));
    ELMO_RETURN_IF_ERROR(be.layernorm_forward(la.h2, la.ln2_in, la.ln2_mean, la.ln2_rstd, la.ffn, la.h1, w.ln2_w,
                                              w.ln2_b, eps));
  } else {
    ELMO_RETURN_IF_ERROR(be.gemm(la.ln2_in, Tensor(), la.act, w.ffn_out_wc, w.ffn_out_b, la.h1, GemmOp::kNT,
                                 Epilogue::kBiasResidual, false));
    ELMO_RETURN_IF_ERROR(be.layernorm_forward(la.h2, Tensor(), la.ln2_mean, la.ln2_rstd, la.ln2_in, Tensor(),
                                              w.ln2_w, w.ln2_b, eps));
  }
  return Status::ok();
}

double Bert::forward_flops(const BertInputs& in, bool cls_only) const {
  const BertConfig& c = config_;
  const double H = static_cast<double>(c.hidden_size), I = static_cast<double>(c.intermediate_size);
  double width = 0;  // Σ over layers of the attention width Hl (H without pruned heads)
  for (int l = 0; l < c.num_layers; ++l) width += static_cast<double>(c.attention_width(l));
  double f = 2.0 * static_cast<double>(in.T) * (4 * H * width + c.num_layers * 2 * H * I);
  const double Hlast = static_cast<double>(c.attention_width(c.num_layers - 1));
  if (cls_only && heads_.pooler && !heads_.token_classifier && !heads_.slots && in.n_mlm == 0)  // rows other than [CLS]
    f -= 2.0 * static_cast<double>(in.T - in.B) * (H * Hlast + 2 * H * I);
  for (int b = 0; b < in.B && in.offsets; ++b) {
    const double len = in.offsets[b + 1] - in.offsets[b];
    f += 4.0 * len * len * width;  // QKᵀ and PV
  }
  if (heads_.pooler) f += 2.0 * in.B * H * H;
  if (heads_.classifier) f += 2.0 * in.B * H * c.num_labels;
  if (heads_.token_classifier) f += 2.0 * static_cast<double>(in.T) * H * c.num_labels;
  if (heads_.slots) f += 2.0 * static_cast<double>(in.T) * H * c.num_slot_labels;
  if (heads_.mlm) f += 2.0 * in.n_mlm * (H * H + H * static_cast<double>(c.vocab_size));
  return f;
}

}  // namespace elmo
