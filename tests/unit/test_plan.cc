// Tests for coordinator/plan: explicit ranges, every rejection with its
// message, the "auto" balancer (hand-computed cases and a brute-force check),
// JSON plan files (good and bad), the shipped configs/ plans for SmolLM3-3B,
// and the Q4_K_M cost model those plans were derived from.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "coordinator/plan.h"
#include "model/model_files.h"
#include "tests/unit/test_util.h"

namespace strata {
namespace {

using strata::testing::TempDir;
using strata::testing::WriteText;

PlanCosts Uniform(int n_layers, uint64_t layer = 100, uint64_t lm_head = 0, bool tied = false) {
  PlanCosts c;
  c.layer_bytes.assign(static_cast<size_t>(n_layers), layer);
  c.tied = tied;
  if (tied) c.embedding_bytes = lm_head;
  else c.output_bytes = lm_head;
  return c;
}

std::vector<std::pair<int, int>> Ranges(const LayerPlan& plan) {
  std::vector<std::pair<int, int>> out;
  for (const StagePlan& s : plan.stages) out.emplace_back(s.layers.first, s.layers.last);
  return out;
}

using RangeList = std::vector<std::pair<int, int>>;

// Stage cost as plan.h defines it.
uint64_t StageCost(const PlanCosts& c, int first, int last, bool is_last) {
  uint64_t sum = 0;
  for (int l = first; l <= last; ++l) sum += c.layer_bytes[static_cast<size_t>(l)];
  return sum + (is_last ? c.lm_head_bytes() : 0);
}

// ---------------------------------------------------------------------------
// SmolLM3-3B as llama.cpp's Q4_K_M writes it: attn_q/k/output and ffn_gate/up
// in Q4_K (144 bytes per 256 weights); attn_v and ffn_down in Q6_K (210 bytes
// per 256) on the layers llama.cpp's use_more_bits picks — the first and last
// eighth and every third layer between — Q4_K elsewhere; norms F32; the tied
// embedding Q6_K (llama.cpp quantizes it as the output matrix when there is no
// output.weight). Checked against a real llama.cpp file below.

struct Dims {
  int n_layers, hidden, q_dim, kv_dim, ffn, vocab;
};

constexpr Dims kSmolLM3_3B = {36, 2048, 16 * 128, 4 * 128, 11008, 128256};
constexpr Dims kSmolShakespeare = {36, 256, 4 * 64, 1 * 64, 512, 8192};

uint64_t Q4K(uint64_t n) { return n / 256 * 144; }
uint64_t Q6K(uint64_t n) { return n / 256 * 210; }

bool UseMoreBits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

PlanCosts Q4KMCosts(const Dims& d) {
  const uint64_t h = static_cast<uint64_t>(d.hidden), q = static_cast<uint64_t>(d.q_dim),
                 kv = static_cast<uint64_t>(d.kv_dim), f = static_cast<uint64_t>(d.ffn);
  PlanCosts c;
  for (int i = 0; i < d.n_layers; ++i) {
    bool more = UseMoreBits(i, d.n_layers);
    const TensorType vd = more ? TensorType::kQ6_K : TensorType::kQ4_K;  // attn_v, ffn_down
    std::vector<MatrixBytes> m = {
        {TensorType::kQ4_K, Q4K(h * q)},                         // attn_q
        {TensorType::kQ4_K, Q4K(h * kv)},                        // attn_k
        {vd, (more ? Q6K : Q4K)(h * kv)},                        // attn_v
        {TensorType::kQ4_K, Q4K(q * h)},                         // attn_output
        {TensorType::kQ4_K, Q4K(h * f)},                         // ffn_gate
        {TensorType::kQ4_K, Q4K(h * f)},                         // ffn_up
        {vd, (more ? Q6K : Q4K)(f * h)},                         // ffn_down
    };
    uint64_t bytes = 2 * h * 4;  // attn_norm, ffn_norm (F32)
    for (const MatrixBytes& x : m) bytes += x.bytes;
    c.layer_bytes.push_back(bytes);
    c.layer_matrices.push_back(m);
  }
  c.embedding_bytes = Q6K(static_cast<uint64_t>(d.vocab) * h);
  c.output_bytes = 0;
  c.tied = true;
  c.lm_head_type = TensorType::kQ6_K;
  return c;
}

PlanCosts Costs3B() { return Q4KMCosts(kSmolLM3_3B); }

// The JSON a configs/ file should hold for this plan (printed on mismatch).
std::string PlanJson(const LayerPlan& plan) {
  std::string s = "{\n  \"model\": \"SmolLM3-3B\",\n  \"quant\": \"Q4_K_M\",\n  \"stages\": [\n";
  for (size_t i = 0; i < plan.stages.size(); ++i) {
    const StagePlan& st = plan.stages[i];
    char mib[32];
    std::snprintf(mib, sizeof mib, "%.1f", static_cast<double>(st.weight_bytes) / (1024.0 * 1024.0));
    s += "    {\"layers\": [" + std::to_string(st.layers.first) + ", " + std::to_string(st.layers.last) +
         "], \"weight_mib\": " + mib + "}" + (i + 1 < plan.stages.size() ? "," : "") + "\n";
  }
  return s + "  ]\n}\n";
}

// ---------------------------------------------------------------------------
// Explicit ranges.

TEST(PlanExplicit, ParsesRanges) {
  PlanCosts c = Uniform(36, 100, 1000, /*tied=*/true);
  c.embedding_bytes = 1000;
  auto plan = MakeLayerPlan("0-8,9-17,18-26,27-35", 4, c);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->source, "explicit");
  EXPECT_EQ(Ranges(*plan), (RangeList{{0, 8}, {9, 17}, {18, 26}, {27, 35}}));
  ASSERT_EQ(plan->stages.size(), 4u);
  EXPECT_TRUE(plan->stages[0].first);
  EXPECT_FALSE(plan->stages[0].last);
  EXPECT_FALSE(plan->stages[1].first);
  EXPECT_FALSE(plan->stages[2].last);
  EXPECT_TRUE(plan->stages[3].last);
  // Stage 0 does row lookups only: no embedding in its bytes. The last stage
  // reads the tied embedding as its lm_head.
  EXPECT_EQ(plan->stages[0].weight_bytes, 900u);
  EXPECT_EQ(plan->stages[1].weight_bytes, 900u);
  EXPECT_EQ(plan->stages[3].weight_bytes, 900u + 1000u);
}

TEST(PlanExplicit, SingleLayersAndBlanks) {
  auto plan = MakeLayerPlan(" 0-3 , 4,5 - 9 ", 3, Uniform(10));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(Ranges(*plan), (RangeList{{0, 3}, {4, 4}, {5, 9}}));
  EXPECT_EQ(plan->stages[1].weight_bytes, 100u);
}

TEST(PlanExplicit, UntiedLmHeadOnLastStage) {
  PlanCosts c = Uniform(4, 10, 55, /*tied=*/false);
  c.embedding_bytes = 1000;  // not read by any stage's matmuls
  auto plan = MakeLayerPlan("0-1,2-3", 2, c);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->stages[0].weight_bytes, 20u);
  EXPECT_EQ(plan->stages[1].weight_bytes, 75u);
}

