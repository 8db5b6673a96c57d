// `strata bench`: prefill and decode speed (min / median / max over
// repetitions), time to first token, each stage's busy share and the
// pipeline's bubble, bytes sent per token and memory per rank. Rank 0; under
// mpirun the other ranks serve their stages.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "common/log.h"
#include "coordinator/bench.h"
#include "coordinator/scheduler.h"
#include "kernels/isa.h"

namespace strata {
namespace {

struct BenchFlags {
  CommonFlags common;
  BenchOptions bench;
};

// The prompt a benchmark draws its tokens from (any text tokenizes to valid
// ids; this keeps runs comparable).
constexpr char kBenchText[] =
    "First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. First Citizen: You are all "
    "resolved rather to die than to famish? All: Resolved. resolved. First Citizen: First, you know Caius Marcius "
    "is chief enemy to the people.";

nlohmann::json SpreadJson(const Spread& s) { return {{"min", s.min}, {"median", s.median}, {"max", s.max}}; }

int RunBench(const BenchFlags& f, Transport* transport) {
  auto session = OpenSession(f.common, transport);
  if (!session.ok()) return Fail(session.status(), transport);
  Session& s = *session;
  BenchOptions opts = f.bench;
  opts.parallel = f.common.parallel;
  opts.n_ctx = s.n_ctx;
  std::vector<int32_t> prompt = s.tokenizer->Encode(kBenchText, s.tokenizer->add_bos());
  auto res = RunBenchmark(*s.pipeline, prompt, opts);
  if (!res.ok()) return s.Fail(res.status());
  const int n_stages = s.pipeline->n_stages();
  const int inflight = InflightBatches(opts.inflight, n_stages, false);
  const int prefill_inflight = InflightBatches(opts.inflight, n_stages, true);
  const int64_t chunk = ChunkTokens(opts.chunk, opts.prompt_tokens, n_stages);

  std::vector<double> pp, ttft, tg, tg_seq;
  for (const BenchTest& t : res->prefill) {
    pp.push_back(t.tokens / t.wall_s);
    ttft.push_back(t.first_token_ms);
  }
  for (const BenchTest& t : res->decode) {
    tg.push_back(t.tokens / t.wall_s);
    tg_seq.push_back(t.tokens / t.wall_s / opts.parallel);
  }
  // Per stage over all repetitions: busy share of the wall time, bytes sent
  // per token, memory.
  auto busy = [&](const std::vector<BenchTest>& tests, size_t stage) {
    double b = 0, w = 0;
    for (const BenchTest& t : tests) {
      if (stage < t.delta.size()) b += t.delta[stage].busy_s;
      w += t.busy_wall_s > 0 ? t.busy_wall_s : t.wall_s;
    }
    return w > 0 ? 100.0 * b / w : 0.0;
  };
  // Over the tokens the stage itself ran in the same window: with
  // decode_at_depth both tests' counters cover the whole run, prompt included.
  auto bytes_per_token = [&](const std::vector<BenchTest>& tests, size_t stage) {
    double b = 0, n = 0;
    for (const BenchTest& t : tests) {
      if (stage >= t.delta.size()) continue;
      b += static_cast<double>(t.delta[stage].bytes_sent);
      n += static_cast<double>(t.delta[stage].tokens);
    }
    return n > 0 ? b / n : 0.0;
  };
  // The bubble that filling and draining the pipeline alone leaves when every
  // stage takes the same time per micro-batch: the last stage waits for S - 1
  // of them at the start, the first idles as long at the end, so each stage
  // is idle S - 1 of b + S - 1 slots (b: the micro-batches of the test). The
  // rest of the bubble is imbalance between the stages and their jitter.
  auto fill_drain = [&](const std::vector<BenchTest>& tests) {
    double sum = 0;
    for (const BenchTest& t : tests) {
      const double b = t.delta.empty() ? 0 : static_cast<double>(t.delta[0].batches);
      sum += b > 0 ? 100.0 * (n_stages - 1) / (b + n_stages - 1) : 0;
    }
    return tests.empty() ? 0.0 : sum / static_cast<double>(tests.size());
  };
  auto batches = [](const std::vector<BenchTest>& tests, size_t stage) {
    uint64_t b = 0;
    for (const BenchTest& t : tests)
      if (stage < t.delta.size()) b += t.delta[stage].batches;
    return b;
  };
  const std::vector<StagePlacement> placement = s.pipeline->Placement();
  nlohmann::json stages = nlohmann::json::array();
  double pp_busy_sum = 0, tg_busy_sum = 0;
  for (size_t i = 0; i < res->final_stats.size(); ++i) {
    const StageStats& st = res->final_stats[i];
    const double pp_busy = busy(res->prefill, i), tg_busy = busy(res->decode, i);
    pp_busy_sum += pp_busy;
    tg_busy_sum += tg_busy;
    const double budget = static_cast<double>(st.weight_bytes + st.peak_kv_bytes);
    auto over_budget_pct = [budget](uint64_t bytes) { return budget > 0 ? 100.0 * (static_cast<double>(bytes) / budget - 1.0) : 0.0; };
    stages.push_back({{"stage", i}, {"rank", st.rank}, {"host", st.host.empty() ? HostName() : st.host},
                      {"layers", {st.first_layer, st.last_layer}},
                      // The wire type it sends the next stage in (per link with --wire auto).
                      {"sends", i < placement.size() ? placement[i].sends : ""},
                      // Rows of the lm_head it computed per shared batch, on average (--share-lm-head).
                      {"lm_head_rows", i < placement.size() ? placement[i].lm_head_rows : 0},
                      {"prefill_busy_pct", pp_busy}, {"decode_busy_pct", tg_busy},
                      // Micro-batches it ran, summed over the repetitions.
                      {"prefill_batches", batches(res->prefill, i)}, {"decode_batches", batches(res->decode, i)},
                      {"prefill_bytes_sent_per_token", bytes_per_token(res->prefill, i)},
                      {"decode_bytes_sent_per_token", bytes_per_token(res->decode, i)},
                      {"weight_bytes", st.weight_bytes}, {"kv_bytes_peak", st.peak_kv_bytes}, {"rss_bytes", st.rss_bytes},
                      {"rss_over_weights_kv_pct", over_budget_pct(st.rss_bytes)},
                      // The peak counts the load (a matrix being repacked) and the deepest cache.
                      {"rss_peak_bytes", st.peak_rss_bytes},
                      {"rss_peak_over_weights_kv_pct", over_budget_pct(st.peak_rss_bytes)}});
  }
  const double n = std::max<size_t>(1, res->final_stats.size());
  nlohmann::json j = {
      {"model", f.common.model}, {"stages", n_stages}, {"threads", s.pool->size()}, {"isa", ActiveIsa()},
      {"prompt_tokens", opts.prompt_tokens}, {"gen_tokens", opts.gen_tokens}, {"parallel", opts.parallel},
      {"inflight", inflight}, {"prefill_inflight", prefill_inflight}, {"prefill_chunk", chunk}, {"reps", opts.reps}, {"wire", f.common.wire},
      {"decode_at_depth", opts.decode_at_depth},
      {"prefill_tok_s", SpreadJson(SpreadOf(pp))}, {"ttft_ms", SpreadJson(SpreadOf(ttft))},
      {"decode_tok_s", SpreadJson(SpreadOf(tg))}, {"decode_tok_s_per_seq", SpreadJson(SpreadOf(tg_seq))},
      {"prefill_bubble_pct", 100.0 - pp_busy_sum / n}, {"decode_bubble_pct", 100.0 - tg_busy_sum / n},
      {"prefill_fill_drain_pct", fill_drain(res->prefill)}, {"decode_fill_drain_pct", fill_drain(res->decode)},
      {"per_stage", stages}};
  if (Status st = FinishTrace(f.common.trace_file, s.pipeline.get()); !st.ok()) return Fail(st, transport);
  if (f.common.json) {
    std::cout << j.dump() << std::endl;
    return 0;
  }
  auto fmt = [](const nlohmann::json& sp) {
    char b[96];
    std::snprintf(b, sizeof b, "%9.2f %9.2f %9.2f", sp["min"].get<double>(), sp["median"].get<double>(), sp["max"].get<double>());
    return std::string(b);
  };
  std::printf("strata bench: %s\n  %d stage(s), %d thread(s) per rank, %s kernels, wire %s; P=%lld G=%d parallel=%d inflight=%d (prefill %d) chunk=%lld, %d reps\n",
              f.common.model.c_str(), n_stages, s.pool->size(), ActiveIsa(), f.common.wire.c_str(),
              static_cast<long long>(opts.prompt_tokens), opts.gen_tokens, opts.parallel, inflight, prefill_inflight,
              static_cast<long long>(chunk), opts.reps);
  std::printf("  %-26s %9s %9s %9s\n", "", "min", "median", "max");
  std::printf("  %-26s %s\n", "prefill tok/s", fmt(j["prefill_tok_s"]).c_str());
  std::printf("  %-26s %s\n", "time to first token ms", fmt(j["ttft_ms"]).c_str());
  std::printf("  %-26s %s\n", "decode tok/s (aggregate)", fmt(j["decode_tok_s"]).c_str());
  std::printf("  %-26s %s\n", "decode tok/s per sequence", fmt(j["decode_tok_s_per_seq"]).c_str());
  // With decode_at_depth both tests share one run's counters: one busy share each.
  auto busy_text = [&](double prefill, double decode) {
    char b[96];
    if (opts.decode_at_depth)
      std::snprintf(b, sizeof b, "%.1f%% over the run", prefill);
    else
      std::snprintf(b, sizeof b, "prefill %.1f%%, decode %.1f%%", prefill, decode);
    return std::string(b);
  };
  std::printf("  bubble: %s\n", busy_text(j["prefill_bubble_pct"].get<double>(), j["decode_bubble_pct"].get<double>()).c_str());
  if (n_stages > 1)
    std::printf("    of which filling and draining the pipeline: %s\n",
                busy_text(j["prefill_fill_drain_pct"].get<double>(), j["decode_fill_drain_pct"].get<double>()).c_str());
  for (const auto& st : stages)
    std::printf("  rank %d (%s) layers %d-%d%s: busy %s, sends %.0f B/token%s%s, "
                "RSS %.1f MiB (peak %.1f) = weights %.1f MiB + KV peak %.1f MiB %+.1f%% (peak %+.1f%%)\n",
                st["rank"].get<int>(), st["host"].get<std::string>().c_str(), st["layers"][0].get<int>(), st["layers"][1].get<int>(),
                st["lm_head_rows"].get<int64_t>() > 0 ? (" + " + std::to_string(st["lm_head_rows"].get<int64_t>()) + " lm_head rows").c_str() : "",
                busy_text(st["prefill_busy_pct"].get<double>(), st["decode_busy_pct"].get<double>()).c_str(),
                st["decode_bytes_sent_per_token"].get<double>(), st["sends"].get<std::string>().empty() ? "" : " of ",
                st["sends"].get<std::string>().c_str(), st["rss_bytes"].get<double>() / 1048576.0,
                st["rss_peak_bytes"].get<double>() / 1048576.0,
                st["weight_bytes"].get<double>() / 1048576.0, st["kv_bytes_peak"].get<double>() / 1048576.0,
                st["rss_over_weights_kv_pct"].get<double>(), st["rss_peak_over_weights_kv_pct"].get<double>());
  return 0;
}

}  // namespace

Command AddBenchCommand(CLI::App& app) {
  auto flags = std::make_shared<BenchFlags>();
  BenchFlags& bch = *flags;
  CLI::App* b = app.add_subcommand("bench", "measure prefill and decode speed, per-stage busy % and bubble, memory per rank");
  AddCommonFlags(b, &bch.common, false);
  b->add_option("--prompt-tokens", bch.bench.prompt_tokens, "prompt tokens per sequence in the prefill test")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  b->add_option("--gen-tokens", bch.bench.gen_tokens, "tokens generated per sequence in the decode test")->check(CLI::Range(1, 1 << 20));
  b->add_option("--parallel", bch.common.parallel, "sequences at once")->check(CLI::Range(1, 1024));
  b->add_option("--reps", bch.bench.reps, "repetitions (min / median / max reported)")->check(CLI::Range(1, 1000));
  b->add_option("--inflight", bch.bench.inflight, "micro-batches in flight (default: one per stage while decoding, two per stage while prompt chunks wait)")->check(CLI::Range(1, 1024));
  b->add_option("--chunk", bch.bench.chunk, "prefill chunk in tokens (default: auto)")->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  b->add_flag("--decode-at-depth", bch.bench.decode_at_depth,
              "decode continues the prompts (G tokens after P, as llama.cpp's peer bench measures) instead of starting from "
              "one token; busy %, bubble and bytes per token then cover the whole run");

  Command cmd;
  cmd.app = b;
  cmd.common = &bch.common;
  cmd.run = [flags](Transport* transport) { return RunBench(*flags, transport); };
  return cmd;
}

}  // namespace strata
