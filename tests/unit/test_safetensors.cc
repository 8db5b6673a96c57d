// safetensors reader: the shared HF checkpoint, sharded == unsharded on a
// small hand-made set, and one bad file per failure mode (error kind and a
// message naming the file and the problem).
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <random>

#include "model/safetensors.h"
#include "tests/unit/test_util.h"

namespace strata {
namespace {

using testing::ByteWriter;
using testing::FailsWith;
using testing::TempDir;

const std::string kShared = STRATA_SHARED_DIR;

// --- building files ---------------------------------------------------------

// 8-byte length + header text + data.
std::vector<uint8_t> Raw(const std::string& header, const std::vector<uint8_t>& data) {
  ByteWriter b;
  b.U64(header.size()).Raw(header).Raw(data);
  return b.bytes();
}
std::vector<uint8_t> Raw(const std::string& header, size_t data_bytes) { return Raw(header, std::vector<uint8_t>(data_bytes, 0)); }

struct TensorSpec {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

size_t DtypeBytes(const std::string& dtype) {
  if (dtype == "F32" || dtype == "I32") return 4;
  if (dtype == "F64" || dtype == "I64") return 8;
  if (dtype == "F16" || dtype == "BF16") return 2;
  return 1;
}

TensorSpec Make(std::string name, std::string dtype, std::vector<int64_t> shape, uint32_t seed) {
  size_t n = DtypeBytes(dtype);
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  std::vector<uint8_t> data(n);
  std::mt19937 rng(seed);
  for (auto& x : data) x = static_cast<uint8_t>(rng());
  return {std::move(name), std::move(dtype), std::move(shape), std::move(data)};
}

// A well-formed file holding `tensors` in the given order (offsets follow it).
std::vector<uint8_t> Build(const std::vector<TensorSpec>& tensors, const nlohmann::json& metadata = nullptr) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.is_null()) header["__metadata__"] = metadata;
  std::vector<uint8_t> data;
  for (const TensorSpec& t : tensors) {
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.data.size()}}};
    data.insert(data.end(), t.data.begin(), t.data.end());
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // as the reference writer pads
  return Raw(text, data);
}

std::vector<TensorSpec> SmallSet() {
  return {Make("model.embed_tokens.weight", "BF16", {6, 4}, 1), Make("model.norm.weight", "F32", {4}, 2),
          Make("model.layers.0.mlp.up_proj.weight", "F16", {3, 2, 2}, 3), Make("scalar", "F32", {}, 4),
          Make("empty", "F32", {0, 3}, 5), Make("lm_head.weight", "F32", {6, 4}, 6)};
}

// Writes `bytes` as a file in a fresh dir and opens it; asserts `kind` and
// that the message names the file and says `what`.
::testing::AssertionResult Rejects(const std::vector<uint8_t>& bytes, const std::string& what,
                                   ErrorKind kind = ErrorKind::kDataLoss) {
  TempDir dir;
  const std::string path = dir.File("model.safetensors");
  testing::WriteBytes(path, bytes);
  auto m = SafetensorsModel::OpenFile(path);
  return FailsWith(m.status(), kind, path, what);
}

std::string Entry(const std::string& name, const std::string& dtype, const std::string& shape, const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":" + offsets + "}";
}

// --- the shared checkpoint --------------------------------------------------

TEST(Safetensors, SharedModelOpens) {
  const std::string dir = kShared + "/models/smol-shakespeare";
  auto m = SafetensorsModel::OpenDir(dir);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const SafetensorsTensor* e = (*m)->Find("model.embed_tokens.weight");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->type, TensorType::kBF16);
  EXPECT_EQ(e->shape, (std::vector<int64_t>{8192, 256}));
  EXPECT_EQ(e->nbytes, 8192u * 256u * 2u);
  EXPECT_EQ(e->file, dir + "/model.safetensors");
  EXPECT_EQ((*m)->Find("model.no_such.weight"), nullptr);
  EXPECT_EQ((*m)->metadata().at("format"), "pt");
  const auto& ts = (*m)->tensors();
  EXPECT_GT(ts.size(), 36u * 9u);
  for (size_t i = 1; i < ts.size(); ++i) EXPECT_LT(ts[i - 1].name, ts[i].name);
  for (const SafetensorsTensor& t : ts) {
    EXPECT_EQ((*m)->Find(t.name), &t);
    EXPECT_EQ(t.type, TensorType::kBF16) << t.name;
  }
  ASSERT_NE((*m)->Find("model.layers.35.mlp.down_proj.weight"), nullptr);
}

