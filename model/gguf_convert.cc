// WriteModelGguf: metadata, tensor types and row conversion (gguf_convert.h).
#include "model/gguf_convert.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/quant.h"
#include "model/gguf.h"
#include "model/rope.h"
#include "model/gguf_writer.h"
#include "model/tokenizer.h"

namespace strata {
namespace {

// "smol-shakespeare" -> "Smol Shakespeare", as llama.cpp names a model after its directory.
std::string NameFromDirectory(const std::string& path) {
  std::string base = std::filesystem::path(path).lexically_normal().filename().string();
  if (base.empty()) base = std::filesystem::path(path).lexically_normal().parent_path().filename().string();
  std::string out;
  bool start = true;
  for (char c : base) {
    if (c == '-' || c == '_') {
      out += ' ';
      start = true;
      continue;
    }
    out += start ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c;
    start = false;
  }
  return out;
}

// "22M", "3.1B": the parameter count (each tensor once) as llama.cpp labels it.
std::string SizeLabel(const ModelFiles& model) {
  double n = 0;
  for (const TensorSpec& s : model.tensor_table()) {
    if (!model.HasTensor(s.gguf_name)) continue;
    double e = 1;
    for (int64_t d : s.ne) e *= static_cast<double>(d);
    n += e;
  }
  const char* unit = "K";
  double scale = 1e3;
  if (n >= 1e12) unit = "T", scale = 1e12;
  else if (n >= 1e9) unit = "B", scale = 1e9;
  else if (n >= 1e6) unit = "M", scale = 1e6;
  char buf[32];
  const double v = n / scale;
  std::snprintf(buf, sizeof buf, v < 10 ? "%.1f%s" : "%.0f%s", v, unit);
  return buf;
}

Status SetHfMetadata(const ModelFiles& model, const Architecture& arch, const QuantMix& mix, GgufWriter* w) {
  const ModelConfig& c = model.config();
  w->SetString("general.architecture", std::string(arch.gguf_name));
  w->SetString("general.type", "model");
  w->SetString("general.name", NameFromDirectory(model.path()));
  w->SetString("general.size_label", SizeLabel(model));
  STRATA_RETURN_IF_ERROR(arch.write_gguf_metadata(c, w).WithContext("model '" + model.path() + "'"));

  STRATA_ASSIGN_OR_RETURN(VocabSpec v, model.LoadVocab());
  w->SetString("tokenizer.ggml.model", "gpt2");
  w->SetString("tokenizer.ggml.pre", v.pre);
  w->SetStringArray("tokenizer.ggml.tokens", v.tokens);
  std::vector<int32_t> types = v.token_types;
  if (types.empty()) types.assign(v.tokens.size(), 1);  // normal
  w->SetI32Array("tokenizer.ggml.token_type", types);
  w->SetStringArray("tokenizer.ggml.merges", v.merges);
  if (v.bos_id >= 0) w->SetU32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(v.bos_id));
  if (v.eos_id >= 0) w->SetU32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(v.eos_id));
  // The padding id is config.json's pad_token_id when it names a token.
  const std::string config_path = model.path() + "/config.json";
  if (std::ifstream in(config_path); in) {
    nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_object() && j.contains("pad_token_id") && j["pad_token_id"].is_number_integer()) {
      const int64_t pad = j["pad_token_id"].get<int64_t>();
      if (pad >= 0 && pad < static_cast<int64_t>(v.tokens.size())) w->SetU32("tokenizer.ggml.padding_token_id", static_cast<uint32_t>(pad));
    }
  }
  w->SetU32("general.quantization_version", 2);
  w->SetU32("general.file_type", mix.file_type);
  if (std::optional<std::string> tmpl = model.ChatTemplate()) w->SetString("tokenizer.chat_template", *tmpl);
  w->SetBool("tokenizer.ggml.add_bos_token", v.add_bos);
  return Status::Ok();
}

