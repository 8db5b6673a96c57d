// The supervised pipeline of supervisor.h: the front process's side of
// `strata serve --supervise` (never a rank): the job's process, its link,
// failure detection, relaunch and replay, host exclusion.
#include "coordinator/supervisor.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <dirent.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "common/log.h"
#include "worker/stage_server.h"
#include "worker/wire_codec.h"

namespace strata {
namespace {

using Clock = std::chrono::steady_clock;

Clock::duration ToDuration(double s) { return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s)); }

double SecondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string Trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t\r") - a + 1);
}

// Every process below this one (by parent links in /proc).
std::vector<pid_t> Descendants() {
  std::map<pid_t, pid_t> parent;
  if (DIR* d = ::opendir("/proc")) {
    while (dirent* e = ::readdir(d)) {
      if (!std::isdigit(static_cast<unsigned char>(e->d_name[0]))) continue;
      std::ifstream in(std::string("/proc/") + e->d_name + "/stat");
      std::string line;
      if (!std::getline(in, line)) continue;
      const size_t close = line.rfind(')');
      if (close == std::string::npos) continue;
      std::istringstream rest(line.substr(close + 2));
      char state;
      pid_t ppid;
      if (rest >> state >> ppid) parent[static_cast<pid_t>(std::atoi(e->d_name))] = ppid;
    }
    ::closedir(d);
  }
  std::set<pid_t> below = {::getpid()};
  bool grew = true;
  while (grew) {
    grew = false;
    for (const auto& [pid, pp] : parent)
      if (below.count(pp) && !below.count(pid)) grew = below.insert(pid).second || grew;
  }
  below.erase(::getpid());
  return {below.begin(), below.end()};
}

}  // namespace

// ---------------------------------------------------------------------------
// Hosts
// ---------------------------------------------------------------------------

Result<std::vector<HostEntry>> ParseHostfile(const std::string& text, const std::string& path) {
  std::vector<HostEntry> hosts;
  std::istringstream in(text);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (const size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream words(Trim(line));
    HostEntry h;
    if (!(words >> h.name)) continue;
    const std::string where = "hostfile '" + path + "' line " + std::to_string(n);
    for (std::string w; words >> w;) {
      if (w.rfind("slots=", 0) == 0) {
        const std::string v = w.substr(6);
        if (v.empty() || v.size() > 6 || v.find_first_not_of("0123456789") != std::string::npos || std::stoi(v) < 1)
          return InvalidArgument(where + ": slots must be a number from 1 to 999999, not '" + v + "'");
        h.slots = std::stoi(v);
      } else if (w.rfind("max_slots=", 0) != 0) {
        return InvalidArgument(where + ": '" + w + "' is not slots=N");
      }
    }
    for (const HostEntry& o : hosts)
      if (o.name == h.name) return InvalidArgument(where + ": host '" + h.name + "' is listed twice");
    hosts.push_back(h);
  }
  if (hosts.empty()) return InvalidArgument("hostfile '" + path + "' names no host");
  return hosts;
}

std::string HostfileText(const std::vector<HostEntry>& hosts) {
  std::string s;
  for (const HostEntry& h : hosts) s += h.name + " slots=" + std::to_string(h.slots) + "\n";
  return s;
}

size_t HostOfRank(const std::vector<HostEntry>& hosts, int rank) {
  int first = 0;
  for (size_t i = 0; i < hosts.size(); ++i) {
    if (rank < first + hosts[i].slots) return i;
    first += hosts[i].slots;
  }
  return hosts.empty() ? 0 : hosts.size() - 1;
}

int BlamedRank(const std::string& error, const std::vector<std::string>& job_lines) {
  // Rank 0's stage deadline names the stages that stopped answering
  // ("not answering: stage 1 on rank 1 (host) ..."); mpirun names a rank that
  // died ("process rank 1 with PID 123 on node host exited on signal 9").
  static const std::regex kStage(R"(on rank (\d+) \()");
  static const std::regex kMpirun(R"(process rank (\d+) with PID)");
  std::smatch m;
  if (std::regex_search(error, m, kStage)) return std::stoi(m[1]);
  for (auto it = job_lines.rbegin(); it != job_lines.rend(); ++it)
    if (std::regex_search(*it, m, kMpirun)) return std::stoi(m[1]);
  return -1;
}