// --- well-formed variants ---------------------------------------------------

TEST(Safetensors, SmallSetRoundTrip) {
  TempDir dir;
  auto set = SmallSet();
  testing::WriteBytes(dir.File("model.safetensors"), Build(set, {{"format", "pt"}, {"note", "x"}}));
  auto m = SafetensorsModel::OpenDir(dir.path());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)->tensors().size(), set.size());
  EXPECT_EQ((*m)->metadata().at("note"), "x");
  for (const TensorSpec& s : set) {
    const SafetensorsTensor* t = (*m)->Find(s.name);
    ASSERT_NE(t, nullptr) << s.name;
    EXPECT_EQ(t->shape, s.shape);
    ASSERT_EQ(t->nbytes, s.data.size());
    if (!s.data.empty()) {
      EXPECT_EQ(std::memcmp(t->data, s.data.data(), s.data.size()), 0) << s.name;
    }
  }
  EXPECT_EQ((*m)->Find("scalar")->nbytes, 4u);
  EXPECT_EQ((*m)->Find("empty")->nbytes, 0u);
  EXPECT_EQ((*m)->Find("model.layers.0.mlp.up_proj.weight")->type, TensorType::kF16);
}

TEST(Safetensors, OffsetsNeedNotFollowHeaderOrder) {
  // b's bytes come first although a is listed first.
  const std::string h = "{" + Entry("a", "F32", "[2]", "[8,16]") + "," + Entry("b", "F32", "[2]", "[0,8]") + "}";
  TempDir dir;
  testing::WriteBytes(dir.File("x.safetensors"), Raw(h, 16));
  auto m = SafetensorsModel::OpenFile(dir.File("x.safetensors"));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)->Find("a")->data - (*m)->Find("b")->data, 8);
}

// --- sharded ----------------------------------------------------------------

struct ShardedDir {
  TempDir dir;
  std::vector<TensorSpec> set = SmallSet();
  nlohmann::json index;
  // Shard 1 holds the first half of the set, shard 2 the rest.
  ShardedDir() {
    std::vector<TensorSpec> a(set.begin(), set.begin() + 3), b(set.begin() + 3, set.end());
    testing::WriteBytes(dir.File("model-00001-of-00002.safetensors"), Build(a));
    testing::WriteBytes(dir.File("model-00002-of-00002.safetensors"), Build(b, {{"format", "pt"}}));
    index["metadata"] = {{"total_size", 123}};
    for (const auto& t : a) index["weight_map"][t.name] = "model-00001-of-00002.safetensors";
    for (const auto& t : b) index["weight_map"][t.name] = "model-00002-of-00002.safetensors";
  }
  std::string IndexPath() const { return dir.File("model.safetensors.index.json"); }
  void WriteIndex() const { testing::WriteText(IndexPath(), index.dump(2)); }
};

TEST(Safetensors, ShardedMatchesUnsharded) {
  ShardedDir s;
  s.WriteIndex();
  auto sharded = SafetensorsModel::OpenDir(s.dir.path());
  ASSERT_TRUE(sharded.ok()) << sharded.status().ToString();
  EXPECT_EQ((*sharded)->files().size(), 2u);
  EXPECT_EQ((*sharded)->metadata().at("format"), "pt");

  TempDir single_dir;
  testing::WriteBytes(single_dir.File("model.safetensors"), Build(s.set));
  auto single = SafetensorsModel::OpenDir(single_dir.path());
  ASSERT_TRUE(single.ok()) << single.status().ToString();

  const auto& a = (*sharded)->tensors();
  const auto& b = (*single)->tensors();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].name, b[i].name);
    EXPECT_EQ(a[i].type, b[i].type);
    EXPECT_EQ(a[i].shape, b[i].shape);
    ASSERT_EQ(a[i].nbytes, b[i].nbytes);
    if (a[i].nbytes != 0) {
      EXPECT_EQ(std::memcmp(a[i].data, b[i].data, a[i].nbytes), 0) << a[i].name;
    }
  }
  for (const auto& [name, shard] : s.index["weight_map"].items()) {
    const SafetensorsTensor* t = (*sharded)->Find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->file, s.dir.File(shard.get<std::string>()));
  }
}