void CopyGgufMetadata(const GgufFile& src, const QuantMix& mix, GgufWriter* w) {
  // Keys in the source's order (the map is sorted; order is cosmetic in GGUF).
  for (const auto& [key, value] : src.metadata()) {
    if (key == "general.alignment") continue;
    w->Set(key, GgufWriter::Value::FromRead(value));
  }
  w->SetU32("general.quantization_version", 2);
  w->SetU32("general.file_type", mix.file_type);
}

// Source row of destination row r of a permuted attn_q / attn_k: llama.cpp's
// permute(), w.reshape(n_heads, 2, d/2, n_in).swapaxes(1, 2): destination
// (head h, pair i, half j) comes from source (h, j, i).
int64_t PermutedSourceRow(int64_t r, int head_dim) {
  const int64_t h = r / head_dim, within = r % head_dim;
  const int64_t i = within / 2, j = within % 2;
  return h * head_dim + j * (head_dim / 2) + i;
}

std::string ShapeText(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

// Llama 3.1+ scaling as llama.cpp's converter stores it: per frequency, the
// divisor of theta_i that the scaled frequency amounts to.
std::vector<float> Llama3FreqFactors(const ModelConfig& cfg) {
  RopeConfig plain = cfg.rope;
  plain.scaling = RopeScaling::kNone;
  const std::vector<float> base = RopeInvFreq(plain, cfg.head_dim), scaled = RopeInvFreq(cfg.rope, cfg.head_dim);
  std::vector<float> f(base.size());
  for (size_t i = 0; i < f.size(); ++i) f[i] = base[i] / scaled[i];
  return f;
}

}  // namespace

