// The scheduler of scheduler.h: micro-batch formation and the submit / wait
// loop that keeps `inflight` batches in the pipeline.
#include "coordinator/scheduler.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <utility>

namespace strata {
namespace {

struct SequenceState {
  int64_t prompt_sent = 0;  // prompt tokens submitted
  int64_t pos = 0;          // tokens submitted into the cache (the next pos0)
  bool waiting = false;     // a sampled token is on its way back
  bool done = false;
  int64_t chunk = 0;
};

bool PromptSent(const SequenceJob& j, const SequenceState& s) {
  return s.prompt_sent == static_cast<int64_t>(j.prompt.size());
}

SequenceRequest SampleRequest(const SequenceJob& job, uint64_t step) {
  SequenceRequest r;
  r.seq_id = job.seq_id;
  r.output = SequenceRequest::Output::kSample;
  r.sampling = job.sampling;
  r.step = step;
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

int64_t ChunkTokens(int64_t requested, int64_t n, int n_stages) {
  if (requested > 0) return requested;
  if (n_stages <= 1) return std::min<int64_t>(n, 512);
  const int64_t parts = 2 * static_cast<int64_t>(n_stages);
  return std::clamp<int64_t>((n + parts - 1) / parts, 16, 512);
}

Status RunSequences(Pipeline& pipeline, std::vector<SequenceJob>& jobs, const SchedulerOptions& opts,
                    const std::function<void(size_t, int32_t)>& on_token) {
  const auto t0 = std::chrono::steady_clock::now();
  auto ms = [&] { return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(); };
  const int inflight = opts.inflight > 0 ? opts.inflight : std::max(1, pipeline.n_stages());
  std::vector<SequenceState> state(jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    SequenceJob& j = jobs[i];
    if (j.prompt.empty()) return InvalidArgument("sequence " + std::to_string(j.seq_id) + ": the prompt is empty");
    if (static_cast<int64_t>(j.prompt.size()) >= opts.n_ctx)
      return InvalidArgument("sequence " + std::to_string(j.seq_id) + ": the prompt has " + std::to_string(j.prompt.size()) +
                             " tokens, which does not fit the context of " + std::to_string(opts.n_ctx) + " (raise --ctx)");
    STRATA_RETURN_IF_ERROR(ValidateSamplingParams(j.sampling));
    for (size_t k = 0; k < i; ++k)
      if (jobs[k].seq_id == j.seq_id) return InvalidArgument("sequence id " + std::to_string(j.seq_id) + " is used twice");
    j.ids.clear();
    j.finish_reason.clear();
    state[i].chunk = ChunkTokens(opts.chunk, static_cast<int64_t>(j.prompt.size()), pipeline.n_stages());
    if (j.n_predict <= 0) {
      state[i].done = true;
      j.finish_reason = "length";
    }
  }

  // The next micro-batch: prefill pieces first (up to one chunk of tokens),
  // else a group of decoding sequences. `members` gets the job index of each
  // request and whether it samples a token.
  auto next_batch = [&](std::vector<SequenceRequest>* batch, std::vector<std::pair<size_t, bool>>* members) {
    batch->clear();
    members->clear();
    int64_t budget = -1;
    for (size_t i = 0; i < jobs.size(); ++i) {
      SequenceState& s = state[i];
      if (s.done || PromptSent(jobs[i], s)) continue;
      if (budget < 0) budget = s.chunk;
      if (budget == 0) break;
      const int64_t left = static_cast<int64_t>(jobs[i].prompt.size()) - s.prompt_sent;
      const int64_t n = std::min(left, budget);
      SequenceRequest r = n == left ? SampleRequest(jobs[i], 0) : SequenceRequest{};
      if (n < left) {
        r.seq_id = jobs[i].seq_id;
        r.output = SequenceRequest::Output::kNone;
      }
      r.pos0 = s.pos;
      r.tokens.assign(jobs[i].prompt.begin() + s.prompt_sent, jobs[i].prompt.begin() + s.prompt_sent + n);
      s.prompt_sent += n;
      s.pos += n;
      s.waiting = n == left;
      budget -= n;
      batch->push_back(std::move(r));
      members->emplace_back(i, n == left);
    }
    if (!batch->empty()) return;
    // Decode: the sequences past their prompt share `inflight` groups.
    size_t decoding = 0;
    for (size_t i = 0; i < jobs.size(); ++i) decoding += !state[i].done && PromptSent(jobs[i], state[i]);
    const size_t group = (decoding + inflight - 1) / static_cast<size_t>(inflight);
    for (size_t i = 0; i < jobs.size() && batch->size() < group; ++i) {
      SequenceState& s = state[i];
      if (s.done || s.waiting || !PromptSent(jobs[i], s) || jobs[i].ids.empty()) continue;
      SequenceRequest r = SampleRequest(jobs[i], jobs[i].ids.size());
      r.pos0 = s.pos;
      r.tokens = {jobs[i].ids.back()};
      s.pos += 1;
      s.waiting = true;
      batch->push_back(std::move(r));
      members->emplace_back(i, true);
    }
  };

  auto finish = [&](size_t i, const char* reason) -> Status {
    state[i].done = true;
    jobs[i].finish_reason = reason;
    jobs[i].done_ms = ms();
    return pipeline.Free(jobs[i].seq_id);
  };

  std::vector<SequenceRequest> batch;
  std::vector<std::pair<size_t, bool>> members;
  std::deque<std::vector<std::pair<size_t, bool>>> members_in_flight;
  for (;;) {
    while (pipeline.in_flight() < inflight) {
      next_batch(&batch, &members);
      if (batch.empty()) break;
      STRATA_RETURN_IF_ERROR(pipeline.Submit(batch).status());
      members_in_flight.push_back(members);
    }
    if (pipeline.in_flight() == 0) break;
    STRATA_ASSIGN_OR_RETURN(BatchOutput out, pipeline.Wait());
    const auto who = std::move(members_in_flight.front());
    members_in_flight.pop_front();
    if (out.results.size() != who.size()) return Internal("a batch came back with a different number of sequences");
    for (size_t k = 0; k < who.size(); ++k) {
      const auto [i, sampled] = who[k];
      if (!sampled) continue;
      SequenceJob& j = jobs[i];
      SequenceState& s = state[i];
      s.waiting = false;
      const int32_t token = out.results[k].token;
      if (j.ids.empty()) j.first_token_ms = ms();
      j.ids.push_back(token);
      if (on_token) on_token(i, token);
      if (!j.ignore_eos && std::find(opts.eos_ids.begin(), opts.eos_ids.end(), token) != opts.eos_ids.end()) {
        STRATA_RETURN_IF_ERROR(finish(i, "stop"));
      } else if (static_cast<int>(j.ids.size()) >= j.n_predict || s.pos + 1 > opts.n_ctx) {
        STRATA_RETURN_IF_ERROR(finish(i, "length"));
      } else if (j.cancel != nullptr && j.cancel->load()) {
        STRATA_RETURN_IF_ERROR(finish(i, "cancelled"));
      }
    }
  }
  return Status::Ok();
}

}  // namespace strata