size_t BlamedHost(const std::string& error, const std::vector<std::string>& job_lines, const std::vector<HostEntry>& hosts) {
  static const std::regex kSsh(R"(ssh: (?:Could not resolve hostname|connect to host) ([^ :]+))");
  std::smatch m;
  for (const std::string& line : job_lines)
    if (std::regex_search(line, m, kSsh))
      for (size_t i = 0; i < hosts.size(); ++i)
        if (hosts[i].name == m[1].str()) return i;
  return HostOfRank(hosts, std::max(0, BlamedRank(error, job_lines)));
}

bool HostHealth::RecordFailure(const std::string& host, double now_s) {
  auto& f = failures_[host];
  f.push_back(now_s);
  while (!f.empty() && f.front() < now_s - window_s_) f.pop_front();
  if (static_cast<int>(f.size()) >= max_failures_ && !excluded(host)) {
    excluded_[host] = true;
    return true;
  }
  return false;
}

int HostHealth::failures(const std::string& host, double now_s) const {
  auto it = failures_.find(host);
  if (it == failures_.end()) return 0;
  return static_cast<int>(std::count_if(it->second.begin(), it->second.end(), [&](double t) { return t >= now_s - window_s_; }));
}

std::vector<std::string> HostHealth::excluded_hosts() const {
  std::vector<std::string> out;
  for (const auto& [h, x] : excluded_) out.push_back(h);
  return out;
}

void HostHealth::Forgive() {
  excluded_.clear();
  failures_.clear();
}

// ---------------------------------------------------------------------------
// The job: mpirun in a process group of its own, its output, its link
// ---------------------------------------------------------------------------

struct SupervisedPipeline::Job {
  pid_t pid = -1;
  int out_fd = -1;  // the job's stdout + stderr
  int link_fd = -1;
  std::unique_ptr<FrameReader> reader;
  std::thread pump;
  std::atomic<bool> stop_pump{false};
  std::mutex mu;
  std::vector<std::string> lines;  // the job's last output lines
  // mpirun reported a dead rank or an aborted job: a job whose rank died
  // while it started may keep mpirun waiting on the dead rank forever.
  std::atomic<bool> reported_failure{false};
  std::atomic<bool> named_rank{false};  // mpirun's "process rank N ... exited" came
  std::atomic<bool>* output_closed = nullptr;  // set when every process of the job has gone
  int exit_status = -1;            // once reaped
  std::string hostfile;            // written for this launch (removed at the end)