struct BadSpec {
  std::string spec;
  int n_stages;
  int n_layers;
  std::vector<std::string> message_parts;
};

TEST(PlanExplicit, Rejections) {
  const std::vector<BadSpec> cases = {
      {"0-8,11-35", 2, 36, {"layers 9-10 are not in any stage"}},
      {"0-8,10-35", 2, 36, {"layer 9 is not in any stage"}},
      {"1-8,9-35", 2, 36, {"layer 0 is not in any stage"}},
      {"0-8,9-34", 2, 36, {"layer 35 is not in any stage"}},
      {"0-9,9-35", 2, 36, {"layer 9 is in both stage 0 (0-9) and stage 1 (9-35)"}},
      {"0-20,9-35", 2, 36, {"layers 9-20 are in both stage 0 (0-20) and stage 1 (9-35)"}},
      {"0-8,9-40", 2, 36, {"layer 40 is outside the model's 36 layers"}},
      {"0-8,9-99999999999999999999999", 2, 36, {"is outside the model's 36 layers"}},
      {"0-8,9-17,18-35", 4, 36, {"3 ranges for 4 stages"}},
      {"0-35", 2, 36, {"1 range for 2 stages"}},
      {"0-8,9-17,18-35", 2, 36, {"3 ranges for 2 stages"}},
      {"auto", 5, 4, {"5 stages for a model of 4 layers"}},
      {"0,1,2,3,3", 5, 4, {"5 stages for a model of 4 layers"}},
      {"0-x", 1, 36, {"malformed range '0-x'"}},
      {"0-8,9-x7", 2, 36, {"malformed range '9-x7'"}},
      {"-3,4-35", 2, 36, {"malformed range '-3'"}},
      {"0-3-5", 1, 36, {"malformed range '0-3-5'"}},
      {"0-,1-35", 2, 36, {"malformed range '0-'"}},
      {"0-8,", 2, 36, {"empty range"}},
      {"0-8,,9-35", 3, 36, {"empty range"}},
      {"0-8,9-3", 2, 36, {"reversed range '9-3'"}},
      {"9-35,0-8", 2, 36, {"stage 1 (0-8) comes after stage 0 (9-35)", "ascending"}},
      {"", 1, 36, {"empty layer plan"}},
      {"  ", 1, 36, {"empty layer plan"}},
      {"auto", 0, 36, {"0 stages", "at least 1"}},
      {"0-35", -1, 36, {"-1 stages", "at least 1"}},
  };
  for (const BadSpec& bad : cases) {
    SCOPED_TRACE("spec '" + bad.spec + "', " + std::to_string(bad.n_stages) + " stages");
    auto plan = MakeLayerPlan(bad.spec, bad.n_stages, Uniform(bad.n_layers));
    ASSERT_FALSE(plan.ok());
    EXPECT_EQ(plan.status().kind(), ErrorKind::kInvalidArgument);
    for (const std::string& part : bad.message_parts)
      EXPECT_NE(plan.status().message().find(part), std::string::npos) << plan.status().message();
  }
}

