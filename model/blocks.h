// The shared blocks every architecture's layers are composed of, with their
// weights and per-sequence state: attention (GQA with its variants: q/k/v/o
// biases, per-head q/k RMSNorm, RoPE on or off, sliding window, Llama 4's
// temperature), the gated short convolution (LFM2), the SwiGLU feed-forward
// and a mixture of SwiGLU experts. Each block reads the normed residual rows
// of a batch and writes its output rows; the recipe (layer.h) adds them back.
// Runs on the stage that owns the layer.
//
// A batch holds the tokens of one or more sequences, one run each
// (SequenceSpan); every block computes a token's output from that token's row
// and its own sequence's state only, never from the batch's shape, so any
// batching and any split give the same bits.
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "common/thread_pool.h"
#include "kernels/matmul.h"
#include "model/model_config.h"
#include "model/rope.h"

namespace strata {

// ---------------------------------------------------------------------------
// Weights (matrices point into the model mapping or the stage's copy; small
// vectors are converted to f32 at load; an empty vector = absent)
// ---------------------------------------------------------------------------
struct AttentionWeights {
  MatrixView wq;                 // [q_dim rows][hidden]
  MatrixView wk;                 // [kv_dim rows][hidden]
  MatrixView wv;                 // [kv_dim rows][hidden]
  MatrixView wo;                 // [hidden rows][q_dim]
  std::vector<float> bq, bk, bv; // [q_dim], [kv_dim], [kv_dim]
  std::vector<float> bo;         // [hidden]
  std::vector<float> q_norm;     // [head_dim]
  std::vector<float> k_norm;     // [head_dim]
  bool use_rope = true;          // false for SmolLM3's NoPE layers
  int window = 0;                // sliding window in positions, 0 = none
};

struct ShortConvWeights {
  MatrixView in_proj;            // [3 * hidden rows][hidden]: B, C, x
  std::vector<float> kernel;     // [hidden][conv_kernel] depthwise taps, oldest position first
  MatrixView out_proj;           // [hidden rows][hidden]
};

struct SwiGluWeights {
  MatrixView gate;               // [ffn rows][hidden]
  MatrixView up;                 // [ffn rows][hidden]
  MatrixView down;               // [hidden rows][ffn]
  std::vector<float> b_gate, b_up, b_down;
};

struct MoeWeights {
  MatrixView router;             // [n_experts rows][hidden]
  std::vector<MatrixView> gate;  // per expert [expert_ffn rows][hidden]
  std::vector<MatrixView> up;    // per expert [expert_ffn rows][hidden]
  std::vector<MatrixView> down;  // per expert [hidden rows][expert_ffn]
};

// ---------------------------------------------------------------------------
// Per-sequence state of one layer
// ---------------------------------------------------------------------------
// K and V rows of an attention layer, in the cache's storage type (F32, F16,
// BF16 or Q8_0: --kv-type). Position p lives in row p % capacity: a
// full-attention layer's capacity covers every position (rows = positions);
// a sliding-window layer's is about its window, a ring.
struct KvCache {
  TensorType type = TensorType::kF32;
  uint64_t row_bytes = 0;     // one position: kv_dim elements in `type`
  std::vector<uint8_t> k, v;  // [capacity][row_bytes]
  int64_t capacity = 0;
};

// The gated short convolution's memory: B*x of the last conv_kernel - 1
// positions, oldest first (zeros before the sequence starts).
struct ConvState {
  std::vector<float> rows;  // [conv_kernel - 1][hidden]
};

struct LayerState {
  KvCache kv;
  ConvState conv;
  uint64_t bytes() const { return kv.k.capacity() + kv.v.capacity() + conv.rows.capacity() * sizeof(float); }
};

// One sequence's run of tokens inside a batch: positions pos0 .. pos0 + n_tok - 1,
// with its state for the current layer.
struct SequenceSpan {
  int64_t pos0;
  int64_t n_tok;
  LayerState* state;
};

// Makes room in `state` for positions pos0 .. pos0 + n_tok - 1 of a layer
// (KV rows of `kv_type` for an attention layer of the given window, the conv
// rows of a short-convolution layer). Capacities grow in steps of 256
// positions up to n_ctx; a ring keeps window - 1 + n_tok rows, in steps of 64.
void PrepareLayerState(const ModelConfig& cfg, LayerKind kind, int window, TensorType kv_type, int64_t pos0, int64_t n_tok,
                       int64_t n_ctx, LayerState* state);
// Empties a layer's state for another sequence but keeps its memory: a new
// sequence then writes resident pages instead of faulting fresh ones in.
void ClearLayerState(LayerState* state);
// Bytes one sequence's state of such a layer holds at n_ctx positions (the
// largest a batch of up to `max_batch` tokens makes it).
uint64_t LayerStateBytes(const ModelConfig& cfg, LayerKind kind, int window, TensorType kv_type, int64_t n_ctx,
                         int64_t max_batch = 512);
// Whether a layer's state of `length` positions still holds exactly the state
// of its first `keep` positions once its length is set back to `keep` (the
// server's prefix cache reuses a finished sequence's state for a prompt that
// shares its first `keep` tokens):
//   full attention   always: rows past `keep` are rewritten before any read;
//   sliding window   keep == length, or length <= window (the ring never
//                    wrapped, so no row a later token overwrote is needed);
//   short conv       keep == length only: the state is the last
//                    conv_kernel - 1 positions, earlier ones are gone.
bool LayerStateKeepsPrefix(LayerKind kind, int window, int64_t length, int64_t keep);
// A copy of a layer's state holding its first `keep` positions (those
// LayerStateKeepsPrefix allows): a full-attention cache gets only the rows
// up to `keep` (in PrepareLayerState's steps), so that its size is that of a
// sequence of `keep` positions; a ring or a conv state is copied whole.
LayerState CopyLayerStatePrefix(const LayerState& state, int window, int64_t keep, int64_t n_ctx);
// Bytes a sequence's state of such a layer holds after `length` positions
// (the capacity PrepareLayerState grows to; a ring at its largest).
uint64_t LayerStateBytesAt(const ModelConfig& cfg, LayerKind kind, int window, TensorType kv_type, int64_t n_ctx,
                           int64_t length);
// Whether a model can keep its KV cache in `type`: F32, F16, BF16, or Q8_0
// when head_dim is a multiple of its 32-element block. Names the problem.
Status CheckKvType(const ModelConfig& cfg, TensorType type);
// "f32", "f16", "bf16", "q8_0" (--kv-type); InvalidArgument naming the rest.
Result<TensorType> ParseKvType(const std::string& name);
const char* KvTypeName(TensorType type);  // the same names

// ---------------------------------------------------------------------------
// The blocks
// ---------------------------------------------------------------------------
// Buffers reused across layers and batches (grown as needed).
struct BlockScratch {
  std::vector<float> q, k, v, attn;          // attention
  std::vector<float> bcx;                    // short convolution: [n][3 * hidden]
  std::vector<float> gate, up;               // SwiGLU
  std::vector<float> router, expert_x, expert_gate, expert_up, expert_out, slots;  // experts
  std::vector<int32_t> chosen;               // experts: [n][k]
  std::vector<float> weights;                // experts: [n][k]
  std::vector<int64_t> rows_of_expert;
};

// What every block of a batch shares.
struct BlockContext {
  const ModelConfig& cfg;
  const std::vector<SequenceSpan>& spans;
  int64_t n_tok;              // tokens in the batch (the spans' sum)
  const RopeTable& rope;      // cos / sin of every token's position (row t)
  BlockScratch& scratch;
  ThreadPool* pool;
};

// x: [n_tok][hidden] normed input rows; out: [n_tok][hidden].
void AttentionBlock(const BlockContext& ctx, const AttentionWeights& w, const float* x, float* out);
void ShortConvBlock(const BlockContext& ctx, const ShortConvWeights& w, const float* x, float* out);
void SwiGluBlock(const BlockContext& ctx, const SwiGluWeights& w, const float* x, float* out);
void MoeBlock(const BlockContext& ctx, const MoeWeights& w, const float* x, float* out);

}  // namespace strata
