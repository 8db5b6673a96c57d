// `strata serve --supervise`: the front process's pipeline. The front runs
// outside the MPI job (HTTP server, tokenizer, ServingLoop and Scheduler, so
// every sequence's prompt, generated ids and sampling state live here) and
// starts the compute job (`mpirun ... strata serve --front HOST:PORT`) as its
// child, in a process group of its own. SupervisedPipeline forwards batches to
// the job's rank 0 over the link of job_link.h and survives the job's loss:
//
//   detection   the link closes, the job exits, the job reports a failure
//               (its stage deadline, --stage-timeout, names a stopped rank),
//               or no reply comes within --stage-timeout + 10 s (rank 0 stopped)
//   recovery    what is left of the job is killed (group and descendants; the
//               front is their subreaper, so nothing is orphaned), the job is
//               started again, every live sequence's cache is rebuilt by
//               prefilling the tokens the lost job had taken in, and the
//               batches that had not come back are sent again, unchanged
//               (same positions, sampling step and recent ids).
//
// Rebuilding a cache by prefill gives the same numbers as the decode steps
// that built it (every kernel's result for a token depends on that token's
// rows alone; the pipeline is bit-identical for any split and chunk), and the
// sampler draws from (seed, step), so the answers equal a run that never
// failed; the Scheduler above never notices, only its Wait takes longer.
//
// A host blamed for K failures within a window is left out of the next
// launches (a new hostfile; the job plans its layers over the hosts left).
// When no host is left, Submit and Wait return Unavailable (the server
// answers 503) and the next launch, with every host again, is tried after a
// backoff (1 s, doubling, at most 60 s) by the next batch submitted.
//
//   SuperviseOptions so = ...;       // np, hostfile, mpirun args, the job's strata args
//   STRATA_ASSIGN_OR_RETURN(auto p, SupervisedPipeline::Create(model.config(), so));
//   ServingLoop loop(*p, {.survive_pipeline_failure = true, ...});
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "coordinator/job_link.h"
#include "coordinator/pipeline.h"

namespace strata {

struct SuperviseOptions {
  int np = 0;                            // ranks of the job; 0: every slot of the hostfile
  std::string hostfile;                  // empty: every rank on this machine ("localhost")
  std::string mpirun = "mpirun";
  std::vector<std::string> mpirun_args;  // before -np (e.g. --oversubscribe, --mca ...)
  std::string binary;                    // the strata binary the ranks run
  std::vector<std::string> job_args;     // its arguments (serve ...), --front added here
  std::string front_address = "127.0.0.1";  // where the job's rank 0 reaches the front
  int max_host_failures = 3;             // K failures of a host ...
  double failure_window_s = 300;         // ... within this window exclude it
  double job_start_timeout_s = 300;      // from the launch to the job's hello
  double reply_timeout_s = 310;          // a batch with no reply for this long: the job is stuck
  double teardown_wait_s = 3;            // a failed job gets this long to exit (mpirun names the rank)
  double max_backoff_s = 60;
  std::string work_dir = "/tmp";         // where the job's hostfiles are written
};

// One line of an Open MPI hostfile: "name [slots=N]".
struct HostEntry {
  std::string name;
  int slots = 1;
};

// Hostfile text -> hosts (comments and blank lines skipped). `path` names the
// file in errors; a host twice, a bad slots value or no host are errors.
Result<std::vector<HostEntry>> ParseHostfile(const std::string& text, const std::string& path);
std::string HostfileText(const std::vector<HostEntry>& hosts);

// The host that rank `rank` runs on when mpirun fills each host's slots in
// order (its default mapping); the last host for a rank past every slot.
size_t HostOfRank(const std::vector<HostEntry>& hosts, int rank);

// The rank a job failure names: in the job's error ("... rank 1 (host) ...")
// or mpirun's report ("process rank 1 with PID ... exited"); -1 when neither does.
int BlamedRank(const std::string& error, const std::vector<std::string>& job_lines);

// The index in `hosts` of the host a failure is blamed on: one that ssh could
// not reach at the launch ("ssh: Could not resolve hostname NAME", "ssh:
// connect to host NAME port 22: ..."), else the host of the rank it names,
// else rank 0's (the first host).
size_t BlamedHost(const std::string& error, const std::vector<std::string>& job_lines, const std::vector<HostEntry>& hosts);

// Failures per host in a sliding window; K of them exclude the host.
class HostHealth {
 public:
  HostHealth(int max_failures, double window_s) : max_failures_(max_failures), window_s_(window_s) {}
  // Records a failure of `host` at `now_s`; true when the host is excluded by it.
  bool RecordFailure(const std::string& host, double now_s);
  bool excluded(const std::string& host) const { return excluded_.count(host) > 0; }
  std::vector<std::string> excluded_hosts() const;
  // Failures of `host` still within the window at `now_s`.
  int failures(const std::string& host, double now_s) const;
  // Every host may run again (after a backoff with none left).
  void Forgive();