  // The job's output goes to the front's stderr as it comes, and the last
  // lines are kept (mpirun's report of a dead rank names it).
  void Pump() {
    std::string partial;
    char buf[4096];
    while (!stop_pump.load()) {
      pollfd p{out_fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      const ssize_t n = ::read(out_fd, buf, sizeof buf);
      if (n <= 0) {
        if (output_closed != nullptr) output_closed->store(true);
        break;
      }
      (void)!::write(2, buf, static_cast<size_t>(n));
      partial.append(buf, static_cast<size_t>(n));
      for (size_t nl; (nl = partial.find('\n')) != std::string::npos;) {
        std::lock_guard<std::mutex> lock(mu);
        lines.push_back(partial.substr(0, nl));
        if (lines.back().find("mpirun noticed that") != std::string::npos ||
            lines.back().find("the job has been aborted") != std::string::npos)
          reported_failure.store(true);
        if (lines.back().find("mpirun noticed that process rank") != std::string::npos) named_rank.store(true);
        if (lines.size() > 400) lines.erase(lines.begin(), lines.begin() + 100);
        partial.erase(0, nl + 1);
      }
    }
  }

  bool Exited() {
    if (exit_status >= 0) return true;
    int st = 0;
    if (::waitpid(pid, &st, WNOHANG) == pid) {
      exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      return true;
    }
    return false;
  }

  std::vector<std::string> Lines() {
    std::lock_guard<std::mutex> lock(mu);
    return lines;
  }

  // Everything of the job, whatever state it is in (SIGKILL also ends a
  // stopped process): its group, then every process left below the front
  // (the front is the subreaper of ranks whose mpirun died first).
  void KillAll() {
    if (pid > 0 && !Exited()) ::kill(-pid, SIGKILL);
    for (int round = 0; round < 50; ++round) {
      const std::vector<pid_t> left = Descendants();
      for (pid_t p : left) ::kill(p, SIGKILL);
      int st;
      while (true) {
        const pid_t r = ::waitpid(-1, &st, WNOHANG);
        if (r <= 0) break;
        if (r == pid && exit_status < 0) exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      }
      if (left.empty() && Exited()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  ~Job() {
    KillAll();
    if (link_fd >= 0) ::close(link_fd);
    stop_pump.store(true);
    if (pump.joinable()) pump.join();
    if (out_fd >= 0) ::close(out_fd);
    if (!hostfile.empty()) ::unlink(hostfile.c_str());
  }
};

// ---------------------------------------------------------------------------
// SupervisedPipeline
// ---------------------------------------------------------------------------

SupervisedPipeline::SupervisedPipeline(const ModelConfig& config, const SuperviseOptions& opts)
    : config_(config), opts_(opts), health_(opts.max_host_failures, opts.failure_window_s) {}

SupervisedPipeline::~SupervisedPipeline() {
  Shutdown("");
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

double SupervisedPipeline::Now() const { return SecondsSince(start_); }

bool SupervisedPipeline::Aborted() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count() >= abort_at_ns_.load();
}

void SupervisedPipeline::AbortAfter(std::chrono::milliseconds after) {
  const int64_t at = std::chrono::duration_cast<std::chrono::nanoseconds>((Clock::now() + after).time_since_epoch()).count();
  abort_at_ns_.store(std::min(abort_at_ns_.load(), at));
}

void SupervisedPipeline::SetState(const std::string& s) {
  std::lock_guard<std::mutex> lock(mu_);
  state_.state = s;
  state_.excluded_hosts = health_.excluded_hosts();
  state_.hosts.clear();
  for (const HostEntry& h : UsableHosts()) state_.hosts.push_back(h.name);
}

SupervisorState SupervisedPipeline::state() const {
  std::lock_guard<std::mutex> lock(mu_);
  SupervisorState s = state_;
  // A job lost while no batch was in flight is noticed (and relaunched) at
  // the next request; /health says so meanwhile.
  if (s.state == "up" && job_output_closed_.load()) s.state = "lost";
  if (s.state == "down") s.retry_in_s = std::max(0.0, std::chrono::duration<double>(next_attempt_ - Clock::now()).count());
  return s;
}

std::vector<StagePlacement> SupervisedPipeline::Placement() const { return placement_; }

std::vector<HostEntry> SupervisedPipeline::UsableHosts() const {
  std::vector<HostEntry> out;
  for (const HostEntry& h : hosts_)
    if (!health_.excluded(h.name)) out.push_back(h);
  return out;
}

Result<std::unique_ptr<SupervisedPipeline>> SupervisedPipeline::Create(const ModelConfig& config, const SuperviseOptions& opts) {
  std::unique_ptr<SupervisedPipeline> p(new SupervisedPipeline(config, opts));
  if (!opts.hostfile.empty()) {
    std::ifstream in(opts.hostfile);
    if (!in) return NotFound("cannot open the hostfile '" + opts.hostfile + "'");
    std::stringstream ss;
    ss << in.rdbuf();
    STRATA_ASSIGN_OR_RETURN(p->hosts_, ParseHostfile(ss.str(), opts.hostfile));
  } else {
    if (opts.np < 1) return InvalidArgument("--supervise needs --np N or a --hostfile");
    p->hosts_ = {HostEntry{"localhost", opts.np}};
  }
  if (opts.max_host_failures < 1) return InvalidArgument("--max-host-failures must be at least 1");
  // Ranks whose mpirun died first are re-parented here, where they are
  // found and killed, instead of to init.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  STRATA_RETURN_IF_ERROR(p->Listen());
  p->n_stages_ = std::max(1, opts.np);
  if (Status st = p->Recover("", false); !st.ok())
    Log(LogLevel::kError, "the first job did not start: %s", st.message().c_str());
  return p;
}

Status SupervisedPipeline::Listen() {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) return IoError(std::string("socket: ") + std::strerror(errno));
  const int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = 0;
  // The job may run on other hosts: listen where they reach the front.
  if (::inet_pton(AF_INET, opts_.front_address.c_str(), &a.sin_addr) != 1)
    return InvalidArgument("--front-address '" + opts_.front_address + "' is not an IPv4 address");
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listen_fd_, 8) != 0)
    return IoError("cannot listen for the job on " + opts_.front_address + ": " + std::strerror(errno));
  socklen_t len = sizeof a;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  return Status::Ok();
}

Status SupervisedPipeline::Launch() {
  job_hosts_ = UsableHosts();
  if (job_hosts_.empty()) return Unavailable("no host is left");
  int slots = 0;
  for (const HostEntry& h : job_hosts_) slots += h.slots;
  const int np = opts_.np > 0 ? std::min(opts_.np, slots) : slots;
  auto job = std::make_unique<Job>();
  ++launch_;
  std::vector<std::string> args = {opts_.mpirun};
  args.insert(args.end(), opts_.mpirun_args.begin(), opts_.mpirun_args.end());
  args.insert(args.end(), {"-np", std::to_string(np)});
  if (!opts_.hostfile.empty()) {
    job->hostfile = opts_.work_dir + "/strata-hosts." + std::to_string(::getpid()) + "." + std::to_string(launch_);
    std::ofstream out(job->hostfile);
    out << HostfileText(job_hosts_);
    if (!out) return IoError("cannot write the job's hostfile '" + job->hostfile + "'");
    args.insert(args.end(), {"--hostfile", job->hostfile});
  }
  args.push_back(opts_.binary);
  args.insert(args.end(), opts_.job_args.begin(), opts_.job_args.end());
  args.insert(args.end(), {"--front", opts_.front_address + ":" + std::to_string(port_), "--front-launch", std::to_string(launch_)});
  std::string shown;
  for (const std::string& a : args) shown += (shown.empty() ? "" : " ") + a;
  Log(LogLevel::kInfo, "supervisor: launch %llu on %zu host(s), %d rank(s): %s", static_cast<unsigned long long>(launch_),
      job_hosts_.size(), np, shown.c_str());
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++state_.launches;
  }

  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return IoError(std::string("pipe: ") + std::strerror(errno));
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(out[0]);
    ::close(out[1]);
    return IoError(std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    // The child: a process group of its own (the whole job is killed at
    // once); stdout and stderr into the pipe. Only async-signal-safe calls.
    ::setpgid(0, 0);
    ::dup2(out[1], 1);
    ::dup2(out[1], 2);
    // Nothing else of the front's (its HTTP socket: Asio's are not
    // close-on-exec) may live on in the job.
    if (::syscall(SYS_close_range, 3u, ~0u, 0u) != 0)
      for (int fd = 3; fd < 4096; ++fd) ::close(fd);
    ::execvp(argv[0], argv.data());
    static const char kMsg[] = "strata: error: cannot run mpirun\n";
    (void)!::write(2, kMsg, sizeof kMsg - 1);
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  ::close(out[1]);
  job->pid = pid;
  job->out_fd = out[0];
  job_output_closed_.store(false);
  job->output_closed = &job_output_closed_;
  Job* j = job.get();
  job->pump = std::thread([j] { j->Pump(); });
  job_ = std::move(job);

  // The job's hello: its rank 0 connects once every stage is loaded.
  const auto until = Clock::now() + ToDuration(opts_.job_start_timeout_s);
  while (true) {
    if (Aborted()) return Unavailable("the server is shutting down");
    if (job_->Exited())
      return IoError("the job exited (status " + std::to_string(job_->exit_status) + ") before it was ready");
    if (job_->reported_failure.load()) return IoError("mpirun reported a failed rank before the job was ready");
    if (Clock::now() >= until)
      return IoError("the job was not ready within " + std::to_string(static_cast<int>(opts_.job_start_timeout_s)) +
                     " s (--job-start-timeout)");
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto reader = std::make_unique<FrameReader>(fd);
    std::optional<wire::JobFrame> f;
    while (!f && Clock::now() < until && !job_->Exited() && !Aborted()) {
      auto got = reader->Read(100);
      if (!got.ok()) break;
      f = std::move(*got);
    }
    if (!f || !f->has_hello() || f->hello().launch() != launch_ ||
        f->hello().protocol_version() != static_cast<uint32_t>(wire::PROTOCOL_VERSION)) {
      ::close(fd);  // an old job's, or not a job at all
      continue;
    }
    const wire::JobHello& h = f->hello();
    if (!h.error().empty()) {
      ::close(fd);
      return IoError("the job cannot serve: " + h.error());
    }
    n_stages_ = std::max(1, h.n_stages());
    placement_.clear();
    for (int k = 0; k < h.stage_hosts_size() && k < h.stage_ranks_size(); ++k)
      placement_.push_back(StagePlacement{h.stage_ranks(k), h.stage_hosts(k), {}, ""});
    job_->link_fd = fd;
    job_->reader = std::move(reader);
    return Status::Ok();
  }
}

void SupervisedPipeline::TearDown(const std::string& cause, bool wait_for_exit) {
  if (!job_) return;
  if (job_->link_fd >= 0) {
    ::close(job_->link_fd);
    job_->link_fd = -1;
  }
  // A job that failed by itself ends by itself: mpirun names the dead rank
  // on the way out (then the rest is killed without waiting). A stuck one is
  // killed at once.
  const auto until = Clock::now() + ToDuration(wait_for_exit ? opts_.teardown_wait_s : 0);
  while (!job_->Exited() && !job_->named_rank.load() && Clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  job_->KillAll();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the last output lines
  const std::vector<std::string> lines = job_->Lines();
  if (!cause.empty() && !job_hosts_.empty()) {
    const std::string host = job_hosts_[BlamedHost(cause, lines, job_hosts_)].name;
    const int before = health_.failures(host, Now());
    const bool now_excluded = health_.RecordFailure(host, Now());
    Log(LogLevel::kWarn, "supervisor: job failure blamed on host '%s': %d failure(s) within %g s%s", host.c_str(),
        before + 1, opts_.failure_window_s, now_excluded ? "; the host is excluded from the next launches" : "");
  }
  job_.reset();
}

Status SupervisedPipeline::GiveUp(const std::string& why) {
  pending_.clear();
  history_.clear();
  broken_ = true;
  broken_cause_ = why;
  wait_for_exit_ = false;
  const double wait_s = backoff_s_;
  backoff_s_ = std::min(opts_.max_backoff_s, backoff_s_ * 2);
  const std::string msg = "no job can run the model: " + why + "; the next attempt in " +
                          std::to_string(static_cast<int>(wait_s + 0.5)) + " s";
  {
    std::lock_guard<std::mutex> lock(mu_);
    state_.last_failure = why;
    next_attempt_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(wait_s));
  }
  SetState(Aborted() ? "stopped" : "down");
  Log(LogLevel::kError, "supervisor: %s", msg.c_str());
  return Unavailable(msg);
}

Status SupervisedPipeline::Recover(std::string cause, bool wait_for_exit) {
  const auto detected = Clock::now();
  recovered_at_ = detected;
  if (!cause.empty()) {
    Log(LogLevel::kWarn, "supervisor: the job failed: %s; %zu batch(es) in flight, %zu sequence(s) to resume", cause.c_str(),
        pending_.size(), history_.size());
    std::lock_guard<std::mutex> lock(mu_);
    state_.last_failure = cause;
  }
  SetState("recovering");
  for (;;) {
    TearDown(cause, wait_for_exit);
    wait_for_exit = true;
    if (Aborted()) return GiveUp("the server is shutting down");
    if (UsableHosts().empty()) {
      std::string names;
      for (const std::string& h : health_.excluded_hosts()) names += (names.empty() ? "" : ", ") + h;
      const std::string why = "every host failed " + std::to_string(opts_.max_host_failures) + " time(s) within " +
                              std::to_string(static_cast<int>(opts_.failure_window_s)) + " s (excluded: " + names +
                              "; last failure: " + cause + ")";
      Status st = GiveUp(why);
      health_.Forgive();  // the next attempt, after the backoff, tries every host again
      return st;
    }
    const double detect_s = SecondsSince(detected);
    const auto launched = Clock::now();
    Status st = Launch();
    if (!st.ok()) {
      if (st.kind() == ErrorKind::kUnavailable) return GiveUp(st.message());
      cause = st.message();
      Log(LogLevel::kWarn, "supervisor: launch %llu failed: %s", static_cast<unsigned long long>(launch_), cause.c_str());
      continue;
    }
    const double relaunch_s = SecondsSince(launched);
    const auto replayed = Clock::now();
    int sequences = 0;
    int64_t tokens = 0;
    st = Replay(&sequences, &tokens);
    if (!st.ok()) {
      cause = st.message();
      Log(LogLevel::kWarn, "supervisor: rebuilding the caches failed: %s", cause.c_str());
      continue;
    }
    const double reprefill_s = SecondsSince(replayed);
    broken_ = false;
    backoff_s_ = 1;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (launch_ > 1) ++state_.recoveries;
      state_.last_detect_s = detect_s;
      state_.last_relaunch_s = relaunch_s;
      state_.last_reprefill_s = reprefill_s;
      state_.last_sequences = sequences;
      state_.last_tokens = tokens;
    }
    SetState("up");
    std::string stages;
    for (const StagePlacement& p : placement_) stages += (stages.empty() ? "" : ", ") + std::string("rank ") + std::to_string(p.rank) + " on " + p.host;
    Log(LogLevel::kInfo,
        "supervisor: job %llu up with %d stage(s) (%s): teardown %.2f s, relaunch + load %.2f s, re-prefill %.2f s "
        "(%d sequence(s), %lld token(s)); %zu batch(es) sent again",
        static_cast<unsigned long long>(launch_), n_stages_, stages.c_str(), detect_s, relaunch_s, reprefill_s, sequences,
        static_cast<long long>(tokens), pending_.size());
    first_token_pending_ = launch_ > 1 && !pending_.empty();
    return Status::Ok();
  }
}