// ---------------------------------------------------------------------------
// auto.

TEST(PlanAuto, OneStageTakesAllLayers) {
  PlanCosts c = Uniform(36, 100, 700, /*tied=*/true);
  auto plan = MakeLayerPlan("auto", 1, c);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->source, "auto");
  EXPECT_EQ(Ranges(*plan), (RangeList{{0, 35}}));
  EXPECT_TRUE(plan->stages[0].first);
  EXPECT_TRUE(plan->stages[0].last);
  EXPECT_EQ(plan->stages[0].weight_bytes, 3600u + 700u);
}

TEST(PlanAuto, EqualLayersSplitEvenly) {
  auto plan = MakeLayerPlan("auto", 4, Uniform(8));
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(Ranges(*plan), (RangeList{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  plan = MakeLayerPlan("auto", 3, Uniform(9));
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(Ranges(*plan), (RangeList{{0, 2}, {3, 5}, {6, 8}}));
}

TEST(PlanAuto, HeavyLmHeadGivesLastStageFewerLayers) {
  // 8 layers of 100 and an lm_head of 200: 500 | 300 + 200.
  for (bool tied : {false, true}) {
    auto plan = MakeLayerPlan("auto", 2, Uniform(8, 100, 200, tied));
    ASSERT_TRUE(plan.ok());
    EXPECT_EQ(Ranges(*plan), (RangeList{{0, 4}, {5, 7}})) << "tied " << tied;
    EXPECT_EQ(plan->stages[0].weight_bytes, 500u);
    EXPECT_EQ(plan->stages[1].weight_bytes, 500u);
  }
  // 12 layers of 100, lm_head 400, 4 stages: 400 each means the last stage
  // holds no layer, so the best largest cost is 500 (e.g. 3+3+4 | 1).
  auto plan = MakeLayerPlan("auto", 4, Uniform(12, 100, 400, true));
  ASSERT_TRUE(plan.ok());
  uint64_t worst = 0;
  for (const StagePlan& s : plan->stages) worst = std::max(worst, s.weight_bytes);
  EXPECT_EQ(worst, 500u);
  EXPECT_EQ(plan->stages.back().layers.count(), 1);
}

TEST(PlanAuto, EmbeddingCostsNothingOnTheFirstStage) {
  // An untied model with a huge embedding: the first stage only looks rows
  // up, so the split is the same as without it.
  PlanCosts c = Uniform(8, 100, 200, /*tied=*/false);
  c.embedding_bytes = 1'000'000;
  auto plan = MakeLayerPlan("auto", 2, c);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(Ranges(*plan), (RangeList{{0, 4}, {5, 7}}));
  EXPECT_EQ(plan->stages[0].weight_bytes, 500u);
}

TEST(PlanAuto, TiesGiveEarlierStagesFewerLayers) {
  // 8 x 100 + lm_head 300: 5|3 (500, 600) and 6|2 (600, 500) are equally good;
  // the documented rule gives the earlier stage fewer layers.
  auto plan = MakeLayerPlan("auto", 2, Uniform(8, 100, 300));
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(Ranges(*plan), (RangeList{{0, 4}, {5, 7}}));
  // No lm_head, 7 equal layers on 2 stages: 3 | 4.
  plan = MakeLayerPlan("auto", 2, Uniform(7));
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(Ranges(*plan), (RangeList{{0, 2}, {3, 6}}));
}

TEST(PlanAuto, MostEvenAmongOptimalPlans) {
  // Layer 0 alone sets the largest cost (10); the other two stages could
  // split the six unit layers any way under it — auto takes 3 | 3.
  PlanCosts c;
  c.layer_bytes = {10, 1, 1, 1, 1, 1, 1};
  auto plan = MakeLayerPlan("auto", 3, c);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(Ranges(*plan), (RangeList{{0, 0}, {1, 3}, {4, 6}}));
}

TEST(PlanAuto, StagesEqualLayers) {
  PlanCosts c;
  c.layer_bytes = {5, 1, 9, 3, 7};
  c.output_bytes = 100;
  auto plan = MakeLayerPlan("auto", 5, c);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(Ranges(*plan), (RangeList{{0, 0}, {1, 1}, {2, 2}, {3, 3}, {4, 4}}));
  EXPECT_EQ(plan->stages[4].weight_bytes, 107u);
}

// Every contiguous partition, for the brute-force comparison.
void ForEachPartition(int n_layers, int n_stages, const std::function<void(const RangeList&)>& fn) {
  RangeList cur;
  std::function<void(int, int)> rec = [&](int start, int left) {
    if (left == 1) {
      cur.emplace_back(start, n_layers - 1);
      fn(cur);
      cur.pop_back();
      return;
    }
    for (int end = start; end <= n_layers - left; ++end) {
      cur.emplace_back(start, end);
      rec(end + 1, left - 1);
      cur.pop_back();
    }
  };
  rec(0, n_stages);
}

TEST(PlanAuto, OptimalNeverEmptyAndDeterministic) {
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 300; ++trial) {
    int n_layers = 1 + static_cast<int>(rng() % 10);
    int n_stages = 1 + static_cast<int>(rng() % static_cast<unsigned>(n_layers));
    PlanCosts c;
    for (int i = 0; i < n_layers; ++i) c.layer_bytes.push_back(rng() % 4 == 0 ? 0 : rng() % 50);
    c.tied = rng() % 2;
    (c.tied ? c.embedding_bytes : c.output_bytes) = rng() % 3 == 0 ? 0 : rng() % 200;
    SCOPED_TRACE("trial " + std::to_string(trial));

    auto plan = MakeLayerPlan("auto", n_stages, c);
    ASSERT_TRUE(plan.ok()) << plan.status().ToString();
    ASSERT_EQ(static_cast<int>(plan->stages.size()), n_stages);
    int next = 0;
    uint64_t worst = 0;
    for (size_t s = 0; s < plan->stages.size(); ++s) {
      const StagePlan& st = plan->stages[s];
      EXPECT_EQ(st.layers.first, next);
      EXPECT_GE(st.layers.count(), 1);
      EXPECT_EQ(st.weight_bytes, StageCost(c, st.layers.first, st.layers.last, st.last));
      worst = std::max(worst, st.weight_bytes);
      next = st.layers.last + 1;
    }
    EXPECT_EQ(next, n_layers);

    uint64_t best = UINT64_MAX;
    ForEachPartition(n_layers, n_stages, [&](const RangeList& r) {
      uint64_t w = 0;
      for (size_t s = 0; s < r.size(); ++s)
        w = std::max(w, StageCost(c, r[s].first, r[s].second, s + 1 == r.size()));
      best = std::min(best, w);
    });
    EXPECT_EQ(worst, best);

    auto again = MakeLayerPlan("auto", n_stages, c);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(Ranges(*again), Ranges(*plan));
  }
}

// ---------------------------------------------------------------------------
// JSON plan files.

TEST(PlanFile, Loads) {
  TempDir dir;
  const std::string path = dir.File("p.json");
  WriteText(path, R"({"model": "toy", "comment": "ignored",
                      "stages": [{"layers": [0, 3], "note": 1}, {"layers": [4, 4]}, {"layers": [5, 9]}]})");
  auto plan = MakeLayerPlan(path, 3, Uniform(10));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->source, path);
  EXPECT_EQ(Ranges(*plan), (RangeList{{0, 3}, {4, 4}, {5, 9}}));
  EXPECT_TRUE(plan->stages[2].last);

  // An existing file without the .json suffix is a plan file too.
  const std::string plain = dir.File("plan");
  WriteText(plain, R"({"stages": [{"layers": [0, 9]}]})");
  plan = MakeLayerPlan(plain, 1, Uniform(10));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->source, plain);
}

