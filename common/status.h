// Status and Result: how strata reports errors from untrusted input.
//
// Library code never asserts or exits on bad input (files, flags, requests,
// messages from other ranks); it returns a Status whose message names the
// object, the expected and the actual value. Internal invariants use
// STRATA_CHECK, which aborts in every build.
//
//   Result<GgufFile> file = GgufFile::Open(path);
//   if (!file.ok()) return file.status();
//   STRATA_ASSIGN_OR_RETURN(auto cfg, ParseConfig(json));
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace strata {

// Errors classified by meaning (as Abseil does).
enum class ErrorKind {
  kOk = 0,
  kInvalidArgument,     // a flag, request or plan that is wrong
  kDataLoss,            // a file or message that is corrupt or truncated
  kNotFound,            // a file, tensor or key that is missing
  kUnimplemented,       // valid input that strata does not support
  kFailedPrecondition,  // the system is not in a state to do this
  kIo,                  // the OS refused (open, mmap, write)
  kInternal,            // a bug; should not happen
  kDeadlineExceeded,    // a rank (or a request) did not finish in time
  kUnavailable,         // busy or shutting down: try again later
};

const char* ErrorKindName(ErrorKind kind);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(ErrorKind kind, std::string message) : kind_(kind), message_(std::move(message)) {}
  static Status Ok() { return Status(); }

  bool ok() const { return kind_ == ErrorKind::kOk; }
  ErrorKind kind() const { return kind_; }
  const std::string& message() const { return message_; }
  // "data loss: tensor 'x': ..." style text for logs.
  std::string ToString() const;
  // Returns a copy whose message is "prefix: message" (keeps the kind).
  Status WithContext(const std::string& prefix) const;

 private:
  ErrorKind kind_ = ErrorKind::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) { return {ErrorKind::kInvalidArgument, std::move(m)}; }
inline Status DataLoss(std::string m) { return {ErrorKind::kDataLoss, std::move(m)}; }
inline Status NotFound(std::string m) { return {ErrorKind::kNotFound, std::move(m)}; }
inline Status Unimplemented(std::string m) { return {ErrorKind::kUnimplemented, std::move(m)}; }
inline Status FailedPrecondition(std::string m) { return {ErrorKind::kFailedPrecondition, std::move(m)}; }
inline Status IoError(std::string m) { return {ErrorKind::kIo, std::move(m)}; }
inline Status Internal(std::string m) { return {ErrorKind::kInternal, std::move(m)}; }
inline Status DeadlineExceeded(std::string m) { return {ErrorKind::kDeadlineExceeded, std::move(m)}; }
inline Status Unavailable(std::string m) { return {ErrorKind::kUnavailable, std::move(m)}; }

// Text from an untrusted file or request, quoted for an error message: in
// single quotes, cut after 120 bytes ("..."), control characters as '?', so a
// hostile name can neither flood the log nor move its cursor.
std::string QuoteUntrusted(std::string_view s);

[[noreturn]] void CheckFailed(const char* file, int line, const char* expr, const std::string& msg);

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    if (std::get<Status>(v_).ok()) CheckFailed(__FILE__, __LINE__, "!status.ok()", "Result built from an OK status");
  }
  bool ok() const { return std::holds_alternative<T>(v_); }
  Status status() const { return ok() ? Status::Ok() : std::get<Status>(v_); }
  T& value() & { Expect(); return std::get<T>(v_); }
  const T& value() const& { Expect(); return std::get<T>(v_); }
  T&& value() && { Expect(); return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  void Expect() const {
    if (!ok()) CheckFailed(__FILE__, __LINE__, "ok()", std::get<Status>(v_).ToString());
  }
  std::variant<T, Status> v_;
};

}  // namespace strata

#define STRATA_CHECK(cond)                                               \
  do {                                                                   \
    if (!(cond)) ::strata::CheckFailed(__FILE__, __LINE__, #cond, "");   \
  } while (0)
#define STRATA_CHECK_MSG(cond, msg)                                      \
  do {                                                                   \
    if (!(cond)) ::strata::CheckFailed(__FILE__, __LINE__, #cond, (msg)); \
  } while (0)

#define STRATA_CONCAT_INNER(a, b) a##b
#define STRATA_CONCAT(a, b) STRATA_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function when `expr` is not OK.
#define STRATA_RETURN_IF_ERROR(expr)            \
  do {                                          \
    ::strata::Status strata_st_ = (expr);       \
    if (!strata_st_.ok()) return strata_st_;    \
  } while (0)

// `lhs` = value of the Result `expr`, or return its Status.
#define STRATA_ASSIGN_OR_RETURN(lhs, expr) \
  STRATA_ASSIGN_OR_RETURN_IMPL(STRATA_CONCAT(strata_res_, __LINE__), lhs, expr)
#define STRATA_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()
