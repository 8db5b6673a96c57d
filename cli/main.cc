// The strata command line. Every rank runs this binary; rank 0 parses the
// request, tokenizes, schedules and prints. Subcommands:
//   generate    text after a prompt (streamed, or one JSON object with --json)
//   perplexity  llama-perplexity's measure over a text file
//   template    the model's chat template applied to a conversation (no weights loaded)
//   chat        an interactive conversation (rank 0 reads stdin)
//   serve       the OpenAI-compatible HTTP server (rank 0 listens)
#include <atomic>
#include <chrono>
#include <csignal>
#include <thread>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cli/convert.h"
#include "cli/diff.h"
#include "cli/inspect.h"
#include "cli/make_model.h"
#include "common/npy.h"
#include "common/thread_pool.h"
#include "common/log.h"
#include "common/trace.h"
#include "coordinator/bench.h"
#include "coordinator/chat_template.h"
#include "coordinator/generate.h"
#include "coordinator/http_server.h"
#include "coordinator/serving.h"
#include "coordinator/mpi_pipeline.h"
#include "coordinator/plan.h"
#include "coordinator/scheduler.h"
#include "coordinator/pipeline.h"
#include "worker/stage_server.h"
#include "worker/transport.h"
#include "worker/wire_codec.h"
#include "model/model_files.h"
#include "model/tokenizer.h"
#include "kernels/isa.h"

