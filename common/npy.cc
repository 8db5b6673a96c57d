// .npy reader and writer (see npy.h). The reader treats the file as
// untrusted: the header length, every dimension and the element count are
// bounded and overflow-checked before anything is allocated, and the data
// size must match the file size exactly.
#include "common/npy.h"

#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

namespace strata {

static_assert(std::endian::native == std::endian::little, ".npy '<' dtypes are read in place: little-endian hosts only");

namespace {

constexpr char kMagic[] = "\x93NUMPY";  // 6 bytes
constexpr size_t kMagicLen = 6;
constexpr size_t kMaxDims = 32;                     // numpy's NPY_MAXDIMS is 32 (64 in 2.x); more is junk
constexpr uint64_t kMaxHeaderLen = uint64_t{1} << 20;  // numpy itself refuses headers over 10000 bytes by default

// ---------------------------------------------------------------------------
// Header dict parser: just the literal subset numpy writes.

class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& path) : s_(text), path_(path) {}

  Status Parse(std::string* descr, bool* fortran, std::vector<int64_t>* shape) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    SkipWs();
    if (!Eat('{')) return Error("header is not a dict (expected '{')");
    while (true) {
      SkipWs();
      if (Eat('}')) break;
      std::string key;
      STRATA_RETURN_IF_ERROR(ParseString(&key));
      SkipWs();
      if (!Eat(':')) return Error("expected ':' after key '" + key + "'");
      SkipWs();
      if (key == "descr") {
        STRATA_RETURN_IF_ERROR(ParseString(descr));
        have_descr = true;
      } else if (key == "fortran_order") {
        if (EatWord("True")) *fortran = true;
        else if (EatWord("False")) *fortran = false;
        else return Error("'fortran_order' is not True or False");
        have_fortran = true;
      } else if (key == "shape") {
        STRATA_RETURN_IF_ERROR(ParseShape(shape));
        have_shape = true;
      } else {
        return Error("unexpected key '" + key + "' in header");
      }
      SkipWs();
      if (Eat(',')) continue;
      SkipWs();
      if (Eat('}')) break;
      return Error("expected ',' or '}' in header at offset " + std::to_string(pos_));
    }
    SkipWs();
    if (pos_ != s_.size()) return Error("junk after the header dict at offset " + std::to_string(pos_));
    if (!have_descr) return Error("header has no 'descr'");
    if (!have_fortran) return Error("header has no 'fortran_order'");
    if (!have_shape) return Error("header has no 'shape'");
    return Status::Ok();
  }

 private:
  Status Error(const std::string& what) const { return DataLoss("'" + path_ + "': " + what); }
  void SkipWs() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\t' || s_[pos_] == '\r')) ++pos_;
  }
  bool Eat(char c) {
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool EatWord(const char* w) {
    size_t n = std::strlen(w);
    if (s_.compare(pos_, n, w) == 0) {
      pos_ += n;
      return true;
    }
    return false;
  }
  Status ParseString(std::string* out) {
    if (pos_ >= s_.size() || (s_[pos_] != '\'' && s_[pos_] != '"')) return Error("expected a quoted string in header");
    char q = s_[pos_++];
    size_t end = s_.find(q, pos_);
    if (end == std::string::npos) return Error("unterminated string in header");
    *out = s_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return Status::Ok();
  }
  Status ParseShape(std::vector<int64_t>* shape) {
    shape->clear();
    if (!Eat('(')) return Error("'shape' is not a tuple");
    while (true) {
      SkipWs();
      if (Eat(')')) return Status::Ok();
      if (shape->size() >= kMaxDims) return Error("'shape' has more than " + std::to_string(kMaxDims) + " dimensions");
      if (pos_ >= s_.size() || s_[pos_] < '0' || s_[pos_] > '9') return Error("'shape' holds something other than a non-negative integer");
      uint64_t v = 0;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
        v = v * 10 + static_cast<uint64_t>(s_[pos_++] - '0');
        if (v > (uint64_t{1} << 62)) return Error("'shape' dimension is too large");
      }
      if (pos_ < s_.size() && s_[pos_] == 'L') ++pos_;  // Python 2 longs
      shape->push_back(static_cast<int64_t>(v));
      SkipWs();
      if (Eat(',')) continue;
      SkipWs();
      if (Eat(')')) return Status::Ok();
      return Error("expected ',' or ')' in 'shape'");
    }
  }

  const std::string& s_;
  const std::string& path_;
  size_t pos_ = 0;
};

float HalfToFloat(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h >> 15) << 31;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ff;
  float f;
  if (exp == 0) {
    f = std::ldexp(static_cast<float>(man), -24);  // zero or subnormal
    return sign ? -f : f;
  }
  uint32_t bits;
  if (exp == 31) bits = sign | 0x7f800000u | (man << 13);  // inf / nan
  else bits = sign | ((exp + 112) << 23) | (man << 13);
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace

std::string NpyShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// ---------------------------------------------------------------------------
// Writer

