// The serving loop of serving.h: a bounded queue in front of the Scheduler,
// run by one thread.
#include "coordinator/serving.h"

#include <algorithm>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace strata {
namespace {

SchedulerOptions WithCache(SchedulerOptions opts, PrefixCache* cache) {
  opts.prefix_cache = cache->enabled() ? cache : nullptr;
  return opts;
}

}  // namespace

void ServingRequest::Push(int32_t id) {
  const auto now = std::chrono::steady_clock::now();
  if (metrics_ != nullptr) {
    const auto since = generated_.load() == 0 ? admitted_ : last_token_;
    const double s = std::chrono::duration<double>(now - since).count();
    if (generated_.load() == 0) metrics_->ObserveFirstToken(s);
    else metrics_->ObserveInterToken(s);
  }
  last_token_ = now;
  generated_.fetch_add(1);
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back(id);
    // The scheduler stored the token's log-probabilities before telling us.
    if (job_.top_logprobs >= 0 && !job_.logprobs.empty()) pending_logprobs_.push_back(job_.logprobs.back());
    cv_.notify_all();
  }
  if (on_update_) on_update_();
}

void ServingRequest::Start(int slot) {
  slot_ = slot;
  slot_start_ = std::chrono::steady_clock::now();
  started_.store(true);
  if (on_update_) on_update_();
}

void ServingRequest::End(Status error) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ended_ = true;
    error_ = std::move(error);
    cv_.notify_all();
  }
  started_.store(true);
  if (on_update_) on_update_();
}

bool ServingRequest::Take(std::vector<int32_t>* ids, std::vector<TokenLogprobs>* logprobs) {
  std::lock_guard<std::mutex> lock(mu_);
  ids->insert(ids->end(), pending_.begin(), pending_.end());
  pending_.clear();
  if (logprobs != nullptr) logprobs->insert(logprobs->end(), pending_logprobs_.begin(), pending_logprobs_.end());
  pending_logprobs_.clear();
  return ended_;
}

bool ServingRequest::Wait(std::vector<int32_t>* ids, std::chrono::steady_clock::time_point until) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_until(lock, until, [&] { return !pending_.empty() || ended_; });
  ids->insert(ids->end(), pending_.begin(), pending_.end());
  pending_.clear();
  return ended_;
}

ServingLoop::ServingLoop(Pipeline& pipeline, const ServingOptions& opts)
    : pipeline_(pipeline),
      opts_(opts),
      prefix_cache_(opts.prefix_cache),
      scheduler_(std::make_unique<Scheduler>(pipeline, WithCache(opts.scheduler, &prefix_cache_))) {
  opts_.parallel = std::max(1, opts_.parallel);
  slot_busy_.assign(static_cast<size_t>(opts_.parallel), false);
  thread_ = std::thread([this] { Run(); });
}

ServingLoop::~ServingLoop() {
  if (thread_.joinable()) (void)Stop(std::chrono::milliseconds(0), "the server stopped");
}

