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

#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/thread_pool.h"
#include "kernels/quant.h"
#include "model/gguf.h"
#include "model/gguf_writer.h"
#include "model/quant_mix.h"

namespace strata {
namespace {

struct MakeModelFlags {
  std::string preset = "smollm3-3b";
  std::string type = "q4_k_m";
  std::string out;
  std::string vocab = "../shared/tokenizer/ggml-vocab-llama-bpe.gguf";
  uint64_t seed = 1;
  int threads = 0;
};
MakeModelFlags g_flags;

// Hyper-parameters of a preset (SmolLM3 family: NoPE every 4th layer, tied
// embeddings; the vocabulary size comes from the vocab file).
struct Preset {
  const char* name;
  const char* size_label;
  int n_layers, hidden, ffn, n_heads, n_kv_heads, head_dim, n_ctx_train;
  float rope_theta, rms_eps;
};

constexpr Preset kPresets[] = {
    // HuggingFaceTB/SmolLM3-3B's config.json.
    {"smollm3-3b", "3B", 36, 2048, 11008, 16, 4, 128, 65536, 5e6f, 1e-6f},
    // A small model with the same structure and the full vocabulary (tests).
    {"smollm3-tiny", "30M", 4, 256, 512, 4, 1, 64, 4096, 5e6f, 1e-6f},
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

Status CopyVocabulary(const std::string& vocab_path, GgufWriter* w, int64_t* vocab_size) {
  auto vocab = GgufFile::Open(vocab_path);
  if (!vocab.ok())
    return vocab.status().WithContext("--vocab (a GGUF holding a tokenizer, e.g. ../shared/tokenizer/ggml-vocab-llama-bpe.gguf)");
  const GgufValue* tokens = (*vocab)->Find("tokenizer.ggml.tokens");
  if (tokens == nullptr || tokens->type != GgufValueType::kArray)
    return InvalidArgument("--vocab '" + vocab_path + "': no tokenizer.ggml.tokens array");
  *vocab_size = static_cast<int64_t>(std::get<GgufArray>(tokens->v).count);
  for (const auto& [key, value] : (*vocab)->metadata())
    if (key.rfind("tokenizer.", 0) == 0) w->Set(key, GgufWriter::Value::FromRead(value));
  return Status::Ok();
}

class ModelMaker {
 public:
  ModelMaker(uint64_t seed, ThreadPool* pool) : seed_(seed), pool_(pool) {}

  // A [n_out][n_in] matrix (ggml ne = {n_in, n_out}) of random rows.
  void AddMatrix(GgufWriter* w, const std::string& name, TensorType type, int64_t n_in, int64_t n_out) {
    const uint64_t tensor = n_tensors_++;
    const uint64_t seed = seed_;
    ThreadPool* pool = pool_;
    total_bytes_ += *GgufWriter::TensorBytes(type, {n_in, n_out});
    w->AddTensorSource(name, type, {n_in, n_out}, [=](std::span<uint8_t> out) -> Status {
      const uint64_t row_bytes = *RowBytes(type, n_in);
      pool->ParallelFor(n_out, [&](int64_t begin, int64_t end) {
        std::vector<float> row(static_cast<size_t>(n_in));
        for (int64_t r = begin; r < end; ++r) {
          RandomRow(seed, tensor, static_cast<uint64_t>(r), row.data(), n_in);
          QuantizeRow(type, row.data(), out.data() + r * row_bytes, n_in);
        }
      });
      return Status::Ok();
    });
  }

  void AddNorm(GgufWriter* w, const std::string& name, int64_t n) {
    ++n_tensors_;
    std::vector<float> ones(static_cast<size_t>(n), 1.0f);
    const auto* bytes = reinterpret_cast<const uint8_t*>(ones.data());
    total_bytes_ += n * sizeof(float);
    w->AddTensor(name, TensorType::kF32, {n}, std::span<const uint8_t>(bytes, n * sizeof(float)));
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
  const Preset& p = *preset;

  GgufWriter w;
  const std::string arch = "smollm3";
  w.SetString("general.architecture", arch);
  w.SetString("general.type", "model");
  w.SetString("general.name", std::string(p.name) + " (random weights, seed " + std::to_string(f.seed) + ")");
  w.SetString("general.size_label", p.size_label);
  w.SetU32(arch + ".block_count", p.n_layers);
  w.SetU32(arch + ".context_length", p.n_ctx_train);
  w.SetU32(arch + ".embedding_length", p.hidden);
  w.SetU32(arch + ".feed_forward_length", p.ffn);
  w.SetU32(arch + ".attention.head_count", p.n_heads);
  w.SetU32(arch + ".attention.head_count_kv", p.n_kv_heads);
  w.SetF32(arch + ".rope.freq_base", p.rope_theta);
  w.SetF32(arch + ".attention.layer_norm_rms_epsilon", p.rms_eps);
  w.SetU32(arch + ".attention.key_length", p.head_dim);
  w.SetU32(arch + ".attention.value_length", p.head_dim);
  w.SetU32(arch + ".rope.dimension_count", p.head_dim);
  int64_t vocab = 0;
  STRATA_RETURN_IF_ERROR(CopyVocabulary(f.vocab, &w, &vocab));
  w.SetU32(arch + ".vocab_size", static_cast<uint32_t>(vocab));
  w.SetU32("general.quantization_version", 2);
  w.SetU32("general.file_type", mix.file_type);

  ThreadPool pool(f.threads > 0 ? f.threads : ThreadPool::AvailableCores());
  ModelMaker maker(f.seed, &pool);
  auto type = [&](TensorRole role, int layer, int64_t row_length) { return MixTensorType(mix, role, layer, p.n_layers, row_length); };
  const int64_t q_dim = int64_t{p.n_heads} * p.head_dim, kv_dim = int64_t{p.n_kv_heads} * p.head_dim;
  // Tensor order as llama.cpp's converter writes it.
  maker.AddNorm(&w, "output_norm.weight", p.hidden);
  maker.AddMatrix(&w, "token_embd.weight", type(TensorRole::kTokenEmbedding, -1, p.hidden), p.hidden, vocab);
  for (int l = 0; l < p.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    maker.AddMatrix(&w, b + "attn_k.weight", type(TensorRole::kAttnK, l, p.hidden), p.hidden, kv_dim);
    maker.AddNorm(&w, b + "attn_norm.weight", p.hidden);
    maker.AddMatrix(&w, b + "attn_output.weight", type(TensorRole::kAttnOutput, l, q_dim), q_dim, p.hidden);
    maker.AddMatrix(&w, b + "attn_q.weight", type(TensorRole::kAttnQ, l, p.hidden), p.hidden, q_dim);
    maker.AddMatrix(&w, b + "attn_v.weight", type(TensorRole::kAttnV, l, p.hidden), p.hidden, kv_dim);
    maker.AddMatrix(&w, b + "ffn_down.weight", type(TensorRole::kFfnDown, l, p.ffn), p.ffn, p.hidden);
    maker.AddMatrix(&w, b + "ffn_gate.weight", type(TensorRole::kFfnGate, l, p.hidden), p.hidden, p.ffn);
    maker.AddNorm(&w, b + "ffn_norm.weight", p.hidden);
    maker.AddMatrix(&w, b + "ffn_up.weight", type(TensorRole::kFfnUp, l, p.hidden), p.hidden, p.ffn);
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::fprintf(stderr, "make-model: %s %s, %.2f GiB of tensors, %d threads -> %s\n", p.name, mix.name.c_str(),
               maker.total_bytes() / 1073741824.0, pool.size(), f.out.c_str());
  STRATA_RETURN_IF_ERROR(w.WriteFile(f.out));
  std::fprintf(stderr, "make-model: wrote %s in %.1f s\n", f.out.c_str(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return Status::Ok();
}

}  // namespace

CLI::App* AddMakeModelCommand(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("make-model", "write a GGUF with a preset's real shapes and seeded random weights");
  MakeModelFlags& f = g_flags;
  cmd->add_option("--preset", f.preset, "smollm3-3b (SmolLM3-3B's shapes) or smollm3-tiny");
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
