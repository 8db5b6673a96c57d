// `strata inspect`: what a run of MODEL on N ranks would load, read from the
// headers alone. Runs in one process (rank 0; no MPI): ModelFiles::Open maps
// the files and parses headers, the tensor data pages are never touched, so
// inspecting a multi-GiB checkpoint takes milliseconds.
//
// Byte accounting. Every tensor of the architecture's table belongs to
// exactly one rank: the layer tensors to the rank owning the layer,
// token_embd.weight to the first rank, output_norm.weight and output.weight to
// the last; so the ranks' `weight_bytes` add up to the model's weight bytes.
// A tied model's last rank also maps the embedding as its lm_head: that copy
// is in `mapped_bytes`. `plan_cost_bytes` is the planner's cost (bytes read
// per decoded token; coordinator/plan.h).
//
// KV cache: float32 K and V for every layer (NoPE layers too), per sequence
//   2 x n_ctx x kv_dim x 4 bytes per layer, kv_dim = n_kv_heads * head_dim;
// a rank holds it for its own layers and each of the --parallel sequences.
#include "cli/inspect.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/session.h"
#include "common/status.h"
#include "coordinator/plan.h"
#include "model/architecture.h"
#include "model/blocks.h"
#include "model/gguf.h"
#include "model/model_files.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"
#include "worker/stage.h"