Status SupervisedPipeline::SendBatch(uint64_t id, const std::vector<SequenceRequest>& batch) {
  wire::JobFrame f;
  wire::JobRequest* q = f.mutable_request();
  q->set_kind(wire::JobRequest::KIND_SUBMIT);
  q->set_batch_id(id);
  for (const SequenceRequest& r : batch) ToWire(r, q->add_entries());
  return WriteFrame(job_->link_fd, f);
}

Result<wire::JobReply> SupervisedPipeline::ReadReply(bool* stuck) {
  *stuck = false;
  const auto until = Clock::now() + ToDuration(opts_.reply_timeout_s);
  for (;;) {
    if (Aborted()) return Unavailable("the server is shutting down");
    auto got = job_->reader->Read(100);
    if (!got.ok()) return IoError("the link to the job's rank 0: " + got.status().message());
    if (got->has_value()) {
      const wire::JobFrame& f = **got;
      if (!f.has_reply()) return IoError("the job sent a frame that is not a reply");
      if (!f.reply().error().empty()) return IoError(f.reply().error());
      return f.reply();
    }
    if (job_->Exited()) return IoError("the job exited (status " + std::to_string(job_->exit_status) + ")");
    if (job_->reported_failure.load()) return IoError("mpirun reported a failed rank");
    if (Clock::now() >= until) {
      *stuck = true;
      return IoError("no reply from the job's rank 0 within " + std::to_string(static_cast<int>(opts_.reply_timeout_s)) +
                     " s (stopped?)");
    }
  }
}

