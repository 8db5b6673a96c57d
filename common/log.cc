// Rank-prefixed, level-filtered logging.
#include "common/log.h"

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <mutex>

#include <unistd.h>

namespace strata {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::string g_prefix;
std::mutex g_mu;

}  // namespace

Result<LogLevel> ParseLogLevel(const std::string& name) {
  if (name == "error") return LogLevel::kError;
  if (name == "warn") return LogLevel::kWarn;
  if (name == "info") return LogLevel::kInfo;
  if (name == "debug") return LogLevel::kDebug;
  return InvalidArgument("--log-level '" + name + "': expected error, warn, info or debug");
}

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }
bool LogEnabled(LogLevel level) { return static_cast<int>(level) <= g_level.load(); }

void SetLogRank(int rank, const std::string& host) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_prefix = "[rank " + std::to_string(rank) + " " + host + "] ";
}

void Log(LogLevel level, const char* format, ...) {
  if (!LogEnabled(level)) return;
  char buf[4096];
  va_list ap;
  va_start(ap, format);
  std::vsnprintf(buf, sizeof buf, format, ap);
  va_end(ap);
  std::lock_guard<std::mutex> lock(g_mu);
  // Every line of a multi-line message carries the prefix.
  std::string text = g_prefix;
  for (const char* c = buf; *c; ++c) {
    text += *c;
    if (*c == '\n' && c[1] != '\0') text += g_prefix;
  }
  std::fprintf(stderr, "%s\n", text.c_str());
  std::fflush(stderr);
}

std::string HostName() {
  char host[256] = {0};
  ::gethostname(host, sizeof host - 1);
  return host;
}

}  // namespace strata
