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
#include <ctime>

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

// CPU time of every thread of this process.
double ProcessCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

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

  // Items in rounds; the first round (page faults, caches) is not counted.
  // Each item's cost is its CPU time (every thread of this process) times
  // the rank's wall / CPU ratio over all timed items. A host throttled by a
  // CPU quota stops for tens of ms at a time (CFS periods of 100 ms): timed
  // by the wall clock, the few items a pause lands in would carry all of it
  // and a 20 us decode pass would read 0.02 or 90 ms by luck; spread by CPU
  // time, every item carries its share of the pauses.
  struct Tally {
    double cpu = 0;
    int n = 0;
    void Add(double s) { cpu += s, ++n; }
    double Mean() const { return n > 0 ? cpu / n : 0.0; }
  };
  double wall_total = 0, cpu_total = 0;
  auto timed = [&](bool count, Tally* t, auto&& work) -> Status {
    const auto w0 = std::chrono::steady_clock::now();
    const double c0 = ProcessCpuSeconds();
    Status st = work();
    const double c = ProcessCpuSeconds() - c0;
    const double w = Seconds(std::chrono::steady_clock::now() - w0);
    if (count) t->Add(c), wall_total += w, cpu_total += c;
    return st;
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
      STRATA_RETURN_IF_ERROR(timed(count, &prefill[k], [&] { return s.Forward({{seq, 0, p}}, x.data()); }));
      s.FreeSequence(seq++);
      // Decode: b sequences of one token each.
      fill();
      std::vector<BatchEntry> batch;
      for (int i = 0; i < b; ++i) batch.push_back({seq + static_cast<uint64_t>(i), 0, 1});
      STRATA_RETURN_IF_ERROR(timed(count, &decode[k], [&] { return s.Forward(batch, x.data()); }));
      for (int i = 0; i < b; ++i) s.FreeSequence(seq + static_cast<uint64_t>(i));
      seq += static_cast<uint64_t>(b);
    }
    Stage& s0 = *stages[0];
    if (opts.embedding) {
      STRATA_RETURN_IF_ERROR(timed(count, &embed_prefill, [&] {
        return s0.Embed(std::span<const int32_t>(ids.data(), static_cast<size_t>(p)), x.data());
      }));
      STRATA_RETURN_IF_ERROR(timed(count, &embed_decode, [&] {
        return s0.Embed(std::span<const int32_t>(ids.data(), static_cast<size_t>(b)), x.data());
      }));
    }
    if (opts.lm_head) {
      // Decode: a row per sequence; prefill: the prompt's last row.
      fill();
      STRATA_RETURN_IF_ERROR(timed(count, &head_decode, [&] { return s0.Logits(x.data(), decode_rows, logits.data()); }));
      STRATA_RETURN_IF_ERROR(timed(count, &head_prefill, [&] { return s0.Logits(x.data(), last_row, logits.data()); }));
    }
    if (round >= 2 && Seconds(std::chrono::steady_clock::now() - start) >= opts.seconds) break;
  }

  // Wall seconds per CPU second of this rank: its share of a core (or of
  // its threads' cores) under quotas and other work.
  const double scale = cpu_total > 0 ? wall_total / cpu_total : 1.0;
  auto mean = [scale](const Tally& t) { return t.Mean() * scale; };
  RankCosts out;
  out.layers.resize(static_cast<size_t>(cfg.n_layers));
  for (size_t k = 0; k < kinds.size(); ++k)
    for (int l : kinds[k]) out.layers[static_cast<size_t>(l)] = {mean(decode[k]), mean(prefill[k])};
  out.first = {mean(embed_decode), mean(embed_prefill)};
  out.last = {mean(head_decode), mean(head_prefill)};
  return out;
}

}  // namespace strata