TEST(PlanFile, Rejections) {
  TempDir dir;
  struct BadFile {
    std::string text;
    std::string message_part;
  };
  const std::vector<BadFile> cases = {
      {"", "is not valid JSON"},
      {"{\"stages\": [", "is not valid JSON"},
      {"[1, 2]", "top level is not an object"},
      {"{\"model\": \"x\"}", "no \"stages\" key"},
      {"{\"stages\": {\"layers\": [0, 9]}}", "\"stages\" is not an array"},
      {"{\"stages\": [[0, 4], [5, 9]]}", "stages[0] is not an object"},
      {"{\"stages\": [{\"layers\": [0, 4]}, {\"range\": [5, 9]}]}", "stages[1] has no \"layers\""},
      {"{\"stages\": [{\"layers\": [0]}, {\"layers\": [5, 9]}]}", "stages[0].layers is [0], expected [FIRST, LAST]"},
      {"{\"stages\": [{\"layers\": \"0-4\"}, {\"layers\": [5, 9]}]}", "stages[0].layers is \"0-4\""},
      {"{\"stages\": [{\"layers\": [-1, 4]}, {\"layers\": [5, 9]}]}", "non-negative integers"},
      {"{\"stages\": [{\"layers\": [0, 4.5]}, {\"layers\": [5, 9]}]}", "non-negative integers"},
      {"{\"stages\": [{\"layers\": [0, \"4\"]}, {\"layers\": [5, 9]}]}", "non-negative integers"},
      {"{\"stages\": [{\"layers\": [0, 9]}]}", "has 1 stages, expected 2"},
      {"{\"stages\": [{\"layers\": [0, 3]}, {\"layers\": [6, 9]}]}", "layers 4-5 are not in any stage"},
      {"{\"stages\": [{\"layers\": [0, 5]}, {\"layers\": [5, 9]}]}", "layer 5 is in both stage 0"},
      {"{\"stages\": [{\"layers\": [0, 4]}, {\"layers\": [5, 12]}]}", "layer 12 is outside the model's 10 layers"},
      {"{\"stages\": [{\"layers\": [4, 0]}, {\"layers\": [5, 9]}]}", "reversed range '4-0'"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string path = dir.File("bad" + std::to_string(i) + ".json");
    WriteText(path, cases[i].text);
    SCOPED_TRACE(cases[i].text);
    auto plan = MakeLayerPlan(path, 2, Uniform(10));
    ASSERT_FALSE(plan.ok());
    EXPECT_EQ(plan.status().kind(), ErrorKind::kInvalidArgument);
    const std::string msg = plan.status().message();
    EXPECT_NE(msg.find(cases[i].message_part), std::string::npos) << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
  }

  auto missing = MakeLayerPlan(dir.File("missing.json"), 2, Uniform(10));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().kind(), ErrorKind::kInvalidArgument);
  EXPECT_NE(missing.status().message().find("cannot read plan file"), std::string::npos);

  auto directory = MakeLayerPlan(dir.path(), 2, Uniform(10));
  ASSERT_FALSE(directory.ok());
  EXPECT_NE(directory.status().message().find("not a regular file"), std::string::npos)
      << directory.status().message();

  // Not range text, not .json, no such file: reported as malformed text.
  auto word = MakeLayerPlan("balanced", 2, Uniform(10));
  ASSERT_FALSE(word.ok());
  EXPECT_NE(word.status().message().find("malformed range 'balanced'"), std::string::npos)
      << word.status().message();
}