 private:
  int max_failures_;
  double window_s_;
  std::map<std::string, std::deque<double>> failures_;
  std::map<std::string, bool> excluded_;
};

// What /health and the log say about the supervised job.
struct SupervisorState {
  std::string state = "starting";  // starting, up, lost (noticed at the next request), recovering, down, stopped
  uint64_t launches = 0;
  uint64_t recoveries = 0;
  std::vector<std::string> hosts;           // the hosts of the current (or next) launch
  std::vector<std::string> excluded_hosts;
  std::string last_failure;
  double last_detect_s = 0;    // last recovery: from detection to the job torn down
  double last_relaunch_s = 0;  //   launch until the job's hello (MPI start, model load)
  double last_reprefill_s = 0; //   rebuilding the caches
  int last_sequences = 0;      //   sequences resumed
  int64_t last_tokens = 0;     //   tokens prefilled again
  double retry_in_s = 0;       // down: the next attempt
};

class SupervisedPipeline : public Pipeline {
 public:
  // Opens the front's socket and starts the first job (waits for its hello;
  // a first job that cannot start leaves the pipeline down, retrying).
  static Result<std::unique_ptr<SupervisedPipeline>> Create(const ModelConfig& config, const SuperviseOptions& opts);
  ~SupervisedPipeline() override;

  const ModelConfig& config() const override { return config_; }
  Result<uint64_t> Submit(const std::vector<SequenceRequest>& batch) override;
  Result<BatchOutput> Wait() override;
  int in_flight() const override { return static_cast<int>(pending_.size()); }
  Status Free(uint64_t seq_id) override;
  int n_stages() const override { return n_stages_; }
  // The job's stages' counters (they start again from zero at a relaunch).
  Result<std::vector<StageStats>> Stats() override;
  std::vector<StagePlacement> Placement() const override;
  void EnableDump(const std::string&, LayerRange) override {}
  // Ends the job (SHUTDOWN, then a kill after 5 s). Called again, nothing.
  void Shutdown(const std::string& error) override;

  // From any thread: waits (a launch, a reply) give up `after` from now, so a
  // server shutting down is never held by a job that does not come back.
  void AbortAfter(std::chrono::milliseconds after);
  SupervisorState state() const;

 private:
  struct Job;  // the running mpirun: process, output, link
  SupervisedPipeline(const ModelConfig& config, const SuperviseOptions& opts);
  Status Listen();
  // Starts a job on the usable hosts and waits for its hello.
  Status Launch();
  // Kills what is left of the job and records the failure against a host.
  void TearDown(const std::string& cause, bool wait_for_exit);
  // After a failure: tear down, relaunch, rebuild the caches, resend the
  // batches in flight. Not OK when nothing can run (every request then ends).
  Status Recover(std::string cause, bool wait_for_exit);
  Status Replay(int* sequences, int64_t* tokens);
  Status SendBatch(uint64_t id, const std::vector<SequenceRequest>& batch);
  // The next reply, checked; a failure of the job as a status of kind kIo.
  Result<wire::JobReply> ReadReply(bool* stuck);
  Status GiveUp(const std::string& why);  // pending and histories dropped, state down
  bool Aborted() const;
  std::vector<HostEntry> UsableHosts() const;
  double Now() const;
  void SetState(const std::string& s);

  ModelConfig config_;
  SuperviseOptions opts_;
  std::vector<HostEntry> hosts_;  // the hostfile's (or localhost with np slots)
  HostHealth health_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::unique_ptr<Job> job_;
  std::vector<HostEntry> job_hosts_;  // the hosts the current job runs on
  int n_stages_ = 1;
  std::vector<StagePlacement> placement_;
  uint64_t launch_ = 0;
  bool broken_ = true;  // no usable link: the next Wait recovers
  std::string broken_cause_ = "the job has not started";
  bool wait_for_exit_ = true;
  struct PendingBatch {
    uint64_t id;
    std::vector<SequenceRequest> batch;
  };
  std::deque<PendingBatch> pending_;
  std::map<uint64_t, std::vector<int32_t>> history_;  // per live sequence: the tokens in its cache
  uint64_t next_batch_id_ = 1;
  double backoff_s_ = 1;
  std::chrono::steady_clock::time_point next_attempt_{};
  std::chrono::steady_clock::time_point recovered_at_{};  // last detection, until its first token
  bool first_token_pending_ = false;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::atomic<int64_t> abort_at_ns_{INT64_MAX};
  std::atomic<bool> job_output_closed_{false};  // the current job's processes are all gone
  bool shut_down_ = false;
  mutable std::mutex mu_;  // state_
  SupervisorState state_;
};

}  // namespace strata
