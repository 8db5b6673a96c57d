// A pipeline stage: a contiguous slice of layers with its weights and the
// per-sequence state of those layers (the KV cache of attention layers, a ring
// of the window for sliding-window ones, the convolution state of LFM2's
// convolution layers) for every live sequence. The first stage also holds
// the token embedding; the last the final norm and lm_head. Runs on the rank
// that owns the slice (rank 0 owns stage 0 unless it is coordinator-only).
//
//   STRATA_ASSIGN_OR_RETURN(auto stage, Stage::Load(*model, {0, 35}, opts));
//   stage->Embed(ids, x);             // first stage
//   stage->Forward(batch, x);         // every stage, in place
//   stage->Logits(x, rows, logits);   // last stage
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/huge_pages.h"
#include "common/status.h"
#include "common/thread_pool.h"
#include "model/layer.h"
#include "model/model_files.h"
#include "model/rope.h"

namespace strata {

struct StageOptions {
  LayerRange layers;
  bool first = true;     // holds the embedding
  bool last = true;      // holds the final norm and lm_head
  int64_t n_ctx = 4096;  // maximum positions per sequence
  int max_sequences = 1;  // alive at once; Load refuses a KV cache that cannot fit in memory
  // The server's prefix cache (coordinator/prefix_cache.h): finished
  // sequences whose state stays here for later prompts, on top of
  // max_sequences, and the bytes rank 0 lets them hold (0: no byte bound;
  // Load then counts them at full context).
  int cached_sequences = 0;
  uint64_t cache_bytes = 0;
  TensorType kv_type = TensorType::kF32;  // the KV cache's storage type (model/blocks.h)
  bool copy_weights = false;  // --no-mmap: the slice's matrices in huge-page memory, not the file mapping
  // Q4_K / Q6_K / Q8_0 layer matrices and lm_head rebuilt in the
  // row-interleaved layout the kernels read fastest (kernels/interleave.h);
  // same results bit for bit. They then live in anonymous memory even when
  // the rest is mapped.
  bool interleave_weights = true;
  // The first stage's share of the lm_head (the pipeline's shared lm_head,
  // coordinator/lm_head_share.h): it also holds the last this many rows of
  // the lm_head (vocabulary ids [vocab - n, vocab); a multiple of 8 when the
  // vocabulary is) and
  // computes their logits for rows the last stage has normed. 0: none.
  int64_t lm_head_tail_rows = 0;
};

// One sequence's run of tokens in a forward batch.
struct BatchEntry {
  uint64_t seq_id;
  int64_t pos0;   // position of the first token
  int64_t n_tok;  // tokens of this sequence in the batch
};

// A stage's counters since it started (differences measure a window), as
// `strata bench` reports them per rank.
struct StageStats {
  int rank = 0;
  std::string host;
  int first_layer = 0, last_layer = -1;
  double busy_s = 0;          // computing: embedding, layers, lm_head, sampling
  uint64_t batches = 0;
  uint64_t tokens = 0;
  uint64_t bytes_sent = 0;    // activations to the next stage
  uint64_t rss_bytes = 0;     // resident memory of the rank's process
  uint64_t peak_rss_bytes = 0;  // its peak since the process started (VmHWM)
  uint64_t weight_bytes = 0;  // the stage's slice
  uint64_t kv_bytes = 0;      // its per-sequence layer state (KV caches, conv states) now
  uint64_t peak_kv_bytes = 0;
};

// Resident memory of this process (VmRSS from /proc/self/status), 0 when unknown.
uint64_t ResidentBytes();
// The peak of it since the process started (VmHWM), 0 when unknown.
uint64_t PeakResidentBytes();
// Memory the system can still give (MemAvailable), 0 when unknown.
uint64_t AvailableMemoryBytes();

class Stage {
 public:
  static Result<std::unique_ptr<Stage>> Load(const ModelFiles& model, const StageOptions& opts, ThreadPool* pool);

  const StageOptions& options() const { return opts_; }
  const ModelConfig& config() const { return cfg_; }