namespace strata {
namespace {

struct InspectFlags {
  std::string model;
  int ranks = 1;
  std::string split = "auto";
  int64_t ctx = 4096;
  int parallel = 1;
  std::string kv_type = "f32";
  RopeOverride rope;  // --rope-scaling / --rope-scale / --yarn-orig-ctx
  std::vector<double> speeds;  // relative speed of each rank (plan for uneven hosts)
  bool json = false;
};
InspectFlags g_flags;

constexpr int64_t kKvGrowthStart = 512;

// ---------------------------------------------------------------------------
// Formatting helpers
// ---------------------------------------------------------------------------

std::string Printf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string Printf(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

double MiB(uint64_t b) { return static_cast<double>(b) / (1024.0 * 1024.0); }

std::string HumanBytes(uint64_t b) {
  if (b < 1024) return std::to_string(b) + " B";
  if (b < (uint64_t{1} << 20)) return Printf("%.1f KiB", b / 1024.0);
  if (b < (uint64_t{1} << 30)) return Printf("%.1f MiB", MiB(b));
  return Printf("%.2f GiB", b / (1024.0 * 1024.0 * 1024.0));
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string JoinInts(const std::vector<int>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s.empty() ? "none" : s;
}

// The shortest decimal that reads back as the same float, as a double, so
// JSON shows rms_eps 1e-06 rather than 9.999999974752427e-07.
double ShortestDouble(float f) {
  for (int digits = 6; digits < 9; ++digits) {
    const double d = std::strtod(Printf("%.*g", digits, static_cast<double>(f)).c_str(), nullptr);
    if (static_cast<float>(d) == f) return d;
  }
  return static_cast<double>(f);
}

const char* RopeLayoutName(RopeLayout l) { return l == RopeLayout::kNeox ? "neox" : "interleaved"; }

// a * b, or InvalidArgument naming `what` when it overflows 64 bits.
Result<uint64_t> CheckedMul(uint64_t a, uint64_t b, const char* what) {
  uint64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) return InvalidArgument(std::string(what) + " overflows 64 bits");
  return r;
}

// ---------------------------------------------------------------------------
// What inspect gathers
// ---------------------------------------------------------------------------

struct TensorRow {
  std::string name;       // as the file names it (GGUF name, or HF name)
  std::string gguf_name;  // strata's name; "" when not part of the architecture
  std::string type;
  std::vector<int64_t> shape;  // as the file stores it (GGUF: ggml order; HF: row-major)
  std::vector<int64_t> ne;     // ggml order (ne[0] = row length)
  uint64_t nbytes = 0;
  int layer = -1;
  std::optional<uint64_t> offset;  // GGUF: from the start of the data region
  std::string file;                // HF: the safetensors file holding it
};

struct RankRow {
  LayerRange layers;
  bool first = false, last = false;
  uint64_t weight_bytes = 0;     // tensors this rank owns (the ranks partition the model)
  uint64_t mapped_bytes = 0;     // + the tied embedding a last rank uses as lm_head
  uint64_t plan_cost_bytes = 0;  // the planner's cost: bytes read per token
  uint64_t kv_bytes = 0;         // at --ctx, --parallel sequences
};

struct KvGrowthRow {
  int64_t ctx = 0;
  std::vector<uint64_t> per_rank;
  uint64_t total = 0;
};

// Per-sequence layer state (KV caches, windows, conv states) of `layers` for
// `n_seq` sequences of `n_ctx` tokens.
Result<uint64_t> KvBytes(const ModelConfig& c, LayerRange layers, TensorType kv_type, int64_t n_ctx, int n_seq) {
  // Each layer's bytes fit 64 bits (n_ctx < 2^31 rows of kv_dim < 2^25 floats).
  uint64_t b = 0;
  for (int l = layers.first; l <= layers.last; ++l) b += LayerStateBytes(c, c.layer_kinds[l], c.layer_window[l], kv_type, n_ctx);
  return CheckedMul(b, static_cast<uint64_t>(n_seq), "KV cache size");
}

// 512, 1024, 2048, ... below n_ctx, then n_ctx itself.
std::vector<int64_t> GrowthContexts(int64_t n_ctx) {
  std::vector<int64_t> v;
  for (int64_t c = kKvGrowthStart; c < n_ctx; c *= 2) v.push_back(c);
  v.push_back(n_ctx);
  return v;
}

nlohmann::json GgufValueJson(const GgufValue& v) {
  constexpr size_t kMaxString = 256;
  switch (v.type) {
    case GgufValueType::kString: {
      std::string_view s = std::get<std::string_view>(v.v);
      if (s.size() <= kMaxString) return std::string(s);
      return {{"type", "string"}, {"length", s.size()}};
    }
    case GgufValueType::kArray: {
      const GgufArray& a = std::get<GgufArray>(v.v);
      return {{"type", "array"}, {"elem_type", GgufValueTypeName(a.elem_type)}, {"count", a.count}};
    }
    case GgufValueType::kBool: return std::get<bool>(v.v);
    case GgufValueType::kFloat32:
    case GgufValueType::kFloat64: return std::get<double>(v.v);
    default:
      if (std::holds_alternative<uint64_t>(v.v)) return std::get<uint64_t>(v.v);
      if (std::holds_alternative<int64_t>(v.v)) return std::get<int64_t>(v.v);
      if (std::holds_alternative<double>(v.v)) return std::get<double>(v.v);
      return nullptr;
  }
}

std::string TokenText(const VocabSpec& vocab, int32_t id) {
  if (id < 0 || static_cast<size_t>(id) >= vocab.tokens.size()) return "";
  return vocab.tokens[static_cast<size_t>(id)];
}

// ---------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------

// Builds the whole report as JSON; the text form is printed from it.
Result<nlohmann::json> Inspect(const InspectFlags& f, std::string* plan_text) {
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<ModelFiles> model, ModelFiles::Open(f.model));
  STRATA_RETURN_IF_ERROR(model->ApplyRopeOverride(f.rope));
  const ModelConfig& c = model->config();
  nlohmann::json j;
  j["model"] = model->path();
  j["format"] = model->format_name();
  j["fingerprint"] = model->Fingerprint();

  // Hyper-parameters.
  std::vector<int> nope;
  for (size_t i = 0; i < c.rope_layers.size(); ++i)
    if (!c.rope_layers[i]) nope.push_back(static_cast<int>(i));
  j["config"] = {
      {"arch", c.arch},         {"n_layers", c.n_layers},         {"hidden", c.hidden},
      {"n_heads", c.n_heads},   {"n_kv_heads", c.n_kv_heads},     {"head_dim", c.head_dim},
      {"q_dim", c.q_dim()},     {"kv_dim", c.kv_dim()},           {"ffn", c.ffn},
      {"vocab", c.vocab},       {"n_ctx_train", c.n_ctx_train},   {"rms_eps", ShortestDouble(c.rms_eps)},
      {"rope_theta", ShortestDouble(c.rope.theta)}, {"rope_layout", RopeLayoutName(c.rope.layout)},
      {"nope_layers", nope},    {"tied_embeddings", c.tied_embeddings},
      {"bos_id", c.bos_id},     {"eos_ids", c.eos_ids},
  };
  // What varies between architectures.
  nlohmann::json kinds = nlohmann::json::array(), windows = nlohmann::json::array();
  for (int i = 0; i < c.n_layers; ++i) {
    kinds.push_back(LayerKindName(c.layer_kinds[i]));
    windows.push_back(c.layer_window[i]);
  }
  j["config"]["layer_kinds"] = kinds;
  j["config"]["layer_window"] = windows;
  j["config"]["rope_scaling"] = {{"type", RopeScalingName(c.rope.scaling)},
                                 {"factor", ShortestDouble(c.rope.factor)},
                                 {"original_ctx", c.rope.original_ctx},
                                 {"attention_factor", ShortestDouble(c.rope.attention_factor)},
                                 {"freq_factors", !c.rope.freq_factors.empty()}};
  j["config"]["attention"] = {{"qkv_bias", c.qkv_bias}, {"out_bias", c.out_bias}, {"qk_norm", c.qk_norm},
                              {"temperature_beta", ShortestDouble(c.attn_temperature_beta)},
                              {"temperature_length", c.attn_temperature_length}};
  j["config"]["experts"] = {{"n_experts", c.n_experts}, {"n_used", c.n_experts_used}, {"expert_ffn", c.expert_ffn},
                            {"renormalize", c.expert_weights_norm}};
  j["config"]["conv_kernel"] = c.conv_kernel;

  // Tokenizer: loaded and validated as generate would, so a bad one shows here.
  STRATA_ASSIGN_OR_RETURN(VocabSpec vocab, model->LoadVocab());
  const size_t n_tokens = vocab.tokens.size(), n_merges = vocab.merges.size();
  nlohmann::json tok = {
      {"tokens", n_tokens},        {"merges", n_merges},
      {"bos_id", vocab.bos_id},    {"bos", TokenText(vocab, vocab.bos_id)},
      {"eos_id", vocab.eos_id},    {"eos", TokenText(vocab, vocab.eos_id)},
      {"add_bos", vocab.add_bos},  {"pre", vocab.pre},
  };
  STRATA_ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::Create(std::move(vocab)));
  if (tokenizer.vocab_size() > c.vocab)
    return DataLoss("model '" + f.model + "': the tokenizer has " + std::to_string(tokenizer.vocab_size()) +
                    " tokens but the embedding only " + std::to_string(c.vocab) + " rows");
  std::optional<std::string> chat = model->ChatTemplate();
  tok["chat_template"] = chat.has_value();
  tok["chat_template_chars"] = chat ? chat->size() : 0;
  j["tokenizer"] = tok;