namespace strata {
namespace {

// Set when the process runs under mpirun with more than one rank.
Transport* g_transport = nullptr;

struct CommonFlags {
  std::string model;
  int threads = 0;  // 0: the cores this process may use
  int64_t ctx = 4096;
  bool json = false;
  std::string split = "auto";
  std::string wire = "f32";
  bool coordinator_only = false;
  std::string trace_file;
  std::string log_level = "info";
  double stage_timeout = 300;
  int parallel = 1;  // sequences alive at once (bench, serve)
  bool no_mmap = false;
};

void AddCommon(CLI::App* cmd, CommonFlags* f, bool ctx_required) {
  cmd->add_option("-m,--model", f->model, "model: a .gguf file or an HF model directory")->required();
  cmd->add_option("-t,--threads", f->threads, "compute threads (default: the cores this rank may use)")
      ->check(CLI::Range(1, 1024));
  auto* ctx = cmd->add_option("--ctx", f->ctx, "context size in tokens")->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  if (ctx_required) ctx->required();
  cmd->add_flag("--json", f->json, "print one JSON object on stdout");
  cmd->add_option("--split", f->split,
                  "layer plan under mpirun: auto, ranges such as 0-8,9-17,18-26,27-35, or a plan file (configs/*.json)");
  cmd->add_option("--wire", f->wire, "activation type between ranks: f32 (bit-identical), bf16, f16, q8_0")
      ->check(CLI::IsMember({"f32", "bf16", "f16", "q8_0"}));
  cmd->add_option("--log-level", f->log_level, "error, warn, info or debug (lines are prefixed [rank R host] under mpirun)")
      ->check(CLI::IsMember({"error", "warn", "info", "debug"}));
  cmd->add_option("--trace", f->trace_file,
                  "write a Chrome trace-event JSON of every rank (compute per layer, send, receive, waiting) to FILE");
  cmd->add_option("--stage-timeout", f->stage_timeout,
                  "under mpirun: seconds rank 0 waits for a batch before it declares a stage stuck and aborts the job")
      ->check(CLI::Range(0.1, 1e6));
  cmd->add_flag("--no-mmap", f->no_mmap,
                "copy every matrix of each rank's slice into huge-page memory instead of reading the mapped file; "
                "Q4_K / Q6_K / Q8_0 matrices are rebuilt there in the kernels' interleaved layout in any case, so this "
                "moves only the others");
  cmd->add_flag("--coordinator-only", f->coordinator_only, "under mpirun: rank 0 only coordinates; stages run on ranks 1..N-1");
}

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot open '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The prompt of -p TEXT, or of -f FILE when given.
Result<std::string> PromptText(const std::string& prompt, const std::string& prompt_file) {
  if (prompt_file.empty()) return prompt;
  return ReadFile(prompt_file);
}

std::string HostName() {
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  return host;
}

// What every command needs: the model, its tokenizer, a pipeline.
struct Session {
  std::unique_ptr<ModelFiles> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<Pipeline> pipeline;
};

Result<Session> OpenSession(const CommonFlags& f) {
  Session s;
  STRATA_ASSIGN_OR_RETURN(s.model, ModelFiles::Open(f.model));
  STRATA_ASSIGN_OR_RETURN(VocabSpec vocab, s.model->LoadVocab());
  STRATA_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::Create(std::move(vocab)));
  s.tokenizer = std::make_unique<Tokenizer>(std::move(tok));
  if (s.tokenizer->vocab_size() > s.model->config().vocab)
    return DataLoss("model '" + f.model + "': the tokenizer has " + std::to_string(s.tokenizer->vocab_size()) +
                    " tokens but the embedding only " + std::to_string(s.model->config().vocab) + " rows");
  s.pool = std::make_unique<ThreadPool>(f.threads > 0 ? f.threads : ThreadPool::AvailableCores());
  if (g_transport != nullptr) {
    MpiPipelineOptions opts;
    opts.split = f.split;
    opts.n_ctx = f.ctx;
    STRATA_ASSIGN_OR_RETURN(opts.wire_dtype, ParseWireDType(f.wire));
    opts.coordinator_only = f.coordinator_only;
    opts.stage_timeout_s = f.stage_timeout;
    opts.max_sequences = f.parallel;
    opts.copy_weights = f.no_mmap;
    STRATA_ASSIGN_OR_RETURN(auto mpi, MpiPipeline::Start(*g_transport, *s.model, opts, s.pool.get()));
    s.pipeline = std::move(mpi);
  } else {
    if (f.split != "auto" || f.coordinator_only) {
      // One process is one stage: a plan must still be valid for it.
      STRATA_ASSIGN_OR_RETURN(auto plan, MakeLayerPlan(f.split, 1, CostsOf(*s.model)));
      (void)plan;
      if (f.coordinator_only) return InvalidArgument("--coordinator-only needs mpirun with at least 2 ranks");
    }
    STRATA_ASSIGN_OR_RETURN(auto local, LocalPipeline::Create(*s.model, f.ctx, s.pool.get(), f.parallel, f.no_mmap));
    s.pipeline = std::move(local);
  }
  return s;
}

// With --trace: merges rank 0's events with the workers' (collected at
// shutdown) into one trace-event JSON file and prints a summary per rank.
Status FinishTrace(const std::string& path, Pipeline* pipeline) {
  if (path.empty()) return Status::Ok();
  const std::string host = HostName();
  std::vector<TraceEvent> own = Tracer::Get().Take();
  std::string body;
  AppendTraceJson(own, 0, host, &body);
  std::string summary = "trace: rank 0 (" + host + "): " + TraceSummary(own) + "\n";
  if (auto* mpi = dynamic_cast<MpiPipeline*>(pipeline)) {
    mpi->Shutdown("");
    for (const wire::TraceChunk& c : mpi->TakeTraces()) {
      if (!c.events_json().empty()) body += ",\n" + c.events_json();
      summary += "trace: rank " + std::to_string(c.rank()) + " (" + c.host() + "): " + c.summary() + "\n";
    }
  }
  std::ofstream out(path);
  out << "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n" << body << "\n]}\n";
  if (!out) return IoError("cannot write the trace to '" + path + "'");
  summary += "trace: written to " + path + " (open in https://ui.perfetto.dev or chrome://tracing)";
  Log(LogLevel::kInfo, "%s", summary.c_str());
  return Status::Ok();
}

// Prints the error once (rank 0) and ends the job on every rank: workers
// still waiting for a plan or for work are told to stop with an error.
int Fail(const Status& st, Pipeline* pipeline = nullptr) {
  std::fflush(stdout);
  std::fprintf(stderr, "strata: error: %s\n", st.message().c_str());
  std::fflush(stderr);
  // A stuck rank cannot be shut down by a message: end every rank at once.
  if (st.kind() == ErrorKind::kDeadlineExceeded && g_transport != nullptr) AbortMpi(1);
  if (auto* mpi = dynamic_cast<MpiPipeline*>(pipeline)) {
    mpi->Shutdown(st.message());
  } else if (g_transport != nullptr && pipeline == nullptr) {
    MpiPipeline::StopWorkers(*g_transport, st.message());
  }
  return 1;
}

struct GenerateFlags {
  CommonFlags common;
  std::string prompt, prompt_file;
  int n_predict = 128;
  float temp = 0.8f, top_p = 0.95f, min_p = 0.05f, repeat_penalty = 1.0f;
  int top_k = 40, repeat_last_n = 64;
  uint64_t seed = 0;
  bool ignore_eos = false;
  bool truncate = false;
  // Chat: the prompt is a user turn of the model's chat template.
  bool chat = false;
  std::string system;
  bool think = false, no_think = false, show_thinking = false;
};

GenerateOptions GenerateOptionsOf(const GenerateFlags& f) {
  GenerateOptions opts;
  opts.n_predict = f.n_predict;
  opts.ignore_eos = f.ignore_eos;
  opts.sampling.temperature = f.temp;
  opts.sampling.top_k = f.top_k;
  opts.sampling.top_p = f.top_p;
  opts.sampling.min_p = f.min_p;
  opts.sampling.repeat_penalty = f.repeat_penalty;
  opts.sampling.repeat_last_n = f.repeat_last_n;
  opts.sampling.seed = f.seed;
  return opts;
}

std::optional<bool> ThinkingOf(const GenerateFlags& f) {
  if (f.think) return true;
  if (f.no_think) return false;
  return std::nullopt;  // the template's default
}

// Reasoning text on a terminal is dimmed (SGR 2) so the answer stands out.
void PrintReasoning(const std::string& text, bool tty) {
  if (text.empty()) return;
  if (tty) std::fputs("\x1b[2m", stdout);
  std::fwrite(text.data(), 1, text.size(), stdout);
  if (tty) std::fputs("\x1b[0m", stdout);
  std::fflush(stdout);
}

// Streams answer text, and reasoning when shown; a blank line separates the
// two.
struct ChatPrinter {
  bool show_thinking = false;
  bool tty = false;
  bool reasoning_open = false;
  void Print(const std::string& reasoning, const std::string& answer) {
    if (show_thinking && !reasoning.empty()) {
      PrintReasoning(reasoning, tty);
      reasoning_open = true;
    }
    if (!answer.empty()) {
      if (reasoning_open) std::fputs("\n\n", stdout);
      reasoning_open = false;
      std::fwrite(answer.data(), 1, answer.size(), stdout);
      std::fflush(stdout);
    }
  }
};

int RunGenerate(const GenerateFlags& f) {
  auto prompt_text = PromptText(f.prompt, f.prompt_file);
  if (!prompt_text.ok()) return Fail(prompt_text.status());
  const std::string& prompt = *prompt_text;
  auto session = OpenSession(f.common);
  if (!session.ok()) return Fail(session.status());
  Session& s = *session;
  std::vector<int32_t> ids;
  // Chat: the template's prompt, tokenized as apply_chat_template does (the
  // template writes any BOS itself; special tokens are parsed).
  ThinkingSplitter splitter;
  std::string reasoning, answer;
  ChatPrinter printer{f.show_thinking, isatty(STDOUT_FILENO) != 0};
  if (f.chat) {
    auto tmpl = ChatTemplate::ForModel(*s.model, *s.tokenizer);
    if (!tmpl.ok()) return Fail(tmpl.status(), s.pipeline.get());
    Conversation conv;
    if (!f.system.empty()) conv.messages.push_back({{"role", "system"}, {"content", f.system}});
    conv.messages.push_back({{"role", "user"}, {"content", prompt}});
    ChatOptions co;
    co.enable_thinking = ThinkingOf(f);
    auto text = tmpl->Apply(conv, co);
    if (!text.ok()) return Fail(text.status(), s.pipeline.get());
    ids = s.tokenizer->Encode(*text, false, true);
    splitter = ThinkingSplitter(PromptOpensThinking(*text));
  } else {
    ids = s.tokenizer->Encode(prompt, s.tokenizer->add_bos());
  }
  if (f.truncate && static_cast<int64_t>(ids.size()) >= f.common.ctx) {
    // Keep the end of the prompt, leaving room for the answer.
    const int64_t keep = std::max<int64_t>(1, f.common.ctx - std::min<int64_t>(f.n_predict, f.common.ctx / 2));
    Log(LogLevel::kWarn, "the prompt has %zu tokens; --truncate keeps its last %lld for --ctx %lld", ids.size(),
        static_cast<long long>(keep), static_cast<long long>(f.common.ctx));
    ids.erase(ids.begin(), ids.end() - keep);
  }
  GenerateOptions opts = GenerateOptionsOf(f);
  std::function<void(const std::string&)> stream;
  if (f.chat) {
    stream = [&](const std::string& piece) {
      std::string r, a;
      splitter.Push(piece, &r, &a);
      reasoning += r;
      answer += a;
      if (!f.common.json) printer.Print(r, a);
    };
  } else if (!f.common.json) {
    stream = [](const std::string& piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    };
  }
  auto res = Generate(*s.pipeline, *s.tokenizer, ids, opts, f.common.ctx, stream);
  if (!res.ok()) return Fail(res.status(), s.pipeline.get());
  if (f.chat) {
    std::string r, a;
    splitter.Flush(&r, &a);
    reasoning += r;
    answer += a;
    if (!f.common.json) printer.Print(r, a);
  }
  if (Status st = FinishTrace(f.common.trace_file, s.pipeline.get()); !st.ok()) return Fail(st);
  if (f.common.json) {
    nlohmann::json j;
    j["prompt_ids"] = res->prompt_ids;
    j["ids"] = res->ids;
    j["text"] = f.chat ? answer : res->text;
    if (f.chat) j["reasoning"] = reasoning;
    j["finish_reason"] = res->finish_reason;
    j["timings"] = {
        {"prefill_ms", res->prefill_ms},
        {"prefill_tok_s", res->prefill_ms > 0 ? res->prompt_ids.size() * 1000.0 / res->prefill_ms : 0.0},
        {"decode_ms", res->decode_ms},
        {"decode_tok_s", res->decode_ms > 0 ? res->n_decoded * 1000.0 / res->decode_ms : 0.0},
    };
    std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
  } else {
    std::cout << std::endl;
    Log(LogLevel::kInfo, "prompt %zu tokens in %.1f ms, %d tokens decoded in %.1f ms (%.2f tok/s)",
                 res->prompt_ids.size(), res->prefill_ms, res->n_decoded, res->decode_ms,
                 res->decode_ms > 0 ? res->n_decoded * 1000.0 / res->decode_ms : 0.0);
  }
  return 0;
}

// Set by SIGINT in `strata chat`: stops the answer being generated.
std::atomic<bool> g_interrupted{false};
extern "C" void OnInterrupt(int) { g_interrupted.store(true); }

// Interactive chat on rank 0: one line a turn, the whole history rendered by
// the model's template each turn (each turn is a fresh sequence).
int RunChat(const GenerateFlags& f) {
  auto session = OpenSession(f.common);
  if (!session.ok()) return Fail(session.status());
  Session& s = *session;
  auto tmpl = ChatTemplate::ForModel(*s.model, *s.tokenizer);
  if (!tmpl.ok()) return Fail(tmpl.status(), s.pipeline.get());
  // Ctrl-C stops the answer, not the program; reads restart after it.
  struct sigaction sa {};
  sa.sa_handler = OnInterrupt;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  const bool tty_in = isatty(STDIN_FILENO) != 0, tty_out = isatty(STDOUT_FILENO) != 0;
  std::optional<bool> thinking = ThinkingOf(f);
  Conversation conv;
  auto reset = [&] {
    conv.messages = nlohmann::ordered_json::array();
    if (!f.system.empty()) conv.messages.push_back({{"role", "system"}, {"content", f.system}});
  };
  reset();
  auto note = [&](const std::string& text) {
    std::printf("%s%s%s\n", tty_out ? "\x1b[2m" : "", text.c_str(), tty_out ? "\x1b[0m" : "");
    std::fflush(stdout);
  };
  if (tty_in) note("strata chat: /reset clears the history, /think and /no_think switch reasoning, Ctrl-C stops an answer, Ctrl-D quits");
  uint64_t seq_id = 1;
  std::string line;
  while (true) {
    if (tty_in) {
      std::fputs("> ", stdout);
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line)) break;  // Ctrl-D / end of input
    if (line == "/reset") {
      reset();
      note("(history cleared)");
      continue;
    }
    if (line == "/think" || line == "/no_think") {
      thinking = line == "/think";
      note(*thinking ? "(thinking on)" : "(thinking off)");
      continue;
    }
    if (line.empty()) continue;
    conv.messages.push_back({{"role", "user"}, {"content", line}});
    ChatOptions co;
    co.enable_thinking = thinking;
    auto text = tmpl->Apply(conv, co);
    if (!text.ok()) {
      conv.messages.erase(conv.messages.end() - 1);
      note("error: " + text.status().message());
      continue;
    }
    std::vector<int32_t> ids = s.tokenizer->Encode(*text, false, true);
    if (static_cast<int64_t>(ids.size()) + 1 > f.common.ctx) {
      conv.messages.erase(conv.messages.end() - 1);
      note("error: the conversation has " + std::to_string(ids.size()) + " tokens, more than --ctx " +
           std::to_string(f.common.ctx) + " allows; /reset starts over");
      continue;
    }
    GenerateOptions opts = GenerateOptionsOf(f);
    opts.seq_id = seq_id++;
    g_interrupted.store(false);
    opts.cancel = &g_interrupted;
    ThinkingSplitter splitter(PromptOpensThinking(*text));
    ChatPrinter printer{f.show_thinking, tty_out};
    std::string answer;
    auto stream = [&](const std::string& piece) {
      std::string r, a;
      splitter.Push(piece, &r, &a);
      answer += a;
      printer.Print(r, a);
    };
    auto res = Generate(*s.pipeline, *s.tokenizer, ids, opts, f.common.ctx, stream);
    if (!res.ok()) return Fail(res.status(), s.pipeline.get());
    std::string r, a;
    splitter.Flush(&r, &a);
    answer += a;
    printer.Print(r, a);
    if (res->finish_reason == "cancelled") std::fputs(tty_out ? " \x1b[2m[stopped]\x1b[0m" : " [stopped]", stdout);
    std::fputs("\n", stdout);
    std::fflush(stdout);
    conv.messages.push_back({{"role", "assistant"}, {"content", answer}});
  }
  if (tty_in) std::fputs("\n", stdout);
  std::fflush(stdout);
  if (Status st = FinishTrace(f.common.trace_file, s.pipeline.get()); !st.ok()) return Fail(st);
  return 0;
}

