// The layer plan: which contiguous range of layers each pipeline stage (one
// MPI rank) owns. Built once, before any weight is loaded, on every rank from
// the same spec and the same model header, so every rank derives the same plan.
//
//   STRATA_ASSIGN_OR_RETURN(LayerPlan plan, MakeLayerPlan(flag_plan, n_ranks, CostsOf(*model)));
//   std::fputs(DescribePlan(plan).c_str(), stderr);
//   const StagePlan& mine = plan.stages[rank];   // mine.layers: global indices
//
// A spec is one of
//   "auto"                  balance the stages by weight bytes (below);
//   "0-8,9-17,18-26,27-35"  explicit inclusive ranges, stage i = range i
//                           (a single layer may be written "5");
//   a JSON plan file        any spec ending in ".json", or naming an existing file
//                           that is not range text; format in configs/README.md.
//
// Cost model. Decoding one token streams every weight of a stage once, so a
// stage's time is roughly its weight bytes. The first stage only reads the
// embedding rows of the tokens it looks up (about nothing); the last stage
// multiplies by the whole lm_head — output.weight, or for a tied model the
// embedding matrix itself (for SmolLM3-3B worth about four layers). So
//   cost(stage) = sum of its LayerBytes + (last ? lm_head bytes : 0)
// and StagePlan::weight_bytes reports exactly that.
//
// "auto" picks contiguous ranges, each at least one layer, minimizing the
// largest stage cost (exact dynamic programme). Among the plans that reach
// that minimum it takes the most even one (least sum of squared stage costs);
// remaining ties go to the plan whose last stage takes the most layers, then
// the stage before it, and so on (earlier stages take fewer layers).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "model/model_config.h"

namespace strata {

class ModelFiles;

struct StagePlan {
  LayerRange layers;          // inclusive, global layer indices
  bool first = false;         // looks up the embedding (rank 0's stage)
  bool last = false;          // applies the final norm and the lm_head
  uint64_t weight_bytes = 0;  // bytes read per token: its layers (+ lm_head when last)
};

struct LayerPlan {
  std::vector<StagePlan> stages;
  std::string source;  // "auto", "explicit", or the plan file path
};

// What the planner needs to know of a model, so it is testable without a file.
struct PlanCosts {
  std::vector<uint64_t> layer_bytes;  // [n_layers]
  uint64_t embedding_bytes = 0;       // token_embd.weight
  uint64_t output_bytes = 0;          // output.weight; 0 when tied
  bool tied = false;                  // the lm_head is the embedding matrix

  // Bytes the last stage reads for the logits matmul.
  uint64_t lm_head_bytes() const { return tied ? embedding_bytes : output_bytes; }
};

PlanCosts CostsOf(const ModelFiles& model);

// InvalidArgument, naming the problem, for a spec that is empty, malformed,
// has a gap, an overlap, a layer outside the model, a range count that is not
// n_stages, or for n_stages < 1 or more stages than layers; for a plan file
// that cannot be read, is not JSON, or is not of the documented shape.
Result<LayerPlan> MakeLayerPlan(const std::string& spec, int n_stages, const PlanCosts& costs);

// A table for logs, one line per stage (weight_bytes in MiB):
//   layer plan (auto): 4 stages over 36 layers
//   stage  layers      n  weight MiB
//       0  0-9        10       454.0  first
//       1  10-20      11       478.5
//       2  21-30      10       442.4
//       3  31-35       5       444.1  last (+ lm_head)
std::string DescribePlan(const LayerPlan& plan);

}  // namespace strata