  // Tensor table, in the file's order.
  std::map<std::string, const TensorSpec*> by_gguf, by_hf;
  for (const TensorSpec& s : model->tensor_table()) {
    by_gguf[s.gguf_name] = &s;
    by_hf[s.hf_name] = &s;
  }
  std::vector<TensorRow> rows;
  if (const GgufFile* g = model->gguf()) {
    j["gguf"] = {{"version", g->version()}, {"alignment", g->alignment()}, {"data_offset", g->data_offset()},
                 {"file_size", g->file_size()}, {"n_kv", g->metadata().size()}};
    nlohmann::json meta = nlohmann::json::object();
    for (const auto& [key, value] : g->metadata()) meta[key] = GgufValueJson(value);
    j["gguf"]["metadata"] = meta;
    for (const GgufTensor& t : g->tensors()) {
      TensorRow r;
      r.name = std::string(t.name);
      r.type = TypeName(t.type);
      r.ne.assign(t.ne, t.ne + t.n_dims);
      r.shape = r.ne;
      r.nbytes = t.nbytes;
      r.offset = t.offset;
      if (auto it = by_gguf.find(r.name); it != by_gguf.end()) {
        r.gguf_name = r.name;
        r.layer = it->second->layer;
      }
      rows.push_back(std::move(r));
    }
  } else {
    // ModelFiles keeps its safetensors private; mapping the headers again
    // costs a few page faults and tells which shard holds each tensor.
    STRATA_ASSIGN_OR_RETURN(auto st, SafetensorsModel::OpenDir(model->path()));
    nlohmann::json files = nlohmann::json::array();
    for (const std::string& p : st->files()) {
      std::error_code ec;
      const uintmax_t size = std::filesystem::file_size(p, ec);
      files.push_back({{"file", std::filesystem::path(p).filename().string()}, {"bytes", ec ? 0 : size}});
    }
    j["hf"] = {{"files", files}, {"metadata", st->metadata()}};
    for (const SafetensorsTensor& t : st->tensors()) {
      TensorRow r;
      r.name = t.name;
      r.type = TypeName(t.type);
      r.shape = t.shape;
      r.ne.assign(t.shape.rbegin(), t.shape.rend());
      r.nbytes = t.nbytes;
      r.file = std::filesystem::path(t.file).filename().string();
      if (auto it = by_hf.find(r.name); it != by_hf.end()) {
        r.gguf_name = it->second->gguf_name;
        r.layer = it->second->layer;
      }
      rows.push_back(std::move(r));
    }
  }
  nlohmann::json tensors = nlohmann::json::array();
  uint64_t file_tensor_bytes = 0;
  for (const TensorRow& r : rows) {
    nlohmann::json t = {{"name", r.name}, {"type", r.type}, {"shape", r.shape}, {"ne", r.ne},
                        {"bytes", r.nbytes}, {"layer", r.layer}, {"used", !r.gguf_name.empty()}};
    if (r.gguf_name != r.name) t["gguf_name"] = r.gguf_name;
    if (r.offset) t["offset"] = *r.offset;
    if (!r.file.empty()) t["file"] = r.file;
    tensors.push_back(std::move(t));
    file_tensor_bytes += r.nbytes;
  }
  j["n_tensors"] = rows.size();
  j["tensor_bytes"] = file_tensor_bytes;  // every tensor in the file(s)
  j["tensors"] = std::move(tensors);