Status WriteModelGguf(const ModelFiles& model, const std::string& out_path, const ConvertOptions& opts, ThreadPool* pool) {
  const ModelConfig& cfg = model.config();
  const Architecture* arch = FindArchitecture(cfg.arch);
  STRATA_CHECK(arch != nullptr);
  const bool from_hf = model.format() == ModelFiles::Format::kHfDirectory;
  GgufWriter w;
  if (from_hf) {
    STRATA_RETURN_IF_ERROR(SetHfMetadata(model, *arch, opts.mix, &w));
    // llama.cpp's converter drops Mistral's window (its llama GGUF cannot carry one).
    const bool windowed = std::any_of(cfg.layer_window.begin(), cfg.layer_window.end(), [](int x) { return x != 0; });
    if (windowed && opts.progress)
      opts.progress("note: the sliding window of " + cfg.arch + " is not part of llama.cpp's " + std::string(arch->gguf_name) +
                    " GGUF: the file runs with full attention, as llama.cpp runs it");
  } else {
    CopyGgufMetadata(*model.gguf(), opts.mix, &w);
  }

  // The tensors present, in the table's order with global tensors first.
  std::vector<const TensorSpec*> specs;
  for (const TensorSpec& s : model.tensor_table())
    if (s.layer < 0 && model.HasTensor(s.gguf_name)) specs.push_back(&s);
  for (const TensorSpec& s : model.tensor_table())
    if (s.layer >= 0 && model.HasTensor(s.gguf_name)) specs.push_back(&s);

  // An HF Llama 3.1+ checkpoint gets llama.cpp's rope_freqs.weight.
  std::vector<float> freq_factors;
  if (from_hf && cfg.rope.scaling == RopeScaling::kLlama3) freq_factors = Llama3FreqFactors(cfg);
  const size_t n_tensors = specs.size() + (freq_factors.empty() ? 0 : 1);
  if (!freq_factors.empty()) {
    const auto* bytes = reinterpret_cast<const uint8_t*>(freq_factors.data());
    w.AddTensor("rope_freqs.weight", TensorType::kF32, {static_cast<int64_t>(freq_factors.size())},
                std::span<const uint8_t>(bytes, freq_factors.size() * sizeof(float)));
    if (opts.progress) opts.progress("[" + std::to_string(1) + "/" + std::to_string(n_tensors) + "] rope_freqs.weight (llama3 scaling) F32");
  }
  for (size_t k = 0; k < specs.size(); ++k) {
    const TensorSpec& spec = *specs[k];
    STRATA_ASSIGN_OR_RETURN(WeightTensor src, model.Tensor(spec.gguf_name));
    const int64_t row_length = src.row_length();
    const int64_t rows = src.total_rows();
    TensorType dst = MixTensorType(opts.mix, spec, cfg);
    const bool src_float = src.type == TensorType::kF32 || src.type == TensorType::kF16 || src.type == TensorType::kBF16;
    if (!src_float && dst != src.type) {
      if (!opts.allow_requantize)
        return FailedPrecondition("tensor '" + spec.gguf_name + "' is already " + Traits(src.type).name + "; re-quantizing it to " +
                                  Traits(dst).name + " compounds the error (pass --allow-requantize to do it anyway)");
    }
    if (src.ne.size() == 1) dst = src_float ? TensorType::kF32 : src.type;  // 1-D (norms, biases) stay as they are, in F32
    // llama.cpp's layout for the architectures its converter permutes: HF
    // attn_q / attn_k rows (and their biases' elements) regrouped per head.
    const bool permute = from_hf && arch->gguf_permutes_qk &&
                         (spec.role == TensorRole::kAttnQ || spec.role == TensorRole::kAttnK ||
                          spec.role == TensorRole::kAttnQBias || spec.role == TensorRole::kAttnKBias);
    const bool permute_elements = permute && src.ne.size() == 1;
    const int head_dim = cfg.head_dim;
    STRATA_ASSIGN_OR_RETURN(uint64_t src_row_bytes, RowBytes(src.type, row_length));
    STRATA_ASSIGN_OR_RETURN(uint64_t dst_row_bytes, RowBytes(dst, row_length));
    auto progress = opts.progress;
    std::string line;
    {
      char head[32];
      const size_t index = k + 1 + (freq_factors.empty() ? 0 : 1);
      std::snprintf(head, sizeof head, "[%*zu/%zu] ", static_cast<int>(std::to_string(n_tensors).size()), index, n_tensors);
      line = head + spec.gguf_name + " " + Traits(src.type).name + " -> " + Traits(dst).name + " " + ShapeText(src.ne);
    }
    const TensorType src_type = src.type;
    w.AddTensorSource(spec.gguf_name, dst, src.ne, [=](std::span<uint8_t> out) -> Status {
      if (progress) progress(line);
      if (permute_elements) {  // a bias: one row whose elements move
        std::vector<float> in(static_cast<size_t>(row_length)), moved(static_cast<size_t>(row_length));
        DequantizeRow(src_type, src.Row(0, src_row_bytes), in.data(), row_length);
        for (int64_t e = 0; e < row_length; ++e) moved[e] = in[PermutedSourceRow(e, head_dim)];
        QuantizeRow(dst, moved.data(), out.data(), row_length);
        return Status::Ok();
      }
      auto convert_rows = [&](int64_t begin, int64_t end) {
        std::vector<float> row(static_cast<size_t>(row_length));
        for (int64_t r = begin; r < end; ++r) {
          const int64_t from = permute ? PermutedSourceRow(r, head_dim) : r;
          const uint8_t* in = src.Row(from, src_row_bytes);
          uint8_t* to = out.data() + r * dst_row_bytes;
          if (src_type == dst) {
            std::memcpy(to, in, dst_row_bytes);
          } else {
            DequantizeRow(src_type, in, row.data(), row_length);
            QuantizeRow(dst, row.data(), to, row_length);
          }
        }
      };
      if (pool) pool->ParallelFor(rows, convert_rows);
      else convert_rows(0, rows);
      return Status::Ok();
    });
  }
  return w.WriteFile(out_path);
}

}  // namespace strata
