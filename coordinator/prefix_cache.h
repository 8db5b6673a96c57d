// The server's prefix cache, rank 0's half (the stages hold the states): a
// table of finished sequences whose per-sequence state (KV caches, conv
// states) every stage keeps, with the token ids that state holds. A new
// prompt that begins with the tokens of a kept sequence reuses its state and
// prefills only the rest (coordinator/scheduler.cc asks the pipeline for
// Reuse, then submits the rest of the prompt from that position).
//
//   PrefixCache cache({.max_sequences = 4, .max_bytes = 512 << 20, .bytes_of = ..., .keeps_prefix = ...});
//   if (auto hit = cache.Take(prompt)) pipeline.Reuse(seq_id, hit->seq_id, hit->keep, hit->copy);
//   ... the sequence runs, then at its end:
//   for (uint64_t id : cache.Keep(seq_id, tokens_in_its_state)) pipeline.Free(id);
//
// Whole sequences, least recently used evicted first, bounded by a number of
// sequences and by the bytes their states hold on all stages together. A hit
// leaves at least one prompt token to compute (its logits give the first
// token). A prompt that extends a kept sequence whole (the next turn of a
// chat) takes its state over (a move: the kept copy would only ever be a
// shorter duplicate); one that shares only part of it gets a copy cut to
// that part, and the kept sequence stays for the prompts that share more.
//
// Reuse never changes a sequence's numbers: a token's result depends on its
// own row and the cached rows of its sequence only, however the prompt was
// cut into batches (coordinator/scheduler.h), and a kept row is the row the
// same prompt would have computed.
//
// Thread-safety: every call may come from any thread (the serving loop's
// thread changes it, others read stats()).
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "model/model_config.h"
#include "model/blocks.h"

namespace strata {

struct PrefixCacheOptions {
  int max_sequences = 0;   // kept sequences at most; 0: the cache is off
  uint64_t max_bytes = 0;  // their states' bytes at most, all stages together; 0: no byte bound
  // Bytes the state of a sequence of `length` positions holds on all stages.
  std::function<uint64_t(int64_t length)> bytes_of;
  // Whether a kept state of `length` positions can be cut back to `keep`
  // (false: only reused whole, keep == length). Empty: always.
  std::function<bool(int64_t length, int64_t keep)> keeps_prefix;
};

// The options for a model: bytes and cut rules from its layers (model/blocks.h).
PrefixCacheOptions PrefixCacheOptionsFor(const ModelConfig& cfg, TensorType kv_type, int64_t n_ctx, int max_sequences,
                                         uint64_t max_bytes);

struct PrefixCacheStats {
  uint64_t lookups = 0;          // prompts looked up
  uint64_t hits = 0;             // of them, reusing a kept state
  uint64_t prompt_tokens = 0;    // tokens of the prompts looked up
  uint64_t cached_tokens = 0;    // of them, served from the cache (not computed)
  uint64_t evictions = 0;        // kept sequences dropped for room (or not kept: too big)
  uint64_t sequences = 0;        // kept now
  uint64_t bytes = 0;            // their states now (estimated as bytes_of says)
  uint64_t misses() const { return lookups - hits; }
};

struct PrefixHit {
  uint64_t seq_id = 0;  // the kept sequence
  int64_t keep = 0;     // positions of its state reused (1 .. prompt - 1)
  bool copy = false;    // copy its state (it stays kept) rather than take it over
};

class PrefixCache {
 public:
  explicit PrefixCache(PrefixCacheOptions opts);
  bool enabled() const { return opts_.max_sequences > 0; }

  // The kept sequence that shares the longest usable prefix with `prompt`
  // (the most recently used among equals), or nullopt (a miss). A move
  // (copy == false) takes it out of the table.
  std::optional<PrefixHit> Take(std::span<const int32_t> prompt);
  // Keeps finished sequence `seq_id`, whose state holds `tokens`. Returns
  // the sequences whose state must now be freed on every stage: the least
  // recently used ones beyond the bounds, or `seq_id` itself when it alone
  // is beyond them (or the cache is off).
  std::vector<uint64_t> Keep(uint64_t seq_id, std::vector<int32_t> tokens);
  // Drops every kept sequence; returns their ids (to free).
  std::vector<uint64_t> Clear();
  PrefixCacheStats stats() const;

 private:
  struct Entry {
    uint64_t seq_id;
    std::vector<int32_t> tokens;
    uint64_t bytes;
  };
  std::vector<uint64_t> EvictBeyondBounds();  // mu_ held

  PrefixCacheOptions opts_;
  mutable std::mutex mu_;
  std::list<Entry> entries_;  // most recently used first
  PrefixCacheStats stats_;
};

}  // namespace strata