// ---------------------------------------------------------------------------
// The shipped configs/ plans: SmolLM3-3B Q4_K_M, balanced by auto.

TEST(PlanConfigs, ShippedPlansEqualAuto) {
  const PlanCosts costs = Costs3B();
  for (int n : {2, 3, 4, 6}) {
    const std::string path =
        std::string(STRATA_SOURCE_DIR) + "/configs/smollm3-3b." + std::to_string(n) + "ranks.json";
    SCOPED_TRACE(path);
    auto expected = MakeLayerPlan("auto", n, costs);
    ASSERT_TRUE(expected.ok());
    auto shipped = MakeLayerPlan(path, n, costs);
    if (!shipped.ok()) {
      ADD_FAILURE() << shipped.status().ToString() << "\nexpected:\n" << PlanJson(*expected);
      continue;
    }
    EXPECT_EQ(Ranges(*shipped), Ranges(*expected)) << "expected:\n" << PlanJson(*expected);
    // A plan for 36 layers refuses a model of another depth.
    PlanCosts shallower = costs;
    shallower.layer_bytes.resize(30);
    EXPECT_FALSE(MakeLayerPlan(path, n, shallower).ok());
  }
}

TEST(PlanConfigs, Q4KMCostsOfSmolLM3_3B) {
  const PlanCosts c = Costs3B();
  ASSERT_EQ(c.layer_bytes.size(), 36u);
  // A plain layer: q 2359296 + k 589824 + v 589824 + o 2359296 + gate/up
  // 2 x 12681216 + down 12681216 + norms 16384.
  EXPECT_EQ(c.layer_bytes[4], 43958272u);
  // A use_more_bits layer: v and down in Q6_K.
  EXPECT_EQ(c.layer_bytes[0], 43958272u + (860160u - 589824u) + (18493440u - 12681216u));
  EXPECT_EQ(c.embedding_bytes, 215470080u);  // 128256 x 2048 in Q6_K
  EXPECT_GT(c.embedding_bytes, 4 * c.layer_bytes[0]);
}

// The cost builder's quant mix is llama.cpp's: its Q4_K_M file of a model
// with the same 36-layer layout gives the same bytes per layer.
TEST(PlanConfigs, Q4KMCostModelMatchesLlamaCppFile) {
  const std::string path = std::string(STRATA_SHARED_DIR) + "/models/smol-shakespeare.llamacpp-q4_k_m.gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no " << path;
  auto model = ModelFiles::Open(path);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const PlanCosts actual = CostsOf(**model);
  const PlanCosts expected = Q4KMCosts(kSmolShakespeare);
  EXPECT_EQ(actual.layer_bytes, expected.layer_bytes);
  ASSERT_EQ(actual.layer_matrices.size(), expected.layer_matrices.size());
  for (size_t l = 0; l < actual.layer_matrices.size(); ++l) {
    // The same matrices, types and bytes (the file's tensor order may differ).
    auto key = [](std::vector<MatrixBytes> m) {
      std::vector<std::pair<uint32_t, uint64_t>> k;
      for (const MatrixBytes& x : m) k.emplace_back(static_cast<uint32_t>(x.type), x.bytes);
      std::sort(k.begin(), k.end());
      return k;
    };
    EXPECT_EQ(key(actual.layer_matrices[l]), key(expected.layer_matrices[l])) << "layer " << l;
  }
  EXPECT_EQ(actual.lm_head_type, TensorType::kQ6_K);
  EXPECT_EQ(actual.embedding_bytes, expected.embedding_bytes);
  EXPECT_EQ(actual.output_bytes, 0u);
  EXPECT_TRUE(actual.tied);
  auto plan = MakeLayerPlan("auto", 4, actual);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(Ranges(*plan), Ranges(*MakeLayerPlan("auto", 4, expected)));
}

