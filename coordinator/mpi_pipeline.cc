// Rank 0's side of the MPI pipeline.
#include "coordinator/mpi_pipeline.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "common/log.h"
#include "common/trace.h"
#include "worker/batch.h"
#include "worker/link_probe.h"
#include "worker/wire_codec.h"

namespace strata {
namespace {

std::string RankName(int rank, const std::string& host) {
  return "rank " + std::to_string(rank) + (host.empty() ? "" : " (" + host + ")");
}

double MiB(uint64_t b) { return static_cast<double>(b) / (1024.0 * 1024.0); }

}  // namespace

Result<std::vector<wire::DType>> MpiPipeline::ChooseLinkWires(int first_stage_rank, int threads) const {
  Transport& t = transport_;
  const size_t n = plan_.stages.size();
  // The decode step the links are weighed against: the slowest stage's
  // micro-batch (the cost model's figures are for one thread).
  double step_s = 0;
  for (const StagePlan& sp : plan_.stages) step_s = std::max(step_s, sp.time.decode);
  if (!plan_.measured) step_s /= std::max(1, threads);
  std::vector<wire::DType> out(n, wire::DTYPE_F32);
  char head[160];
  std::snprintf(head, sizeof head, "wire auto: each link measured by its sender, against the %s decode step of %.3g ms",
                plan_.measured ? "measured" : "predicted", step_s * 1e3);
  std::string text = head;
  // Links are measured one after the other, so that two probes never share a host's CPU or network.
  for (size_t s = 0; s + 1 < n; ++s) {
    const int from = first_stage_rank + static_cast<int>(s);
    const int to = from + 1;
    const std::string from_name = RankName(from, hosts_[from]), to_name = RankName(to, hosts_[to]);
    const std::string probing = from_name + ": probing its link to " + to_name;
    LinkMeasure link;
    if (from == t.rank()) {
      auto m = MeasureLink(t, to, kProbeTimeoutS);
      if (!m.ok()) return m.status().WithContext(probing);
      link = *m;
    } else {
      wire::Envelope e;
      e.mutable_probe_link()->set_peer(to);
      e.mutable_probe_link()->set_timeout_s(kProbeTimeoutS);
      STRATA_RETURN_IF_ERROR(t.Send(from, e));
      for (;;) {
        STRATA_ASSIGN_OR_RETURN(Message m, t.Receive(from, 2 * kProbeTimeoutS + 60));
        if (!m.envelope.has_link_report()) continue;
        const wire::LinkReport& r = m.envelope.link_report();
        if (!r.error().empty()) return FailedPrecondition(probing + ": " + r.error());
        link = {r.latency_s(), r.bytes_per_s()};
        break;
      }
    }
    const WireChoice c = ChooseWire(link, plan_.decode_tokens, cfg_.hidden, step_s);
    out[s] = c.dtype;
    text += "\n  " + DescribeWireChoice(from_name, to_name, link, plan_.decode_tokens, step_s, c);
  }
  Log(LogLevel::kInfo, "%s", text.c_str());
  return out;
}

void MpiPipeline::StopWorkers(Transport& t, const std::string& error) {
  wire::Envelope e;
  e.mutable_control()->set_kind(wire::Control::KIND_SHUTDOWN);
  e.mutable_control()->set_error(error);
  for (int r = 1; r < t.size(); ++r) (void)t.Send(r, e);
}

Result<std::unique_ptr<MpiPipeline>> MpiPipeline::Start(Transport& t, const ModelFiles& model,
                                                        const MpiPipelineOptions& opts, ThreadPool* pool) {
  const ModelConfig& cfg = model.config();
  std::unique_ptr<MpiPipeline> p(new MpiPipeline(t, cfg));
  p->stage_timeout_s_ = opts.stage_timeout_s;
  // Every failure before the plan is sent travels as a Plan with an error.
  auto fail_plan = [&](const Status& st) {
    wire::Envelope e;
    e.mutable_plan()->set_protocol_version(wire::PROTOCOL_VERSION);
    e.mutable_plan()->set_error(st.message());
    for (int r = 1; r < t.size(); ++r) (void)t.Send(r, e);
    return st;
  };

  // 1. The plan, checked before anything is loaded (a measured plan after
  // the calibration, below).
  const int n_stages = opts.coordinator_only ? t.size() - 1 : t.size();
  if (n_stages < 1) return fail_plan(InvalidArgument("--coordinator-only needs at least 2 ranks"));
  const int first_stage_rank = opts.coordinator_only ? 1 : 0;
  const PlanCosts costs = CostsOf(model);
  PlanOptions plan_options;
  plan_options.sequences = opts.max_sequences;
  const LmHeadShareSpec& share = opts.share_lm_head;
  const bool shared = share.on && !opts.coordinator_only && n_stages > 1 &&
                      (!share.steal || opts.max_sequences >= n_stages);
  if (shared) plan_options.lm_head_share = share.fraction;
  const bool measure = opts.split == "measure";
  if (!measure) {
    auto plan = MakeLayerPlan(opts.split, n_stages, costs, plan_options);
    if (!plan.ok()) return fail_plan(plan.status());
    p->plan_ = std::move(plan).value();
  }

  // 2. Hellos: same protocol, same model on every rank.
  const std::string mine = model.Fingerprint();
  std::string problem;
  p->hosts_.assign(t.size(), "");
  p->hosts_[0] = t.host();
  for (int i = 1; i < t.size(); ++i) {
    auto m = t.Receive(-1);
    if (!m.ok()) return fail_plan(m.status());
    if (!m->envelope.has_hello()) return fail_plan(DataLoss("expected a hello from " + RankName(m->source, "")));
    const wire::Hello& h = m->envelope.hello();
    const std::string who = RankName(h.rank(), h.host());
    if (h.rank() > 0 && h.rank() < t.size()) p->hosts_[h.rank()] = h.host();
    if (!problem.empty()) continue;
    if (h.protocol_version() != wire::PROTOCOL_VERSION)
      problem = who + " speaks protocol " + std::to_string(h.protocol_version()) + ", rank 0 speaks " + std::to_string(wire::PROTOCOL_VERSION);
    else if (!h.error().empty())
      problem = who + ": " + h.error();
    else if (h.model_fingerprint() != mine || h.architecture() != cfg.arch || h.n_layers() != cfg.n_layers)
      problem = who + " opened a different model file (fingerprint " + h.model_fingerprint() + ", " + h.architecture() + ", " +
                std::to_string(h.n_layers()) + " layers) than rank 0 (fingerprint " + mine + ", " + cfg.arch + ", " +
                std::to_string(cfg.n_layers) + " layers): every rank must run the same model";
  }
  if (!problem.empty()) return fail_plan(FailedPrecondition(problem));

  // 2b. --split measure: every stage's rank times its passes (at once, as
  // they will run), rank 0 plans on the figures.
  if (measure) {
    const CalibrationOptions co{.decode_tokens = DecodeTokens(opts.max_sequences, n_stages),
                                .prefill_tokens = opts.calibration_prefill_tokens,
                                .embedding = false,
                                .lm_head = false,
                                .seconds = opts.calibration_s};
    for (int s = 0; s < n_stages; ++s) {
      const int r = first_stage_rank + s;
      if (r == 0) continue;
      wire::Envelope e;
      wire::Calibrate* c = e.mutable_calibrate();
      c->set_decode_tokens(co.decode_tokens);
      c->set_prefill_tokens(co.prefill_tokens);
      c->set_embedding(s == 0);
      c->set_lm_head(s + 1 == n_stages);
      c->set_seconds(co.seconds);
      if (Status st = t.Send(r, e); !st.ok()) return fail_plan(st);
    }
    plan_options.measured.assign(static_cast<size_t>(n_stages), RankCosts{});
    std::vector<std::string> who(static_cast<size_t>(n_stages));
    if (first_stage_rank == 0) {
      CalibrationOptions mine = co;
      mine.embedding = true;
      mine.lm_head = n_stages == 1;
      auto own = Calibrate(model, mine, pool);
      if (!own.ok()) return fail_plan(own.status().WithContext(RankName(0, t.host()) + ": calibration"));
      plan_options.measured[0] = std::move(own).value();
      who[0] = RankName(0, t.host());
    }
    Status failed;
    for (int got = first_stage_rank == 0 ? 1 : 0; got < n_stages;) {
      auto m = t.Receive(-1);
      if (!m.ok()) return fail_plan(m.status());
      if (!m->envelope.has_calibration()) continue;
      ++got;
      const wire::Calibration& c = m->envelope.calibration();
      const int s = c.rank() - first_stage_rank;
      if (s < 0 || s >= n_stages) return fail_plan(DataLoss("a calibration from " + RankName(c.rank(), c.host()) + ", which holds no stage"));
      if (!c.error().empty() && failed.ok()) failed = FailedPrecondition(RankName(c.rank(), c.host()) + ": calibration: " + c.error());
      plan_options.measured[static_cast<size_t>(s)] = CalibrationFromWire(c);
      who[static_cast<size_t>(s)] = RankName(c.rank(), c.host());
    }
    if (!failed.ok()) return fail_plan(failed);
    auto plan = MakeLayerPlan("measure", n_stages, costs, plan_options);
    if (!plan.ok()) return fail_plan(plan.status());
    p->plan_ = std::move(plan).value();
    std::string text = "measured plan: each rank's time per pass (decode micro-batch of " +
                       std::to_string(co.decode_tokens) + ", prefill chunk of " + std::to_string(co.prefill_tokens) +
                       " tokens)\n" + DescribeMeasuredCosts(plan_options.measured, who) + DescribePlan(p->plan_);
    text.pop_back();
    Log(LogLevel::kInfo, "%s", text.c_str());
  }

  // 2c. --wire auto: each link's sender measures it, rank 0 picks its type.
  p->sends_.assign(static_cast<size_t>(n_stages), opts.wire_dtype);
  if (opts.wire_auto) {
    auto chosen = p->ChooseLinkWires(first_stage_rank, pool != nullptr ? pool->size() : 1);
    if (!chosen.ok()) return fail_plan(chosen.status());
    p->sends_ = std::move(chosen).value();
  }
  const std::vector<wire::DType>& sends = p->sends_;

  // 3. Send the plan; load rank 0's own stage.
  wire::Envelope pe;
  wire::Plan* wp = pe.mutable_plan();
  wp->set_protocol_version(wire::PROTOCOL_VERSION);
  wp->set_n_ctx(opts.n_ctx);
  wp->set_max_sequences(opts.max_sequences);
  wp->set_cached_sequences(opts.cached_sequences);
  wp->set_cache_bytes(opts.cache_bytes);
  wp->set_kv_type(KvTypeName(opts.kv_type));
  wp->set_rope_scaling(opts.rope.scaling);
  wp->set_rope_scale(opts.rope.factor);
  wp->set_yarn_orig_ctx(opts.rope.original_ctx);
  for (size_t s = 0; s < p->plan_.stages.size(); ++s) {
    const StagePlan& sp = p->plan_.stages[s];
    wire::StageAssignment* a = wp->add_stages();
    a->set_rank(static_cast<int>(s) + (opts.coordinator_only ? 1 : 0));
    a->set_first_layer(sp.layers.first);
    a->set_last_layer(sp.layers.last);
    a->set_first(s == 0);
    a->set_last(s + 1 == p->plan_.stages.size());
    a->set_wire_dtype(sends[s]);
    p->stage_ranks_.push_back(a->rank());
  }
  for (int r = 1; r < t.size(); ++r) STRATA_RETURN_IF_ERROR(t.Send(r, pe));
  std::vector<uint64_t> bytes(t.size(), 0);
  Status own;
  if (!opts.coordinator_only) {
    StageOptions so;
    so.layers = p->plan_.stages[0].layers;
    so.first = true;
    so.last = p->plan_.stages.size() == 1;
    so.n_ctx = opts.n_ctx;
    so.max_sequences = opts.max_sequences;
    so.cached_sequences = opts.cached_sequences;
    so.cache_bytes = opts.cache_bytes;
    so.copy_weights = opts.copy_weights;
    so.kv_type = opts.kv_type;
    if (shared) {
      so.lm_head_tail_rows = LmHeadRows(cfg.vocab, share.max_fraction);
      p->share_.emplace(cfg.vocab, so.lm_head_tail_rows, share.steal);
    }
    auto stage = Stage::Load(model, so, pool);
    if (stage.ok()) {
      p->stage_ = std::move(stage).value();
      bytes[0] = p->stage_->weight_bytes();
      const int next = p->stage_ranks_.size() > 1 ? p->stage_ranks_[1] : -1;
      p->runner_ = std::make_unique<StageRunner>(*p->stage_, t, next, sends[0]);
    } else {
      own = stage.status().WithContext(RankName(0, t.host()));
    }
  }
  // 4. Ready from every worker.
  for (int i = 1; i < t.size(); ++i) {
    auto m = t.Receive(-1);
    if (!m.ok()) {
      StopWorkers(t, m.status().message());
      return m.status();
    }
    if (!m->envelope.has_ready()) continue;
    const wire::Ready& r = m->envelope.ready();
    if (!r.error().empty() && own.ok()) own = FailedPrecondition(RankName(r.rank(), r.host()) + ": " + r.error());
    if (r.rank() >= 0 && r.rank() < t.size()) {
      bytes[r.rank()] = r.weight_bytes();
      p->hosts_[r.rank()] = r.host();
    }
  }
  if (!own.ok()) {
    StopWorkers(t, own.message());
    return own;
  }
  std::string text = "pipeline of " + std::to_string(p->plan_.stages.size()) + " stages on " +
                     std::to_string(t.size()) + " ranks (plan: " + p->plan_.source + ", wire " +
                     (opts.wire_auto ? std::string("auto") : WireDTypeName(opts.wire_dtype)) + ")\n";
  if (opts.coordinator_only) text += "  rank 0: coordinator only\n";
  for (size_t s = 0; s < p->plan_.stages.size(); ++s) {
    char line[160];
    const int r = p->stage_ranks_[s];
    const std::string sends_as = s + 1 < p->plan_.stages.size() ? std::string(", sends ") + WireDTypeName(sends[s]) : "";
    std::string extra = s == 0 ? " + embedding" : "";
    if (s == 0 && p->share_) {
      char part[120];
      std::snprintf(part, sizeof part, " + lm_head rows %lld-%lld (%s)", static_cast<long long>(p->share_->split()),
                    static_cast<long long>(cfg.vocab - 1),
                    p->share_->steal() ? "computes those the last stage leaves it" : "computes them all");
      extra += part;
    }
    if (s + 1 == p->plan_.stages.size()) extra += " + lm_head";
    std::snprintf(line, sizeof line, "  rank %d (%s): layers %d-%d%s, %.1f MiB of weights%s\n", r, p->hosts_[r].c_str(),
                  p->plan_.stages[s].layers.first, p->plan_.stages[s].layers.last, extra.c_str(), MiB(bytes[r]), sends_as.c_str());
    text += line;
  }
  text.pop_back();
  Log(LogLevel::kInfo, "%s", text.c_str());
  return p;
}

MpiPipeline::~MpiPipeline() { Shutdown(""); }

void MpiPipeline::Shutdown(const std::string& error) {
  if (shut_down_) return;
  shut_down_ = true;
  StopWorkers(transport_, error);
  if (!Tracer::Get().enabled() || !error.empty()) return;
  // Every worker answers a clean shutdown with its trace.
  for (int i = 1; i < transport_.size(); ++i) {
    auto m = transport_.Receive(-1);
    if (!m.ok()) return;
    if (m->envelope.has_trace()) traces_.push_back(m->envelope.trace());
  }
}

std::vector<RankTrace> MpiPipeline::TakeTraces() {
  std::vector<RankTrace> out;
  for (const wire::TraceChunk& c : traces_) out.push_back({c.rank(), c.host(), c.events_json(), c.summary()});
  traces_.clear();
  return out;
}

std::vector<StagePlacement> MpiPipeline::Placement() const {
  std::vector<StagePlacement> out;
  for (size_t i = 0; i < plan_.stages.size(); ++i) {
    const int rank = stage_ranks_[i];
    const bool last = i + 1 == plan_.stages.size();
    const int64_t shared = share_ ? share_->mean_rows() : 0;
    out.push_back({rank, hosts_[rank], plan_.stages[i].layers, last ? "" : WireDTypeName(sends_[i]),
                   last ? cfg_.vocab - shared : i == 0 ? shared : 0});
  }
  return out;
}

void MpiPipeline::EnableDump(const std::string& dir, LayerRange layers) {
  if (stage_) stage_->EnableDump(dir, layers);
}

Result<Message> MpiPipeline::AwaitFromWorkers(double timeout_s) {
  STRATA_ASSIGN_OR_RETURN(Message m, transport_.Receive(-1, timeout_s));
  if (m.envelope.has_control() && m.envelope.control().kind() == wire::Control::KIND_ERROR) {
    const wire::Control& c = m.envelope.control();
    return FailedPrecondition(RankName(c.rank(), c.host()) + ": " + c.error());
  }
  return m;
}

Result<uint64_t> MpiPipeline::Submit(const std::vector<SequenceRequest>& batch) {
  if (shut_down_) return FailedPrecondition("the pipeline has shut down");
  wire::Envelope e;
  wire::ForwardBatch* fb = e.mutable_forward();
  const uint64_t id = next_batch_id_++;
  fb->set_batch_id(id);
  fb->set_hidden(cfg_.hidden);
  for (const SequenceRequest& r : batch) ToWire(r, fb->add_entries());
  Pending p;
  p.id = id;
  p.n_requests = batch.size();
  if (share_ && CanShareLmHead(batch, static_cast<int32_t>(cfg_.vocab))) {
    p.lm_head_split = share_->split();
    p.requests = batch;
    fb->set_lm_head_split(p.lm_head_split);
    fb->set_lm_head_steal(share_->steal());
  }
  if (runner_) {
    STRATA_RETURN_IF_ERROR(runner_->HandleForward(*fb, {}).WithContext(RankName(0, transport_.host())));
  } else {
    STRATA_RETURN_IF_ERROR(transport_.Send(stage_ranks_[0], e));
  }
  pending_.push_back(std::move(p));
  return id;
}

Status MpiPipeline::CompleteShared(const Pending& batch, const wire::Result& res, const std::vector<uint8_t>& normed,
                                   BatchOutput* out) {
  const auto t0 = std::chrono::steady_clock::now();
  const uint64_t row_bytes = static_cast<uint64_t>(cfg_.hidden) * sizeof(float);
  if (normed.size() != batch.n_requests * row_bytes)
    return DataLoss("the shared lm_head's result for batch " + std::to_string(batch.id) + " carries " +
                    std::to_string(normed.size()) + " bytes of normed rows, expected " + std::to_string(batch.n_requests * row_bytes));
  std::vector<float> rows(batch.n_requests * static_cast<size_t>(cfg_.hidden));
  std::memcpy(rows.data(), normed.data(), normed.size());
  for (int i = 0; i < res.outputs_size(); ++i) {
    const wire::SequenceOutput& o = res.outputs(i);
    if (o.candidate_ids_size() != o.candidate_logits_size())
      return DataLoss("sequence " + std::to_string(o.seq_id()) + ": candidate ids and logits differ in number");
    auto& c = out->results[static_cast<size_t>(i)].candidates;
    for (int k = 0; k < o.candidate_ids_size(); ++k) c.emplace_back(o.candidate_ids(k), o.candidate_logits(k));
  }
  // The last stage computed at least the rows it was given, and went further
  // only when it was allowed to.
  const int64_t split = res.lm_head_split();
  if (split < batch.lm_head_split || split > (share_->steal() ? cfg_.vocab : batch.lm_head_split))
    return DataLoss("the shared lm_head's result for batch " + std::to_string(batch.id) + " covers ids below " +
                    std::to_string(split) + ", expected " +
                    (share_->steal() ? std::to_string(batch.lm_head_split) + " to " + std::to_string(cfg_.vocab)
                                     : std::to_string(batch.lm_head_split)));
  STRATA_RETURN_IF_ERROR(CompleteSharedBatch(*stage_, batch.requests, rows.data(), split, &out->results));
  runner_->AddBusy(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  share_->Record(cfg_.vocab - split);
  return Status::Ok();
}

Result<BatchOutput> MpiPipeline::Wait() {
  if (pending_.empty()) return FailedPrecondition("Wait() with no batch in flight");
  const Pending batch = std::move(pending_.front());
  pending_.pop_front();
  const uint64_t id = batch.id;
  const size_t n_requests = batch.n_requests;
  for (;;) {
    auto got = AwaitFromWorkers(stage_timeout_s_);
    if (!got.ok() && got.status().kind() == ErrorKind::kDeadlineExceeded)
      return DeadlineExceeded("no result for batch " + std::to_string(id) + " after " + std::to_string(static_cast<int>(stage_timeout_s_)) +
                              " s (--stage-timeout): " + DiagnoseStuckStages());
    STRATA_ASSIGN_OR_RETURN(Message m, std::move(got));
    if (!m.envelope.has_result()) continue;
    const wire::Result& res = m.envelope.result();
    // Stages keep submission order, so results come back in it.
    if (res.batch_id() != id || res.outputs_size() != static_cast<int>(n_requests) ||
        res.shared_lm_head() != (batch.lm_head_split > 0))
      return DataLoss("result for batch " + std::to_string(res.batch_id()) + " does not match batch " + std::to_string(id));
    BatchOutput out;
    out.batch_id = id;
    out.results.resize(n_requests);
    uint64_t offset = 0;
    for (int i = 0; i < res.outputs_size(); ++i) {
      out.results[i].seq_id = res.outputs(i).seq_id();
      const wire::SequenceOutput& o = res.outputs(i);
      out.results[i].token = o.token();
      STRATA_ASSIGN_OR_RETURN(out.results[i].logprobs, LogprobsFromWire(o));
      const uint64_t n = res.outputs(i).logit_rows() * static_cast<uint64_t>(cfg_.vocab);
      if (offset + n * sizeof(float) > m.payload.size()) return DataLoss("result payload is shorter than its logits");
      out.results[i].logits.resize(n);
      if (n > 0) std::memcpy(out.results[i].logits.data(), m.payload.data() + offset, n * sizeof(float));
      offset += n * sizeof(float);
    }
    if (batch.lm_head_split > 0) STRATA_RETURN_IF_ERROR(CompleteShared(batch, res, m.payload, &out));
    return out;
  }
}

std::string MpiPipeline::DiagnoseStuckStages() {
  // Live stages answer a stats request from their receive loop at once (or
  // right after the batch they are computing); a stopped rank never does.
  wire::Envelope e;
  e.mutable_control()->set_kind(wire::Control::KIND_STATS);
  std::vector<bool> answered(stage_ranks_.size(), false);
  for (size_t s = 0; s < stage_ranks_.size(); ++s) {
    if (stage_ranks_[s] == 0) answered[s] = true;
    else (void)transport_.Send(stage_ranks_[s], e);
  }
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (std::chrono::steady_clock::now() < until &&
         std::find(answered.begin(), answered.end(), false) != answered.end()) {
    auto m = transport_.Receive(-1, 0.5);
    if (!m.ok() || !m->envelope.has_stats()) continue;
    for (size_t s = 0; s < stage_ranks_.size(); ++s)
      if (stage_ranks_[s] == m->envelope.stats().rank()) answered[s] = true;
  }
  std::string stuck;
  for (size_t s = 0; s < stage_ranks_.size(); ++s) {
    if (answered[s]) continue;
    const int r = stage_ranks_[s];
    stuck += std::string(stuck.empty() ? "" : ", ") + "stage " + std::to_string(s) + " on " + RankName(r, hosts_[r]) + " (layers " +
             std::to_string(plan_.stages[s].layers.first) + "-" + std::to_string(plan_.stages[s].layers.last) + ")";
  }
  if (stuck.empty()) return "every stage still answers (a stage is slower than the deadline; raise --stage-timeout)";
  return "not answering: " + stuck + " (stopped, or its link is down)";
}

Result<std::vector<StageStats>> MpiPipeline::Stats() {
  if (!pending_.empty()) return FailedPrecondition("Stats() with batches in flight");
  std::vector<StageStats> out(stage_ranks_.size());
  wire::Envelope e;
  e.mutable_control()->set_kind(wire::Control::KIND_STATS);
  size_t asked = 0;
  for (size_t s = 0; s < stage_ranks_.size(); ++s) {
    if (stage_ranks_[s] == 0) {
      out[s] = runner_->Stats();
      out[s].host = transport_.host();
      continue;
    }
    STRATA_RETURN_IF_ERROR(transport_.Send(stage_ranks_[s], e));
    ++asked;
  }
  for (size_t got = 0; got < asked;) {
    STRATA_ASSIGN_OR_RETURN(Message m, AwaitFromWorkers());
    if (!m.envelope.has_stats()) continue;
    StageStats st = StatsFromWire(m.envelope.stats());
    for (size_t s = 0; s < stage_ranks_.size(); ++s)
      if (stage_ranks_[s] == st.rank) out[s] = st;
    ++got;
  }
  return out;
}

Status MpiPipeline::Free(uint64_t seq_id) {
  if (shut_down_) return Status::Ok();
  if (runner_) return runner_->HandleFree(seq_id);
  wire::Envelope e;
  e.mutable_control()->set_kind(wire::Control::KIND_FREE);
  e.mutable_control()->set_seq_id(seq_id);
  return transport_.Send(stage_ranks_[0], e);
}

Status MpiPipeline::Reuse(uint64_t seq_id, uint64_t from_seq_id, int64_t keep, bool copy) {
  if (shut_down_) return FailedPrecondition("the pipeline is shut down");
  if (runner_) return runner_->HandleReuse(seq_id, from_seq_id, keep, copy);
  return transport_.Send(stage_ranks_[0], ReuseEnvelope(seq_id, from_seq_id, keep, copy));
}

}  // namespace strata