  // Bytes per layer and the global tensors; each table tensor counted once.
  uint64_t weight_bytes = 0, embd = 0, out_norm = 0, out = 0;
  for (const TensorSpec& s : model->tensor_table()) {
    auto w = model->Tensor(s.gguf_name);
    if (!w.ok()) continue;  // an optional tensor (output.weight of a tied model)
    weight_bytes += w->nbytes;
    if (s.role == TensorRole::kTokenEmbedding) embd += w->nbytes;
    if (s.role == TensorRole::kOutputNorm) out_norm += w->nbytes;
    if (s.role == TensorRole::kOutput) out += w->nbytes;
  }
  std::vector<uint64_t> layer_bytes;
  nlohmann::json layers = nlohmann::json::array();
  for (int i = 0; i < c.n_layers; ++i) {
    layer_bytes.push_back(model->LayerBytes(i));
    layers.push_back({{"layer", i}, {"bytes", layer_bytes.back()}, {"kind", LayerKindName(c.layer_kinds[i])},
                      {"window", c.layer_window[i]}, {"rope", bool(c.rope_layers[i])}});
  }
  j["weight_bytes"] = weight_bytes;  // the architecture's tensors: what the ranks load
  j["embedding_bytes"] = embd;
  j["output_norm_bytes"] = out_norm;
  j["output_bytes"] = out;
  j["layers"] = std::move(layers);

