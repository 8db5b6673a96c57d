// WriteModelGguf: metadata, tensor types and row conversion (gguf_convert.h).
#include "model/gguf_convert.h"

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

// llama.cpp's GGUF marks NoPE layers only by SmolLM3's fixed rule (every
// 4th layer); other patterns cannot be described.
Status CheckRopeLayers(const ModelConfig& cfg, const std::string& path) {
  for (int i = 0; i < cfg.n_layers; ++i) {
    const bool expected = cfg.arch != "smollm3" || (i + 1) % 4 != 0;
    if (cfg.rope_layers[i] != expected)
      return Unimplemented("model '" + path + "': layer " + std::to_string(i) + (cfg.rope_layers[i] ? " uses" : " skips") +
                           " RoPE, which llama.cpp's GGUF for " + cfg.arch + " cannot express");
  }
  return Status::Ok();
}

Status SetHfMetadata(const ModelFiles& model, const QuantMix& mix, GgufWriter* w) {
  const ModelConfig& c = model.config();
  STRATA_RETURN_IF_ERROR(CheckRopeLayers(c, model.path()));
  const std::string a = c.arch;
  w->SetString("general.architecture", a);
  w->SetString("general.type", "model");
  w->SetString("general.name", NameFromDirectory(model.path()));
  w->SetString("general.size_label", SizeLabel(model));
  w->SetU32(a + ".block_count", c.n_layers);
  w->SetU32(a + ".context_length", c.n_ctx_train);
  w->SetU32(a + ".embedding_length", c.hidden);
  w->SetU32(a + ".feed_forward_length", c.ffn);
  w->SetU32(a + ".attention.head_count", c.n_heads);
  w->SetU32(a + ".attention.head_count_kv", c.n_kv_heads);
  w->SetF32(a + ".rope.freq_base", c.rope_theta);
  w->SetF32(a + ".attention.layer_norm_rms_epsilon", c.rms_eps);
  w->SetU32(a + ".attention.key_length", c.head_dim);
  w->SetU32(a + ".attention.value_length", c.head_dim);
  w->SetU32(a + ".vocab_size", c.vocab);
  w->SetU32(a + ".rope.dimension_count", c.head_dim);

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

}  // namespace

Status WriteModelGguf(const ModelFiles& model, const std::string& out_path, const ConvertOptions& opts, ThreadPool* pool) {
  const ModelConfig& cfg = model.config();
  const bool from_hf = model.format() == ModelFiles::Format::kHfDirectory;
  GgufWriter w;
  if (from_hf) {
    STRATA_RETURN_IF_ERROR(SetHfMetadata(model, opts.mix, &w));
  } else {
    CopyGgufMetadata(*model.gguf(), opts.mix, &w);
  }

  // The tensors present, in the table's order with global tensors first.
  std::vector<const TensorSpec*> specs;
  for (const TensorSpec& s : model.tensor_table())
    if (s.layer < 0 && model.HasTensor(s.gguf_name)) specs.push_back(&s);
  for (const TensorSpec& s : model.tensor_table())
    if (s.layer >= 0 && model.HasTensor(s.gguf_name)) specs.push_back(&s);

  const size_t n_tensors = specs.size();
  for (size_t k = 0; k < n_tensors; ++k) {
    const TensorSpec& spec = *specs[k];
    STRATA_ASSIGN_OR_RETURN(WeightTensor src, model.Tensor(spec.gguf_name));
    const int64_t row_length = src.row_length();
    int64_t rows = 1;
    for (size_t d = 1; d < src.ne.size(); ++d) rows *= src.ne[d];
    TensorType dst = MixTensorType(opts.mix, spec.role, spec.layer, cfg.n_layers, row_length);
    const bool src_float = src.type == TensorType::kF32 || src.type == TensorType::kF16 || src.type == TensorType::kBF16;
    if (!src_float && dst != src.type) {
      if (!opts.allow_requantize)
        return FailedPrecondition("tensor '" + spec.gguf_name + "' is already " + Traits(src.type).name + "; re-quantizing it to " +
                                  Traits(dst).name + " compounds the error (pass --allow-requantize to do it anyway)");
    }
    if (src.ne.size() == 1) dst = src_float ? TensorType::kF32 : src.type;  // 1-D (norms) stay as they are, in F32
    // llama.cpp's llama-family layout: permute HF attn_q / attn_k rows.
    const bool permute = from_hf && (spec.role == TensorRole::kAttnQ || spec.role == TensorRole::kAttnK);
    const int head_dim = cfg.head_dim;
    STRATA_ASSIGN_OR_RETURN(uint64_t src_row_bytes, RowBytes(src.type, row_length));
    STRATA_ASSIGN_OR_RETURN(uint64_t dst_row_bytes, RowBytes(dst, row_length));
    auto progress = opts.progress;
    std::string line;
    {
      char head[32];
      std::snprintf(head, sizeof head, "[%*zu/%zu] ", static_cast<int>(std::to_string(n_tensors).size()), k + 1, n_tensors);
      line = head + spec.gguf_name + " " + Traits(src.type).name + " -> " + Traits(dst).name + " " + ShapeText(src.ne);
    }
    const uint8_t* data = src.data;
    const TensorType src_type = src.type;
    w.AddTensorSource(spec.gguf_name, dst, src.ne, [=](std::span<uint8_t> out) -> Status {
      if (progress) progress(line);
      auto convert_rows = [&](int64_t begin, int64_t end) {
        std::vector<float> row(static_cast<size_t>(row_length));
        for (int64_t r = begin; r < end; ++r) {
          const int64_t from = permute ? PermutedSourceRow(r, head_dim) : r;
          const uint8_t* in = data + from * src_row_bytes;
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