Result<std::shared_ptr<ServingRequest>> ServingLoop::Submit(SequenceJob job, ServingRequest::UpdateFn on_update) {
  if (job.prompt.empty()) return InvalidArgument("the prompt is empty");
  if (static_cast<int64_t>(job.prompt.size()) >= opts_.scheduler.n_ctx)
    return InvalidArgument("the prompt has " + std::to_string(job.prompt.size()) + " tokens; the context holds " +
                           std::to_string(opts_.scheduler.n_ctx) + " and the answer needs at least one more");
  if (job.n_predict < 1) return InvalidArgument("at least one token must be generated");
  if (job.top_logprobs > kMaxTopLogprobs)
    return InvalidArgument("top_logprobs " + std::to_string(job.top_logprobs) + " is above " + std::to_string(kMaxTopLogprobs));
  STRATA_RETURN_IF_ERROR(ValidateSamplingParams(job.sampling));
  std::lock_guard<std::mutex> lock(mu_);
  if (!failure_.ok()) return Unavailable("the pipeline failed: " + failure_.message());
  if (stopping_) return Unavailable("the server is shutting down");
  // The bound counts every admitted request, running or queued: one that
  // waits only for the loop thread to hand it a free slot is not "waiting".
  // Counting the queue alone made a burst at an idle server refuse requests
  // while slots were free, whenever the loop thread had not run yet.
  const auto admitted = [&] { return running_.size() + queue_.size(); };
  const size_t bound = static_cast<size_t>(opts_.parallel) + static_cast<size_t>(std::max(0, opts_.max_queue));
  if (admitted() >= bound) DropCancelledQueued();
  if (admitted() >= bound) {
    const size_t waiting = admitted() > static_cast<size_t>(opts_.parallel) ? admitted() - opts_.parallel : 0;
    return Unavailable(std::to_string(waiting) + " requests are already waiting for one of the " +
                       std::to_string(opts_.parallel) + " sequence slots (--max-queue " +
                       std::to_string(opts_.max_queue) + ")");
  }
  job.seq_id = next_seq_id_++;
  auto req = std::make_shared<ServingRequest>(std::move(job), std::move(on_update));
  req->metrics_ = opts_.metrics;
  req->admitted_ = std::chrono::steady_clock::now();
  queue_.push_back(req);
  cv_.notify_all();
  return req;
}

void ServingLoop::DropCancelledQueued() {
  for (auto it = queue_.begin(); it != queue_.end();) {
    if (!(*it)->cancelled()) {
      ++it;
      continue;
    }
    (*it)->job_.finish_reason = "cancelled";
    (*it)->End(Status::Ok());
    ++finished_;
    it = queue_.erase(it);
  }
}

void ServingLoop::Release(ServingRequest& r) {
  if (r.slot_ >= 0 && r.slot_ < opts_.parallel) slot_busy_[r.slot_] = false;
  r.slot_ = -1;
  if (opts_.metrics != nullptr) {
    opts_.metrics->AddPromptTokens(r.job_.prompt.size());
    opts_.metrics->AddCachedPromptTokens(static_cast<uint64_t>(r.job_.cached_tokens));
    opts_.metrics->AddGeneratedTokens(r.job_.ids.size());
  }
}

void ServingLoop::EndAll(const Status& error) {
  for (auto& r : queue_) r->End(error);
  for (auto& r : running_) {
    r->End(error);
    Release(*r);
  }
  finished_ += queue_.size() + running_.size();
  queue_.clear();
  running_.clear();
}

void ServingLoop::Run() {
  // Requests whose sequence ended during the last Step (the scheduler's
  // callbacks run on this thread, without mu_).
  std::vector<ServingRequest*> done;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (stats_wanted_) {
      // Asked for the stages' counters: drain the batches in flight (no new
      // ones), then read them.
      if (pipeline_.in_flight() == 0) {
        lock.unlock();
        Result<std::vector<StageStats>> st = pipeline_.Stats();
        lock.lock();
        stats_ = std::move(st);
        stats_wanted_ = false;
        ++stats_serial_;
        cv_.notify_all();
        continue;
      }
    }
    while (!stats_wanted_ && !queue_.empty() && static_cast<int>(running_.size()) < opts_.parallel) {
      std::shared_ptr<ServingRequest> req = std::move(queue_.front());
      queue_.pop_front();
      if (req->cancelled()) {  // gone before it started
        req->job_.finish_reason = "cancelled";
        req->End(Status::Ok());
        ++finished_;
        continue;
      }
      req->job_.cancel = &req->cancel_;
      ServingRequest* r = req.get();
      Status st = scheduler_->Add(&req->job_, [r](int32_t id) { r->Push(id); }, [r, &done] { done.push_back(r); });
      if (!st.ok()) {
        req->End(st);
        ++finished_;
        continue;
      }
      running_.push_back(std::move(req));
      const int slot = static_cast<int>(std::find(slot_busy_.begin(), slot_busy_.end(), false) - slot_busy_.begin());
      if (slot < opts_.parallel) slot_busy_[slot] = true;
      r->Start(slot);
    }
    if (scheduler_->idle()) {
      if (quit_) break;
#if defined(__GLIBC__)
      // Idle again: give the freed caches and buffers back to the system, so
      // that memory returns to its idle level between bursts of requests.
      if (finished_ != trimmed_at_) {
        trimmed_at_ = finished_;
        lock.unlock();
        malloc_trim(0);
        lock.lock();
        continue;
      }
#endif
      cv_.wait(lock);
      continue;
    }
    const bool submit = !stats_wanted_;
    lock.unlock();
    Status st = scheduler_->Step(submit);
    lock.lock();
    for (ServingRequest* r : done) {
      auto it = std::find_if(running_.begin(), running_.end(), [&](const auto& p) { return p.get() == r; });
      if (it == running_.end()) continue;
      r->End(r->job_.finish_reason == "cancelled" && !r->forced_end_.ok() ? r->forced_end_ : Status::Ok());
      Release(*r);
      running_.erase(it);
      ++finished_;
    }
    done.clear();
    cv_.notify_all();
    if (!st.ok() && opts_.survive_pipeline_failure) {
      EndAll(Status(st.kind(), "the pipeline failed: " + st.message()));
      // The relaunched job's stages hold no kept state: the table goes too.
      (void)prefix_cache_.Clear();
      scheduler_ = std::make_unique<Scheduler>(pipeline_, WithCache(opts_.scheduler, &prefix_cache_));
      cv_.notify_all();
      continue;
    }
    if (!st.ok()) {
      failure_ = st;
      stopping_ = true;
      EndAll(Status(st.kind(), "the pipeline failed: " + st.message()));
      cv_.notify_all();
      auto fn = on_failure_;
      lock.unlock();
      if (fn) fn(st);
      return;
    }
  }
}