struct PerplexityFlags {
  CommonFlags common;
  std::string text_file;
};

int RunPerplexity(const PerplexityFlags& f) {
  auto text = ReadFile(f.text_file);
  if (!text.ok()) return Fail(text.status());
  auto session = OpenSession(f.common);
  if (!session.ok()) return Fail(session.status());
  Session& s = *session;
  std::vector<int32_t> tokens = s.tokenizer->Encode(*text, s.tokenizer->add_bos());
  auto progress = [](int chunk, int n, double ppl) {
    std::fprintf(stderr, "\rperplexity: chunk %d/%d, ppl %.4f", chunk, n, ppl);
    if (chunk == n) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  };
  auto res = Perplexity(*s.pipeline, tokens, f.common.ctx, s.tokenizer->bos_id(), s.tokenizer->add_bos(), progress);
  if (!res.ok()) return Fail(res.status(), s.pipeline.get());
  if (Status st = FinishTrace(f.common.trace_file, s.pipeline.get()); !st.ok()) return Fail(st);
  if (f.common.json) {
    nlohmann::json j = {{"ppl", res->ppl}, {"chunks", res->chunks}, {"tokens_scored", res->tokens_scored},
                        {"tokens", res->tokens_total}, {"ctx", f.common.ctx}};
    std::cout << j.dump() << std::endl;
  } else {
    std::printf("perplexity %.4f over %d chunks of %lld tokens (%lld tokens scored)\n", res->ppl, res->chunks,
                static_cast<long long>(f.common.ctx), static_cast<long long>(res->tokens_scored));
  }
  return 0;
}

