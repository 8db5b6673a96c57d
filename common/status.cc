// Status text and the abort path of STRATA_CHECK.
#include "common/status.h"

namespace strata {

const char* ErrorKindName(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kOk: return "ok";
    case ErrorKind::kInvalidArgument: return "invalid argument";
    case ErrorKind::kDataLoss: return "data loss";
    case ErrorKind::kNotFound: return "not found";
    case ErrorKind::kUnimplemented: return "unimplemented";
    case ErrorKind::kFailedPrecondition: return "failed precondition";
    case ErrorKind::kIo: return "i/o error";
    case ErrorKind::kInternal: return "internal error";
    case ErrorKind::kDeadlineExceeded: return "deadline exceeded";
    case ErrorKind::kUnavailable: return "unavailable";
  }
  return "unknown";
}

std::string QuoteUntrusted(std::string_view s) {
  constexpr size_t kMaxBytes = 120;
  std::string out = "'";
  for (char c : s.substr(0, kMaxBytes)) out += (static_cast<unsigned char>(c) < 0x20 ? '?' : c);
  if (s.size() > kMaxBytes) out += "...";
  return out + "'";
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  return std::string(ErrorKindName(kind_)) + ": " + message_;
}

Status Status::WithContext(const std::string& prefix) const {
  if (ok()) return *this;
  return Status(kind_, prefix + ": " + message_);
}

void CheckFailed(const char* file, int line, const char* expr, const std::string& msg) {
  std::fprintf(stderr, "strata: internal check failed at %s:%d: %s%s%s\n", file, line, expr,
               msg.empty() ? "" : ": ", msg.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace strata
