// Worker ranks: handshake, stage load, and the forward loop.
#include "worker/stage_server.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "common/log.h"
#include "common/trace.h"
#include "worker/batch.h"
#include "worker/link_probe.h"
#include "worker/wire_codec.h"

namespace strata {

Status MakeDirectories(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return IoError("cannot create directory '" + dir + "': " + ec.message());
  return Status::Ok();
}

wire::Envelope ErrorEnvelope(const Transport& t, const std::string& text) {
  wire::Envelope e;
  wire::Control* c = e.mutable_control();
  c->set_kind(wire::Control::KIND_ERROR);
  c->set_error(text);
  c->set_rank(t.rank());
  c->set_host(t.host());
  return e;
}

StageStats StageRunner::Stats() const {
  StageStats s = counters_;
  s.first_layer = stage_.options().layers.first;
  s.last_layer = stage_.options().layers.last;
  s.weight_bytes = stage_.weight_bytes();
  s.kv_bytes = stage_.kv_bytes();
  s.rss_bytes = ResidentBytes();
  s.peak_rss_bytes = PeakResidentBytes();
  return s;
}

wire::StageStats StatsToWire(const StageStats& s) {
  wire::StageStats w;
  w.set_rank(s.rank);
  w.set_host(s.host);
  w.set_first_layer(s.first_layer);
  w.set_last_layer(s.last_layer);
  w.set_busy_us(static_cast<uint64_t>(s.busy_s * 1e6));
  w.set_batches(s.batches);
  w.set_tokens(s.tokens);
  w.set_bytes_sent(s.bytes_sent);
  w.set_rss_bytes(s.rss_bytes);
  w.set_peak_rss_bytes(s.peak_rss_bytes);
  w.set_weight_bytes(s.weight_bytes);
  w.set_kv_bytes(s.kv_bytes);
  w.set_peak_kv_bytes(s.peak_kv_bytes);
  return w;
}

wire::Calibration CalibrationToWire(const RankCosts& c) {
  wire::Calibration w;
  for (const PassCost& l : c.layers) {
    wire::PassTime* p = w.add_layers();
    p->set_decode_s(l.decode);
    p->set_prefill_s(l.prefill);
  }
  w.mutable_first()->set_decode_s(c.first.decode);
  w.mutable_first()->set_prefill_s(c.first.prefill);
  w.mutable_last()->set_decode_s(c.last.decode);
  w.mutable_last()->set_prefill_s(c.last.prefill);
  return w;
}

RankCosts CalibrationFromWire(const wire::Calibration& w) {
  RankCosts c;
  for (const wire::PassTime& p : w.layers()) c.layers.push_back({p.decode_s(), p.prefill_s()});
  c.first = {w.first().decode_s(), w.first().prefill_s()};
  c.last = {w.last().decode_s(), w.last().prefill_s()};
  return c;
}

StageStats StatsFromWire(const wire::StageStats& w) {
  StageStats s;
  s.rank = w.rank();
  s.host = w.host();
  s.first_layer = w.first_layer();
  s.last_layer = w.last_layer();
  s.busy_s = static_cast<double>(w.busy_us()) * 1e-6;
  s.batches = w.batches();
  s.tokens = w.tokens();
  s.bytes_sent = w.bytes_sent();
  s.rss_bytes = w.rss_bytes();
  s.peak_rss_bytes = w.peak_rss_bytes();
  s.weight_bytes = w.weight_bytes();
  s.kv_bytes = w.kv_bytes();
  s.peak_kv_bytes = w.peak_kv_bytes();
  return s;
}

Status StageRunner::HandleForward(const wire::ForwardBatch& batch, const std::vector<uint8_t>& payload) {
  const auto t0 = std::chrono::steady_clock::now();
  // Busy time: everything but the send (which hands off to MPI).
  auto count = [&](int64_t n_tok) {
    counters_.busy_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++counters_.batches;
    counters_.tokens += static_cast<uint64_t>(n_tok);
    counters_.peak_kv_bytes = std::max(counters_.peak_kv_bytes, stage_.kv_bytes());
  };
  const ModelConfig& cfg = stage_.config();
  if (batch.batch_id() <= last_batch_id_)
    return DataLoss("forward batch " + std::to_string(batch.batch_id()) + " arrived after batch " + std::to_string(last_batch_id_) +
                    " (batch ids must increase)");
  last_batch_id_ = batch.batch_id();
  std::vector<SequenceRequest> requests;
  std::vector<BatchEntry> entries;
  std::vector<int32_t> ids;
  for (const wire::SequenceEntry& e : batch.entries()) {
    STRATA_ASSIGN_OR_RETURN(SequenceRequest r, FromWire(e));
    entries.push_back({r.seq_id, r.pos0, static_cast<int64_t>(r.tokens.size())});
    ids.insert(ids.end(), r.tokens.begin(), r.tokens.end());
    requests.push_back(std::move(r));
  }
  if (requests.empty()) return DataLoss("forward batch " + std::to_string(batch.batch_id()) + " has no sequences");
  const int64_t n_tok = static_cast<int64_t>(ids.size());
  x_.resize(static_cast<size_t>(n_tok * cfg.hidden));
  if (batch.payload_bytes() == 0) {
    STRATA_RETURN_IF_ERROR(stage_.Embed(ids, x_.data()));
  } else {
    if (batch.hidden() != cfg.hidden)
      return DataLoss("forward batch hidden size " + std::to_string(batch.hidden()) + ", expected " + std::to_string(cfg.hidden));
    STRATA_RETURN_IF_ERROR(DecodeActivations(batch.dtype(), payload, n_tok, cfg.hidden, x_.data()));
  }
  STRATA_RETURN_IF_ERROR(stage_.Forward(entries, x_.data()));

  if (next_rank_ >= 0) {
    wire::Envelope out;
    wire::ForwardBatch* fb = out.mutable_forward();
    *fb = batch;
    fb->set_hidden(cfg.hidden);
    fb->set_dtype(wire_dtype_);
    std::vector<uint8_t> bytes = EncodeActivations(wire_dtype_, x_.data(), n_tok, cfg.hidden);
    fb->set_payload_bytes(bytes.size());
    count(n_tok);
    counters_.bytes_sent += bytes.size();
    return transport_.Send(next_rank_, out, bytes);
  }
  // Last stage: logits or sampled ids back to the coordinator (with a shared
  // lm_head, candidates and the normed rows rank 0 completes them from).
  std::vector<float> normed;
  const bool shared = batch.lm_head_split() > 0;
  if (shared && batch.lm_head_split() > cfg.vocab)
    return DataLoss("forward batch " + std::to_string(batch.batch_id()) + ": lm_head split " +
                    std::to_string(batch.lm_head_split()) + " is past the vocabulary of " + std::to_string(cfg.vocab));
  // A shared lm_head that may be taken further: only while no message waits
  // (the next batch, when this stage is the one behind; lm_head_share.h).
  int64_t split = batch.lm_head_split();
  std::function<bool()> go_on;
  if (batch.lm_head_steal()) go_on = [this] { return !transport_.MessageWaiting(-1); };
  STRATA_ASSIGN_OR_RETURN(std::vector<SequenceResult> results,
                          shared ? FinishBatchShared(stage_, requests, x_.data(), &split, go_on, &normed)
                                 : FinishBatch(stage_, requests, x_.data()));
  wire::Envelope out;
  wire::Result* res = out.mutable_result();
  res->set_batch_id(batch.batch_id());
  res->set_shared_lm_head(shared);
  if (shared) res->set_lm_head_split(split);
  std::vector<uint8_t> result_bytes;
  auto append = [&result_bytes](const std::vector<float>& v) {
    const auto* p = reinterpret_cast<const uint8_t*>(v.data());
    result_bytes.insert(result_bytes.end(), p, p + v.size() * sizeof(float));
  };
  for (const SequenceResult& r : results) {
    wire::SequenceOutput* o = res->add_outputs();
    o->set_seq_id(r.seq_id);
    o->set_token(r.token);
    if (r.logprobs) LogprobsToWire(*r.logprobs, o);
    for (const auto& [id, logit] : r.candidates) {
      o->add_candidate_ids(id);
      o->add_candidate_logits(logit);
    }
    o->set_logit_rows(r.logits.size() / static_cast<size_t>(cfg.vocab));
    append(r.logits);
  }
  append(normed);
  res->set_payload_bytes(result_bytes.size());
  count(n_tok);
  return transport_.Send(kCoordinatorRank, out, result_bytes);
}

wire::Envelope ReuseEnvelope(uint64_t seq_id, uint64_t from_seq_id, int64_t keep, bool copy) {
  wire::Envelope e;
  wire::Control* c = e.mutable_control();
  c->set_kind(wire::Control::KIND_REUSE);
  c->set_seq_id(seq_id);
  c->set_from_seq_id(from_seq_id);
  c->set_keep(keep);
  c->set_copy(copy);
  return e;
}

Status StageRunner::HandleReuse(uint64_t seq_id, uint64_t from_seq_id, int64_t keep, bool copy) {
  STRATA_RETURN_IF_ERROR(stage_.ReuseSequence(seq_id, from_seq_id, keep, copy));
  if (next_rank_ < 0) return Status::Ok();
  return transport_.Send(next_rank_, ReuseEnvelope(seq_id, from_seq_id, keep, copy));
}

Status StageRunner::HandleFree(uint64_t seq_id) {
  stage_.FreeSequence(seq_id);
  if (next_rank_ < 0) return Status::Ok();
  wire::Envelope e;
  e.mutable_control()->set_kind(wire::Control::KIND_FREE);
  e.mutable_control()->set_seq_id(seq_id);
  return transport_.Send(next_rank_, e);
}

namespace {

// After shutdown with --trace: this rank's events go to rank 0, which merges them.
int SendTraceAndExit(Transport& t, int code) {
  if (!Tracer::Get().enabled()) return code;
  std::vector<TraceEvent> events = Tracer::Get().Take();
  wire::Envelope e;
  wire::TraceChunk* c = e.mutable_trace();
  c->set_rank(t.rank());
  c->set_host(t.host());
  std::string json;
  AppendTraceJson(events, t.rank(), t.host(), &json);
  c->set_events_json(json);
  c->set_summary(TraceSummary(events));
  (void)t.Send(kCoordinatorRank, e);
  return code;
}

// Waits for the coordinator's shutdown; returns the exit status.
int AwaitShutdown(Transport& t) {
  for (;;) {
    auto m = t.Receive(-1);
    if (!m.ok()) return 1;
    if (m->envelope.has_control() && m->envelope.control().kind() == wire::Control::KIND_SHUTDOWN)
      return SendTraceAndExit(t, m->envelope.control().error().empty() ? 0 : 1);
  }
}

}  // namespace

int RunWorker(Transport& t, const WorkerOptions& opts) {
  if (opts.trace) Tracer::Get().Enable();
  // 1. Hello: which model this rank opened (or why it could not).
  wire::Envelope hello;
  wire::Hello* h = hello.mutable_hello();
  h->set_protocol_version(wire::PROTOCOL_VERSION);
  h->set_rank(t.rank());
  h->set_host(t.host());
  auto model = ModelFiles::Open(opts.model_path);
  if (model.ok()) {
    h->set_model_fingerprint((*model)->Fingerprint());
    h->set_architecture((*model)->config().arch);
    h->set_n_layers((*model)->config().n_layers);
  } else {
    h->set_error(model.status().message());
  }
  if (!t.Send(kCoordinatorRank, hello).ok()) return 1;

  // 2. The plan (or an error that ends the job); for `--split measure`, a
  // calibration first.
  std::unique_ptr<ThreadPool> pool;
  auto make_pool = [&] {
    if (pool == nullptr) pool = std::make_unique<ThreadPool>(opts.threads > 0 ? opts.threads : ThreadPool::AvailableCores());
    return pool.get();
  };
  wire::Plan plan;
  for (;;) {
    auto m = t.Receive(-1);  // rank 0, or a neighbour's link probe (--wire auto)
    if (!m.ok()) return 1;
    if (m->envelope.has_probe_data()) {
      if (!AnswerProbe(t, *m).ok()) return 1;
      continue;
    }
    if (m->source != kCoordinatorRank) continue;
    if (m->envelope.has_probe_link()) {
      const wire::ProbeLink& p = m->envelope.probe_link();
      wire::Envelope reply;
      wire::LinkReport* r = reply.mutable_link_report();
      r->set_rank(t.rank());
      r->set_host(t.host());
      r->set_peer(p.peer());
      if (p.peer() <= 0 || p.peer() >= t.size() || p.peer() == t.rank()) {
        r->set_error("no rank " + std::to_string(p.peer()) + " to probe");
      } else if (Result<LinkMeasure> link = MeasureLink(t, p.peer(), p.timeout_s()); link.ok()) {
        r->set_latency_s(link->latency_s);
        r->set_bytes_per_s(link->bytes_per_s);
      } else {
        r->set_error(link.status().message());
      }
      if (!t.Send(kCoordinatorRank, reply).ok()) return 1;
      continue;
    }
    if (m->envelope.has_plan()) {
      plan = m->envelope.plan();
      break;
    }
    if (m->envelope.has_calibrate()) {
      const wire::Calibrate& c = m->envelope.calibrate();
      Result<RankCosts> costs = model.ok() ? Calibrate(**model,
                                                       {.decode_tokens = c.decode_tokens(),
                                                        .prefill_tokens = c.prefill_tokens(),
                                                        .embedding = c.embedding(),
                                                        .lm_head = c.lm_head(),
                                                        .seconds = c.seconds()},
                                                       make_pool())
                                           : Result<RankCosts>(model.status());
      wire::Envelope reply;
      if (costs.ok()) {
        *reply.mutable_calibration() = CalibrationToWire(*costs);
      } else {
        reply.mutable_calibration()->set_error(costs.status().message());
      }
      reply.mutable_calibration()->set_rank(t.rank());
      reply.mutable_calibration()->set_host(t.host());
      if (!t.Send(kCoordinatorRank, reply).ok()) return 1;
      continue;
    }
    if (m->envelope.has_control() && m->envelope.control().kind() == wire::Control::KIND_SHUTDOWN) return 1;
  }
  if (!plan.error().empty() || !model.ok()) return 1;
  const Status rope_ok = (*model)->ApplyRopeOverride({plan.rope_scaling(), plan.rope_scale(), plan.yarn_orig_ctx()});
  const wire::StageAssignment* mine = nullptr;
  int next_rank = -1;
  int prev_rank = kCoordinatorRank;
  for (int i = 0; i < plan.stages_size(); ++i) {
    if (plan.stages(i).rank() == t.rank()) {
      mine = &plan.stages(i);
      prev_rank = i > 0 ? plan.stages(i - 1).rank() : kCoordinatorRank;
      if (i + 1 < plan.stages_size()) next_rank = plan.stages(i + 1).rank();
    }
  }

  // 3. Load this rank's slice and say so.
  wire::Envelope ready;
  ready.mutable_ready()->set_rank(t.rank());
  ready.mutable_ready()->set_host(t.host());
  std::unique_ptr<Stage> stage;
  if (mine != nullptr) {
    make_pool();
    StageOptions so;
    so.layers = {mine->first_layer(), mine->last_layer()};
    so.first = mine->first();
    so.last = mine->last();
    so.n_ctx = plan.n_ctx();
    so.max_sequences = std::max(1, plan.max_sequences());
    so.cached_sequences = plan.cached_sequences();
    so.cache_bytes = plan.cache_bytes();
    so.copy_weights = opts.copy_weights;
    auto kv_type = ParseKvType(plan.kv_type().empty() ? "f32" : plan.kv_type());
    // The plan's options are checked before loading; a Result is only ever
    // built from an error or a loaded stage.
    auto load = [&]() -> Result<std::unique_ptr<Stage>> {
      STRATA_RETURN_IF_ERROR(rope_ok);
      STRATA_RETURN_IF_ERROR(kv_type.status());
      so.kv_type = *kv_type;
      return Stage::Load(**model, so, pool.get());
    };
    Result<std::unique_ptr<Stage>> loaded = load();
    Status dump_ok = opts.dump_dir.empty() ? Status::Ok() : MakeDirectories(opts.dump_dir);
    if (loaded.ok() && dump_ok.ok()) {
      stage = std::move(loaded).value();
      if (!opts.dump_dir.empty()) stage->EnableDump(opts.dump_dir, opts.dump_layers);
      ready.mutable_ready()->set_weight_bytes(stage->weight_bytes());
      Log(LogLevel::kDebug, "loaded layers %d-%d (%.1f MiB)", mine->first_layer(), mine->last_layer(),
          stage->weight_bytes() / (1024.0 * 1024.0));
    } else if (!dump_ok.ok()) {
      ready.mutable_ready()->set_error(dump_ok.message());
    } else {
      ready.mutable_ready()->set_error(loaded.status().message());
    }
  }
  if (!t.Send(kCoordinatorRank, ready).ok()) return 1;
  if (stage == nullptr) return AwaitShutdown(t);

  // 4. Forward batches until shutdown. An error is reported to rank 0, which
  // ends the job.
  StageRunner runner(*stage, t, next_rank, mine->wire_dtype());
  for (;;) {
    auto m = t.Receive(-1);
    Status st = m.ok() ? Status::Ok() : m.status();
    if (m.ok()) {
      const wire::Envelope& e = m->envelope;
      if (e.has_forward() && m->source != prev_rank) {
        st = DataLoss("forward batch from rank " + std::to_string(m->source) + ", expected from rank " + std::to_string(prev_rank) +
                      " (the previous stage)");
      } else if (e.has_forward()) {
        Log(LogLevel::kDebug, "batch %llu from rank %d: %d sequences, %zu payload bytes",
            static_cast<unsigned long long>(e.forward().batch_id()), m->source, e.forward().entries_size(), m->payload.size());
        st = runner.HandleForward(e.forward(), m->payload);
      } else if (e.has_control()) {
        switch (e.control().kind()) {
          case wire::Control::KIND_FREE: st = runner.HandleFree(e.control().seq_id()); break;
          case wire::Control::KIND_REUSE:
            st = runner.HandleReuse(e.control().seq_id(), e.control().from_seq_id(), e.control().keep(), e.control().copy());
            break;
          case wire::Control::KIND_SHUTDOWN: return SendTraceAndExit(t, e.control().error().empty() ? 0 : 1);
          case wire::Control::KIND_STATS: {
            StageStats stats = runner.Stats();
            stats.rank = t.rank();
            stats.host = t.host();
            wire::Envelope reply;
            *reply.mutable_stats() = StatsToWire(stats);
            st = t.Send(kCoordinatorRank, reply);
            break;
          }
          default: st = DataLoss("unexpected control message from rank " + std::to_string(m->source));
        }
      } else {
        st = DataLoss("unexpected message from rank " + std::to_string(m->source));
      }
    }
    if (!st.ok()) {
      (void)t.Send(kCoordinatorRank, ErrorEnvelope(t, st.message()));
      return AwaitShutdown(t);
    }
  }
}

}  // namespace strata
