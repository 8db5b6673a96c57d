// The prefix cache's table (prefix_cache.h). Rank 0.
#include "coordinator/prefix_cache.h"

#include <algorithm>

namespace strata {

PrefixCacheOptions PrefixCacheOptionsFor(const ModelConfig& cfg, TensorType kv_type, int64_t n_ctx, int max_sequences,
                                         uint64_t max_bytes) {
  PrefixCacheOptions o;
  o.max_sequences = max_sequences;
  o.max_bytes = max_bytes;
  o.bytes_of = [cfg, kv_type, n_ctx](int64_t length) {
    uint64_t total = 0;
    for (int l = 0; l < cfg.n_layers; ++l)
      total += LayerStateBytesAt(cfg, cfg.layer_kinds[l], cfg.layer_window[l], kv_type, n_ctx, length);
    return total;
  };
  o.keeps_prefix = [cfg](int64_t length, int64_t keep) {
    for (int l = 0; l < cfg.n_layers; ++l)
      if (!LayerStateKeepsPrefix(cfg.layer_kinds[l], cfg.layer_window[l], length, keep)) return false;
    return true;
  };
  return o;
}

PrefixCache::PrefixCache(PrefixCacheOptions opts) : opts_(std::move(opts)) {
  opts_.max_sequences = std::max(0, opts_.max_sequences);
}

std::optional<PrefixHit> PrefixCache::Take(std::span<const int32_t> prompt) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!enabled()) return std::nullopt;
  ++stats_.lookups;
  stats_.prompt_tokens += prompt.size();
  // One token of the prompt is always computed: its logits give the first token.
  const int64_t most = static_cast<int64_t>(prompt.size()) - 1;
  auto best = entries_.end();
  int64_t best_keep = 0;
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    const std::vector<int32_t>& t = it->tokens;
    const int64_t n = std::min<int64_t>(most, static_cast<int64_t>(t.size()));
    int64_t common = 0;
    while (common < n && t[static_cast<size_t>(common)] == prompt[static_cast<size_t>(common)]) ++common;
    const int64_t length = static_cast<int64_t>(t.size());
    if (common < length && opts_.keeps_prefix && !opts_.keeps_prefix(length, common)) continue;
    if (common > best_keep) {  // strictly longer: the more recent one wins a tie (the list's order)
      best = it;
      best_keep = common;
    }
  }
  if (best == entries_.end()) return std::nullopt;
  ++stats_.hits;
  stats_.cached_tokens += static_cast<uint64_t>(best_keep);
  PrefixHit hit{best->seq_id, best_keep, best_keep < static_cast<int64_t>(best->tokens.size())};
  if (hit.copy) {
    entries_.splice(entries_.begin(), entries_, best);  // used: the most recent now
  } else {
    stats_.bytes -= best->bytes;
    entries_.erase(best);
    stats_.sequences = entries_.size();
  }
  return hit;
}

std::vector<uint64_t> PrefixCache::Keep(uint64_t seq_id, std::vector<int32_t> tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!enabled() || tokens.empty()) return {seq_id};
  const uint64_t bytes = opts_.bytes_of ? opts_.bytes_of(static_cast<int64_t>(tokens.size())) : 0;
  if (opts_.max_bytes > 0 && bytes > opts_.max_bytes) {  // alone beyond the bound: the others stay
    ++stats_.evictions;
    return {seq_id};
  }
  entries_.push_front(Entry{seq_id, std::move(tokens), bytes});
  stats_.bytes += bytes;
  stats_.sequences = entries_.size();
  return EvictBeyondBounds();
}

std::vector<uint64_t> PrefixCache::EvictBeyondBounds() {
  std::vector<uint64_t> out;
  auto beyond = [&] {
    return entries_.size() > static_cast<size_t>(opts_.max_sequences) || (opts_.max_bytes > 0 && stats_.bytes > opts_.max_bytes);
  };
  while (!entries_.empty() && beyond()) {
    out.push_back(entries_.back().seq_id);
    stats_.bytes -= entries_.back().bytes;
    entries_.pop_back();
    ++stats_.evictions;
  }
  stats_.sequences = entries_.size();
  return out;
}

std::vector<uint64_t> PrefixCache::Clear() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<uint64_t> out;
  for (const Entry& e : entries_) out.push_back(e.seq_id);
  entries_.clear();
  stats_.bytes = 0;
  stats_.sequences = 0;
  return out;
}

PrefixCacheStats PrefixCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace strata