// Every live sequence's cache as the lost job had it: its tokens prefilled
// again (no output), in chunks, then the batches in flight sent again.
Status SupervisedPipeline::Replay(int* sequences, int64_t* tokens) {
  constexpr int64_t kChunk = 256;
  std::vector<uint64_t> ids;
  for (const auto& [seq, toks] : history_) {
    if (toks.empty()) continue;
    ++*sequences;
    *tokens += static_cast<int64_t>(toks.size());
    for (int64_t at = 0; at < static_cast<int64_t>(toks.size()); at += kChunk) {
      SequenceRequest r;
      r.seq_id = seq;
      r.pos0 = at;
      r.output = SequenceRequest::Output::kNone;
      r.tokens.assign(toks.begin() + at, toks.begin() + std::min<int64_t>(at + kChunk, static_cast<int64_t>(toks.size())));
      ids.push_back(0);
      STRATA_RETURN_IF_ERROR(SendBatch(0, {r}));
    }
  }
  for (size_t k = 0; k < ids.size(); ++k) {
    bool stuck = false;
    auto reply = ReadReply(&stuck);
    if (!reply.ok()) return reply.status();
    if (reply->batch_id() != 0) return IoError("the job answered a batch it was not sent while the caches were rebuilt");
  }
  for (const PendingBatch& b : pending_) STRATA_RETURN_IF_ERROR(SendBatch(b.id, b.batch));
  return Status::Ok();
}

