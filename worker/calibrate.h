// Calibration for the measured plan (`--split measure`): a rank times one pass
// through each distinct kind of layer of the model (layers whose weight
// tensors have the same names, types and shapes cost the same), through the
// embedding lookups when it would hold the first stage and the lm_head when it
// would hold the last, on its own threads, on a few tokens, in a second or
// so. Rank 0 gathers every rank's figures and plans the stages on them
// (coordinator/plan.h). Runs on every stage's rank at start-up, before the
// plan; uses only Stage's public interface.
//
//   STRATA_ASSIGN_OR_RETURN(RankCosts mine, Calibrate(*model, {.decode_tokens = 4}, pool));
//   mine.layers[l].decode   // seconds for a decode micro-batch through layer l
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "common/thread_pool.h"
#include "model/model_files.h"

namespace strata {

// The time of one pass through a piece of the model, in seconds (estimated
// or measured): a decode micro-batch, and a prefill chunk.
struct PassCost {
  double decode = 0;
  double prefill = 0;
};

// What every piece of the model costs on one rank: each layer, the first
// stage's extra work (embedding lookups), the last stage's (final norm,
// lm_head).
struct RankCosts {
  std::vector<PassCost> layers;  // [n_layers]
  PassCost first;
  PassCost last;
};

struct CalibrationOptions {
  int decode_tokens = 1;     // tokens (one per sequence) in a decode pass
  int prefill_tokens = 32;   // tokens of one sequence in a prefill pass
  bool embedding = false;    // time the embedding lookups (the first stage's rank)
  bool lm_head = false;      // time the final norm and lm_head (the last stage's rank)
  // Timed work, at least: a host throttled by a CPU quota (CFS periods of
  // 100 ms) shows its average speed only over several periods. Each item's
  // figure is its CPU time times the rank's wall / CPU ratio (calibrate.cc).
  double seconds = 1.0;
};

// Layers grouped by kind: kinds[k] lists the layers of kind k, ascending.
std::vector<std::vector<int>> LayerKinds(const ModelFiles& model);

Result<RankCosts> Calibrate(const ModelFiles& model, const CalibrationOptions& opts, ThreadPool* pool);

}  // namespace strata