// ---------------------------------------------------------------------------

TEST(PlanDescribe, MentionsEveryStage) {
  auto plan = MakeLayerPlan("auto", 4, Costs3B());
  ASSERT_TRUE(plan.ok());
  const std::string text = DescribePlan(*plan);
  EXPECT_NE(text.find("auto"), std::string::npos) << text;
  EXPECT_NE(text.find("4 stages over 36 layers"), std::string::npos) << text;
  for (size_t i = 0; i < plan->stages.size(); ++i) {
    const LayerRange& r = plan->stages[i].layers;
    const std::string range = std::to_string(r.first) + "-" + std::to_string(r.last);
    EXPECT_NE(text.find(range), std::string::npos) << "stage " << i << " " << range << "\n" << text;
  }
  EXPECT_NE(text.find("first"), std::string::npos);
  EXPECT_NE(text.find("lm_head"), std::string::npos);
  // Title, header, 4 stages, the note on predicted times.
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2 + 4 + 1) << text;
  EXPECT_NE(text.find("predicted"), std::string::npos) << text;
}

// ---------------------------------------------------------------------------
// Time, not bytes: the cost model, speeds and measured costs.

PlanOptions Sequences(int n) {
  PlanOptions o;
  o.sequences = n;
  return o;
}
PlanOptions Speeds(std::vector<double> v) {
  PlanOptions o;
  o.speeds = std::move(v);
  return o;
}
PlanOptions Measured(std::vector<RankCosts> v) {
  PlanOptions o;
  o.measured = std::move(v);
  return o;
}

// A stage's time in the pass the plan balances (plan.h).
double StageTime(const RankCosts& r, int first, int last, bool is_first, bool is_last, bool decode) {
  auto pick = [decode](const PassCost& c) { return decode ? c.decode : c.prefill; };
  double t = 0;
  for (int l = first; l <= last; ++l) t += pick(r.layers[static_cast<size_t>(l)]);
  if (is_first) t += pick(r.first);
  if (is_last) t += pick(r.last);
  return t;
}

TEST(PlanTime, LayerCostIsBytesTimesTheTypesCost) {
  const PlanCosts c = Costs3B();
  for (int tokens : {1, 2, 4}) {
    const RankCosts r = EstimateCosts(c, tokens);
    ASSERT_EQ(r.layers.size(), 36u);
    double d = 0, p = 0;
    for (const MatrixBytes& m : c.layer_matrices[0]) {
      d += m.bytes * TypeCostPerByte(m.type, tokens).decode * 1e-9;
      p += m.bytes * TypeCostPerByte(m.type, tokens).prefill * 1e-9;
    }
    EXPECT_DOUBLE_EQ(r.layers[0].decode, d);
    EXPECT_DOUBLE_EQ(r.layers[0].prefill, p);
    EXPECT_GT(r.layers[0].decode, 0);
    EXPECT_EQ(r.first.decode, 0);  // row lookups
    EXPECT_DOUBLE_EQ(r.last.decode, c.lm_head_bytes() * TypeCostPerByte(TensorType::kQ6_K, tokens).decode * 1e-9);
  }
  // More tokens per pass never cost less per pass.
  for (TensorType t : {TensorType::kQ4_K, TensorType::kQ6_K, TensorType::kQ8_0, TensorType::kF16})
    EXPECT_LE(TypeCostPerByte(t, 4).decode, TypeCostPerByte(t, 8).decode) << TypeName(t);
}