TEST(Safetensors, DirPrefersSingleFile) {
  ShardedDir s;
  s.WriteIndex();
  testing::WriteBytes(s.dir.File("model.safetensors"), Build({Make("only", "F32", {1}, 9)}));
  auto m = SafetensorsModel::OpenDir(s.dir.path());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)->tensors().size(), 1u);
}

::testing::AssertionResult RejectsIndex(ShardedDir& s, const std::string& what, ErrorKind kind = ErrorKind::kDataLoss) {
  s.WriteIndex();
  return FailsWith(SafetensorsModel::OpenDir(s.dir.path()).status(), kind, s.IndexPath(), what);
}

TEST(SafetensorsBadIndex, NotJson) {
  ShardedDir s;
  testing::WriteText(s.IndexPath(), "{\"weight_map\": {");
  EXPECT_TRUE(FailsWith(SafetensorsModel::OpenDir(s.dir.path()).status(), ErrorKind::kDataLoss, s.IndexPath(), "not valid JSON"));
  testing::WriteText(s.IndexPath(), "[1]");
  EXPECT_TRUE(FailsWith(SafetensorsModel::OpenDir(s.dir.path()).status(), ErrorKind::kDataLoss, s.IndexPath(), "not a JSON object"));
}

TEST(SafetensorsBadIndex, WeightMapShape) {
  {
    ShardedDir s;
    s.index.erase("weight_map");
    EXPECT_TRUE(RejectsIndex(s, "missing object 'weight_map'"));
  }
  {
    ShardedDir s;
    s.index["weight_map"] = nlohmann::json::array();
    EXPECT_TRUE(RejectsIndex(s, "missing object 'weight_map'"));
  }
  {
    ShardedDir s;
    s.index["weight_map"] = nlohmann::json::object();
    EXPECT_TRUE(RejectsIndex(s, "lists no tensors"));
  }
  {
    ShardedDir s;
    s.index["weight_map"]["scalar"] = 3;
    EXPECT_TRUE(RejectsIndex(s, "entry for tensor 'scalar' is not a string"));
  }
  {
    ShardedDir s;
    s.index["metadata"] = "x";
    EXPECT_TRUE(RejectsIndex(s, "'metadata' is not a JSON object"));
  }
}

TEST(SafetensorsBadIndex, DuplicateKey) {
  ShardedDir s;
  testing::WriteText(s.IndexPath(), R"({"weight_map": {"scalar": "a.safetensors", "scalar": "b.safetensors"}})");
  EXPECT_TRUE(FailsWith(SafetensorsModel::OpenDir(s.dir.path()).status(), ErrorKind::kDataLoss, s.IndexPath(), "duplicate key 'scalar'"));
}

TEST(SafetensorsBadIndex, ShardMissing) {
  ShardedDir s;
  s.index["weight_map"]["scalar"] = "model-00003-of-00002.safetensors";
  EXPECT_TRUE(RejectsIndex(s, "shard 'model-00003-of-00002.safetensors' (holding tensor 'scalar') is missing", ErrorKind::kNotFound));
}

TEST(SafetensorsBadIndex, TensorAbsentFromShard) {
  ShardedDir s;
  s.index["weight_map"]["model.layers.9.ghost"] = "model-00002-of-00002.safetensors";
  EXPECT_TRUE(RejectsIndex(s, "tensor 'model.layers.9.ghost' is listed in the index but absent from shard"));
}

TEST(SafetensorsBadIndex, TensorNotListed) {
  ShardedDir s;
  s.index["weight_map"].erase("scalar");
  EXPECT_TRUE(RejectsIndex(s, "holds tensor 'scalar' that the index does not list"));
}

TEST(SafetensorsBadIndex, TensorInOtherShard) {
  ShardedDir s;
  s.index["weight_map"]["scalar"] = "model-00001-of-00002.safetensors";
  EXPECT_TRUE(RejectsIndex(s, "the index places it in 'model-00001-of-00002.safetensors'"));
}

TEST(SafetensorsBadIndex, ShardNamesMayNotEscape) {
  for (const char* bad : {"/etc/passwd", "../model.safetensors", "sub/../../x.safetensors", "..", "a/..", ""}) {
    ShardedDir s;
    s.index["weight_map"]["scalar"] = bad;
    EXPECT_TRUE(RejectsIndex(s, "is not a plain relative name inside the model directory")) << bad;
  }
}