Status ServingLoop::Stop(std::chrono::milliseconds grace, const std::string& reason) {
  std::unique_lock<std::mutex> lock(mu_);
  stopping_ = true;
  const Status error = Unavailable(reason);
  // The queued requests could only wait out the grace for nothing: they are
  // answered now (a server in front of them can still say 503).
  for (auto& r : queue_) r->End(error);
  finished_ += queue_.size();
  queue_.clear();
  cv_.wait_for(lock, grace, [&] { return running_.empty(); });
  for (auto& r : running_) {
    r->forced_end_ = error;
    r->Cancel();
  }
  quit_ = true;
  cv_.notify_all();
  lock.unlock();
  if (thread_.joinable()) thread_.join();
  lock.lock();
  return failure_;
}

std::vector<SlotInfo> ServingLoop::Slots() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<SlotInfo> out(static_cast<size_t>(opts_.parallel));
  const auto now = std::chrono::steady_clock::now();
  for (int i = 0; i < opts_.parallel; ++i) out[i].id = i;
  for (const auto& r : running_) {
    if (r->slot_ < 0 || r->slot_ >= opts_.parallel) continue;
    SlotInfo& s = out[r->slot_];
    s.busy = true;
    s.seq_id = r->job_.seq_id;
    s.prompt_tokens = r->job_.prompt.size();
    s.generated = r->generated_.load();
    s.n_predict = r->job_.n_predict;
    s.elapsed_s = std::chrono::duration<double>(now - r->slot_start_).count();
  }
  return out;
}

Result<std::vector<StageStats>> ServingLoop::ReadStageStats(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (quit_ || !failure_.ok()) return Unavailable("the serving loop has stopped");
  const uint64_t serial = stats_serial_;
  stats_wanted_ = true;
  cv_.notify_all();
  if (!cv_.wait_for(lock, timeout, [&] { return stats_serial_ != serial || quit_ || !failure_.ok(); }))
    return DeadlineExceeded("the stages' counters did not come within the time allowed");
  if (stats_serial_ == serial) return Unavailable("the serving loop has stopped");
  return stats_;
}

ServingLoop::Counts ServingLoop::counts() {
  std::lock_guard<std::mutex> lock(mu_);
  return {running_.size(), queue_.size(), finished_, stopping_};
}

Status ServingLoop::failure() {
  std::lock_guard<std::mutex> lock(mu_);
  return failure_;
}

}  // namespace strata
