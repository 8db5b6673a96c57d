// `strata make-model`: a GGUF with a preset's real shapes and seeded random
// weights (see make_model.h).
//
// Weights: row r of tensor t is drawn from its own splitmix64 stream seeded by
// (seed, t, r), uniform in [-a, a] with a = sqrt(3) * 0.02 (std 0.02, the
// usual initializer range), so the file is the same whatever the thread
// count. Norm weights are 1. Rows are quantized in parallel, tensor by
// tensor, straight into the file buffer (GgufWriter::AddTensorSource), so
// memory stays at about one tensor.
//
// Types: any mix of model/quant_mix.h (q4_k_m, q8_0, f16, ...).
#include "cli/make_model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <cstdio>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/thread_pool.h"
#include "kernels/quant.h"
#include "model/gguf.h"
#include "model/gguf_writer.h"
#include "model/architecture.h"
#include "model/quant_mix.h"
#include "model/rope.h"

namespace strata {
namespace {

struct MakeModelFlags {
  std::string preset = "smollm3-3b";
  std::string type = "q4_k_m";
  std::string out;
  std::string vocab = "../shared/tokenizer/ggml-vocab-llama-bpe.gguf";
  uint64_t seed = 1;
  int threads = 0;
  int n_layers = 0;  // 0: the preset's
};
MakeModelFlags g_flags;

// A preset: a real model's hyper-parameters (from its config.json), as the
// ModelConfig its architecture file would read; the vocabulary size comes
// from the vocab file.
struct Preset {
  const char* name;
  const char* size_label;
  ModelConfig (*config)();
};

ModelConfig Decoder(const char* arch, int n_layers, int hidden, int ffn, int n_heads, int n_kv_heads, int head_dim, int n_ctx_train,
                    float rope_theta, float rms_eps, bool tied) {
  ModelConfig c;
  c.arch = arch;
  c.n_layers = n_layers;
  c.hidden = hidden;
  c.ffn = ffn;
  c.n_heads = n_heads;
  c.n_kv_heads = n_kv_heads;
  c.head_dim = head_dim;
  c.n_ctx_train = n_ctx_train;
  c.rope.theta = rope_theta;
  c.rms_eps = rms_eps;
  c.tied_embeddings = tied;
  return c;
}

constexpr Preset kPresets[] = {
    // HuggingFaceTB/SmolLM3-3B: NoPE every 4th layer, tied embeddings.
    {"smollm3-3b", "3B", [] { return Decoder("smollm3", 36, 2048, 11008, 16, 4, 128, 65536, 5e6f, 1e-6f, true); }},
    // A small model with the same structure and the full vocabulary (tests).
    {"smollm3-tiny", "30M", [] { return Decoder("smollm3", 4, 256, 512, 4, 1, 64, 4096, 5e6f, 1e-6f, true); }},
    // meta-llama/Llama-3.2-3B: Llama 3.1 rope scaling (factor 32 over 8192).
    {"llama-3.2-3b", "3B",
     [] {
       ModelConfig c = Decoder("llama", 28, 3072, 8192, 24, 8, 128, 131072, 5e5f, 1e-5f, true);
       c.rope.scaling = RopeScaling::kLlama3;
       c.rope.factor = 32.0f;
       c.rope.low_freq_factor = 1.0f;
       c.rope.high_freq_factor = 4.0f;
       c.rope.original_ctx = 8192;
       return c;
     }},
    // Qwen/Qwen3-4B: q/k norms, head_dim 128 with hidden 2560.
    {"qwen3-4b", "4B",
     [] {
       ModelConfig c = Decoder("qwen3", 36, 2560, 9728, 32, 8, 128, 40960, 1e6f, 1e-6f, true);
       c.qk_norm = true;
       return c;
     }},
    // mistralai/Ministral-3-3B: YaRN (factor 16 over 16384), Llama 4's attention temperature.
    {"ministral-3-3b", "3B",
     [] {
       ModelConfig c = Decoder("ministral3", 26, 3072, 9216, 32, 8, 128, 262144, 1e6f, 1e-5f, true);
       c.rope.scaling = RopeScaling::kYarn;
       c.rope.factor = 16.0f;
       c.rope.original_ctx = 16384;
       c.attn_temperature_beta = 0.1f;
       c.attn_temperature_length = 16384;
       return c;
     }},
    // LiquidAI/LFM2-1.2B: 10 convolution + 6 attention layers; ffn 12288 adjusted to 8192.
    {"lfm2-1.2b", "1.2B",
     [] {
       ModelConfig c = Decoder("lfm2", 16, 2048, 8192, 32, 8, 64, 128000, 1e6f, 1e-5f, true);
       c.qk_norm = true;
       c.conv_kernel = 3;
       c.layer_kinds.assign(16, LayerKind::kShortConv);
       for (int i : {2, 5, 8, 10, 12, 14}) c.layer_kinds[i] = LayerKind::kAttention;
       return c;
     }},
    // mistralai/Mixtral-8x7B-v0.1: 8 experts, top 2.
    {"mixtral-8x7b", "8x7B",
     [] {
       ModelConfig c = Decoder("mixtral", 32, 4096, 14336, 32, 8, 128, 32768, 1e6f, 1e-5f, false);
       c.n_experts = 8;
       c.n_experts_used = 2;
       c.expert_ffn = 14336;
       return c;
     }},
    // Qwen/Qwen3-30B-A3B: 128 experts of 768, top 8, renormalized.
    {"qwen3-30b-a3b", "30B-A3B",
     [] {
       ModelConfig c = Decoder("qwen3moe", 48, 2048, 6144, 32, 4, 128, 40960, 1e6f, 1e-6f, false);
       c.qk_norm = true;
       c.n_experts = 128;
       c.n_experts_used = 8;
       c.expert_ffn = 768;
       return c;
     }},
    // Small mixtures with the same structure and the full vocabulary (tests against llama.cpp).
    {"qwen3moe-tiny", "8x64K",
     [] {
       ModelConfig c = Decoder("qwen3moe", 2, 64, 192, 4, 2, 32, 4096, 1e6f, 1e-6f, false);
       c.qk_norm = true;
       c.n_experts = 8;
       c.n_experts_used = 2;
       c.expert_ffn = 96;
       return c;
     }},
};

// ---------------------------------------------------------------------------
// Random rows
// ---------------------------------------------------------------------------

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void RandomRow(uint64_t seed, uint64_t tensor, uint64_t row, float* dst, int64_t n) {
  uint64_t state = seed * 0xD1B54A32D192ED03ull ^ (tensor + 1) * 0x9E3779B97F4A7C15ull ^ (row + 1) * 0xA0761D6478BD642Full;
  constexpr float kHalfRange = 0.034641016f;  // sqrt(3) * 0.02: std 0.02
  for (int64_t i = 0; i < n; ++i) {
    const float u = static_cast<float>(SplitMix64(&state) >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    dst[i] = (2.0f * u - 1.0f) * kHalfRange;
  }
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

// The vocabulary GGUF whose tokenizer.* keys the model gets.
Result<std::unique_ptr<GgufFile>> OpenVocabulary(const std::string& vocab_path, int64_t* vocab_size) {
  auto vocab = GgufFile::Open(vocab_path);
  if (!vocab.ok())
    return vocab.status().WithContext("--vocab (a GGUF holding a tokenizer, e.g. ../shared/tokenizer/ggml-vocab-llama-bpe.gguf)");
  const GgufValue* tokens = (*vocab)->Find("tokenizer.ggml.tokens");
  if (tokens == nullptr || tokens->type != GgufValueType::kArray)
    return InvalidArgument("--vocab '" + vocab_path + "': no tokenizer.ggml.tokens array");
  *vocab_size = static_cast<int64_t>(std::get<GgufArray>(tokens->v).count);
  return std::move(*vocab);
}

class ModelMaker {
 public:
  ModelMaker(uint64_t seed, ThreadPool* pool) : seed_(seed), pool_(pool) {}

  // Random rows: ne[0] elements each, over every other dimension (ggml order).
  void AddRandom(GgufWriter* w, const std::string& name, TensorType type, const std::vector<int64_t>& ne) {
    const uint64_t tensor = n_tensors_++;
    const uint64_t seed = seed_;
    ThreadPool* pool = pool_;
    const int64_t n_in = ne[0];
    int64_t rows = 1;
    for (size_t d = 1; d < ne.size(); ++d) rows *= ne[d];
    total_bytes_ += *GgufWriter::TensorBytes(type, ne);
    w->AddTensorSource(name, type, ne, [=](std::span<uint8_t> out) -> Status {
      const uint64_t row_bytes = *RowBytes(type, n_in);
      pool->ParallelFor(rows, [&](int64_t begin, int64_t end) {
        std::vector<float> row(static_cast<size_t>(n_in));
        for (int64_t r = begin; r < end; ++r) {
          RandomRow(seed, tensor, static_cast<uint64_t>(r), row.data(), n_in);
          QuantizeRow(type, row.data(), out.data() + r * row_bytes, n_in);
        }
      });
      return Status::Ok();
    });
  }

  // An F32 vector of one value (norm weights 1, biases 0).
  void AddConstant(GgufWriter* w, const std::string& name, const std::vector<int64_t>& ne, float value) {
    ++n_tensors_;
    int64_t n = 1;
    for (int64_t d : ne) n *= d;
    std::vector<float> v(static_cast<size_t>(n), value);
    AddFloats(w, name, ne, v);
  }

  void AddFloats(GgufWriter* w, const std::string& name, const std::vector<int64_t>& ne, const std::vector<float>& v) {
    const auto* bytes = reinterpret_cast<const uint8_t*>(v.data());
    total_bytes_ += v.size() * sizeof(float);
    w->AddTensor(name, TensorType::kF32, ne, std::span<const uint8_t>(bytes, v.size() * sizeof(float)));
  }

  uint64_t total_bytes() const { return total_bytes_; }

 private:
  uint64_t seed_;
  ThreadPool* pool_;
  uint64_t n_tensors_ = 0;
  uint64_t total_bytes_ = 0;
};

Status MakeModel(const MakeModelFlags& f) {
  const Preset* preset = nullptr;
  std::string names;
  for (const Preset& p : kPresets) {
    if (f.preset == p.name) preset = &p;
    names += std::string(names.empty() ? "" : ", ") + p.name;
  }
  if (preset == nullptr) return InvalidArgument("--preset '" + f.preset + "': expected one of " + names);
  STRATA_ASSIGN_OR_RETURN(QuantMix mix, ParseQuantMix(f.type));
  ModelConfig c = preset->config();
  // --n-layers keeps the real layer shapes with fewer layers (the first ones'
  // kinds), so that a large mixture fits this machine.
  if (f.n_layers > 0) {
    if (f.n_layers > c.n_layers)
      return InvalidArgument("--n-layers " + std::to_string(f.n_layers) + ": " + f.preset + " has " + std::to_string(c.n_layers) +
                             " layers");
    c.layer_kinds.resize(static_cast<size_t>(f.n_layers));
    c.n_layers = f.n_layers;
  }
  const size_t n = static_cast<size_t>(c.n_layers);
  c.layer_kinds.resize(n, LayerKind::kAttention);
  c.layer_window.assign(n, 0);
  c.rope_layers.assign(n, true);
  if (c.arch == "smollm3")
    for (size_t i = 0; i < n; ++i) c.rope_layers[i] = (i + 1) % 4 != 0;
  const Architecture* arch = FindArchitecture(c.arch);
  STRATA_CHECK(arch != nullptr);

  int64_t vocab = 0;
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> vocab_file, OpenVocabulary(f.vocab, &vocab));
  c.vocab = static_cast<int>(std::min<int64_t>(vocab, INT32_MAX));
  STRATA_RETURN_IF_ERROR(c.Validate("--preset " + f.preset));
  GgufWriter w;
  w.SetString("general.architecture", std::string(arch->gguf_name));
  w.SetString("general.type", "model");
  std::string name = std::string(preset->name) + " (random weights, seed " + std::to_string(f.seed) + ")";
  if (f.n_layers > 0) name += " (" + std::to_string(c.n_layers) + " layers)";
  w.SetString("general.name", name);
  w.SetString("general.size_label", preset->size_label);
  STRATA_RETURN_IF_ERROR(arch->write_gguf_metadata(c, &w));
  for (const auto& [key, value] : vocab_file->metadata())
    if (key.rfind("tokenizer.", 0) == 0) w.Set(key, GgufWriter::Value::FromRead(value));
  w.SetU32("general.quantization_version", 2);
  w.SetU32("general.file_type", mix.file_type);

  ThreadPool pool(f.threads > 0 ? f.threads : ThreadPool::AvailableCores());
  ModelMaker maker(f.seed, &pool);
  // Tensor order as llama.cpp's converter writes it: the global tensors, then
  // each layer's, by name.
  std::vector<TensorSpec> table = arch->tensor_table(c);
  std::stable_sort(table.begin(), table.end(), [](const TensorSpec& a, const TensorSpec& b) {
    return a.layer != b.layer ? a.layer < b.layer : a.gguf_name < b.gguf_name;
  });
  if (c.rope.scaling == RopeScaling::kLlama3) {
    // llama.cpp's rope_freqs.weight: the divisor of each frequency.
    RopeConfig plain = c.rope;
    plain.scaling = RopeScaling::kNone;
    const std::vector<float> base = RopeInvFreq(plain, c.head_dim), scaled = RopeInvFreq(c.rope, c.head_dim);
    std::vector<float> factors(base.size());
    for (size_t i = 0; i < factors.size(); ++i) factors[i] = base[i] / scaled[i];
    maker.AddFloats(&w, "rope_freqs.weight", {static_cast<int64_t>(factors.size())}, factors);
  }
  for (const TensorSpec& s : table) {
    if (!s.required) continue;  // output.weight of a tied model
    const bool bias = s.role == TensorRole::kAttnQBias || s.role == TensorRole::kAttnKBias || s.role == TensorRole::kAttnVBias ||
                      s.role == TensorRole::kAttnOutputBias || s.role == TensorRole::kFfnGateBias || s.role == TensorRole::kFfnUpBias ||
                      s.role == TensorRole::kFfnDownBias;
    if (s.ne.size() == 1) {
      maker.AddConstant(&w, s.gguf_name, s.ne, bias ? 0.0f : 1.0f);
      continue;
    }
    maker.AddRandom(&w, s.gguf_name, MixTensorType(mix, s, c), s.ne);
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::fprintf(stderr, "make-model: %s %s, %d layers, %.2f GiB of tensors, %d threads -> %s\n", preset->name, mix.name.c_str(),
               c.n_layers, maker.total_bytes() / 1073741824.0, pool.size(), f.out.c_str());
  STRATA_RETURN_IF_ERROR(w.WriteFile(f.out));
  std::fprintf(stderr, "make-model: wrote %s in %.1f s\n", f.out.c_str(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return Status::Ok();
}

}  // namespace

CLI::App* AddMakeModelCommand(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("make-model", "write a GGUF with a preset's real shapes and seeded random weights");
  MakeModelFlags& f = g_flags;
  std::string presets;
  for (const Preset& p : kPresets) presets += std::string(presets.empty() ? "" : ", ") + p.name;
  cmd->add_option("--preset", f.preset, "a real model's shapes: " + presets);
  cmd->add_option("--n-layers", f.n_layers, "keep only the first N layers (the real layer shapes; large mixtures then fit)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--type", f.type, std::string("weight types: ") + QuantMixNames());
  cmd->add_option("-o,--out", f.out, "output .gguf file")->required();
  cmd->add_option("--vocab", f.vocab, "GGUF whose tokenizer.* metadata is copied (the Llama-3 vocabulary by default)");
  cmd->add_option("--seed", f.seed, "random seed of the weights");
  cmd->add_option("-t,--threads", f.threads, "quantization threads (default: the cores this process may use)")
      ->check(CLI::Range(1, 1024));
  return cmd;
}

int RunMakeModel() {
  if (Status st = MakeModel(g_flags); !st.ok()) {
    std::fprintf(stderr, "strata: error: %s\n", st.message().c_str());
    return 1;
  }
  return 0;
}

}  // namespace strata
