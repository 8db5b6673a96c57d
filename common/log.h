// Log lines on stderr, prefixed with the rank and host under mpirun
// ("[rank 2 node-b] ..."), filtered by --log-level (error, warn, info, debug).
//
//   Log(LogLevel::kInfo, "loaded layers %d-%d", first, last);
#pragma once

#include <string>

#include "common/status.h"

namespace strata {

enum class LogLevel { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

Result<LogLevel> ParseLogLevel(const std::string& name);
void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);
// Under mpirun: every line starts with "[rank R host] ".
void SetLogRank(int rank, const std::string& host);
void Log(LogLevel level, const char* format, ...) __attribute__((format(printf, 2, 3)));

// This machine's name, as log lines, traces and dump manifests show it.
std::string HostName();

}  // namespace strata