  // x[t] = embedding of ids[t]; x is [ids.size()][hidden]. First stage only.
  Status Embed(std::span<const int32_t> ids, float* x) const;
  // Runs this stage's layers over the batch; x is [total tokens][hidden].
  // Positions must continue each sequence's cache exactly (pos0 == cached length).
  Status Forward(const std::vector<BatchEntry>& batch, float* x);
  // Same, stopping after every layer to call `observe(layer, x)` (dumps).
  Status ForwardObserved(const std::vector<BatchEntry>& batch, float* x,
                         const std::function<void(int layer, const float* x, int64_t n_tok)>& observe);
  // logits[r] = lm_head(final_norm(x[rows[r]])); logits is [rows.size()][vocab]. Last stage only.
  Status Logits(const float* x, std::span<const int64_t> rows, float* logits);
  // The logits of vocabulary ids [from, to) for n_rows rows already through
  // the final norm: logits is [n_rows][to - from]. The last stage holds every
  // id, a first stage with lm_head_tail_rows the last ones; from and to are
  // multiples of 8 (when the vocabulary is). A logit does not depend on the
  // range it is computed in, nor on the stage.
  Status LmHead(const float* normed, int64_t n_rows, int64_t from, int64_t to, float* logits);
  // Final norm of one row (dumps, the shared lm_head). Last stage only.
  void FinalNorm(const float* x, float* out) const;

  void FreeSequence(uint64_t seq_id);
  // The prefix cache's reuse: sequence `seq_id` (new) takes the state of
  // `from_seq_id` (finished, kept), or a copy of it when `copy` (the kept
  // one stays), cut back to its first `keep` positions.
  // Refused when `from_seq_id` is unknown, `seq_id` is alive, `keep` is past
  // its length, or a layer's state cannot be cut there (model/blocks.h's
  // LayerStateKeepsPrefix): rank 0 asks only for what every layer allows.
  Status ReuseSequence(uint64_t seq_id, uint64_t from_seq_id, int64_t keep, bool copy);
  size_t sequences() const { return caches_.size(); }

  // Debugging a split: from now on, every Forward writes the residual stream
  // as .npy files into `dir`: embeddings.npy (first stage), layer_NNN.npy
  // after each owned layer inside `layers`, final_norm.npy (last stage).
  void EnableDump(const std::string& dir, LayerRange layers);
  // Bytes of weights this stage maps and touches, and of its layers'
  // per-sequence state now.
  uint64_t weight_bytes() const { return weight_bytes_; }
  uint64_t kv_bytes() const;

 private:
  struct SequenceCache {
    int64_t length = 0;
    std::vector<LayerState> layers;  // per owned layer
  };
  explicit Stage(const ModelConfig& cfg) : cfg_(cfg), rope_(cfg.rope, cfg.head_dim) {}
  Result<SequenceCache*> CacheFor(uint64_t seq_id, int64_t pos0, int64_t n_tok);
  // A freed sequence's layer states whose memory is at most twice what a
  // sequence of `length` positions holds (the slack that doubling the room
  // already allows, so rank 0's accounting stays as close), else empty ones.
  std::vector<LayerState> StatesFor(int64_t length);

  StageOptions opts_;
  ModelConfig cfg_;
  ThreadPool* pool_ = nullptr;
  std::vector<LayerWeights> layers_;
  MatrixView embedding_{};        // [vocab rows][hidden]
  MatrixView output_{};           // [vocab rows][hidden]; the embedding when tied
  MatrixView lm_head_tail_{};     // first stage: lm_head rows [vocab - lm_head_tail_rows, vocab)
  std::vector<float> output_norm_;
  uint64_t weight_bytes_ = 0;
  // The matrices held in anonymous memory: every one with --no-mmap,
  // otherwise the interleaved ones.
  HugePageBuffer weight_copy_;
  Status PlaceWeights();
  std::map<uint64_t, SequenceCache> caches_;
  // Freed sequences' states, cleared, oldest first; with the live ones never
  // more than max_sequences. Allocating a new sequence's caches fresh cost
  // SmolLM3-3B's first stage 10-30 ms per micro-batch of four (page faults
  // and zero-fill on the stage's critical path), which the next stage waited for.
  std::vector<std::vector<LayerState>> spare_states_;
  LayerScratch scratch_;
  RopeTable rope_;
  std::vector<float> norm_rows_;
  std::string dump_dir_;
  LayerRange dump_layers_{0, -1};
};

}  // namespace strata