  STRATA_ASSIGN_OR_RETURN(const TensorType kv_type, ParseKvType(f.kv_type));
  STRATA_RETURN_IF_ERROR(CheckKvType(c, kv_type));
  // The plan.
  // --split measure needs the ranks running: inspect plans it with the cost
  // model (over --speeds), as auto.
  PlanOptions po;
  po.sequences = f.parallel;
  po.speeds = f.speeds;
  STRATA_ASSIGN_OR_RETURN(LayerPlan plan, MakeLayerPlan(f.split == "measure" ? "auto" : f.split, f.ranks, CostsOf(*model), po));
  *plan_text = DescribePlan(plan);
  std::vector<RankRow> ranks;
  for (const StagePlan& s : plan.stages) {
    RankRow r;
    r.layers = s.layers;
    r.first = s.first;
    r.last = s.last;
    r.plan_cost_bytes = s.weight_bytes;
    for (int l = s.layers.first; l <= s.layers.last; ++l) r.weight_bytes += layer_bytes[static_cast<size_t>(l)];
    if (s.first) r.weight_bytes += embd;
    if (s.last) r.weight_bytes += out_norm + out;
    r.mapped_bytes = r.weight_bytes + (s.last && !s.first && c.tied_embeddings ? embd : 0);
    STRATA_ASSIGN_OR_RETURN(r.kv_bytes, KvBytes(c, s.layers, kv_type, f.ctx, f.parallel));
    ranks.push_back(r);
  }
  // What a rank needs resident is what it maps plus its cache; compared with
  // this host's available memory (a host like this one per rank, or all
  // ranks here).
  const uint64_t avail = AvailableMemoryBytes();
  nlohmann::json jranks = nlohmann::json::array();
  uint64_t kv_total = 0, need_total = 0;
  for (size_t i = 0; i < ranks.size(); ++i) {
    const RankRow& r = ranks[i];
    kv_total += r.kv_bytes;
    need_total += r.mapped_bytes + r.kv_bytes;
    jranks.push_back({{"rank", i}, {"first_layer", r.layers.first}, {"last_layer", r.layers.last},
                      {"n_layers", r.layers.count()}, {"first", r.first}, {"last", r.last},
                      {"weight_bytes", r.weight_bytes}, {"mapped_bytes", r.mapped_bytes},
                      {"plan_cost_bytes", r.plan_cost_bytes}, {"kv_bytes", r.kv_bytes},
                      {"fits_host", avail == 0 || r.mapped_bytes + r.kv_bytes <= avail},
                      {"decode_ms", plan.stages[i].time.decode * 1e3}, {"prefill_ms", plan.stages[i].time.prefill * 1e3},
                      {"speed", f.speeds.empty() ? 1.0 : f.speeds[i]}});
  }
  nlohmann::json growth = nlohmann::json::array();
  for (int64_t ctx : GrowthContexts(f.ctx)) {
    nlohmann::json per_rank = nlohmann::json::array();
    uint64_t total = 0;
    for (const RankRow& r : ranks) {
      STRATA_ASSIGN_OR_RETURN(uint64_t b, KvBytes(c, r.layers, kv_type, ctx, f.parallel));
      per_rank.push_back(b);
      total += b;
    }
    growth.push_back({{"ctx", ctx}, {"per_rank", per_rank}, {"total", total}});
  }
  const uint64_t kv_layer_seq = LayerStateBytes(c, LayerKind::kAttention, 0, kv_type, f.ctx);
  j["plan"] = {{"source", plan.source}, {"n_ranks", f.ranks}, {"ctx", f.ctx}, {"parallel", f.parallel}, {"kv_type", f.kv_type},
               {"decode_tokens", plan.decode_tokens}, {"balances", plan.balances_decode ? "decode" : "prefill"},
               {"ctx_exceeds_train", c.n_ctx_train > 0 && f.ctx > c.n_ctx_train},
               {"kv_bytes_per_layer_per_sequence", kv_layer_seq}, {"kv_bytes", kv_total},
               {"host_available_bytes", avail}, {"need_bytes", need_total},
               {"all_ranks_fit_host", avail == 0 || need_total <= avail},
               {"ranks", jranks}, {"kv_growth", growth}};
  return j;
}

// ---------------------------------------------------------------------------
// Text output
// ---------------------------------------------------------------------------

void PrintText(const nlohmann::json& j, const std::string& plan_text) {
  const auto& c = j["config"];
  const auto& tok = j["tokenizer"];
  const auto& p = j["plan"];
  const bool gguf = j["format"] == "gguf";
  std::string out;
  out += "model         " + j["model"].get<std::string>() + "\n";
  if (gguf) {
    const auto& g = j["gguf"];
    out += Printf("format        gguf v%u, %s, %zu tensors, %zu metadata keys, data at byte %llu\n",
                  g["version"].get<unsigned>(), HumanBytes(g["file_size"].get<uint64_t>()).c_str(),
                  j["n_tensors"].get<size_t>(), g["n_kv"].get<size_t>(),
                  static_cast<unsigned long long>(g["data_offset"].get<uint64_t>()));
  } else {
    std::string files;
    for (const auto& f : j["hf"]["files"])
      files += (files.empty() ? "" : ", ") + f["file"].get<std::string>() + " (" + HumanBytes(f["bytes"].get<uint64_t>()) + ")";
    out += Printf("format        hf (config.json + safetensors), %zu tensors in ", j["n_tensors"].get<size_t>()) + files + "\n";
  }
  out += "fingerprint   " + j["fingerprint"].get<std::string>() + "\n";
  out += "architecture  " + c["arch"].get<std::string>() + "\n";
  out += Printf("  n_layers %d  hidden %d  n_heads %d  n_kv_heads %d  head_dim %d  ffn %d  vocab %d\n",
                c["n_layers"].get<int>(), c["hidden"].get<int>(), c["n_heads"].get<int>(), c["n_kv_heads"].get<int>(),
                c["head_dim"].get<int>(), c["ffn"].get<int>(), c["vocab"].get<int>());
  out += Printf("  rms_eps %g  rope_theta %g  rope_layout %s  n_ctx_train %d  tied embeddings %s\n",
                c["rms_eps"].get<double>(), c["rope_theta"].get<double>(), c["rope_layout"].get<std::string>().c_str(),
                c["n_ctx_train"].get<int>(), c["tied_embeddings"].get<bool>() ? "yes" : "no");
  out += "  NoPE layers " + JoinInts(c["nope_layers"].get<std::vector<int>>()) + "\n";
  const auto& rs = c["rope_scaling"];
  if (rs["type"] != "none" || rs["freq_factors"].get<bool>())
    out += Printf("  rope scaling %s  factor %g  original ctx %d  attention factor %g%s\n", rs["type"].get<std::string>().c_str(),
                  rs["factor"].get<double>(), rs["original_ctx"].get<int>(), rs["attention_factor"].get<double>(),
                  rs["freq_factors"].get<bool>() ? "  (frequency divisors from rope_freqs.weight)" : "");
  const auto& at = c["attention"];
  if (at["qkv_bias"].get<bool>() || at["out_bias"].get<bool>() || at["qk_norm"].get<bool>() || at["temperature_beta"].get<double>() != 0)
    out += Printf("  attention: qkv bias %s  output bias %s  q/k norm %s  temperature beta %g over %d\n",
                  at["qkv_bias"].get<bool>() ? "yes" : "no", at["out_bias"].get<bool>() ? "yes" : "no",
                  at["qk_norm"].get<bool>() ? "yes" : "no", at["temperature_beta"].get<double>(), at["temperature_length"].get<int>());
  const auto& ex = c["experts"];
  if (ex["n_experts"].get<int>() > 0)
    out += Printf("  experts %d, %d per token, %d wide each%s\n", ex["n_experts"].get<int>(), ex["n_used"].get<int>(),
                  ex["expert_ffn"].get<int>(), ex["renormalize"].get<bool>() ? ", weights renormalized" : "");
  if (c["conv_kernel"].get<int>() > 0) out += Printf("  short convolution of %d taps\n", c["conv_kernel"].get<int>());
  out += Printf("  bos %d  eos ", c["bos_id"].get<int>()) + JoinInts(c["eos_ids"].get<std::vector<int>>()) + "\n";
  out += Printf("tokenizer     %zu tokens, %zu merges, pre %s, bos %d '%s', eos %d '%s', add_bos %s, chat template %s\n",
                tok["tokens"].get<size_t>(), tok["merges"].get<size_t>(), tok["pre"].get<std::string>().c_str(),
                tok["bos_id"].get<int>(), tok["bos"].get<std::string>().c_str(), tok["eos_id"].get<int>(),
                tok["eos"].get<std::string>().c_str(), tok["add_bos"].get<bool>() ? "yes" : "no",
                tok["chat_template"].get<bool>()
                    ? ("yes (" + std::to_string(tok["chat_template_chars"].get<size_t>()) + " chars)").c_str()
                    : "no");

  out += Printf("\ntensors (%zu, %s; weights used %s)\n", j["n_tensors"].get<size_t>(),
                HumanBytes(j["tensor_bytes"].get<uint64_t>()).c_str(), HumanBytes(j["weight_bytes"].get<uint64_t>()).c_str());
  out += Printf("  %-48s %-5s %-20s %12s  %s\n", "name", "type", gguf ? "ne (ggml order)" : "shape", "bytes",
                gguf ? "offset" : "file");
  for (const auto& t : j["tensors"]) {
    std::string where = gguf ? std::to_string(t["offset"].get<uint64_t>()) : t["file"].get<std::string>();
    if (!t["used"].get<bool>()) where += "  (unused)";
    out += Printf("  %-48s %-5s %-20s %12llu  %s\n", t["name"].get<std::string>().c_str(),
                  t["type"].get<std::string>().c_str(), ShapeText(t["shape"].get<std::vector<int64_t>>()).c_str(),
                  static_cast<unsigned long long>(t["bytes"].get<uint64_t>()), where.c_str());
  }

  out += Printf("\nbytes per layer (+ embedding %s, output_norm %s, output %s)\n",
                HumanBytes(j["embedding_bytes"].get<uint64_t>()).c_str(),
                HumanBytes(j["output_norm_bytes"].get<uint64_t>()).c_str(),
                c["tied_embeddings"].get<bool>() ? "tied to the embedding"
                                                 : HumanBytes(j["output_bytes"].get<uint64_t>()).c_str());
  out += Printf("  %5s  %-9s  %-4s  %7s  %12s\n", "layer", "kind", "rope", "window", "bytes");
  for (const auto& l : j["layers"])
    out += Printf("  %5d  %-9s  %-4s  %7s  %12llu  %s\n", l["layer"].get<int>(), l["kind"].get<std::string>().c_str(),
                  l["kind"] != "attention" ? "-" : l["rope"].get<bool>() ? "yes" : "NoPE",
                  l["window"].get<int>() > 0 ? std::to_string(l["window"].get<int>()).c_str() : "-",
                  static_cast<unsigned long long>(l["bytes"].get<uint64_t>()), HumanBytes(l["bytes"].get<uint64_t>()).c_str());

  out += "\n" + plan_text;
  const int64_t ctx = p["ctx"].get<int64_t>();
  const int parallel = p["parallel"].get<int>();
  out += Printf("\nper rank at ctx %lld, %d sequence%s (KV cache %s: %s per layer per sequence)\n",
                static_cast<long long>(ctx), parallel, parallel == 1 ? "" : "s", p["kv_type"].get<std::string>().c_str(),
                HumanBytes(p["kv_bytes_per_layer_per_sequence"].get<uint64_t>()).c_str());
  if (p["ctx_exceeds_train"].get<bool>())
    out += Printf("  note: ctx %lld is beyond the model's training context %d\n", static_cast<long long>(ctx),
                  c["n_ctx_train"].get<int>());
  out += Printf("  %4s  %-9s %3s  %12s  %12s  %12s  %12s\n", "rank", "layers", "n", "weights MiB", "mapped MiB",
                "KV MiB", "total MiB");
  uint64_t sum_w = 0, sum_kv = 0, sum_m = 0;
  for (const auto& r : p["ranks"]) {
    const uint64_t w = r["weight_bytes"], m = r["mapped_bytes"], kv = r["kv_bytes"];
    sum_w += w;
    sum_m += m;
    sum_kv += kv;
    std::string range = std::to_string(r["first_layer"].get<int>()) + "-" + std::to_string(r["last_layer"].get<int>());
    out += Printf("  %4d  %-9s %3d  %12.2f  %12.2f  %12.2f  %12.2f\n", r["rank"].get<int>(), range.c_str(),
                  r["n_layers"].get<int>(), MiB(w), MiB(m), MiB(kv), MiB(m + kv));
  }
  out += Printf("  %4s  %-9s %3s  %12.2f  %12.2f  %12.2f  %12.2f\n", "all", "", "", MiB(sum_w), MiB(sum_m), MiB(sum_kv),
                MiB(sum_m + sum_kv));

  const uint64_t avail = p["host_available_bytes"].get<uint64_t>();
  if (avail > 0) {
    std::string short_ranks;
    for (const auto& r : p["ranks"])
      if (!r["fits_host"].get<bool>()) short_ranks += (short_ranks.empty() ? "" : ",") + std::to_string(r["rank"].get<int>());
    out += Printf("  this host has %.2f GiB available: %s; all ranks on this host: %s (%.2f GiB)\n",
                  avail / 1073741824.0,
                  short_ranks.empty() ? "every rank fits a host like it" : ("rank(s) " + short_ranks + " do not fit a host like it").c_str(),
                  p["all_ranks_fit_host"].get<bool>() ? "fits" : "does NOT fit", p["need_bytes"].get<uint64_t>() / 1073741824.0);
  }

  out += Printf("\nKV cache MiB by context (%d sequence%s)\n", parallel, parallel == 1 ? "" : "s");
  out += Printf("  %8s", "ctx");
  for (size_t i = 0; i < p["ranks"].size(); ++i) out += Printf("  %10s", ("rank " + std::to_string(i)).c_str());
  out += Printf("  %10s\n", "total");
  for (const auto& g : p["kv_growth"]) {
    out += Printf("  %8lld", static_cast<long long>(g["ctx"].get<int64_t>()));
    for (const auto& b : g["per_rank"]) out += Printf("  %10.2f", MiB(b.get<uint64_t>()));
    out += Printf("  %10.2f\n", MiB(g["total"].get<uint64_t>()));
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
}

}  // namespace

CLI::App* AddInspectCommand(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("inspect", "describe a model and its plan from the headers alone (reads no weights)");
  InspectFlags& f = g_flags;
  cmd->add_option("model,-m,--model", f.model, "model: a .gguf file or an HF model directory")->required();
  cmd->add_option("--ranks", f.ranks, "pipeline ranks to plan for")->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--split", f.split,
                  "layer plan: auto, measure (planned here as auto over --speeds), ranges such as 0-8,9-17,18-26,27-35, "
                  "or a plan file (configs/*.json)");
  cmd->add_option("--ctx", f.ctx, "context size in tokens (for the KV cache)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  cmd->add_option("--parallel", f.parallel, "sequences held at once (for the KV cache, and the plan's decode micro-batch)")
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--speeds", f.speeds,
                  "relative speed of each rank, e.g. 1,0.5 (a host with half the CPU): the plan balances their time")
      ->delimiter(',')
      ->check(CLI::Range(0.001, 1000.0));
  cmd->add_option("--kv-type", f.kv_type, "KV cache storage type: f32, f16, bf16 or q8_0")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0"}));
  AddRopeFlags(cmd, &f.rope);
  cmd->add_flag("--json", f.json, "print one JSON object on stdout");
  return cmd;
}

int RunInspect() {
  std::string plan_text;
  auto j = Inspect(g_flags, &plan_text);
  if (!j.ok()) {
    std::fflush(stdout);
    std::fprintf(stderr, "strata: error: %s\n", j.status().message().c_str());
    return 1;
  }
  if (g_flags.json) {
    std::cout << j->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
  } else {
    PrintText(*j, plan_text);
  }
  return 0;
}

}  // namespace strata