TEST(SafetensorsBadIndex, CorruptShardIsNamed) {
  ShardedDir s;
  s.WriteIndex();
  const std::string shard = s.dir.File("model-00002-of-00002.safetensors");
  std::vector<uint8_t> bytes = testing::ReadBytes(shard);
  bytes.pop_back();
  testing::WriteBytes(shard, bytes);
  EXPECT_TRUE(FailsWith(SafetensorsModel::OpenDir(s.dir.path()).status(), ErrorKind::kDataLoss, shard, "runs past the end"));
}

TEST(SafetensorsBadDir, Missing) {
  TempDir dir;
  EXPECT_TRUE(FailsWith(SafetensorsModel::OpenDir(dir.path()).status(), ErrorKind::kNotFound, dir.path(),
                        "neither model.safetensors nor model.safetensors.index.json"));
  EXPECT_TRUE(FailsWith(SafetensorsModel::OpenDir(dir.File("nope")).status(), ErrorKind::kNotFound, dir.File("nope"), "does not exist"));
  EXPECT_TRUE(FailsWith(SafetensorsModel::OpenFile(dir.File("x.safetensors")).status(), ErrorKind::kNotFound,
                        dir.File("x.safetensors"), "does not exist"));
}

// --- one bad file per failure mode ------------------------------------------

TEST(SafetensorsBadFile, TooShort) {
  EXPECT_TRUE(Rejects({1, 2, 3, 4, 5}, "too short for the 8-byte header length"));
  EXPECT_TRUE(Rejects({}, "too short"));
}

TEST(SafetensorsBadFile, HeaderLength) {
  ByteWriter big;
  big.U64(200ull << 20).Raw("{}");
  EXPECT_TRUE(Rejects(big.bytes(), "exceeds the limit"));
  ByteWriter huge;
  huge.U64(UINT64_MAX).Raw("{}");
  EXPECT_TRUE(Rejects(huge.bytes(), "exceeds the limit"));
  ByteWriter past;
  past.U64(1000).Raw("{\"a\":1}");
  EXPECT_TRUE(Rejects(past.bytes(), "runs past the end of the file"));
  ByteWriter zero;
  zero.U64(0);
  EXPECT_TRUE(Rejects(zero.bytes(), "header is empty"));
}

TEST(SafetensorsBadFile, HeaderNotUtf8) {
  const std::string h = "{" + Entry("w\xff", "F32", "[1]", "[0,4]") + "}";
  EXPECT_TRUE(Rejects(Raw(h, 4), "not valid UTF-8"));
  const std::string overlong = "{" + Entry("w\xc0\xaf", "F32", "[1]", "[0,4]") + "}";
  EXPECT_TRUE(Rejects(Raw(overlong, 4), "not valid UTF-8"));
  const std::string surrogate = "{" + Entry("w\xed\xa0\x80", "F32", "[1]", "[0,4]") + "}";
  EXPECT_TRUE(Rejects(Raw(surrogate, 4), "not valid UTF-8"));
}

TEST(SafetensorsBadFile, HeaderNotJson) {
  EXPECT_TRUE(Rejects(Raw("{\"w\": {\"dtype\": ", 0), "not valid JSON"));
  // nlohmann stops at a NUL; JSON cannot contain one, so it is refused first.
  EXPECT_TRUE(Rejects(Raw(std::string("{}\0\0", 4), 0), "NUL byte at offset 2"));
  EXPECT_TRUE(Rejects(Raw(std::string("{}\0junk", 6), 0), "NUL byte at offset 2"));
  EXPECT_TRUE(Rejects(Raw("[1, 2]", 0), "not a JSON object"));
  EXPECT_TRUE(Rejects(Raw("\"w\"", 0), "not a JSON object"));
  EXPECT_TRUE(Rejects(Raw("{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}", 0), "nests JSON deeper"));
}

TEST(SafetensorsBadFile, TrailingSpacesAllowed) {
  TempDir dir;
  testing::WriteBytes(dir.File("a.safetensors"), Raw("{" + Entry("w", "F32", "[1]", "[0,4]") + "}      ", 4));
  EXPECT_TRUE(SafetensorsModel::OpenFile(dir.File("a.safetensors")).ok());
}