Result<uint64_t> SupervisedPipeline::Submit(const std::vector<SequenceRequest>& batch) {
  if (shut_down_) return FailedPrecondition("the supervised job was shut down");
  if (broken_ && pending_.empty()) {
    // Nothing to resume: a job that failed while idle, or none could start.
    if (state().state == "down" && Clock::now() < next_attempt_)
      return Unavailable("no job can run the model (" + broken_cause_ + "); the next attempt in " +
                         std::to_string(static_cast<int>(state().retry_in_s + 0.5)) + " s");
    STRATA_RETURN_IF_ERROR(Recover(broken_cause_, wait_for_exit_));
  }
  const uint64_t id = next_batch_id_++;
  pending_.push_back({id, batch});
  if (!broken_) {
    if (Status st = SendBatch(id, batch); !st.ok()) {
      broken_ = true;
      broken_cause_ = st.message();
      wait_for_exit_ = true;
    }
  }
  return id;
}

Result<BatchOutput> SupervisedPipeline::Wait() {
  if (pending_.empty()) return FailedPrecondition("no batch in flight");
  for (;;) {
    if (broken_) {
      if (Status st = Recover(broken_cause_, wait_for_exit_); !st.ok()) return st;
    }
    bool stuck = false;
    auto reply = ReadReply(&stuck);
    if (!reply.ok()) {
      if (reply.status().kind() == ErrorKind::kUnavailable) return GiveUp(reply.status().message());
      broken_ = true;
      broken_cause_ = reply.status().message();
      // A job that named the failed rank need not be waited for (mpirun may
      // hang on a host it cannot reach); a stuck one is killed at once.
      wait_for_exit_ = !stuck && BlamedRank(broken_cause_, {}) < 0;
      continue;
    }
    PendingBatch b = std::move(pending_.front());
    if (reply->batch_id() != b.id || static_cast<size_t>(reply->outputs_size()) != b.batch.size()) {
      broken_ = true;
      broken_cause_ = "the job answered batch " + std::to_string(reply->batch_id()) + " with " +
                      std::to_string(reply->outputs_size()) + " result(s); expected batch " + std::to_string(b.id) +
                      " with " + std::to_string(b.batch.size());
      wait_for_exit_ = false;
      pending_.front() = std::move(b);
      continue;
    }
    pending_.pop_front();
    BatchOutput out;
    out.batch_id = b.id;
    int64_t logit_at = 0;
    for (int k = 0; k < reply->outputs_size(); ++k) {
      const wire::SequenceOutput& o = reply->outputs(k);
      SequenceResult r;
      r.seq_id = o.seq_id();
      r.token = o.token();
      auto logprobs = LogprobsFromWire(o);
      if (!logprobs.ok()) return GiveUp(logprobs.status().message());
      r.logprobs = std::move(*logprobs);
      const int64_t n = static_cast<int64_t>(o.logit_rows());
      if (n > 0) {
        if (logit_at + n > reply->logits_size()) return GiveUp("the job sent fewer logits than its results announce");
        r.logits.assign(reply->logits().begin() + logit_at, reply->logits().begin() + logit_at + n);
        logit_at += n;
      }
      out.results.push_back(std::move(r));
      // The cache of this sequence now holds these tokens too.
      const SequenceRequest& q = b.batch[k];
      auto& h = history_[q.seq_id];
      h.resize(static_cast<size_t>(std::min<int64_t>(q.pos0, static_cast<int64_t>(h.size()))));
      h.insert(h.end(), q.tokens.begin(), q.tokens.end());
    }
    if (first_token_pending_) {
      first_token_pending_ = false;
      Log(LogLevel::kInfo, "supervisor: first tokens %.2f s after the failure was detected", SecondsSince(recovered_at_));
    }
    return out;
  }
}

