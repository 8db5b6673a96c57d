// The scheduler of scheduler.h: micro-batch formation and the submit / wait
// loop that keeps `inflight` batches in the pipeline.
#include "coordinator/scheduler.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <utility>

namespace strata {
namespace {

SequenceRequest SampleRequest(const SequenceJob& job, uint64_t step) {
  SequenceRequest r;
  r.seq_id = job.seq_id;
  r.output = SequenceRequest::Output::kSample;
  r.sampling = job.sampling;
  r.step = step;
  r.top_logprobs = job.top_logprobs;
  const size_t n = static_cast<size_t>(std::max(0, job.sampling.repeat_last_n));
  if (n > 0) {
    // The last n tokens of prompt + generated ids, for the repetition penalty.
    std::vector<int32_t> all(job.prompt);
    all.insert(all.end(), job.ids.begin(), job.ids.end());
    if (all.size() > n) all.erase(all.begin(), all.end() - static_cast<std::ptrdiff_t>(n));
    r.recent = std::move(all);
  }
  return r;
}

}  // namespace

struct Scheduler::Entry {
  SequenceJob* job = nullptr;
  TokenFn on_token;
  DoneFn on_done;
  std::chrono::steady_clock::time_point start;
  int64_t prompt_sent = 0;  // prompt tokens submitted
  int64_t pos = 0;          // tokens submitted into the cache (the next pos0)
  bool waiting = false;     // a sampled token is on its way back
  bool done = false;
  int64_t chunk = 0;
  bool prompt_sent_all() const { return prompt_sent == static_cast<int64_t>(job->prompt.size()); }
  double ms() const {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  }
};

int64_t ChunkTokens(int64_t requested, int64_t n, int n_stages) {
  if (requested > 0) return requested;
  if (n_stages <= 1) return std::min<int64_t>(n, 512);
  auto per = [n](int64_t parts) { return (n + parts - 1) / parts; };
  const int64_t stages = n_stages;
  return std::clamp<int64_t>(std::max(per(16 * stages), std::min<int64_t>(64, per(8 * stages))), 16, 512);
}

int InflightBatches(int requested, int n_stages, bool prefill) {
  if (requested > 0) return requested;
  return n_stages > 1 && prefill ? 2 * n_stages : std::max(1, n_stages);
}

bool Scheduler::PrefillWaiting() const {
  return std::any_of(entries_.begin(), entries_.end(), [](const auto& e) { return !e->done && !e->prompt_sent_all(); });
}

Scheduler::Scheduler(Pipeline& pipeline, const SchedulerOptions& opts)
    : pipeline_(pipeline),
      opts_(opts),
      inflight_(InflightBatches(opts.inflight, pipeline.n_stages(), false)),
      prefill_inflight_(InflightBatches(opts.inflight, pipeline.n_stages(), true)) {}

Scheduler::~Scheduler() = default;

bool Scheduler::idle() const { return entries_.empty() && pipeline_.in_flight() == 0; }

size_t Scheduler::active() const { return entries_.size(); }

Status Scheduler::Add(SequenceJob* job, TokenFn on_token, DoneFn on_done) {
  SequenceJob& j = *job;
  if (j.prompt.empty()) return InvalidArgument("sequence " + std::to_string(j.seq_id) + ": the prompt is empty");
  if (static_cast<int64_t>(j.prompt.size()) >= opts_.n_ctx)
    return InvalidArgument("sequence " + std::to_string(j.seq_id) + ": the prompt has " + std::to_string(j.prompt.size()) +
                           " tokens, which does not fit the context of " + std::to_string(opts_.n_ctx) + " (raise --ctx)");
  STRATA_RETURN_IF_ERROR(ValidateSamplingParams(j.sampling));
  if (j.top_logprobs > kMaxTopLogprobs)
    return InvalidArgument("top_logprobs " + std::to_string(j.top_logprobs) + " is above " + std::to_string(kMaxTopLogprobs));
  for (const auto& e : entries_)
    if (e->job->seq_id == j.seq_id) return InvalidArgument("sequence id " + std::to_string(j.seq_id) + " is used twice");
  j.ids.clear();
  j.logprobs.clear();
  j.finish_reason.clear();
  auto e = std::make_unique<Entry>();
  e->job = job;
  e->on_token = std::move(on_token);
  e->on_done = std::move(on_done);
  e->start = std::chrono::steady_clock::now();
  j.cached_tokens = 0;
  if (j.n_predict <= 0) {
    // Nothing to compute: ends at once, no cache was made.
    e->done = true;
    j.finish_reason = "length";
    if (e->on_done) e->on_done();
    return Status::Ok();
  }
  if (opts_.prefix_cache != nullptr && j.cache_prompt) {
    if (std::optional<PrefixHit> hit = opts_.prefix_cache->Take(j.prompt)) {
      if (Status st = pipeline_.Reuse(j.seq_id, hit->seq_id, hit->keep, hit->copy); !st.ok()) {
        if (!hit->copy) (void)pipeline_.Free(hit->seq_id);
        return st;
      }
      e->prompt_sent = e->pos = hit->keep;
      j.cached_tokens = hit->keep;
    }
  }
  e->chunk = ChunkTokens(opts_.chunk, static_cast<int64_t>(j.prompt.size()) - e->prompt_sent, pipeline_.n_stages());
  entries_.push_back(std::move(e));
  return Status::Ok();
}

// The next micro-batch: prefill pieces first (up to one chunk of tokens,
// and no more than an even share of the waiting prompt tokens among the free
// pipeline slots, so that many short prompts fill every stage instead of
// riding in one batch), else a group of decoding sequences. `members` gets
// each request's entry and whether it samples a token.
void Scheduler::NextBatch(std::vector<SequenceRequest>* batch, std::vector<std::pair<Entry*, bool>>* members) {
  batch->clear();
  members->clear();
  int64_t waiting_prompt = 0;
  for (const auto& e : entries_)
    if (!e->done) waiting_prompt += static_cast<int64_t>(e->job->prompt.size()) - e->prompt_sent;
  const int64_t free_slots = std::max<int64_t>(1, inflight_ - pipeline_.in_flight());
  const int64_t share = (waiting_prompt + free_slots - 1) / free_slots;
  int64_t budget = -1;
  for (auto& ep : entries_) {
    Entry& e = *ep;
    if (e.done || e.prompt_sent_all()) continue;
    const SequenceJob& j = *e.job;
    if (budget < 0) budget = std::min(e.chunk, share);
    if (budget == 0) break;
    const int64_t left = static_cast<int64_t>(j.prompt.size()) - e.prompt_sent;
    const int64_t n = std::min(left, budget);
    SequenceRequest r = n == left ? SampleRequest(j, 0) : SequenceRequest{};
    if (n < left) {
      r.seq_id = j.seq_id;
      r.output = SequenceRequest::Output::kNone;
    }
    r.pos0 = e.pos;
    r.tokens.assign(j.prompt.begin() + e.prompt_sent, j.prompt.begin() + e.prompt_sent + n);
    e.prompt_sent += n;
    e.pos += n;
    e.waiting = n == left;
    budget -= n;
    batch->push_back(std::move(r));
    members->emplace_back(&e, n == left);
  }
  if (!batch->empty()) return;
  // Decode: the sequences past their prompt share `inflight` groups.
  size_t decoding = 0;
  for (const auto& e : entries_) decoding += !e->done && e->prompt_sent_all();
  const size_t group = (decoding + inflight_ - 1) / static_cast<size_t>(inflight_);
  for (auto& ep : entries_) {
    if (batch->size() >= group) break;
    Entry& e = *ep;
    const SequenceJob& j = *e.job;
    if (e.done || e.waiting || !e.prompt_sent_all() || j.ids.empty()) continue;
    SequenceRequest r = SampleRequest(j, j.ids.size());
    r.pos0 = e.pos;
    r.tokens = {j.ids.back()};
    e.pos += 1;
    e.waiting = true;
    batch->push_back(std::move(r));
    members->emplace_back(&e, true);
  }
}

Status Scheduler::Finish(Entry* e, const char* reason) {
  e->done = true;
  e->job->finish_reason = reason;
  e->job->done_ms = e->ms();
  // The state holds the first e->pos tokens of prompt + answer (the last
  // sampled token was never computed): kept for later prompts, or freed.
  Status st;
  const SequenceJob& j = *e->job;
  std::vector<uint64_t> to_free{j.seq_id};
  if (opts_.prefix_cache != nullptr && j.cache_prompt) {
    std::vector<int32_t> tokens(j.prompt);
    tokens.insert(tokens.end(), j.ids.begin(), j.ids.end());
    tokens.resize(static_cast<size_t>(std::min<int64_t>(e->pos, static_cast<int64_t>(tokens.size()))));
    to_free = opts_.prefix_cache->Keep(j.seq_id, std::move(tokens));
  }
  for (uint64_t id : to_free)
    if (Status f = pipeline_.Free(id); !f.ok() && st.ok()) st = f;
  if (e->on_done) e->on_done();
  // A finished sequence has no batch in flight (its last one just came
  // back, and earlier ones came back before it), so no member points here.
  entries_.erase(std::find_if(entries_.begin(), entries_.end(), [&](const auto& p) { return p.get() == e; }));
  return st;
}

Status Scheduler::Step(bool submit) {
  std::vector<SequenceRequest> batch;
  std::vector<std::pair<Entry*, bool>> members;
  while (submit && pipeline_.in_flight() < (PrefillWaiting() ? prefill_inflight_ : inflight_)) {
    NextBatch(&batch, &members);
    if (batch.empty()) break;
    STRATA_RETURN_IF_ERROR(pipeline_.Submit(batch).status());
    members_in_flight_.push_back(members);
  }
  if (pipeline_.in_flight() == 0) {
    // Only sequences that cannot go on (cancelled before their first token
    // would be one): nothing to wait for.
    return Status::Ok();
  }
  STRATA_ASSIGN_OR_RETURN(BatchOutput out, pipeline_.Wait());
  const auto who = std::move(members_in_flight_.front());
  members_in_flight_.pop_front();
  if (out.results.size() != who.size()) return Internal("a batch came back with a different number of sequences");
  for (size_t k = 0; k < who.size(); ++k) {
    const auto [e, sampled] = who[k];
    if (!sampled) continue;
    SequenceJob& j = *e->job;
    e->waiting = false;
    const int32_t token = out.results[k].token;
    if (j.ids.empty()) j.first_token_ms = e->ms();
    j.ids.push_back(token);
    if (j.top_logprobs >= 0) {
      if (!out.results[k].logprobs) return Internal("a sampled token came back without the log-probabilities asked for");
      j.logprobs.push_back(std::move(*out.results[k].logprobs));
    }
    if (e->on_token) e->on_token(token);
    if (!j.ignore_eos && std::find(opts_.eos_ids.begin(), opts_.eos_ids.end(), token) != opts_.eos_ids.end()) {
      STRATA_RETURN_IF_ERROR(Finish(e, "stop"));
    } else if (static_cast<int>(j.ids.size()) >= j.n_predict || e->pos + 1 > opts_.n_ctx) {
      STRATA_RETURN_IF_ERROR(Finish(e, "length"));
    } else if (j.cancel != nullptr && j.cancel->load()) {
      STRATA_RETURN_IF_ERROR(Finish(e, "cancelled"));
    }
  }
  return Status::Ok();
}

Status RunSequences(Pipeline& pipeline, std::vector<SequenceJob>& jobs, const SchedulerOptions& opts,
                    const std::function<void(size_t, int32_t)>& on_token) {
  for (size_t i = 0; i < jobs.size(); ++i)
    for (size_t k = 0; k < i; ++k)
      if (jobs[k].seq_id == jobs[i].seq_id)
        return InvalidArgument("sequence id " + std::to_string(jobs[i].seq_id) + " is used twice");
  Scheduler sched(pipeline, opts);
  for (size_t i = 0; i < jobs.size(); ++i) {
    Scheduler::TokenFn fn;
    if (on_token) fn = [&on_token, i](int32_t id) { on_token(i, id); };
    STRATA_RETURN_IF_ERROR(sched.Add(&jobs[i], std::move(fn), nullptr));
  }
  while (!sched.idle()) STRATA_RETURN_IF_ERROR(sched.Step());
  return Status::Ok();
}

}  // namespace strata
