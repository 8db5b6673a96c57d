// Tests for worker/calibrate: layers grouped by kind (checked against
// llama.cpp's Q4_K_M mix, whose use_more_bits layers carry Q6_K tensors), and
// a calibration's figures: every layer timed, layers of a kind share theirs,
// embedding and lm_head only when asked.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "model/model_files.h"
#include "worker/calibrate.h"

namespace strata {
namespace {

const std::string kModel = std::string(STRATA_SOURCE_DIR) + "/models/smol-shakespeare-q4_k_m.gguf";

bool UseMoreBits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

std::unique_ptr<ModelFiles> OpenModel() {
  auto model = ModelFiles::Open(kModel);
  STRATA_CHECK_MSG(model.ok(), model.status().ToString());
  return std::move(model).value();
}

TEST(Calibrate, LayerKindsFollowTheQuantMix) {
  auto model = OpenModel();
  const std::vector<std::vector<int>> kinds = LayerKinds(*model);
  // Two kinds: layers with Q6_K attn_v / ffn_down, and the plain Q4_K ones.
  ASSERT_EQ(kinds.size(), 2u);
  const int n = model->config().n_layers;
  for (const std::vector<int>& kind : kinds) {
    ASSERT_FALSE(kind.empty());
    const bool more = UseMoreBits(kind[0], n);
    for (int l : kind) EXPECT_EQ(UseMoreBits(l, n), more) << "layer " << l;
  }
  EXPECT_EQ(kinds[0].size() + kinds[1].size(), static_cast<size_t>(n));
}

TEST(Calibrate, TimesEveryLayerByKind) {
  auto model = OpenModel();
  ThreadPool pool(1);
  CalibrationOptions opts;
  opts.decode_tokens = 2;
  opts.prefill_tokens = 16;
  opts.embedding = true;
  opts.lm_head = true;
  opts.seconds = 0.05;
  auto costs = Calibrate(*model, opts, &pool);
  ASSERT_TRUE(costs.ok()) << costs.status().ToString();
  const int n = model->config().n_layers;
  ASSERT_EQ(costs->layers.size(), static_cast<size_t>(n));
  const std::vector<std::vector<int>> kinds = LayerKinds(*model);
  for (const std::vector<int>& kind : kinds)
    for (int l : kind) {
      EXPECT_GT(costs->layers[l].decode, 0) << l;
      EXPECT_EQ(costs->layers[l].decode, costs->layers[kind[0]].decode) << l;
      EXPECT_EQ(costs->layers[l].prefill, costs->layers[kind[0]].prefill) << l;
      // No comparison between the two: timings on a shared machine are
      // noise-bound (speed is measured by bench, never asserted in a test).
      EXPECT_GT(costs->layers[l].prefill, 0) << l;
    }
  EXPECT_GT(costs->first.decode, 0);
  EXPECT_GT(costs->last.decode, 0);
  EXPECT_GT(costs->last.prefill, 0);

  // Without the first and last stages' work, those stay zero.
  opts.embedding = opts.lm_head = false;
  auto middle = Calibrate(*model, opts, &pool);
  ASSERT_TRUE(middle.ok()) << middle.status().ToString();
  EXPECT_EQ(middle->first.decode, 0);
  EXPECT_EQ(middle->last.decode, 0);
  EXPECT_GT(middle->layers[0].decode, 0);
}

}  // namespace
}  // namespace strata
