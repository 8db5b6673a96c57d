// The layer plan: which contiguous range of layers each pipeline stage (one
// MPI rank) owns. Built once, before any weight is loaded, on every rank from
// the same spec and the same model header, so every rank derives the same plan
// (for "measure", rank 0 builds it from every rank's calibration and sends it).
//
//   PlanOptions options;
//   options.sequences = parallel;  // sequences decoded at once
//   STRATA_ASSIGN_OR_RETURN(LayerPlan plan, MakeLayerPlan(flag_plan, n_ranks, CostsOf(*model), options));
//   std::fputs(DescribePlan(plan).c_str(), stderr);
//   const StagePlan& mine = plan.stages[rank];   // mine.layers: global indices
//
// A spec is one of
//   "auto"                  balance the stages' time as the cost model predicts it (below);
//   "measure"               balance the time each rank measured for each layer at start-up
//                           (worker/calibrate.h; rank 0 passes the figures as PlanOptions::measured);
//   "0-8,9-17,18-26,27-35"  explicit inclusive ranges, stage i = range i
//                           (a single layer may be written "5");
//   a JSON plan file        any spec ending in ".json", or naming an existing file
//                           that is not range text; format in configs/README.md.
//
// Cost model. A stage's time in one pass is the time of its layers' weight
// matrices plus, on the first stage, the embedding lookups and, on the last,
// the lm_head: output.weight, or for a tied model the embedding matrix itself
// (for SmolLM3-3B about four layers' bytes). A matrix costs its bytes times
// what a byte of its type costs on this machine (kTypeCosts in plan.cc,
// measured by bench/plan_costs.py with the kernel benches) in each of two
// passes:
//   decode   a micro-batch of DecodeTokens(sequences, stages) tokens (one per
//            sequence), weights streamed from memory;
//   prefill  a chunk of 64 tokens of one prompt (bound by arithmetic: Q6_K
//            costs more per byte than Q4_K here, the same in 1-token decode),
//            and the lm_head of one row (the prompt's last).
// "auto" and "measure" balance the pass that keeps every stage busy at once.
// With fewer sequences than stages (generate, chat, perplexity), a decoding
// token goes through the stages one after the other whatever the split, and
// only a prompt's chunks follow each other down the pipeline: they balance
// prefill. With at least one sequence per stage (bench, serve --parallel),
// decode micro-batches fill the pipeline: they balance decode. They pick
// contiguous ranges, each at least one layer, minimizing the largest stage
// time (exact dynamic programme); among the plans that reach it, the most
// even one (least sum of squared stage times); remaining ties go to the plan
// whose last stage takes the most layers, then the stage before it, and so
// on. With PlanOptions::speeds (inspect --speeds) stage s's times are divided
// by speeds[s]. Hand-made costs without types (tests) are balanced by bytes;
// StagePlan::weight_bytes reports the bytes in every case.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/tensor_type.h"
#include "model/model_config.h"
#include "worker/calibrate.h"  // PassCost, RankCosts

namespace strata {

class ModelFiles;

struct StagePlan {
  LayerRange layers;          // inclusive, global layer indices
  bool first = false;         // looks up the embedding (rank 0's stage)
  bool last = false;          // applies the final norm and the lm_head
  uint64_t weight_bytes = 0;  // bytes read per token: its layers (+ lm_head when last)
  PassCost time;              // predicted (auto, explicit, files) or measured (measure)
};

struct LayerPlan {
  std::vector<StagePlan> stages;
  std::string source;  // "auto", "measure", "explicit", or the plan file path
  int decode_tokens = 1;         // tokens in a decode micro-batch
  bool balances_decode = false;  // auto / measure balanced decode (else prefill)
  bool measured = false;         // stage times are the ranks' own measurements
  double lm_head_share = 0;      // PlanOptions::lm_head_share, as the plan counted it
};

// A weight matrix (2-D tensor) of a layer, as the cost model sees it.
struct MatrixBytes {
  TensorType type = TensorType::kF32;
  uint64_t bytes = 0;
};

// What the planner needs to know of a model, so it is testable without a file.
struct PlanCosts {
  std::vector<uint64_t> layer_bytes;  // [n_layers], every tensor of the layer
  // [n_layers]: the layer's weight matrices. Empty (hand-made costs in tests):
  // every byte costs the same.
  std::vector<std::vector<MatrixBytes>> layer_matrices;
  uint64_t embedding_bytes = 0;       // token_embd.weight
  uint64_t output_bytes = 0;          // output.weight; 0 when tied
  bool tied = false;                  // the lm_head is the embedding matrix
  TensorType lm_head_type = TensorType::kF32;

  // Bytes the last stage reads for the logits matmul.
  uint64_t lm_head_bytes() const { return tied ? embedding_bytes : output_bytes; }
};

PlanCosts CostsOf(const ModelFiles& model);

// What one byte of a weight type costs on this machine (1 thread), in
// nanoseconds: in a decode pass of `tokens` tokens, and in a 64-token prefill
// chunk. From the kernel benches (plan.cc); a type not measured costs as F32.
PassCost TypeCostPerByte(TensorType type, int tokens);

// The cost model's prediction of every piece of the model (seconds on one
// thread of this machine).
RankCosts EstimateCosts(const PlanCosts& costs, int decode_tokens);

// The scheduler's decode micro-batch: `sequences` decoding at once spread
// over one micro-batch per stage.
int DecodeTokens(int sequences, int n_stages);

struct PlanOptions {
  // Sequences decoded at once (--parallel): the decode micro-batch, and which
  // pass the plan balances.
  int sequences = 1;
  // auto: relative speed of each stage's rank (empty: all 1); 2 = twice as fast.
  std::vector<double> speeds;
  // measure: each stage's rank's own figures, one per stage.
  std::vector<RankCosts> measured;
  // The shared lm_head (coordinator/lm_head_share.h): the fraction of its
  // work the first stage takes (at the last stage's cost), with two or more
  // stages. The last stage still holds every row.
  double lm_head_share = 0;
};

// InvalidArgument, naming the problem, for a spec that is empty, malformed,
// has a gap, an overlap, a layer outside the model, a range count that is not
// n_stages, or for n_stages < 1 or more stages than layers; for a plan file
// that cannot be read, is not JSON, or is not of the documented shape; for
// "measure" without a measurement per stage, and speeds that are not one
// positive number per stage.
Result<LayerPlan> MakeLayerPlan(const std::string& spec, int n_stages, const PlanCosts& costs,
                                const PlanOptions& options = {});

// A table for logs, one line per stage: weight_bytes in MiB and the
// predicted (or measured) time of a decode micro-batch and of a prefill chunk:
//   layer plan (auto, decode micro-batch of 1 token): 2 stages over 36 layers
//   stage  layers      n  weight MiB   decode ms  prefill ms
//       0  0-19       20       890.6        35.2       785.0  first
//       1  20-35      16       928.4        35.9       769.1  last (+ lm_head)
std::string DescribePlan(const LayerPlan& plan);

// Each rank's measured cost per layer, one line per distinct cost: which layers,
// decode and prefill ms on every rank (for "measure").
std::string DescribeMeasuredCosts(const std::vector<RankCosts>& per_rank, const std::vector<std::string>& who);

}  // namespace strata