TEST(PlanTime, AutoIsOptimalForTheCostModel) {
  // Brute force over every split of random typed layers: no split has a
  // smaller largest stage time in the balanced pass than auto's.
  std::mt19937 rng(99);
  const TensorType types[] = {TensorType::kQ4_K, TensorType::kQ6_K, TensorType::kQ8_0, TensorType::kF16};
  for (int trial = 0; trial < 200; ++trial) {
    int n_layers = 1 + static_cast<int>(rng() % 9);
    int n_stages = 1 + static_cast<int>(rng() % static_cast<unsigned>(n_layers));
    int sequences = 1 + static_cast<int>(rng() % 12);
    PlanCosts c;
    for (int i = 0; i < n_layers; ++i) {
      std::vector<MatrixBytes> m;
      uint64_t total = 0;
      for (int k = 0; k < 2; ++k) {
        m.push_back({types[rng() % 4], 1000 + rng() % 100000});
        total += m.back().bytes;
      }
      c.layer_bytes.push_back(total);
      c.layer_matrices.push_back(m);
    }
    c.tied = false;
    c.output_bytes = rng() % 200000;
    c.lm_head_type = types[rng() % 4];
    SCOPED_TRACE("trial " + std::to_string(trial));
    auto plan = MakeLayerPlan("auto", n_stages, c, Sequences(sequences));
    ASSERT_TRUE(plan.ok()) << plan.status().ToString();
    const bool decode = n_stages > 1 && sequences >= n_stages;
    EXPECT_EQ(plan->balances_decode, decode);
    EXPECT_EQ(plan->decode_tokens, (sequences + n_stages - 1) / n_stages);
    const RankCosts r = EstimateCosts(c, plan->decode_tokens);
    double worst = 0;
    for (const StagePlan& st : plan->stages)
      worst = std::max(worst, StageTime(r, st.layers.first, st.layers.last, st.first, st.last, decode));
    double best = 1e300;
    ForEachPartition(n_layers, n_stages, [&](const RangeList& rl) {
      double w = 0;
      for (size_t s = 0; s < rl.size(); ++s)
        w = std::max(w, StageTime(r, rl[s].first, rl[s].second, s == 0, s + 1 == rl.size(), decode));
      best = std::min(best, w);
    });
    // Equal up to the integer units the balancer works in (2^-40 of the total).
    EXPECT_LE(worst, best * (1 + 1e-9));
  }
}

TEST(PlanTime, StageTimesAreTheSumOfTheirPieces) {
  const PlanCosts c = Costs3B();
  auto plan = MakeLayerPlan("0-9,10-35", 2, c, Sequences(8));
  ASSERT_TRUE(plan.ok());
  const RankCosts r = EstimateCosts(c, 4);
  double d0 = 0, d1 = r.last.decode;
  for (int l = 0; l <= 9; ++l) d0 += r.layers[static_cast<size_t>(l)].decode;
  for (int l = 10; l <= 35; ++l) d1 += r.layers[static_cast<size_t>(l)].decode;
  EXPECT_NEAR(plan->stages[0].time.decode, d0, 1e-12);
  EXPECT_NEAR(plan->stages[1].time.decode, d1, 1e-12);
  EXPECT_EQ(plan->decode_tokens, 4);
}

TEST(PlanTime, HalfSpeedRankGetsAboutHalfTheWork) {
  // 36 equal layers, no lm_head; the second rank at half speed: 24 | 12.
  PlanCosts c = Uniform(36);
  auto plan = MakeLayerPlan("auto", 2, c, Speeds({1.0, 0.5}));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(Ranges(*plan), (RangeList{{0, 23}, {24, 35}}));
  // The same from measured figures: rank 1 twice as slow per layer.
  RankCosts fast, slow;
  fast.layers.assign(36, PassCost{0.010, 0.200});
  slow.layers.assign(36, PassCost{0.020, 0.400});
  auto measured = MakeLayerPlan("measure", 2, c, Measured({fast, slow}));
  ASSERT_TRUE(measured.ok()) << measured.status().ToString();
  EXPECT_EQ(measured->source, "measure");
  EXPECT_TRUE(measured->measured);
  EXPECT_EQ(Ranges(*measured), (RangeList{{0, 23}, {24, 35}}));
  EXPECT_NEAR(measured->stages[1].time.decode, 12 * 0.020, 1e-9);
  // Three ranks at 2 : 1 : 1 -> 18 | 9 | 9.
  auto three = MakeLayerPlan("auto", 3, c, Speeds({2.0, 1.0, 1.0}));
  ASSERT_TRUE(three.ok());
  EXPECT_EQ(Ranges(*three), (RangeList{{0, 17}, {18, 26}, {27, 35}}));
}