TEST(SafetensorsBadFile, Dtype) {
  EXPECT_TRUE(Rejects(Raw("{" + Entry("w", "Q7", "[1]", "[0,4]") + "}", 4), "tensor 'w': unknown dtype 'Q7'"));
  EXPECT_TRUE(Rejects(Raw("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4), "tensor 'w': missing string field 'dtype'"));
  EXPECT_TRUE(Rejects(Raw("{\"w\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", 4), "missing string field 'dtype'"));
  EXPECT_TRUE(Rejects(Raw("{" + Entry("w", "f32", "[1]", "[0,4]") + "}", 4), "unknown dtype 'f32'"));
}

TEST(SafetensorsBadFile, UnimplementedDtypes) {
  for (auto [dtype, bytes] : {std::pair{"I8", 4}, std::pair{"F64", 32}, std::pair{"F8_E4M3", 4}, std::pair{"I64", 32},
                              std::pair{"BOOL", 4}, std::pair{"U8", 4}}) {
    const std::string h = "{" + Entry("w", dtype, "[4]", "[0," + std::to_string(bytes) + "]") + "}";
    EXPECT_TRUE(Rejects(Raw(h, bytes), "tensor 'w' has dtype " + std::string(dtype), ErrorKind::kUnimplemented)) << dtype;
  }
  // A corrupt layout is reported as corruption even when the dtype is unsupported.
  EXPECT_TRUE(Rejects(Raw("{" + Entry("w", "I8", "[4]", "[0,4]") + "}", 6), "bytes after the last tensor"));
}

TEST(SafetensorsBadFile, Shape) {
  EXPECT_TRUE(Rejects(Raw("{" + Entry("w", "F32", "[-1]", "[0,4]") + "}", 4), "shape entry -1 is not a non-negative integer"));
  EXPECT_TRUE(Rejects(Raw("{" + Entry("w", "F32", "[2.5]", "[0,4]") + "}", 4), "shape entry 2.5 is not a non-negative integer"));
  EXPECT_TRUE(Rejects(Raw("{" + Entry("w", "F32", "[\"2\"]", "[0,4]") + "}", 4), "is not a non-negative integer"));
  EXPECT_TRUE(Rejects(Raw("{" + Entry("w", "F32", "[[1]]", "[0,4]") + "}", 4), "is not a non-negative integer"));
  EXPECT_TRUE(Rejects(Raw("{" + Entry("w", "F32", "4", "[0,4]") + "}", 4), "missing array field 'shape'"));
  EXPECT_TRUE(Rejects(Raw("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4), "missing array field 'shape'"));
  EXPECT_TRUE(Rejects(Raw("{" + Entry("w", "F32", "[18446744073709551615]", "[0,4]") + "}", 4), "is not a non-negative integer"));
}

TEST(SafetensorsBadFile, ShapeOverflow) {
  EXPECT_TRUE(Rejects(Raw("{" + Entry("w", "F32", "[4611686018427387904,4611686018427387904]", "[0,4]") + "}", 4), "overflows 64 bits"));
  // Elements fit 64 bits, bytes do not.
  EXPECT_TRUE(Rejects(Raw("{" + Entry("w", "F32", "[4611686018427387904]", "[0,4]") + "}", 4), "overflows 64 bits"));
  EXPECT_TRUE(Rejects(Raw("{" + Entry("w", "F64", "[4294967296,1073741824]", "[0,4]") + "}", 4), "overflows 64 bits"));
  // Overflowing dimensions times a zero is zero bytes, which is fine.
  TempDir dir;
  testing::WriteBytes(dir.File("z.safetensors"),
                      Raw("{" + Entry("w", "F32", "[4611686018427387904,4611686018427387904,0]", "[0,0]") + "}", 0));
  auto m = SafetensorsModel::OpenFile(dir.File("z.safetensors"));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)->Find("w")->nbytes, 0u);
}

TEST(SafetensorsBadFile, SubByteDtypeNotWholeBytes) {
  EXPECT_TRUE(Rejects(Raw("{" + Entry("w", "F4", "[3]", "[0,2]") + "}", 2), "not a whole number of bytes"));
}

TEST(SafetensorsBadFile, DataOffsets) {
  for (const char* offsets : {"[0]", "[0,4,8]", "[-4,0]", "[0,4.0]", "\"0,4\"", "[0,null]"}) {
    EXPECT_TRUE(Rejects(Raw("{" + Entry("w", "F32", "[1]", offsets) + "}", 4), "'data_offsets' is not a pair of non-negative integers"))
        << offsets;
  }
  EXPECT_TRUE(Rejects(Raw("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4), "'data_offsets' is not a pair"));
  EXPECT_TRUE(Rejects(Raw("{" + Entry("w", "F32", "[0]", "[4,0]") + "}", 4), "data_offsets [4, 0] begin after end"));
}

TEST(SafetensorsBadFile, SizeMismatch) {
  EXPECT_TRUE(Rejects(Raw("{" + Entry("w", "F32", "[2,2]", "[0,12]") + "}", 12),
                      "tensor 'w': data_offsets [0, 12] hold 12 bytes, but F32 [2,2] needs 16"));
  EXPECT_TRUE(Rejects(Raw("{" + Entry("w", "BF16", "[]", "[0,4]") + "}", 4), "needs 2"));
}

TEST(SafetensorsBadFile, Gap) {
  const std::string h = "{" + Entry("a", "F32", "[2]", "[0,8]") + "," + Entry("b", "F32", "[2]", "[16,24]") + "}";
  EXPECT_TRUE(Rejects(Raw(h, 24), "bytes [8, 16) of the data region belong to no tensor (gap before tensor 'b')"));
  const std::string first = "{" + Entry("a", "F32", "[2]", "[4,12]") + "}";
  EXPECT_TRUE(Rejects(Raw(first, 12), "bytes [0, 4) of the data region belong to no tensor"));
}

TEST(SafetensorsBadFile, Overlap) {
  const std::string h = "{" + Entry("a", "F32", "[4]", "[0,16]") + "," + Entry("b", "F32", "[2]", "[8,16]") + "}";
  EXPECT_TRUE(Rejects(Raw(h, 16), "tensor 'b' data [8, 16) overlaps tensor 'a'"));
  const std::string same = "{" + Entry("a", "F32", "[2]", "[0,8]") + "," + Entry("b", "F32", "[2]", "[0,8]") + "}";
  EXPECT_TRUE(Rejects(Raw(same, 8), "overlaps"));
}

TEST(SafetensorsBadFile, BytesAfterLastTensor) {
  EXPECT_TRUE(Rejects(Raw("{" + Entry("a", "F32", "[2]", "[0,8]") + "}", 12), "4 bytes after the last tensor"));
  EXPECT_TRUE(Rejects(Raw("{}", 3), "3 bytes after the last tensor"));
}

TEST(SafetensorsBadFile, PastEndOfData) {
  EXPECT_TRUE(Rejects(Raw("{" + Entry("a", "F32", "[4]", "[0,16]") + "}", 8),
                      "tensor 'a': data_offsets end 16 runs past the end of the data region (8 bytes)"));
  EXPECT_TRUE(Rejects(Raw("{" + Entry("a", "F32", "[0]", "[9223372036854775807,9223372036854775807]") + "}", 8),
                      "runs past the end of the data region"));
}

TEST(SafetensorsBadFile, Metadata) {
  const std::string w = Entry("w", "F32", "[1]", "[0,4]");
  EXPECT_TRUE(Rejects(Raw("{\"__metadata__\":\"pt\"," + w + "}", 4), "__metadata__ is not a JSON object"));
  EXPECT_TRUE(Rejects(Raw("{\"__metadata__\":{\"format\":1}," + w + "}", 4), "__metadata__ value for 'format' is not a string"));
  EXPECT_TRUE(Rejects(Raw("{\"__metadata__\":{\"a\":{\"b\":\"c\"}}," + w + "}", 4), "__metadata__ value for 'a' is not a string"));
}

TEST(SafetensorsBadFile, DuplicateName) {
  const std::string h = "{" + Entry("w", "F32", "[1]", "[0,4]") + "," + Entry("w", "F32", "[1]", "[4,8]") + "}";
  EXPECT_TRUE(Rejects(Raw(h, 8), "duplicate key 'w'"));
  EXPECT_TRUE(Rejects(Raw("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), "duplicate key 'dtype'"));
}

TEST(SafetensorsBadFile, EntryShape) {
  EXPECT_TRUE(Rejects(Raw("{\"w\":5}", 0), "tensor 'w': entry is not a JSON object"));
  EXPECT_TRUE(Rejects(Raw("{" + Entry("", "F32", "[1]", "[0,4]") + "}", 4), "a tensor has an empty name"));
}

}  // namespace
}  // namespace strata
