// Calibration for the measured plan: this rank times its passes through each
// kind of layer, the embedding and the lm_head (see calibrate.h). Runs on
// every stage's rank before the plan of `--split measure`.
#include "worker/calibrate.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <string>

#include "worker/stage.h"

namespace strata {
namespace {

// What makes two layers cost the same: each tensor's name within the layer
// ("attn_q.weight"), type and shape.
std::string KindKey(const ModelFiles& model, int layer) {
  const std::string prefix = "blk." + std::to_string(layer) + ".";
  std::string key;
  for (const TensorSpec& spec : model.tensor_table()) {
    if (spec.layer != layer) continue;
    auto t = model.Tensor(spec.gguf_name);
    if (!t.ok()) continue;  // an optional tensor this file does not have
    std::string name = spec.gguf_name.compare(0, prefix.size(), prefix) == 0 ? spec.gguf_name.substr(prefix.size()) : spec.gguf_name;
    key += name + ":" + TypeName(t->type);
    for (int64_t n : t->ne) key += "," + std::to_string(n);
    key += ";";
  }
  return key;
}

double Seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

std::vector<std::vector<int>> LayerKinds(const ModelFiles& model) {
  std::vector<std::vector<int>> kinds;
  std::map<std::string, size_t> index;
  for (int l = 0; l < model.config().n_layers; ++l) {
    auto [it, fresh] = index.emplace(KindKey(model, l), kinds.size());
    if (fresh) kinds.emplace_back();
    kinds[it->second].push_back(l);
  }
  return kinds;
}

Result<RankCosts> Calibrate(const ModelFiles& model, const CalibrationOptions& opts, ThreadPool* pool) {
  const ModelConfig& cfg = model.config();
  const int b = std::max(1, opts.decode_tokens);
  const int p = std::max(1, opts.prefill_tokens);
  const std::vector<std::vector<int>> kinds = LayerKinds(model);

  // One stage per kind holding its first layer; the first of them also holds
  // the embedding and the lm_head when this rank is to time them.
  std::vector<std::unique_ptr<Stage>> stages;
  for (size_t k = 0; k < kinds.size(); ++k) {
    StageOptions so;
    so.layers = {kinds[k][0], kinds[k][0]};
    so.first = k == 0 && opts.embedding;
    so.last = k == 0 && opts.lm_head;
    so.n_ctx = p + 1;
    so.max_sequences = b + 1;
    STRATA_ASSIGN_OR_RETURN(auto stage, Stage::Load(model, so, pool));
    stages.push_back(std::move(stage));
  }

  // Activations ~ N(0, 1): what a layer's input looks like after the norms
  // that follow it; the numbers do not matter, only the time.
  std::vector<float> x(static_cast<size_t>(std::max(b, p)) * cfg.hidden);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto fill = [&] {
    for (float& v : x) v = normal(rng);
  };
  std::vector<float> logits(static_cast<size_t>(b) * cfg.vocab);
  std::vector<int32_t> ids(static_cast<size_t>(std::max(b, p)));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 7919) % std::max<int64_t>(1, cfg.vocab));
  std::vector<int64_t> decode_rows(static_cast<size_t>(b));
  for (int i = 0; i < b; ++i) decode_rows[static_cast<size_t>(i)] = i;
  const int64_t last_row[1] = {0};

  // Items in rounds, so that a CPU quota's throttling falls on all of them
  // alike; the first round (page faults, caches) is not counted.
  struct Tally {
    double seconds = 0;
    int n = 0;
  };
  std::vector<Tally> decode(kinds.size()), prefill(kinds.size());
  Tally embed_decode, embed_prefill, head_decode, head_prefill;
  uint64_t seq = 1;
  const auto start = std::chrono::steady_clock::now();
  for (int round = 0;; ++round) {
    const bool count = round > 0;
    for (size_t k = 0; k < kinds.size(); ++k) {
      Stage& s = *stages[k];
      // Prefill: one sequence's chunk from position 0.
      fill();
      auto t0 = std::chrono::steady_clock::now();
      STRATA_RETURN_IF_ERROR(s.Forward({{seq, 0, p}}, x.data()));
      auto t1 = std::chrono::steady_clock::now();
      s.FreeSequence(seq++);
      if (count) prefill[k].seconds += Seconds(t1 - t0), ++prefill[k].n;
      // Decode: b sequences of one token each.
      fill();
      std::vector<BatchEntry> batch;
      for (int i = 0; i < b; ++i) batch.push_back({seq + static_cast<uint64_t>(i), 0, 1});
      t0 = std::chrono::steady_clock::now();
      STRATA_RETURN_IF_ERROR(s.Forward(batch, x.data()));
      t1 = std::chrono::steady_clock::now();
      for (int i = 0; i < b; ++i) s.FreeSequence(seq + static_cast<uint64_t>(i));
      seq += static_cast<uint64_t>(b);
      if (count) decode[k].seconds += Seconds(t1 - t0), ++decode[k].n;
    }
    Stage& s0 = *stages[0];
    if (opts.embedding) {
      auto t0 = std::chrono::steady_clock::now();
      STRATA_RETURN_IF_ERROR(s0.Embed(std::span<const int32_t>(ids.data(), static_cast<size_t>(p)), x.data()));
      auto t1 = std::chrono::steady_clock::now();
      STRATA_RETURN_IF_ERROR(s0.Embed(std::span<const int32_t>(ids.data(), static_cast<size_t>(b)), x.data()));
      auto t2 = std::chrono::steady_clock::now();
      if (count) embed_prefill.seconds += Seconds(t1 - t0), ++embed_prefill.n, embed_decode.seconds += Seconds(t2 - t1), ++embed_decode.n;
    }
    if (opts.lm_head) {
      // Decode: a row per sequence; prefill: the prompt's last row.
      fill();
      auto t0 = std::chrono::steady_clock::now();
      STRATA_RETURN_IF_ERROR(s0.Logits(x.data(), decode_rows, logits.data()));
      auto t1 = std::chrono::steady_clock::now();
      STRATA_RETURN_IF_ERROR(s0.Logits(x.data(), last_row, logits.data()));
      auto t2 = std::chrono::steady_clock::now();
      if (count) head_decode.seconds += Seconds(t1 - t0), ++head_decode.n, head_prefill.seconds += Seconds(t2 - t1), ++head_prefill.n;
    }
    if (round >= 2 && Seconds(std::chrono::steady_clock::now() - start) >= opts.seconds) break;
  }

  auto mean = [](const Tally& t) { return t.n > 0 ? t.seconds / t.n : 0.0; };
  RankCosts out;
  out.layers.resize(static_cast<size_t>(cfg.n_layers));
  for (size_t k = 0; k < kinds.size(); ++k)
    for (int l : kinds[k]) out.layers[static_cast<size_t>(l)] = {mean(decode[k]), mean(prefill[k])};
  out.first = {mean(embed_decode), mean(embed_prefill)};
  out.last = {mean(head_decode), mean(head_prefill)};
  return out;
}

}  // namespace strata