Result<std::vector<StageStats>> SupervisedPipeline::Stats() {
  if (!pending_.empty()) return FailedPrecondition("Stats() with batches in flight");
  if (broken_ || !job_) return Unavailable("the supervised job is down");
  wire::JobFrame f;
  f.mutable_request()->set_kind(wire::JobRequest::KIND_STATS);
  Status st = WriteFrame(job_->link_fd, f);
  bool stuck = false;
  Result<wire::JobReply> reply = st.ok() ? ReadReply(&stuck) : Result<wire::JobReply>(st);
  if (!reply.ok() || reply->batch_id() != 0) {
    // The job is lost (or out of step): the next batch recovers it.
    broken_ = true;
    broken_cause_ = reply.ok() ? "the job answered a statistics request with batch " + std::to_string(reply->batch_id())
                               : reply.status().message();
    wait_for_exit_ = !stuck;
    return Unavailable(broken_cause_);
  }
  std::vector<StageStats> out;
  for (const wire::StageStats& w : reply->stats()) out.push_back(StatsFromWire(w));
  return out;
}

Status SupervisedPipeline::Free(uint64_t seq_id) {
  history_.erase(seq_id);
  if (broken_ || !job_) return Status::Ok();  // the job that held it is gone
  wire::JobFrame f;
  f.mutable_request()->set_kind(wire::JobRequest::KIND_FREE);
  f.mutable_request()->set_seq_id(seq_id);
  if (Status st = WriteFrame(job_->link_fd, f); !st.ok()) {
    broken_ = true;
    broken_cause_ = st.message();
    wait_for_exit_ = true;
  }
  return Status::Ok();
}

void SupervisedPipeline::Shutdown(const std::string& error) {
  if (shut_down_) return;
  shut_down_ = true;
  if (job_ && job_->link_fd >= 0) {
    wire::JobFrame f;
    f.mutable_request()->set_kind(wire::JobRequest::KIND_SHUTDOWN);
    if (WriteFrame(job_->link_fd, f).ok()) {
      const auto until = Clock::now() + std::chrono::seconds(5);
      while (!job_->Exited() && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  if (job_) {
    job_->KillAll();
    job_.reset();
  }
  SetState("stopped");
  if (!error.empty()) Log(LogLevel::kError, "supervisor: stopped: %s", error.c_str());
}

}  // namespace strata