Status WriteNpyF32(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
  uint64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) return InvalidArgument("'" + path + "': negative dimension in shape " + NpyShapeString(shape));
    if (__builtin_mul_overflow(count, static_cast<uint64_t>(d), &count) || count > (uint64_t{1} << 61))
      return InvalidArgument("'" + path + "': shape " + NpyShapeString(shape) + " is too large");
  }
  if (count > 0 && data == nullptr) return InvalidArgument("'" + path + "': no data for shape " + NpyShapeString(shape));

  // numpy's repr of the shape tuple: "()", "(5,)", "(2, 3)".
  std::string tuple = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) tuple += ", ";
    tuple += std::to_string(shape[i]);
  }
  if (shape.size() == 1) tuple += ",";
  tuple += ")";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + tuple + ", }";
  // magic(6) + version(2) + len(2) + header + '\n' is a multiple of 64.
  size_t total = kMagicLen + 4 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  if (header.size() > 0xffff) return InvalidArgument("'" + path + "': shape " + NpyShapeString(shape) + " gives a header too long for NPY v1.0");

  std::string preamble(kMagic, kMagicLen);
  preamble += static_cast<char>(1);
  preamble += static_cast<char>(0);
  preamble += static_cast<char>(header.size() & 0xff);
  preamble += static_cast<char>(header.size() >> 8);

  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return IoError("cannot create '" + tmp + "': " + std::strerror(errno));
  bool good = std::fwrite(preamble.data(), 1, preamble.size(), f) == preamble.size() &&
              std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
              (count == 0 || std::fwrite(data, sizeof(float), count, f) == count);
  int saved = errno;
  if (std::fclose(f) != 0 && good) {
    good = false;
    saved = errno;
  }
  if (!good) {
    std::remove(tmp.c_str());
    return IoError("cannot write '" + tmp + "': " + std::strerror(saved));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    saved = errno;
    std::remove(tmp.c_str());
    return IoError("cannot rename '" + tmp + "' to '" + path + "': " + std::strerror(saved));
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Reader

Result<NpyArray> ReadNpyF32(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return NotFound("'" + path + "': no such file");
  if (std::filesystem::is_directory(path, ec)) return InvalidArgument("'" + path + "': is a directory, not a .npy file");
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) return IoError("cannot open '" + path + "': " + std::strerror(errno));
  uint64_t file_size = std::filesystem::file_size(path, ec);
  if (ec) return IoError("cannot stat '" + path + "': " + ec.message());

  auto fail = [&](const std::string& what) -> Status { return DataLoss("'" + path + "': " + what); };

  unsigned char pre[12];
  if (file_size < 10 || std::fread(pre, 1, 10, f.get()) != 10)
    return fail("truncated: " + std::to_string(file_size) + " bytes is too short for a .npy preamble");
  if (std::memcmp(pre, kMagic, kMagicLen) != 0) return fail("not a .npy file (bad magic)");
  const int major = pre[6], minor = pre[7];
  uint64_t header_len, prefix;
  if (major == 1) {
    header_len = pre[8] | (uint64_t{pre[9]} << 8);
    prefix = 10;
  } else if (major == 2 || major == 3) {
    if (file_size < 12 || std::fread(pre + 10, 1, 2, f.get()) != 2) return fail("truncated in the v" + std::to_string(major) + " preamble");
    header_len = pre[8] | (uint64_t{pre[9]} << 8) | (uint64_t{pre[10]} << 16) | (uint64_t{pre[11]} << 24);
    prefix = 12;
  } else {
    return fail("unsupported .npy version " + std::to_string(major) + "." + std::to_string(minor) + " (expected 1, 2 or 3)");
  }
  if (header_len > kMaxHeaderLen) return fail("header length " + std::to_string(header_len) + " is implausibly large");
  if (prefix + header_len > file_size)
    return fail("truncated: header of " + std::to_string(header_len) + " bytes runs past the end of the file (" +
                std::to_string(file_size) + " bytes)");
  std::string header(header_len, '\0');
  if (header_len > 0 && std::fread(header.data(), 1, header_len, f.get()) != header_len) return fail("cannot read the header");
  if (header.find('\0') != std::string::npos) return fail("header contains a NUL byte");

  std::string descr;
  bool fortran = false;
  NpyArray out;
  STRATA_RETURN_IF_ERROR(HeaderParser(header, path).Parse(&descr, &fortran, &out.shape));
  size_t elem;
  if (descr == "<f4") elem = 4;
  else if (descr == "<f8") elem = 8;
  else if (descr == "<f2") elem = 2;
  else return Unimplemented("'" + path + "': dtype '" + descr + "' is not supported (expected '<f4', '<f8' or '<f2')");
  if (fortran && out.shape.size() > 1) return Unimplemented("'" + path + "': Fortran-order arrays are not supported");

  uint64_t count = 1, bytes = 0;
  for (int64_t d : out.shape) {
    if (__builtin_mul_overflow(count, static_cast<uint64_t>(d), &count))
      return fail("shape " + NpyShapeString(out.shape) + " overflows the element count");
  }
  if (__builtin_mul_overflow(count, uint64_t{elem}, &bytes))
    return fail("shape " + NpyShapeString(out.shape) + " overflows the data size");
  const uint64_t data_size = file_size - prefix - header_len;
  if (bytes != data_size)
    return fail("shape " + NpyShapeString(out.shape) + " of '" + descr + "' needs " + std::to_string(bytes) +
                " data bytes, the file has " + std::to_string(data_size) + (bytes > data_size ? " (truncated)" : " (trailing bytes)"));

  // count * elem == data_size <= file size, so the allocation is bounded by the file.
  out.data.resize(count);
  if (elem == 4) {
    if (count > 0 && std::fread(out.data.data(), 4, count, f.get()) != count) return fail("cannot read the data");
  } else {
    std::vector<unsigned char> raw(bytes);
    if (bytes > 0 && std::fread(raw.data(), 1, bytes, f.get()) != bytes) return fail("cannot read the data");
    for (uint64_t i = 0; i < count; ++i) {
      if (elem == 8) {
        double d;
        std::memcpy(&d, raw.data() + i * 8, 8);
        out.data[i] = static_cast<float>(d);
      } else {
        uint16_t h;
        std::memcpy(&h, raw.data() + i * 2, 2);
        out.data[i] = HalfToFloat(h);
      }
    }
  }
  return out;
}

}  // namespace strata
