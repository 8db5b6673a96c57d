// Stage: load a layer slice, keep per-sequence KV caches, run the layers.
#include "worker/stage.h"

#include <sys/mman.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/huge_pages.h"
#include "common/npy.h"
#include "common/trace.h"
#include "kernels/interleave.h"
#include "kernels/ops.h"
#include "kernels/quant.h"

namespace strata {

Result<std::unique_ptr<Stage>> Stage::Load(const ModelFiles& model, const StageOptions& opts, ThreadPool* pool) {
  const ModelConfig& cfg = model.config();
  if (opts.layers.first < 0 || opts.layers.last >= cfg.n_layers || opts.layers.first > opts.layers.last + 1)
    return InvalidArgument("stage layers " + std::to_string(opts.layers.first) + "-" + std::to_string(opts.layers.last) +
                           " are outside the model's " + std::to_string(cfg.n_layers) + " layers");
  if (opts.n_ctx <= 0) return InvalidArgument("context size must be positive");
  if (opts.max_sequences < 1) return InvalidArgument("a stage needs room for at least one sequence");
  if (opts.cached_sequences < 0) return InvalidArgument("cached sequences must not be negative");
  if (opts.lm_head_tail_rows > 0 && !opts.first) return InvalidArgument("only the first stage holds a share of the lm_head");
  if (opts.lm_head_tail_rows < 0 || opts.lm_head_tail_rows > cfg.vocab || (opts.lm_head_tail_rows % 8 != 0 && cfg.vocab % 8 == 0))
    return InvalidArgument("the first stage's share of the lm_head must be a multiple of 8 of the " + std::to_string(cfg.vocab) +
                           " vocabulary rows, not " + std::to_string(opts.lm_head_tail_rows));
  STRATA_RETURN_IF_ERROR(CheckKvType(cfg, opts.kv_type));
  {
    // Weights and the per-sequence state (KV caches, windows, conv states)
    // must fit together; refuse a size that can never fit before anything is
    // allocated or mapped.
    double state = 0, weights = 0;
    for (int l = opts.layers.first; l <= opts.layers.last; ++l) {
      state += static_cast<double>(LayerStateBytes(cfg, cfg.layer_kinds[l], cfg.layer_window[l], opts.kv_type, opts.n_ctx)) *
               opts.max_sequences;
      weights += static_cast<double>(model.LayerBytes(l));
    }
    // The prefix cache's sequences: at most its byte bound (for the whole
    // model, so a stage's share is below it), else at full context.
    if (opts.cached_sequences > 0) {
      const double full = state / opts.max_sequences * opts.cached_sequences;
      state += opts.cache_bytes > 0 ? std::min(full, static_cast<double>(opts.cache_bytes)) : full;
    }
    if (opts.first || (opts.last && cfg.tied_embeddings)) weights += static_cast<double>(model.EmbeddingBytes());
    if (opts.last && !cfg.tied_embeddings) weights += static_cast<double>(model.OutputBytes());
    const double lm_head_bytes = static_cast<double>(cfg.tied_embeddings ? model.EmbeddingBytes() : model.OutputBytes());
    weights += lm_head_bytes * static_cast<double>(opts.lm_head_tail_rows) / static_cast<double>(cfg.vocab);
    const uint64_t avail = AvailableMemoryBytes();
    if (avail > 0 && state + weights > static_cast<double>(avail)) {
      char msg[320];
      std::snprintf(msg, sizeof msg,
                    "layers %d-%d need %.2f GiB: %.2f GiB of weights and %.2f GiB of KV cache (%s) for --ctx %lld x %d "
                    "sequence(s), but only %.2f GiB of memory are available (lower --ctx or --parallel, pick a smaller "
                    "--kv-type, or use more ranks)",
                    opts.layers.first, opts.layers.last, (state + weights) / 1073741824.0, weights / 1073741824.0,
                    state / 1073741824.0, KvTypeName(opts.kv_type), static_cast<long long>(opts.n_ctx), opts.max_sequences,
                    static_cast<double>(avail) / 1073741824.0);
      std::string text = msg;
      if (opts.lm_head_tail_rows > 0)
        text += "; the weights include " + std::to_string(opts.lm_head_tail_rows) +
                " rows of the lm_head shared with the last stage (--share-lm-head off leaves them there)";
      return InvalidArgument(text);
    }
  }
  std::unique_ptr<Stage> s(new Stage(cfg));
  s->opts_ = opts;
  s->pool_ = pool;
  for (int l = opts.layers.first; l <= opts.layers.last; ++l) {
    STRATA_ASSIGN_OR_RETURN(LayerWeights w, LoadLayerWeights(model, l));
    s->weight_bytes_ += model.LayerBytes(l);
    s->layers_.push_back(std::move(w));
  }
  if (opts.first || (opts.last && cfg.tied_embeddings)) {
    STRATA_ASSIGN_OR_RETURN(WeightTensor t, model.TensorOf(TensorRole::kTokenEmbedding));
    STRATA_ASSIGN_OR_RETURN(s->embedding_, MatrixOf(t));
    s->weight_bytes_ += t.nbytes;
  }
  if (opts.last) {
    STRATA_ASSIGN_OR_RETURN(WeightTensor norm, model.TensorOf(TensorRole::kOutputNorm));
    STRATA_ASSIGN_OR_RETURN(s->output_norm_, VectorOf(norm));
    if (cfg.tied_embeddings) {
      s->output_ = s->embedding_;
    } else {
      STRATA_ASSIGN_OR_RETURN(WeightTensor t, model.TensorOf(TensorRole::kOutput));
      STRATA_ASSIGN_OR_RETURN(s->output_, MatrixOf(t));
      s->weight_bytes_ += t.nbytes;
    }
  }
  if (opts.lm_head_tail_rows > 0) {
    STRATA_ASSIGN_OR_RETURN(WeightTensor t, model.TensorOf(cfg.tied_embeddings ? TensorRole::kTokenEmbedding : TensorRole::kOutput));
    STRATA_ASSIGN_OR_RETURN(MatrixView whole, MatrixOf(t));
    s->lm_head_tail_ = MatrixRows(whole, cfg.vocab - opts.lm_head_tail_rows, cfg.vocab);
    s->weight_bytes_ += static_cast<uint64_t>(opts.lm_head_tail_rows) * whole.row_bytes;
  }
  STRATA_RETURN_IF_ERROR(s->PlaceWeights());
  // Every sequence's first rows, faulted in now instead of on the first
  // batches' critical path (far below what the memory check counted). Not
  // a sliding window's ring: it starts at its full size, which only a
  // sequence that is live should hold.
  for (int i = 0; i < opts.max_sequences; ++i) {
    std::vector<LayerState> states(s->layers_.size());
    for (size_t l = 0; l < states.size(); ++l) {
      const LayerWeights& w = s->layers_[l];
      if (w.attn.window > 0) continue;
      PrepareLayerState(cfg, w.kind, w.attn.window, opts.kv_type, 0, 1, opts.n_ctx, &states[l]);
      ClearLayerState(&states[l]);
    }
    s->spare_states_.push_back(std::move(states));
  }
  return s;
}

Status Stage::Embed(std::span<const int32_t> ids, float* x) const {
  if (!opts_.first) return FailedPrecondition("this stage does not hold the token embedding");
  TraceSpan span("embed", "compute");
  for (size_t t = 0; t < ids.size(); ++t) {
    if (ids[t] < 0 || ids[t] >= cfg_.vocab)
      return InvalidArgument("token id " + std::to_string(ids[t]) + " is outside the vocabulary of " + std::to_string(cfg_.vocab));
    DequantizeRow(embedding_.type, embedding_.data + static_cast<uint64_t>(ids[t]) * embedding_.row_bytes,
                  x + t * cfg_.hidden, cfg_.hidden);
  }
  return Status::Ok();
}

// Matrices that leave the file mapping go to one anonymous buffer backed by
// transparent huge pages: with --no-mmap all of them (streaming weights from
// it reads faster than from a mapping of 4 KiB pages, and decode is bound by
// that bandwidth), and those rebuilt in the interleaved layout in any case.
// The embedding keeps the file's row layout (lookups read single rows).
Status Stage::PlaceWeights() {
  struct Placement {
    MatrixView* view;
    bool interleave;
    uint64_t bytes;  // as stored here, 64-byte aligned
  };
  std::vector<Placement> moves;
  auto interleaves = [&](const MatrixView& m) { return opts_.interleave_weights && CanInterleave(m.type, m.n_out); };
  auto consider = [&](MatrixView* m, bool may_interleave) {
    const bool interleave = may_interleave && interleaves(*m);
    const uint64_t bytes =
        interleave ? InterleavedBytes(m->type, m->n_in, m->n_out) : static_cast<uint64_t>(m->n_out) * m->row_bytes;
    if (interleave || opts_.copy_weights) moves.push_back({m, interleave, (bytes + 63) & ~uint64_t{63}});
  };
  for (LayerWeights& w : layers_)
    for (MatrixView* m : w.Matrices()) consider(m, true);
  bool tied_output = output_.data != nullptr && output_.data == embedding_.data;
  if (tied_output && interleaves(output_)) {
    // A tied lm_head gets its own interleaved copy. The embedding rows stay
    // in the file mapping: a lookup reads one row per token, so the first
    // stage keeps only the rows it touches resident, and a last stage none.
    consider(&output_, true);
    if (!opts_.first) embedding_ = MatrixView{};
    tied_output = false;
  } else {
    if (embedding_.data != nullptr) consider(&embedding_, false);
    if (output_.data != nullptr && !tied_output) consider(&output_, true);
  }
  if (lm_head_tail_.data != nullptr) consider(&lm_head_tail_, true);
  uint64_t total = 0;
  for (const Placement& p : moves) total += p.bytes;
  if (total == 0) return Status::Ok();
  weight_copy_ = AllocHugePages(total);
  if (weight_copy_ == nullptr)
    return FailedPrecondition("cannot allocate " + std::to_string(total >> 20) + " MiB for the weights" +
                              (opts_.copy_weights ? " (--no-mmap); map them instead" : ""));
  uint8_t* at = weight_copy_.get();
  for (const Placement& p : moves) {
    MatrixView* m = p.view;
    const uint8_t* source = m->data;
    const uint64_t n = static_cast<uint64_t>(m->n_out) * m->row_bytes;
    if (p.interleave) {
      *m = InterleaveRows(*m, at);
    } else {
      std::memcpy(at, source, n);
      m->data = at;
    }
    // The mapped pages are no longer needed by this process (they stay in
    // the page cache): drop them from its resident set.
    const uintptr_t page = 4096, b = (reinterpret_cast<uintptr_t>(source) + page - 1) & ~(page - 1),
                    e = (reinterpret_cast<uintptr_t>(source) + n) & ~(page - 1);
    if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
    at += p.bytes;
  }
  if (tied_output) output_ = embedding_;
  return Status::Ok();
}

Result<Stage::SequenceCache*> Stage::CacheFor(uint64_t seq_id, int64_t pos0, int64_t n_tok) {
  auto it = caches_.find(seq_id);
  if (it == caches_.end()) {
    if (static_cast<int>(caches_.size()) >= opts_.max_sequences + opts_.cached_sequences)
      return FailedPrecondition("too many live sequences (" + std::to_string(caches_.size()) + ")");
    it = caches_.emplace(seq_id, SequenceCache{}).first;
    it->second.layers = StatesFor(pos0 + n_tok);
  }
  SequenceCache& c = it->second;
  if (pos0 != c.length)
    return InvalidArgument("sequence " + std::to_string(seq_id) + ": batch starts at position " + std::to_string(pos0) +
                           " but its cache holds " + std::to_string(c.length) + " positions");
  if (n_tok <= 0 || pos0 + n_tok > opts_.n_ctx)
    return InvalidArgument("sequence " + std::to_string(seq_id) + ": " + std::to_string(pos0 + n_tok) +
                           " positions exceed the context of " + std::to_string(opts_.n_ctx));
  for (size_t l = 0; l < layers_.size(); ++l)
    PrepareLayerState(cfg_, layers_[l].kind, layers_[l].attn.window, opts_.kv_type, pos0, n_tok, opts_.n_ctx, &c.layers[l]);
  return &c;
}

Status Stage::Forward(const std::vector<BatchEntry>& batch, float* x) {
  return ForwardObserved(batch, x, nullptr);
}

Status Stage::ForwardObserved(const std::vector<BatchEntry>& batch, float* x,
                              const std::function<void(int, const float*, int64_t)>& observe) {
  std::vector<SequenceCache*> caches;
  int64_t n_tok = 0;
  {
    TraceSpan span("kv prepare", "compute");
    for (size_t i = 0; i < batch.size(); ++i) {
      const BatchEntry& e = batch[i];
      for (size_t j = 0; j < i; ++j)
        if (batch[j].seq_id == e.seq_id) return InvalidArgument("sequence " + std::to_string(e.seq_id) + " appears twice in one batch");
      STRATA_ASSIGN_OR_RETURN(SequenceCache* c, CacheFor(e.seq_id, e.pos0, e.n_tok));
      caches.push_back(c);
      n_tok += e.n_tok;
    }
  }
  const int64_t hidden = cfg_.hidden;
  auto dump = [&](const std::string& name, const float* rows) -> Status {
    return WriteNpyF32(dump_dir_ + "/" + name, {n_tok, hidden}, rows);
  };
  if (!dump_dir_.empty() && opts_.first) STRATA_RETURN_IF_ERROR(dump("embeddings.npy", x));
  // The rotary angles of every token's position, once for all the layers.
  std::vector<int64_t> positions;
  for (const BatchEntry& e : batch)
    for (int64_t t = 0; t < e.n_tok; ++t) positions.push_back(e.pos0 + t);
  rope_.Fill(positions);
  std::vector<SequenceSpan> spans(batch.size());
  for (size_t l = 0; l < layers_.size(); ++l) {
    for (size_t i = 0; i < batch.size(); ++i) spans[i] = SequenceSpan{batch[i].pos0, batch[i].n_tok, &caches[i]->layers[l]};
    {
      TraceSpan span("layer " + std::to_string(layers_[l].layer), "compute");
      LayerForward(cfg_, layers_[l], spans, rope_, x, scratch_, pool_);
    }
    const int layer = layers_[l].layer;
    if (observe) observe(layer, x, n_tok);
    if (!dump_dir_.empty() && dump_layers_.contains(layer)) {
      char name[32];
      std::snprintf(name, sizeof name, "layer_%03d.npy", layer);
      STRATA_RETURN_IF_ERROR(dump(name, x));
    }
  }
  if (!dump_dir_.empty() && opts_.last) {
    std::vector<float> normed(static_cast<size_t>(n_tok * hidden));
    for (int64_t t = 0; t < n_tok; ++t) FinalNorm(x + t * hidden, normed.data() + t * hidden);
    STRATA_RETURN_IF_ERROR(dump("final_norm.npy", normed.data()));
  }
  for (size_t i = 0; i < batch.size(); ++i) caches[i]->length += batch[i].n_tok;
  return Status::Ok();
}

void Stage::FinalNorm(const float* x, float* out) const {
  RmsNorm(x, output_norm_.data(), out, cfg_.hidden, cfg_.rms_eps);
}

Status Stage::Logits(const float* x, std::span<const int64_t> rows, float* logits) {
  if (!opts_.last) return FailedPrecondition("this stage does not hold the lm_head");
  const int64_t hidden = cfg_.hidden;
  if (static_cast<int64_t>(norm_rows_.size()) < static_cast<int64_t>(rows.size()) * hidden)
    norm_rows_.resize(rows.size() * hidden);
  for (size_t r = 0; r < rows.size(); ++r) FinalNorm(x + rows[r] * hidden, norm_rows_.data() + r * hidden);
  return LmHead(norm_rows_.data(), static_cast<int64_t>(rows.size()), 0, cfg_.vocab, logits);
}

Status Stage::LmHead(const float* normed, int64_t n_rows, int64_t from, int64_t to, float* logits) {
  // Interleaved rows go in groups of 8 (a vocabulary of a multiple of 8).
  const bool aligned = cfg_.vocab % 8 != 0 || (from % 8 == 0 && to % 8 == 0);
  if (from < 0 || from > to || to > cfg_.vocab || !aligned)
    return InvalidArgument("lm_head rows " + std::to_string(from) + "-" + std::to_string(to) + " of " +
                           std::to_string(cfg_.vocab) + " (multiples of 8 within the vocabulary)");
  if (from == to || n_rows == 0) return Status::Ok();
  TraceSpan span("lm_head", "compute");
  if (opts_.last) {
    MatMul(MatrixRows(output_, from, to), normed, n_rows, logits, pool_);
    return Status::Ok();
  }
  const int64_t tail_from = cfg_.vocab - opts_.lm_head_tail_rows;
  if (opts_.lm_head_tail_rows == 0 || from < tail_from)
    return FailedPrecondition("this stage holds lm_head rows " + std::to_string(tail_from) + "-" + std::to_string(cfg_.vocab) +
                              ", not " + std::to_string(from) + "-" + std::to_string(to));
  MatMul(MatrixRows(lm_head_tail_, from - tail_from, to - tail_from), normed, n_rows, logits, pool_);
  return Status::Ok();
}

std::vector<LayerState> Stage::StatesFor(int64_t length) {
  auto fits = [&](const std::vector<LayerState>& states) {
    for (size_t l = 0; l < layers_.size(); ++l) {
      const LayerKind kind = layers_[l].kind;
      if (states[l].bytes() > 2 * LayerStateBytesAt(cfg_, kind, layers_[l].attn.window, opts_.kv_type, opts_.n_ctx, length))
        return false;
    }
    return true;
  };
  for (auto it = spare_states_.rbegin(); it != spare_states_.rend(); ++it) {
    if (!fits(*it)) continue;
    std::vector<LayerState> states = std::move(*it);
    spare_states_.erase(std::next(it).base());
    return states;
  }
  return std::vector<LayerState>(layers_.size());
}

void Stage::FreeSequence(uint64_t seq_id) {
  auto node = caches_.extract(seq_id);
  if (node.empty()) return;
  std::vector<LayerState>& states = node.mapped().layers;
  for (LayerState& l : states) ClearLayerState(&l);
  spare_states_.push_back(std::move(states));
  const size_t room = static_cast<size_t>(opts_.max_sequences) > caches_.size() ? opts_.max_sequences - caches_.size() : 0;
  if (spare_states_.size() > room)
    spare_states_.erase(spare_states_.begin(), spare_states_.begin() + static_cast<std::ptrdiff_t>(spare_states_.size() - room));
}

Status Stage::ReuseSequence(uint64_t seq_id, uint64_t from_seq_id, int64_t keep, bool copy) {
  const std::string what = "reusing sequence " + std::to_string(from_seq_id) + " for " + std::to_string(seq_id);
  auto from = caches_.find(from_seq_id);
  if (from == caches_.end()) return InvalidArgument(what + ": no such sequence here");
  if (seq_id != from_seq_id && caches_.count(seq_id) != 0)
    return InvalidArgument(what + ": sequence " + std::to_string(seq_id) + " is alive");
  const int64_t length = from->second.length;
  if (keep < 0 || keep > length)
    return InvalidArgument(what + ": cannot keep " + std::to_string(keep) + " of its " + std::to_string(length) + " positions");
  for (size_t l = 0; l < layers_.size(); ++l)
    if (!LayerStateKeepsPrefix(layers_[l].kind, layers_[l].attn.window, length, keep))
      return InvalidArgument(what + ": layer " + std::to_string(layers_[l].layer) + " cannot keep " + std::to_string(keep) +
                             " of its " + std::to_string(length) + " positions");
  if (copy) {
    if (seq_id == from_seq_id) return InvalidArgument(what + ": a copy needs another id");
    if (static_cast<int>(caches_.size()) >= opts_.max_sequences + opts_.cached_sequences)
      return FailedPrecondition(what + ": too many live sequences (" + std::to_string(caches_.size()) + ")");
    SequenceCache c;
    c.length = keep;
    for (size_t l = 0; l < layers_.size(); ++l)
      c.layers.push_back(CopyLayerStatePrefix(from->second.layers[l], layers_[l].attn.window, keep, opts_.n_ctx));
    caches_.emplace(seq_id, std::move(c));
    return Status::Ok();
  }
  auto node = caches_.extract(from);
  node.key() = seq_id;
  node.mapped().length = keep;
  caches_.insert(std::move(node));
  return Status::Ok();
}

void Stage::EnableDump(const std::string& dir, LayerRange layers) {
  dump_dir_ = dir;
  dump_layers_ = layers;
}

uint64_t Stage::kv_bytes() const {
  uint64_t total = 0;
  for (const auto& [id, c] : caches_)
    for (const LayerState& l : c.layers) total += l.bytes();
  return total;
}

namespace {

// The "KEY: N kB" field of a /proc file, in bytes; 0 when absent.
uint64_t ProcKiBField(const char* path, const char* key) {
  std::FILE* f = std::fopen(path, "r");
  if (f == nullptr) return 0;
  char line[256];
  uint64_t kib = 0;
  const size_t key_len = std::strlen(key);
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strncmp(line, key, key_len) == 0 && line[key_len] == ':' &&
        std::sscanf(line + key_len + 1, " %" SCNu64 " kB", &kib) == 1)
      break;
  }
  std::fclose(f);
  return kib * 1024;
}

}  // namespace

uint64_t AvailableMemoryBytes() { return ProcKiBField("/proc/meminfo", "MemAvailable"); }

uint64_t ResidentBytes() { return ProcKiBField("/proc/self/status", "VmRSS"); }

uint64_t PeakResidentBytes() { return ProcKiBField("/proc/self/status", "VmHWM"); }

}  // namespace strata
