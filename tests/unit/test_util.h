// Helpers shared by the unit tests: temporary directories, byte files, and
// assertions on Status kind and message.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/status.h"

namespace strata::testing {

// A fresh directory under the test temp dir, removed (with its contents)
// when the object goes out of scope.
class TempDir {
 public:
  TempDir() {
    std::string base = ::testing::TempDir();
    if (base.empty() || base.back() != '/') base += '/';
    std::string tmpl = base + "strata_test_XXXXXX";
    char* made = ::mkdtemp(tmpl.data());
    STRATA_CHECK_MSG(made != nullptr, "mkdtemp failed under " + base);
    path_ = made;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void WriteBytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  STRATA_CHECK_MSG(out.good(), "cannot write " + path);
}

inline void WriteText(const std::string& path, const std::string& text) {
  WriteBytes(path, std::vector<uint8_t>(text.begin(), text.end()));
}

inline std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  STRATA_CHECK_MSG(in.good(), "cannot read " + path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Little-endian byte sink for hand-built files.
class ByteWriter {
 public:
  template <class T>
  ByteWriter& Put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    bytes_.insert(bytes_.end(), p, p + sizeof(T));
    return *this;
  }
  ByteWriter& U8(uint8_t v) { return Put(v); }
  ByteWriter& U32(uint32_t v) { return Put(v); }
  ByteWriter& U64(uint64_t v) { return Put(v); }
  ByteWriter& Raw(const std::string& s) {
    bytes_.insert(bytes_.end(), s.begin(), s.end());
    return *this;
  }
  ByteWriter& Raw(const std::vector<uint8_t>& b) {
    bytes_.insert(bytes_.end(), b.begin(), b.end());
    return *this;
  }
  ByteWriter& Zeros(size_t n) {
    bytes_.insert(bytes_.end(), n, 0);
    return *this;
  }
  ByteWriter& PadTo(size_t alignment) { return Zeros((alignment - bytes_.size() % alignment) % alignment); }
  size_t size() const { return bytes_.size(); }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

// Asserts that `status` failed with `kind` and that its message names
// `path` and contains `what`.
inline ::testing::AssertionResult FailsWith(const Status& status, ErrorKind kind, const std::string& path,
                                            const std::string& what) {
  if (status.ok()) return ::testing::AssertionFailure() << "expected " << ErrorKindName(kind) << " (" << what << "), got ok";
  if (status.kind() != kind)
    return ::testing::AssertionFailure() << "expected " << ErrorKindName(kind) << ", got " << status.ToString();
  if (!path.empty() && status.message().find(path) == std::string::npos)
    return ::testing::AssertionFailure() << "message does not name '" << path << "': " << status.message();
  if (status.message().find(what) == std::string::npos)
    return ::testing::AssertionFailure() << "message does not say '" << what << "': " << status.message();
  return ::testing::AssertionSuccess();
}

}  // namespace strata::testing