struct DumpFlags {
  CommonFlags common;
  std::string prompt, prompt_file, out_dir, layers;
  std::vector<int32_t> ids;  // --ids: the tokens themselves instead of a prompt
};

// "A-B" or "A" (inclusive); empty: every layer.
Result<LayerRange> ParseLayerRange(const std::string& spec, int n_layers) {
  if (spec.empty()) return LayerRange{0, n_layers - 1};
  int a = -1, b = -1;
  char dash = 0, extra = 0;
  int n = std::sscanf(spec.c_str(), "%d%c%d%c", &a, &dash, &b, &extra);
  if (n == 1) b = a;
  else if (n != 3 || dash != '-') return InvalidArgument("--layers '" + spec + "': expected A-B or A");
  if (a < 0 || b < a || b >= n_layers)
    return InvalidArgument("--layers '" + spec + "': outside the model's " + std::to_string(n_layers) + " layers or reversed");
  return LayerRange{a, b};
}

int RunDump(const DumpFlags& f) {
  std::string prompt;
  if (f.ids.empty()) {
    auto prompt_text = PromptText(f.prompt, f.prompt_file);
    if (!prompt_text.ok()) return Fail(prompt_text.status());
    prompt = *prompt_text;
  }
  if (Status st = MakeDirectories(f.out_dir); !st.ok()) return Fail(st);
  auto session = OpenSession(f.common);
  if (!session.ok()) return Fail(session.status());
  Session& s = *session;
  const ModelConfig& cfg = s.model->config();
  auto layers = ParseLayerRange(f.layers, cfg.n_layers);
  if (!layers.ok()) return Fail(layers.status(), s.pipeline.get());
  // Who computed which layer: the plan (one rank holds everything without MPI).
  nlohmann::json plan = nlohmann::json::array();
  nlohmann::json layer_owner = nlohmann::json::object();
  if (auto* mpi = dynamic_cast<MpiPipeline*>(s.pipeline.get())) {
    if (mpi->local_stage()) mpi->local_stage()->EnableDump(f.out_dir, *layers);
    for (size_t i = 0; i < mpi->plan().stages.size(); ++i) {
      const int rank = mpi->stage_ranks()[i];
      const LayerRange r = mpi->plan().stages[i].layers;
      plan.push_back({{"rank", rank}, {"host", mpi->hosts()[rank]}, {"first_layer", r.first}, {"last_layer", r.last}});
      for (int l = r.first; l <= r.last; ++l) layer_owner[std::to_string(l)] = {{"rank", rank}, {"host", mpi->hosts()[rank]}};
    }
  } else {
    static_cast<LocalPipeline*>(s.pipeline.get())->stage().EnableDump(f.out_dir, *layers);
    plan.push_back({{"rank", 0}, {"host", HostName()}, {"first_layer", 0}, {"last_layer", cfg.n_layers - 1}});
    for (int l = 0; l < cfg.n_layers; ++l) layer_owner[std::to_string(l)] = {{"rank", 0}, {"host", HostName()}};
  }
  std::vector<int32_t> ids = f.ids.empty() ? s.tokenizer->Encode(prompt, s.tokenizer->add_bos()) : f.ids;
  if (ids.empty()) return Fail(InvalidArgument("the prompt is empty"), s.pipeline.get());
  for (int32_t id : ids)
    if (id < 0 || id >= cfg.vocab)
      return Fail(InvalidArgument("--ids: token id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(cfg.vocab)),
                  s.pipeline.get());
  if (static_cast<int64_t>(ids.size()) > f.common.ctx)
    return Fail(InvalidArgument("the prompt has " + std::to_string(ids.size()) + " tokens, more than --ctx " + std::to_string(f.common.ctx)), s.pipeline.get());
  SequenceRequest req;
  req.seq_id = 1;
  req.tokens = ids;
  req.output = SequenceRequest::Output::kLogits;
  req.logits_from = 0;
  auto out = s.pipeline->Forward({req});
  if (!out.ok()) return Fail(out.status(), s.pipeline.get());
  const int64_t n_tok = static_cast<int64_t>(ids.size());
  if (Status st = WriteNpyF32(f.out_dir + "/logits.npy", {n_tok, cfg.vocab}, (*out)[0].logits.data()); !st.ok())
    return Fail(st, s.pipeline.get());
  if (Status st = s.pipeline->Free(1); !st.ok()) return Fail(st, s.pipeline.get());
  nlohmann::json files = {{"embeddings", "embeddings.npy"}, {"final_norm", "final_norm.npy"}, {"logits", "logits.npy"}};
  for (int l = layers->first; l <= layers->last; ++l) {
    char name[32];
    std::snprintf(name, sizeof name, "layer_%03d.npy", l);
    files["layer_" + std::to_string(l)] = name;
  }
  nlohmann::json manifest = {
      {"model", f.common.model}, {"model_fingerprint", s.model->Fingerprint()}, {"architecture", cfg.arch},
      {"prompt_ids", ids}, {"n_tokens", n_tok}, {"n_layers", cfg.n_layers}, {"hidden", cfg.hidden}, {"vocab", cfg.vocab},
      {"dumped_layers", {layers->first, layers->last}}, {"plan", plan}, {"layers", layer_owner}, {"files", files},
      {"dtype", "float32"}, {"wire", f.common.wire}};
  std::ofstream m(f.out_dir + "/manifest.json");
  m << manifest.dump(1) << "\n";
  if (!m) return Fail(IoError("cannot write '" + f.out_dir + "/manifest.json'"), s.pipeline.get());
  if (Status st = FinishTrace(f.common.trace_file, s.pipeline.get()); !st.ok()) return Fail(st);
  if (f.common.json) std::cout << nlohmann::json({{"dir", f.out_dir}, {"tokens", n_tok}, {"layers", {layers->first, layers->last}}}).dump() << std::endl;
  else Log(LogLevel::kInfo, "dumped %lld tokens, layers %d-%d, logits into %s", static_cast<long long>(n_tok), layers->first, layers->last, f.out_dir.c_str());
  return 0;
}


struct TemplateFlags {
  std::string model, template_file, messages_file, bos_token, eos_token;
  bool think = false, no_think = false, no_generation_prompt = false;
  bool has_bos = false, has_eos = false;
};

// Prints the prompt exactly as rendered (no newline added).
int RunTemplate(const TemplateFlags& f) {
  auto text = ReadFile(f.messages_file);
  if (!text.ok()) return Fail(text.status());
  auto conv = ParseConversation(*text);
  if (!conv.ok()) return Fail(conv.status().WithContext("'" + f.messages_file + "'"));
  Result<ChatTemplate> tmpl = NotFound("no template");
  if (!f.template_file.empty()) {
    auto src = ReadFile(f.template_file);
    if (!src.ok()) return Fail(src.status());
    tmpl = ChatTemplate::Create(*src, f.has_bos ? std::optional<std::string>(f.bos_token) : std::nullopt,
                                f.has_eos ? std::optional<std::string>(f.eos_token) : std::nullopt);
    if (!tmpl.ok()) return Fail(tmpl.status().WithContext("'" + f.template_file + "'"));
  } else {
    auto model = ModelFiles::Open(f.model);
    if (!model.ok()) return Fail(model.status());
    auto vocab = (*model)->LoadVocab();
    if (!vocab.ok()) return Fail(vocab.status());
    auto tok = Tokenizer::Create(std::move(vocab).value());
    if (!tok.ok()) return Fail(tok.status());
    tmpl = ChatTemplate::ForModel(**model, *tok);
    if (!tmpl.ok()) return Fail(tmpl.status());
  }
  ChatOptions opts;
  opts.add_generation_prompt = !f.no_generation_prompt;
  if (f.think) opts.enable_thinking = true;
  if (f.no_think) opts.enable_thinking = false;
  auto prompt = tmpl->Apply(*conv, opts);
  if (!prompt.ok()) return Fail(prompt.status());
  std::fwrite(prompt->data(), 1, prompt->size(), stdout);
  std::fflush(stdout);
  return 0;
}

struct ServeFlags {
  CommonFlags common;
  HttpServerOptions http;
  std::string alias;
  int max_queue = 64;
  int inflight = 0;
  int64_t chunk = 0;
  double shutdown_grace = 10;
};

// Set by SIGINT / SIGTERM in `strata serve`: finish, then stop.
std::atomic<int> g_stop_signal{0};
extern "C" void OnStopSignal(int sig) { g_stop_signal.store(sig); }

std::string BaseName(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.find_last_of('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

// The HTTP server on rank 0 over the pipeline. SIGINT / SIGTERM: new
// requests get 503, those running get --shutdown-grace seconds to finish,
// the rest end with an error; then every rank stops.
int RunServe(ServeFlags f) {
  auto session = OpenSession(f.common);
  if (!session.ok()) return Fail(session.status());
  Session& s = *session;
  std::unique_ptr<ChatTemplate> tmpl;
  if (auto t = ChatTemplate::ForModel(*s.model, *s.tokenizer); t.ok()) {
    tmpl = std::make_unique<ChatTemplate>(std::move(*t));
  } else if (t.status().kind() == ErrorKind::kNotFound) {
    Log(LogLevel::kWarn, "%s: /v1/chat/completions will answer 400", t.status().message().c_str());
  } else {
    return Fail(t.status(), s.pipeline.get());
  }
  ServingOptions so;
  so.parallel = f.common.parallel;
  so.max_queue = f.max_queue;
  so.scheduler.inflight = f.inflight;
  so.scheduler.chunk = f.chunk;
  so.scheduler.n_ctx = f.common.ctx;
  so.scheduler.eos_ids = s.model->config().eos_ids;
  f.http.n_ctx = f.common.ctx;
  f.http.model_ids = {f.alias.empty() ? BaseName(f.common.model) : f.alias, f.common.model};
  // Every connection a thread: the running and queued requests, and a few
  // more so that requests past the queue get their 503 at once.
  f.http.http_threads = std::min(1024, f.common.parallel + f.max_queue + 8);
  Status failure;
  {
    ServingLoop loop(*s.pipeline, so);
    HttpServer server(loop, *s.tokenizer, tmpl.get(), s.model->config(), f.http);
    auto port = server.Bind();
    if (!port.ok()) {
      (void)loop.Stop(std::chrono::milliseconds(0), "the server did not start");
      return Fail(port.status(), s.pipeline.get());
    }
    loop.OnFailure([&server](const Status&) { server.Stop(); });
    std::signal(SIGPIPE, SIG_IGN);
    struct sigaction sa {};
    sa.sa_handler = OnStopSignal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    std::atomic<bool> listening_done{false};
    std::thread watcher([&] {
      while (!listening_done.load()) {
        if (int sig = g_stop_signal.load()) {
          const ServingLoop::Counts c = loop.counts();
          Log(LogLevel::kInfo, "%s: shutting down; %zu running and %zu queued requests get %g s to finish",
              sig == SIGINT ? "SIGINT" : "SIGTERM", c.running, c.queued, f.shutdown_grace);
          (void)loop.Stop(std::chrono::milliseconds(static_cast<int64_t>(f.shutdown_grace * 1000)),
                          "the server is shutting down");
          server.Stop();
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    });
    Log(LogLevel::kInfo, "listening on http://%s:%d (model '%s', %d stage(s), %d sequence(s) at once, queue %d, ctx %lld)",
        f.http.host.c_str(), *port, f.http.model_ids[0].c_str(), s.pipeline->n_stages(), f.common.parallel, f.max_queue,
        static_cast<long long>(f.common.ctx));
    server.Listen();
    listening_done.store(true);
    watcher.join();
    failure = loop.Stop(std::chrono::milliseconds(0), "the server stopped");
    const HttpServer::Counters c = server.counters();
    Log(LogLevel::kInfo, "served %llu requests: %llu ok, %llu client errors, %llu server errors, %llu disconnected",
        static_cast<unsigned long long>(c.requests), static_cast<unsigned long long>(c.ok),
        static_cast<unsigned long long>(c.client_errors), static_cast<unsigned long long>(c.server_errors),
        static_cast<unsigned long long>(c.disconnects));
  }
  if (!failure.ok()) return Fail(failure, s.pipeline.get());
  if (Status st = FinishTrace(f.common.trace_file, s.pipeline.get()); !st.ok()) return Fail(st);
  return 0;
}

struct BenchFlags {
  CommonFlags common;
  BenchOptions bench;
};

// The prompt a benchmark draws its tokens from (any text tokenizes to valid
// ids; this keeps runs comparable).
constexpr char kBenchText[] =
    "First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. First Citizen: You are all "
    "resolved rather to die than to famish? All: Resolved. resolved. First Citizen: First, you know Caius Marcius "
    "is chief enemy to the people.";

nlohmann::json SpreadJson(const Spread& s) { return {{"min", s.min}, {"median", s.median}, {"max", s.max}}; }

int RunBench(const BenchFlags& f) {
  auto session = OpenSession(f.common);
  if (!session.ok()) return Fail(session.status());
  Session& s = *session;
  BenchOptions opts = f.bench;
  opts.parallel = f.common.parallel;
  opts.n_ctx = f.common.ctx;
  std::vector<int32_t> prompt = s.tokenizer->Encode(kBenchText, s.tokenizer->add_bos());
  auto res = RunBenchmark(*s.pipeline, prompt, opts);
  if (!res.ok()) return Fail(res.status(), s.pipeline.get());
  const int n_stages = s.pipeline->n_stages();
  const int inflight = opts.inflight > 0 ? opts.inflight : n_stages;
  const int64_t chunk = ChunkTokens(opts.chunk, opts.prompt_tokens, n_stages);

  std::vector<double> pp, ttft, tg, tg_seq;
  for (const BenchTest& t : res->prefill) {
    pp.push_back(t.tokens / t.wall_s);
    ttft.push_back(t.first_token_ms);
  }
  for (const BenchTest& t : res->decode) {
    tg.push_back(t.tokens / t.wall_s);
    tg_seq.push_back(t.tokens / t.wall_s / opts.parallel);
  }
  // Per stage over all repetitions: busy share of the wall time, bytes sent
  // per token, memory.
  auto busy = [&](const std::vector<BenchTest>& tests, size_t stage) {
    double b = 0, w = 0;
    for (const BenchTest& t : tests) {
      if (stage < t.delta.size()) b += t.delta[stage].busy_s;
      w += t.wall_s;
    }
    return w > 0 ? 100.0 * b / w : 0.0;
  };
  auto bytes_per_token = [&](const std::vector<BenchTest>& tests, size_t stage) {
    double b = 0, n = 0;
    for (const BenchTest& t : tests) {
      if (stage < t.delta.size()) b += static_cast<double>(t.delta[stage].bytes_sent);
      n += static_cast<double>(t.tokens);
    }
    return n > 0 ? b / n : 0.0;
  };
  nlohmann::json stages = nlohmann::json::array();
  double pp_busy_sum = 0, tg_busy_sum = 0;
  for (size_t i = 0; i < res->final_stats.size(); ++i) {
    const StageStats& st = res->final_stats[i];
    const double pp_busy = busy(res->prefill, i), tg_busy = busy(res->decode, i);
    pp_busy_sum += pp_busy;
    tg_busy_sum += tg_busy;
    const double budget = static_cast<double>(st.weight_bytes + st.peak_kv_bytes);
    stages.push_back({{"stage", i}, {"rank", st.rank}, {"host", st.host.empty() ? HostName() : st.host},
                      {"layers", {st.first_layer, st.last_layer}},
                      {"prefill_busy_pct", pp_busy}, {"decode_busy_pct", tg_busy},
                      {"prefill_bytes_sent_per_token", bytes_per_token(res->prefill, i)},
                      {"decode_bytes_sent_per_token", bytes_per_token(res->decode, i)},
                      {"weight_bytes", st.weight_bytes}, {"kv_bytes_peak", st.peak_kv_bytes}, {"rss_bytes", st.rss_bytes},
                      {"rss_over_weights_kv_pct", budget > 0 ? 100.0 * (static_cast<double>(st.rss_bytes) / budget - 1.0) : 0.0}});
  }
  const double n = std::max<size_t>(1, res->final_stats.size());
  nlohmann::json j = {
      {"model", f.common.model}, {"stages", n_stages}, {"threads", s.pool->size()}, {"isa", ActiveIsa()},
      {"prompt_tokens", opts.prompt_tokens}, {"gen_tokens", opts.gen_tokens}, {"parallel", opts.parallel},
      {"inflight", inflight}, {"prefill_chunk", chunk}, {"reps", opts.reps}, {"wire", f.common.wire},
      {"prefill_tok_s", SpreadJson(SpreadOf(pp))}, {"ttft_ms", SpreadJson(SpreadOf(ttft))},
      {"decode_tok_s", SpreadJson(SpreadOf(tg))}, {"decode_tok_s_per_seq", SpreadJson(SpreadOf(tg_seq))},
      {"prefill_bubble_pct", 100.0 - pp_busy_sum / n}, {"decode_bubble_pct", 100.0 - tg_busy_sum / n},
      {"per_stage", stages}};
  if (Status st = FinishTrace(f.common.trace_file, s.pipeline.get()); !st.ok()) return Fail(st);
  if (f.common.json) {
    std::cout << j.dump() << std::endl;
    return 0;
  }
  auto fmt = [](const nlohmann::json& sp) {
    char b[96];
    std::snprintf(b, sizeof b, "%9.2f %9.2f %9.2f", sp["min"].get<double>(), sp["median"].get<double>(), sp["max"].get<double>());
    return std::string(b);
  };
  std::printf("strata bench: %s\n  %d stage(s), %d thread(s) per rank, %s kernels, wire %s; P=%lld G=%d parallel=%d inflight=%d chunk=%lld, %d reps\n",
              f.common.model.c_str(), n_stages, s.pool->size(), ActiveIsa(), f.common.wire.c_str(),
              static_cast<long long>(opts.prompt_tokens), opts.gen_tokens, opts.parallel, inflight,
              static_cast<long long>(chunk), opts.reps);
  std::printf("  %-26s %9s %9s %9s\n", "", "min", "median", "max");
  std::printf("  %-26s %s\n", "prefill tok/s", fmt(j["prefill_tok_s"]).c_str());
  std::printf("  %-26s %s\n", "time to first token ms", fmt(j["ttft_ms"]).c_str());
  std::printf("  %-26s %s\n", "decode tok/s (aggregate)", fmt(j["decode_tok_s"]).c_str());
  std::printf("  %-26s %s\n", "decode tok/s per sequence", fmt(j["decode_tok_s_per_seq"]).c_str());
  std::printf("  bubble: prefill %.1f%%, decode %.1f%%\n", j["prefill_bubble_pct"].get<double>(), j["decode_bubble_pct"].get<double>());
  for (const auto& st : stages)
    std::printf("  rank %d (%s) layers %d-%d: busy prefill %.1f%% decode %.1f%%, sends %.0f B/token (decode), "
                "RSS %.1f MiB = weights %.1f MiB + KV peak %.1f MiB %+.1f%%\n",
                st["rank"].get<int>(), st["host"].get<std::string>().c_str(), st["layers"][0].get<int>(), st["layers"][1].get<int>(),
                st["prefill_busy_pct"].get<double>(), st["decode_busy_pct"].get<double>(),
                st["decode_bytes_sent_per_token"].get<double>(), st["rss_bytes"].get<double>() / 1048576.0,
                st["weight_bytes"].get<double>() / 1048576.0, st["kv_bytes_peak"].get<double>() / 1048576.0,
                st["rss_over_weights_kv_pct"].get<double>());
  return 0;
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

int RunCommand(int argc, char** argv, int rank);

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  using namespace strata;
  std::unique_ptr<Transport> transport;
  if (LaunchedByMpi()) {
    auto t = InitMpiTransport(&argc, &argv);
    if (!t.ok()) {
      std::fprintf(stderr, "strata: error: %s\n", t.status().message().c_str());
      return 1;
    }
    transport = std::move(t).value();
    if (transport->size() > 1) g_transport = transport.get();
    // Trace clocks of all ranks start at this common instant.
    transport->Barrier();
    Tracer::Get().SetOrigin();
  }
  int rc = RunCommand(argc, argv, transport ? transport->rank() : 0);
  if (transport) {
    transport->Flush();
    FinalizeMpi();
  }
  return rc;
}

namespace strata {
namespace {

// Sampling and chat flags shared by generate and chat.
void AddGenerateFlags(CLI::App* g, GenerateFlags* f) {
  g->add_option("-n,--n-predict", f->n_predict, "tokens to generate (per answer in chat)")->check(CLI::Range(1, 1 << 24));
  g->add_option("--temp", f->temp, "temperature (0: greedy)")->check(CLI::Range(0.0f, 100.0f));
  g->add_option("--top-k", f->top_k, "top-k (0: off)")->check(CLI::Range(0, 1 << 24));
  g->add_option("--top-p", f->top_p, "top-p (1: off)")->check(CLI::Range(0.0f, 1.0f));
  g->add_option("--min-p", f->min_p, "min-p (0: off)")->check(CLI::Range(0.0f, 1.0f));
  g->add_option("--repeat-penalty", f->repeat_penalty, "repetition penalty (1: off)")->check(CLI::Range(0.0f, 100.0f));
  g->add_option("--repeat-last-n", f->repeat_last_n, "tokens the penalty looks back over")->check(CLI::Range(0, 1 << 20));
  g->add_option("--seed", f->seed, "sampling seed");
  g->add_flag("--ignore-eos", f->ignore_eos, "do not stop at the model's end-of-sequence ids");
  g->add_option("--system", f->system, "chat: a system message before the user's");
  auto* think = g->add_flag("--think", f->think, "chat: enable_thinking=true");
  auto* no_think = g->add_flag("--no-think", f->no_think, "chat: enable_thinking=false (default: the template's own)");
  think->excludes(no_think);
  g->add_flag("--show-thinking", f->show_thinking, "chat: print the reasoning too (dimmed on a terminal)");
}

int RunCommand(int argc, char** argv, int rank) {
  CLI::App app{"strata: run decoder-only language models as a pipeline of MPI ranks"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "strata 0.1.0");

  GenerateFlags gen;
  CLI::App* g = app.add_subcommand("generate", "generate text after a prompt");
  AddCommon(g, &gen.common, false);
  auto* prompt_opt = g->add_option("-p,--prompt", gen.prompt, "prompt text");
  auto* file_opt = g->add_option("-f,--file", gen.prompt_file, "read the prompt from a file");
  prompt_opt->excludes(file_opt);
  AddGenerateFlags(g, &gen);
  g->add_flag("--truncate", gen.truncate, "keep the end of a prompt longer than --ctx instead of refusing it");
  g->add_flag("--chat", gen.chat, "the prompt is a user turn of the model's chat template (answer and reasoning apart)");

  GenerateFlags cht;
  cht.n_predict = 512;
  CLI::App* ch = app.add_subcommand("chat", "chat with the model (rank 0 reads stdin): /reset, /think, /no_think, Ctrl-C, Ctrl-D");
  AddCommon(ch, &cht.common, false);
  AddGenerateFlags(ch, &cht);

  PerplexityFlags ppl;
  CLI::App* p = app.add_subcommand("perplexity", "perplexity of a text file (llama-perplexity's method)");
  AddCommon(p, &ppl.common, true);
  p->add_option("-f,--file", ppl.text_file, "text file")->required();

  DumpFlags dmp;
  CLI::App* d = app.add_subcommand("dump", "write the residual stream after the embedding and every layer, and the logits, as .npy");
  AddCommon(d, &dmp.common, false);
  auto* dp = d->add_option("-p,--prompt", dmp.prompt, "prompt text");
  auto* df = d->add_option("-f,--file", dmp.prompt_file, "read the prompt from a file");
  auto* di = d->add_option("--ids", dmp.ids, "the token ids themselves, A,B,C (instead of a prompt)")->delimiter(',');
  dp->excludes(df);
  di->excludes(dp)->excludes(df);
  d->add_option("-o,--out", dmp.out_dir, "output directory (each rank writes the layers it owns)")->required();
  d->add_option("--layers", dmp.layers, "only these layers, A-B (default: all)");

  BenchFlags bch;
  CLI::App* b = app.add_subcommand("bench", "measure prefill and decode speed, per-stage busy % and bubble, memory per rank");
  AddCommon(b, &bch.common, false);
  b->add_option("--prompt-tokens", bch.bench.prompt_tokens, "prompt tokens per sequence in the prefill test")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  b->add_option("--gen-tokens", bch.bench.gen_tokens, "tokens generated per sequence in the decode test")->check(CLI::Range(1, 1 << 20));
  b->add_option("--parallel", bch.common.parallel, "sequences at once")->check(CLI::Range(1, 1024));
  b->add_option("--reps", bch.bench.reps, "repetitions (min / median / max reported)")->check(CLI::Range(1, 1000));
  b->add_option("--inflight", bch.bench.inflight, "micro-batches in flight (default: one per stage)")->check(CLI::Range(1, 1024));
  b->add_option("--chunk", bch.bench.chunk, "prefill chunk in tokens (default: auto)")->check(CLI::Range(int64_t{1}, int64_t{1} << 20));

  ServeFlags srv;
  CLI::App* sv = app.add_subcommand("serve", "OpenAI-compatible HTTP server: /v1/chat/completions, /v1/completions, /v1/models, /health");
  AddCommon(sv, &srv.common, false);
  sv->add_option("--host", srv.http.host, "address to listen on");
  sv->add_option("--port", srv.http.port, "port to listen on (0: any free port, printed at start)")->check(CLI::Range(0, 65535));
  sv->add_option("--parallel", srv.common.parallel, "sequences computed at once (each holds a KV cache on every stage)")
      ->check(CLI::Range(1, 1024));
  sv->add_option("--max-queue", srv.max_queue, "requests waiting for a free sequence; beyond, 503 with Retry-After")
      ->check(CLI::Range(0, 100000));
  sv->add_option("--max-tokens", srv.http.max_tokens, "the most tokens a request may generate (default: the context)")
      ->check(CLI::Range(1, 1 << 30));
  sv->add_option("--max-body", srv.http.max_body_bytes, "largest request body in bytes (413 beyond)")
      ->check(CLI::Range(size_t{1024}, size_t{1} << 32));
  sv->add_option("--request-timeout", srv.http.request_timeout_s, "seconds a request may take, queue included (504 beyond)")
      ->check(CLI::Range(0.1, 1e7));
  sv->add_option("--shutdown-grace", srv.shutdown_grace, "on SIGINT / SIGTERM: seconds running requests get to finish")
      ->check(CLI::Range(0.0, 1e6));
  sv->add_option("--alias", srv.alias, "the model's name in the API (default: the model file's name)");
  sv->add_option("--inflight", srv.inflight, "micro-batches in flight (default: one per stage)")->check(CLI::Range(1, 1024));
  sv->add_option("--chunk", srv.chunk, "prefill chunk in tokens (default: auto)")->check(CLI::Range(int64_t{1}, int64_t{1} << 20));

  TemplateFlags tpl;
  CLI::App* tp = app.add_subcommand("template", "print the chat template applied to a conversation (the prompt, exactly)");
  auto* tm = tp->add_option("-m,--model", tpl.model, "model whose chat template to use: a .gguf file or an HF model directory");
  auto* tt = tp->add_option("--template", tpl.template_file, "a Jinja chat template file instead of the model's");
  tm->excludes(tt);
  tp->add_option("--messages", tpl.messages_file,
                 "JSON file: an OpenAI-style list of messages, or {\"messages\": [...], \"tools\": [...]}")->required();
  auto* tthink = tp->add_flag("--think", tpl.think, "enable_thinking=true");
  auto* tnothink = tp->add_flag("--no-think", tpl.no_think, "enable_thinking=false (default: the template's own)");
  tthink->excludes(tnothink);
  tp->add_flag("--no-generation-prompt", tpl.no_generation_prompt, "add_generation_prompt=false");
  auto* tbos = tp->add_option("--bos-token", tpl.bos_token, "with --template: the bos_token text");
  auto* teos = tp->add_option("--eos-token", tpl.eos_token, "with --template: the eos_token text");

  CLI::App* ins = AddInspectCommand(app);
  CLI::App* dif = AddDiffCommand(app);
  CLI::App* mk = AddMakeModelCommand(app);
  ConvertCommands conv = AddConvertCommands(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Every rank parses the same flags; only rank 0 speaks.
    if (rank != 0) return e.get_exit_code() == 0 ? 0 : 2;
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  const std::pair<CLI::App*, CommonFlags*> runs[] = {{g, &gen.common}, {ch, &cht.common}, {p, &ppl.common}, {d, &dmp.common}, {b, &bch.common}, {sv, &srv.common}};
  const CommonFlags* common = nullptr;
  for (const auto& [sub, c] : runs) {
    if (!sub->parsed()) continue;
    common = c;
    if (!c->trace_file.empty()) Tracer::Get().Enable();
    SetLogLevel(*ParseLogLevel(c->log_level));
  }
  if (g_transport != nullptr) SetLogRank(rank, g_transport->host());
  if (ins->parsed()) return rank == 0 ? RunInspect() : 0;  // a dry run: rank 0 alone answers
  if (tp->parsed()) {
    if (rank != 0) return 0;
    if (tpl.model.empty() && tpl.template_file.empty()) {
      std::fprintf(stderr, "strata template: give a model with -m MODEL or a template with --template FILE\n");
      return 2;
    }
    tpl.has_bos = tbos->count() > 0;
    tpl.has_eos = teos->count() > 0;
    return RunTemplate(tpl);
  }
  if (dif->parsed()) return rank == 0 ? RunDiff() : 0;
  if (mk->parsed()) return rank == 0 ? RunMakeModel() : 0;
  if (conv.convert->parsed() || conv.quantize->parsed()) return rank == 0 ? RunConvertCommand(conv) : 0;
  if (g_transport != nullptr && rank != 0 && common != nullptr) {
    const CommonFlags& c = *common;
    WorkerOptions wo{c.model, c.threads, "", {0, -1}, !c.trace_file.empty(), c.no_mmap};
    if (d->parsed()) {
      wo.dump_dir = dmp.out_dir;
      auto m = ModelFiles::Open(c.model);
      if (m.ok()) {
        auto r = ParseLayerRange(dmp.layers, (*m)->config().n_layers);
        if (r.ok()) wo.dump_layers = *r;
      }
    }
    return RunWorker(*g_transport, wo);
  }
  if (g->parsed()) {
    if (gen.prompt.empty() && gen.prompt_file.empty()) {
      std::fprintf(stderr, "strata generate: give a prompt with -p TEXT or -f FILE\n");
      if (g_transport != nullptr) MpiPipeline::StopWorkers(*g_transport, "no prompt");
      return 2;
    }
    if (!gen.chat && (!gen.system.empty() || gen.think || gen.no_think || gen.show_thinking)) {
      std::fprintf(stderr, "strata generate: --system, --think, --no-think and --show-thinking need --chat\n");
      if (g_transport != nullptr) MpiPipeline::StopWorkers(*g_transport, "bad flags");
      return 2;
    }
    return RunGenerate(gen);
  }
  if (ch->parsed()) return RunChat(cht);
  if (p->parsed()) return RunPerplexity(ppl);
  if (b->parsed()) return RunBench(bch);
  if (sv->parsed()) return RunServe(srv);
  if (d->parsed()) {
    if (dmp.prompt.empty() && dmp.prompt_file.empty() && dmp.ids.empty()) {
      std::fprintf(stderr, "strata dump: give a prompt with -p TEXT or -f FILE, or token ids with --ids\n");
      if (g_transport != nullptr) MpiPipeline::StopWorkers(*g_transport, "no prompt");
      return 2;
    }
    return RunDump(dmp);
  }
  return 2;
}

}  // namespace
}  // namespace strata