TEST(PlanTime, BalancesThePassThatFillsThePipeline) {
  // Rank-measured costs where layers 0-3 cost twice as much in prefill only.
  PlanCosts c = Uniform(8);
  RankCosts r;
  r.layers.assign(8, PassCost{1.0, 1.0});
  for (int l = 0; l < 4; ++l) r.layers[static_cast<size_t>(l)].prefill = 2.0;
  // One sequence on 2 stages: decode goes stage after stage whatever the
  // split; prefill chunks are what the pipeline overlaps: 3 | 5 (6 | 6).
  auto one = MakeLayerPlan("measure", 2, c, Measured({r, r}));
  ASSERT_TRUE(one.ok());
  EXPECT_FALSE(one->balances_decode);
  EXPECT_EQ(Ranges(*one), (RangeList{{0, 2}, {3, 7}}));
  // Two sequences or more: decode micro-batches fill both stages: 4 | 4.
  PlanOptions two = Measured({r, r});
  two.sequences = 2;
  auto batched = MakeLayerPlan("measure", 2, c, two);
  ASSERT_TRUE(batched.ok());
  EXPECT_TRUE(batched->balances_decode);
  EXPECT_EQ(batched->decode_tokens, 1);
  EXPECT_EQ(Ranges(*batched), (RangeList{{0, 3}, {4, 7}}));
  // SmolLM3-3B Q4_K_M: in a decode micro-batch of 4 tokens the Q6_K lm_head
  // weighs several layers, so the last stage gets fewer layers than for prefill.
  auto prefill = MakeLayerPlan("auto", 2, Costs3B(), Sequences(1));
  auto decode = MakeLayerPlan("auto", 2, Costs3B(), Sequences(8));
  ASSERT_TRUE(prefill.ok() && decode.ok());
  EXPECT_LT(decode->stages[1].layers.count(), prefill->stages[1].layers.count());
}

TEST(PlanTime, AShareOfTheLmHeadCountsOnTheFirstStage) {
  // 8 layers of 100, lm_head 400: alone 600 | 200 + 400; with half of the
  // lm_head's work on the first stage, 400 + 200 | 400 + 200.
  PlanOptions half;
  half.lm_head_share = 0.5;
  auto plan = MakeLayerPlan("auto", 2, Uniform(8, 100, 400, true), half);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(Ranges(*plan), (RangeList{{0, 3}, {4, 7}}));
  EXPECT_EQ(plan->lm_head_share, 0.5);
  auto alone_plan = MakeLayerPlan("auto", 2, Uniform(8, 100, 400, true));
  ASSERT_TRUE(alone_plan.ok());
  EXPECT_EQ(Ranges(*alone_plan), (RangeList{{0, 5}, {6, 7}}));
  EXPECT_NE(DescribePlan(*plan).find("50 % of the lm_head"), std::string::npos) << DescribePlan(*plan);
  // The cost model's times move the same way.
  const PlanCosts c = Costs3B();
  PlanOptions quarter = Sequences(8);
  quarter.lm_head_share = 0.25;
  auto shared = MakeLayerPlan("0-19,20-35", 2, c, quarter);
  auto alone = MakeLayerPlan("0-19,20-35", 2, c, Sequences(8));
  ASSERT_TRUE(shared.ok() && alone.ok());
  const double head = EstimateCosts(c, 4).last.decode;
  EXPECT_NEAR(shared->stages[0].time.decode, alone->stages[0].time.decode + 0.25 * head, 1e-12);
  EXPECT_NEAR(shared->stages[1].time.decode, alone->stages[1].time.decode - 0.25 * head, 1e-12);
  // One stage has nothing to share with; a share outside [0, 1] is refused.
  auto one = MakeLayerPlan("auto", 1, c, quarter);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->lm_head_share, 0);
  quarter.lm_head_share = 1.5;
  EXPECT_FALSE(MakeLayerPlan("auto", 2, c, quarter).ok());
}

TEST(PlanTime, Rejections) {
  PlanCosts c = Uniform(8);
  auto expect_error = [&](const std::string& spec, int n, const PlanOptions& o, const std::string& words) {
    auto plan = MakeLayerPlan(spec, n, c, o);
    ASSERT_FALSE(plan.ok()) << spec;
    EXPECT_NE(plan.status().message().find(words), std::string::npos) << plan.status().message();
  };
  expect_error("measure", 2, {}, "0 ranks measured for 2 stages");
  expect_error("auto", 2, Speeds({1.0}), "1 speeds for 2 stages");
  expect_error("auto", 2, Speeds({1.0, 0.0}), "expected a positive number");
  RankCosts short_costs;
  short_costs.layers.assign(5, PassCost{1, 1});
  expect_error("measure", 2, Measured({short_costs, short_costs}), "measured 5 layers, the model has 8");
  // One stage needs no measurement.
  auto one = MakeLayerPlan("measure", 1, c);
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(Ranges(*one), (RangeList{{0, 7}}));
}

TEST(PlanTime, DescribesMeasuredCosts) {
  RankCosts r;
  r.layers.assign(4, PassCost{0.002, 0.040});
  r.layers[3] = {0.003, 0.050};
  r.last = {0.004, 0.001};
  const std::string text = DescribeMeasuredCosts({r}, {"rank 1 (h2)"});
  EXPECT_NE(text.find("rank 1 (h2)"), std::string::npos) << text;
  EXPECT_NE(text.find("0-2 2.00/40.0"), std::string::npos) << text;
  EXPECT_NE(text.find("3 3.00/50.0"), std::string::npos) << text;
  EXPECT_NE(text.find("lm_head 4.00/1.00"), std::string::npos) << text;
}

}  // namespace
}  // namespace strata
