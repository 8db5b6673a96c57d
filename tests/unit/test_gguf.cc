// GGUF reader and writer: writer -> reader round trips, one hand-built bad
// file per failure mode (error kind + message naming the file and the
// problem), the shared llama.cpp files, and truncation / bit-flip sweeps over
// the shared Q4_K_M file (the reader must return, never crash).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <malloc.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>

#include "model/gguf.h"
#include "model/gguf_writer.h"
#include "tests/unit/test_util.h"

namespace strata {
namespace {

using testing::ByteWriter;
using testing::FailsWith;
using testing::TempDir;
using V = GgufWriter::Value;

constexpr uint32_t kMagic = 0x46554747;
const std::string kShared = STRATA_SHARED_DIR;

std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// Writes `bytes` to a fresh file in `dir` and opens it.
Result<std::unique_ptr<GgufFile>> OpenBytes(const TempDir& dir, const std::vector<uint8_t>& bytes, std::string* path_out) {
  static int counter = 0;
  *path_out = dir.File("f" + std::to_string(counter++) + ".gguf");
  testing::WriteBytes(*path_out, bytes);
  return GgufFile::Open(*path_out);
}

// Opens `bytes` and asserts DataLoss whose message names the file and says `what`.
::testing::AssertionResult RejectsBytes(const std::vector<uint8_t>& bytes, const std::string& what,
                                        ErrorKind kind = ErrorKind::kDataLoss) {
  TempDir dir;
  std::string path;
  auto f = OpenBytes(dir, bytes, &path);
  return FailsWith(f.status(), kind, path, what);
}

// ---------------------------------------------------------------------------
// Round trip

GgufWriter AllTypesWriter() {
  GgufWriter w;
  w.SetString("general.architecture", "smollm3");
  w.SetU8("t.u8", 200);
  w.SetI8("t.i8", -100);
  w.SetU16("t.u16", 60000);
  w.SetI16("t.i16", -30000);
  w.SetU32("t.u32", 4000000000u);
  w.SetI32("t.i32", -2000000000);
  w.SetU64("t.u64", 0xFEDCBA9876543210ull);
  w.SetI64("t.i64", INT64_MIN + 5);
  w.SetF32("t.f32", 1.5f);
  w.SetF64("t.f64", -2.25e300);
  w.SetBool("t.bool_true", true);
  w.SetBool("t.bool_false", false);
  w.SetString("t.empty_string", "");
  w.SetString("t.utf8", "héllo ▁world \xF0\x9F\x98\x80");
  w.SetStringArray("t.strings", {"a", "", "ccc", "Ġthe"});
  w.SetI32Array("t.i32s", {1, -2, 3});
  w.SetU32Array("t.u32s", {7, 8});
  w.SetF32Array("t.f32s", {0.5f, -1.0f, 3.25f});
  w.SetBoolArray("t.bools", {true, false, true});
  w.Set("t.empty_array", V::Array(GgufValueType::kInt64, {}));
  w.Set("t.u8s", V::Array(GgufValueType::kUint8, {V::U8(1), V::U8(255)}));
  w.Set("t.f64s", V::Array(GgufValueType::kFloat64, {V::F64(1e-300), V::F64(2.0)}));
  // Nested: array of arrays (of different element types and lengths).
  w.Set("t.nested", V::Array(GgufValueType::kArray,
                             {V::Array(GgufValueType::kInt32, {V::I32(1), V::I32(2)}),
                              V::Array(GgufValueType::kString, {V::String("x")}),
                              V::Array(GgufValueType::kArray, {V::Array(GgufValueType::kUint16, {V::U16(9)})}),
                              V::Array(GgufValueType::kFloat32, {})}));
  return w;
}

struct TensorCase {
  std::string name;
  TensorType type;
  std::vector<int64_t> ne;
};

const std::vector<TensorCase>& TensorCases() {
  static const std::vector<TensorCase> cases = {
      {"f32.2d", TensorType::kF32, {5, 3}},
      {"f16.1d", TensorType::kF16, {7}},
      {"bf16.3d", TensorType::kBF16, {4, 2, 3}},
      {"f32.4d", TensorType::kF32, {2, 3, 1, 5}},
      {"q8_0", TensorType::kQ8_0, {64, 2}},
      {"q4_0", TensorType::kQ4_0, {32, 3}},
      {"q5_0", TensorType::kQ5_0, {96}},
      {"q4_k", TensorType::kQ4_K, {256, 3}},
      {"q5_k", TensorType::kQ5_K, {512}},
      {"q6_k", TensorType::kQ6_K, {256, 2}},
  };
  return cases;
}

class GgufRoundTrip : public ::testing::TestWithParam<uint32_t> {};

TEST_P(GgufRoundTrip, EveryValueAndTensorTypeSurvives) {
  const uint32_t alignment = GetParam();
  GgufWriter w = AllTypesWriter();
  w.SetAlignment(alignment);
  std::vector<std::vector<uint8_t>> datas;
  uint32_t seed = 1;
  for (const TensorCase& c : TensorCases()) {
    auto bytes = GgufWriter::TensorBytes(c.type, c.ne);
    ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
    datas.push_back(Pattern(*bytes, seed++));
    w.AddTensor(c.name, c.type, c.ne, datas.back());
  }
  TempDir dir;
  const std::string path = dir.File("rt.gguf");
  ASSERT_TRUE(w.WriteFile(path).ok());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_EQ(testing::ReadBytes(path), w.Serialize());

  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const GgufFile& g = **f;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.alignment(), alignment);
  EXPECT_EQ(g.data_offset() % alignment, 0u);
  EXPECT_EQ(g.Find("general.alignment") != nullptr, alignment != 32);

  EXPECT_EQ(*g.GetString("general.architecture"), "smollm3");
  EXPECT_EQ(*g.GetUint("t.u8"), 200u);
  EXPECT_EQ(g.Find("t.u8")->type, GgufValueType::kUint8);
  EXPECT_EQ(*g.GetInt("t.i8"), -100);
  EXPECT_EQ(g.Find("t.i8")->type, GgufValueType::kInt8);
  EXPECT_EQ(*g.GetUint("t.u16"), 60000u);
  EXPECT_EQ(*g.GetInt("t.i16"), -30000);
  EXPECT_EQ(*g.GetUint("t.u32"), 4000000000u);
  EXPECT_EQ(*g.GetInt("t.i32"), -2000000000);
  EXPECT_EQ(*g.GetUint("t.u64"), 0xFEDCBA9876543210ull);
  EXPECT_EQ(g.Find("t.u64")->type, GgufValueType::kUint64);
  EXPECT_EQ(*g.GetInt("t.i64"), INT64_MIN + 5);
  EXPECT_EQ(*g.GetFloat("t.f32"), 1.5);
  EXPECT_EQ(g.Find("t.f32")->type, GgufValueType::kFloat32);
  EXPECT_EQ(*g.GetFloat("t.f64"), -2.25e300);
  EXPECT_TRUE(*g.GetBool("t.bool_true"));
  EXPECT_FALSE(*g.GetBool("t.bool_false"));
  EXPECT_EQ(*g.GetString("t.empty_string"), "");
  EXPECT_EQ(*g.GetString("t.utf8"), "héllo ▁world \xF0\x9F\x98\x80");
  EXPECT_EQ(*g.GetStringArray("t.strings"), (std::vector<std::string_view>{"a", "", "ccc", "Ġthe"}));
  EXPECT_EQ(*g.GetIntArray("t.i32s"), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(*g.GetIntArray("t.u32s"), (std::vector<int64_t>{7, 8}));
  EXPECT_EQ(*g.GetIntArray("t.u8s"), (std::vector<int64_t>{1, 255}));
  EXPECT_EQ(*g.GetFloatArray("t.f32s"), (std::vector<double>{0.5, -1.0, 3.25}));
  EXPECT_EQ(*g.GetFloatArray("t.f64s"), (std::vector<double>{1e-300, 2.0}));
  EXPECT_TRUE(g.GetIntArray("t.empty_array")->empty());
  {
    const auto& a = std::get<GgufArray>(g.Find("t.bools")->v);
    ASSERT_EQ(a.count, 3u);
    EXPECT_EQ(a.elem_type, GgufValueType::kBool);
    EXPECT_EQ(a.raw.size(), 3u);
    const std::vector<GgufValue> items = a.Items();
    ASSERT_EQ(items.size(), 3u);
    EXPECT_TRUE(std::get<bool>(items[0].v));
    EXPECT_FALSE(std::get<bool>(items[1].v));
  }
  {
    const GgufValue* n = g.Find("t.nested");
    ASSERT_NE(n, nullptr);
    const auto& outer = std::get<GgufArray>(n->v);
    EXPECT_EQ(outer.elem_type, GgufValueType::kArray);
    ASSERT_EQ(outer.count, 4u);
    const std::vector<GgufValue> items = outer.Items();
    ASSERT_EQ(items.size(), 4u);
    const auto& a0 = std::get<GgufArray>(items[0].v);
    EXPECT_EQ(a0.elem_type, GgufValueType::kInt32);
    ASSERT_EQ(a0.count, 2u);
    EXPECT_EQ(std::get<int64_t>(a0.Items()[1].v), 2);
    const auto& a1 = std::get<GgufArray>(items[1].v);
    EXPECT_EQ(std::get<std::string_view>(a1.Items()[0].v), "x");
    const auto& a2 = std::get<GgufArray>(items[2].v);
    const auto a2_items = a2.Items();
    const auto& a2_0 = std::get<GgufArray>(a2_items[0].v);
    EXPECT_EQ(a2_0.elem_type, GgufValueType::kUint16);
    EXPECT_EQ(std::get<uint64_t>(a2_0.Items()[0].v), 9u);
    EXPECT_EQ(std::get<GgufArray>(items[3].v).count, 0u);
    EXPECT_TRUE(std::get<GgufArray>(items[3].v).Items().empty());
  }

  ASSERT_EQ(g.tensors().size(), TensorCases().size());
  for (size_t i = 0; i < TensorCases().size(); ++i) {
    const TensorCase& c = TensorCases()[i];
    const GgufTensor* t = g.FindTensor(c.name);
    ASSERT_NE(t, nullptr) << c.name;
    EXPECT_EQ(t->type, c.type) << c.name;
    ASSERT_EQ(t->n_dims, static_cast<int>(c.ne.size())) << c.name;
    for (size_t d = 0; d < c.ne.size(); ++d) EXPECT_EQ(t->ne[d], c.ne[d]) << c.name;
    EXPECT_EQ(t->offset % alignment, 0u) << c.name;
    ASSERT_EQ(t->nbytes, datas[i].size()) << c.name;
    EXPECT_EQ(std::memcmp(t->data, datas[i].data(), t->nbytes), 0) << c.name;
  }

  // Copying every value through FromRead and re-adding the tensors in the
  // same order reproduces the file byte for byte (keys are re-set in the
  // writer's order, which the reader's map does not keep, so go by name).
  GgufWriter copy = AllTypesWriter();
  copy.SetAlignment(alignment);
  for (const auto& [key, value] : g.metadata()) copy.Set(key, V::FromRead(value));
  for (const TensorCase& c : TensorCases()) {
    const GgufTensor* t = g.FindTensor(c.name);
    copy.AddTensorView(c.name, t->type, c.ne, std::span<const uint8_t>(t->data, t->nbytes));
  }
  EXPECT_EQ(copy.Serialize(), w.Serialize());
}

INSTANTIATE_TEST_SUITE_P(Alignments, GgufRoundTrip, ::testing::Values(32u, 64u, 1u, 256u));

TEST(GgufWriter, SourcesAndErrors) {
  GgufWriter w;
  w.AddTensorSource("a", TensorType::kF32, {4}, [](std::span<uint8_t> out) {
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(i);
    return Status::Ok();
  });
  std::vector<uint8_t> bytes = w.Serialize();
  TempDir dir;
  std::string path;
  auto f = OpenBytes(dir, bytes, &path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->FindTensor("a")->data[15], 15);

  GgufWriter bad;
  bad.AddTensorSource("b", TensorType::kF32, {4}, [](std::span<uint8_t>) { return IoError("source broke"); });
  const std::string out = dir.File("bad.gguf");
  Status st = bad.WriteFile(out);
  EXPECT_TRUE(FailsWith(st, ErrorKind::kIo, out, "source broke"));
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_FALSE(std::filesystem::exists(out + ".tmp"));

  EXPECT_TRUE(FailsWith(w.WriteFile(dir.File("no/such/dir/x.gguf")), ErrorKind::kIo, "no/such/dir/x.gguf", "cannot create"));

  EXPECT_FALSE(GgufWriter::TensorBytes(TensorType::kQ4_K, {100}).ok());
  EXPECT_FALSE(GgufWriter::TensorBytes(TensorType::kF32, {}).ok());
  EXPECT_FALSE(GgufWriter::TensorBytes(TensorType::kF32, {1, 1, 1, 1, 1}).ok());
  EXPECT_FALSE(GgufWriter::TensorBytes(TensorType::kF32, {0}).ok());
  EXPECT_FALSE(GgufWriter::TensorBytes(TensorType::kF32, {INT64_MAX, INT64_MAX}).ok());
  EXPECT_EQ(*GgufWriter::TensorBytes(TensorType::kQ4_K, {512, 3}), 2u * 144u * 3u);

  // Re-setting a key replaces it in place; SetAlignment(32) removes the key.
  GgufWriter k;
  k.SetU32("x", 1);
  k.SetAlignment(64);
  k.SetU32("x", 2);
  EXPECT_EQ(k.n_kv(), 2u);
  k.SetAlignment(32);
  EXPECT_EQ(k.n_kv(), 1u);
  EXPECT_FALSE(k.Has("general.alignment"));
}

TEST(GgufWriterDeathTest, MisuseAborts) {
  GgufWriter w;
  EXPECT_DEATH(w.AddTensor("t", TensorType::kF32, {4}, std::vector<uint8_t>(15)), "16");
  w.AddTensor("t", TensorType::kF32, {4}, std::vector<uint8_t>(16));
  EXPECT_DEATH(w.AddTensor("t", TensorType::kF32, {4}, std::vector<uint8_t>(16)), "duplicate");
  EXPECT_DEATH(w.SetAlignment(3), "power of two");
  EXPECT_DEATH(w.AddTensor(std::string(64, 'n'), TensorType::kF32, {1}, std::vector<uint8_t>(4)), "at most 63");
}

// ---------------------------------------------------------------------------
// Hand-built bad files

// Header start: magic, version, counts.
ByteWriter Start(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
  ByteWriter b;
  b.U32(kMagic).U32(version).U64(n_tensors).U64(n_kv);
  return b;
}
void Str(ByteWriter& b, const std::string& s) { b.U64(s.size()).Raw(s); }
void KvU32(ByteWriter& b, const std::string& key, uint32_t v) {
  Str(b, key);
  b.U32(static_cast<uint32_t>(GgufValueType::kUint32)).U32(v);
}
void Info(ByteWriter& b, const std::string& name, const std::vector<uint64_t>& ne, uint32_t type, uint64_t offset) {
  Str(b, name);
  b.U32(static_cast<uint32_t>(ne.size()));
  for (uint64_t n : ne) b.U64(n);
  b.U32(type).U64(offset);
}
// Pads to 32 and appends `data_bytes` of data.
std::vector<uint8_t> Finish(ByteWriter& b, size_t data_bytes, size_t alignment = 32) {
  b.PadTo(alignment).Zeros(data_bytes);
  return b.bytes();
}
constexpr uint32_t kF32Id = 0;

// A small valid file: one key, two F32 tensors.
std::vector<uint8_t> SmallValid() {
  GgufWriter w;
  w.SetString("general.architecture", "llama");
  w.SetI32Array("a", {1, 2, 3});
  w.AddTensor("x", TensorType::kF32, {4, 2}, Pattern(32, 1));
  w.AddTensor("y", TensorType::kF16, {8}, Pattern(16, 2));
  return w.Serialize();
}

TEST(GgufBadFile, SmallValidOpens) {
  TempDir dir;
  std::string path;
  auto f = OpenBytes(dir, SmallValid(), &path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->tensors().size(), 2u);
}

TEST(GgufBadFile, BadMagic) {
  auto bytes = SmallValid();
  bytes[0] = 'X';
  EXPECT_TRUE(RejectsBytes(bytes, "bad magic"));
}

TEST(GgufBadFile, Version1IsRefused) {
  // v1 used 32-bit counts and lengths; llama.cpp no longer reads it either.
  ByteWriter b;
  b.U32(kMagic).U32(1).U32(0).U32(1);
  Str(b, "k");  // (v1 lengths were 32-bit: nothing after the version is read)
  b.U32(static_cast<uint32_t>(GgufValueType::kUint8)).U8(1);
  EXPECT_TRUE(RejectsBytes(b.bytes(), "GGUF version 1 is not supported"));
  auto bytes = SmallValid();
  const uint32_t v1 = 1;
  std::memcpy(bytes.data() + 4, &v1, 4);
  EXPECT_TRUE(RejectsBytes(bytes, "GGUF version 1 is not supported"));
}

TEST(GgufBadFile, BadVersion) {
  for (uint32_t v : {0u, 4u, 0xFFFFFFFFu}) {
    auto bytes = SmallValid();
    std::memcpy(bytes.data() + 4, &v, 4);
    EXPECT_TRUE(RejectsBytes(bytes, "unsupported GGUF version " + std::to_string(v))) << v;
  }
}

TEST(GgufBadFile, EveryTruncationIsAnError) {
  const auto bytes = SmallValid();
  // The last tensor ("y", 16 bytes) ends 32 + 16 bytes into the data region;
  // what follows is padding, which a reader may not require.
  TempDir dir;
  std::string path;
  auto full = OpenBytes(dir, bytes, &path);
  ASSERT_TRUE(full.ok());
  const uint64_t needed = (*full)->data_offset() + (*full)->FindTensor("y")->offset + 16;
  for (size_t len = 0; len < needed; ++len) {
    std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(len));
    auto f = OpenBytes(dir, prefix, &path);
    ASSERT_FALSE(f.ok()) << "prefix of " << len << " bytes opened";
    EXPECT_EQ(f.status().kind(), ErrorKind::kDataLoss) << len << ": " << f.status().ToString();
    EXPECT_NE(f.status().message().find(path), std::string::npos) << f.status().message();
  }
}

TEST(GgufBadFile, HugeCountsRejectedBeforeAllocating) {
  // 2^63, 2^64-1, and counts whose product with a per-item size wraps.
  for (uint64_t n : {uint64_t{1} << 63, UINT64_MAX, (UINT64_MAX / 13) + 1, (UINT64_MAX / 32) + 1, uint64_t{1} << 40}) {
    ByteWriter kv = Start(0, n);
    KvU32(kv, "a", 1);
    EXPECT_TRUE(RejectsBytes(Finish(kv, 0), "metadata count")) << n;
    ByteWriter t = Start(n, 0);
    Info(t, "x", {8}, kF32Id, 0);
    EXPECT_TRUE(RejectsBytes(Finish(t, 32), "tensor count")) << n;
  }
}

TEST(GgufBadFile, StringLengths) {
  {  // key length past the end
    ByteWriter b = Start(0, 1);
    b.U64(1000).Raw("abc").Zeros(16);
    EXPECT_TRUE(RejectsBytes(b.bytes(), "length runs past the end"));
  }
  {  // key length 2^64-1 (len + 1 wraps to 0)
    ByteWriter b = Start(0, 1);
    b.U64(UINT64_MAX).Raw("abcdefghijklmnopqrstuvwxyz");
    EXPECT_TRUE(RejectsBytes(b.bytes(), "length runs past the end"));
  }
  for (uint64_t len : {uint64_t{100}, UINT64_MAX, UINT64_MAX - 7}) {  // string value
    ByteWriter b = Start(0, 1);
    Str(b, "k");
    b.U32(static_cast<uint32_t>(GgufValueType::kString)).U64(len).Raw("short");
    EXPECT_TRUE(RejectsBytes(b.bytes(), "string length runs past the end")) << len;
  }
  {  // tensor name
    ByteWriter b = Start(1, 0);
    b.U64(UINT64_MAX).Raw("name....................................");
    EXPECT_TRUE(RejectsBytes(b.bytes(), "name runs past the end"));
  }
}

TEST(GgufBadFile, ArrayCountOverflow) {
  // 2^61 + 1 uint64 items: count * 8 wraps to 8.
  for (auto [type, n] : {std::pair{GgufValueType::kUint64, (uint64_t{1} << 61) + 1},
                         std::pair{GgufValueType::kUint32, (uint64_t{1} << 62) + 1},
                         std::pair{GgufValueType::kString, UINT64_MAX},
                         std::pair{GgufValueType::kUint8, uint64_t{1} << 63},
                         std::pair{GgufValueType::kArray, uint64_t{1} << 60}}) {
    ByteWriter b = Start(0, 1);
    Str(b, "arr");
    b.U32(static_cast<uint32_t>(GgufValueType::kArray)).U32(static_cast<uint32_t>(type)).U64(n).U64(1).U64(2);
    EXPECT_TRUE(RejectsBytes(b.bytes(), "does not fit in the file")) << GgufValueTypeName(type);
  }
}

TEST(GgufBadFile, NestedArrays) {
  {  // inner array count too large
    ByteWriter b = Start(0, 1);
    Str(b, "nest");
    b.U32(static_cast<uint32_t>(GgufValueType::kArray)).U32(static_cast<uint32_t>(GgufValueType::kArray)).U64(1);
    b.U32(static_cast<uint32_t>(GgufValueType::kInt32)).U64(1000000).U32(5);
    EXPECT_TRUE(RejectsBytes(b.bytes(), "does not fit in the file"));
  }
  {  // nested far too deep (each level: elem type array, count 1)
    ByteWriter b = Start(0, 1);
    Str(b, "deep");
    b.U32(static_cast<uint32_t>(GgufValueType::kArray));
    for (int i = 0; i < 1000; ++i) b.U32(static_cast<uint32_t>(GgufValueType::kArray)).U64(1);
    b.U32(static_cast<uint32_t>(GgufValueType::kUint8)).U64(0);
    EXPECT_TRUE(RejectsBytes(b.bytes(), "nested deeper"));
  }
  {  // inner element type unknown
    ByteWriter b = Start(0, 1);
    Str(b, "nest");
    b.U32(static_cast<uint32_t>(GgufValueType::kArray)).U32(static_cast<uint32_t>(GgufValueType::kArray)).U64(1);
    b.U32(77).U64(0);
    EXPECT_TRUE(RejectsBytes(b.bytes(), "unknown value type 77"));
  }
}

TEST(GgufBadFile, UnknownValueType) {
  for (uint32_t t : {13u, 100u, 0xFFFFFFFFu}) {
    ByteWriter b = Start(0, 1);
    Str(b, "k");
    b.U32(t).U64(0);
    EXPECT_TRUE(RejectsBytes(b.bytes(), "unknown value type " + std::to_string(t))) << t;
    ByteWriter a = Start(0, 1);
    Str(a, "k");
    a.U32(static_cast<uint32_t>(GgufValueType::kArray)).U32(t).U64(0);
    EXPECT_TRUE(RejectsBytes(a.bytes(), "unknown value type " + std::to_string(t))) << t;
  }
}

TEST(GgufBadFile, BoolOutOfRange) {
  ByteWriter b = Start(0, 1);
  Str(b, "flag");
  b.U32(static_cast<uint32_t>(GgufValueType::kBool)).U8(2);
  EXPECT_TRUE(RejectsBytes(b.bytes(), "neither 0 nor 1"));
  // Arrays stay encoded after Open, so their bools are checked at Open too.
  ByteWriter a = Start(0, 1);
  Str(a, "flags");
  a.U32(static_cast<uint32_t>(GgufValueType::kArray)).U32(static_cast<uint32_t>(GgufValueType::kBool)).U64(3);
  a.U8(1).U8(0).U8(7);
  EXPECT_TRUE(RejectsBytes(a.bytes(), "bool value 7 is neither 0 nor 1"));
}

TEST(GgufBadFile, Dimensions) {
  for (uint32_t n_dims : {0u, 5u, 0xFFFFFFFFu}) {
    ByteWriter b = Start(1, 0);
    Str(b, "t");
    b.U32(n_dims);
    for (uint32_t i = 0; i < std::min(n_dims, 5u); ++i) b.U64(1);
    b.U32(kF32Id).U64(0);
    EXPECT_TRUE(RejectsBytes(Finish(b, 32), std::to_string(n_dims) + " dimensions")) << n_dims;
  }
  {
    ByteWriter b = Start(1, 0);
    Info(b, "zero", {4, 0}, kF32Id, 0);
    EXPECT_TRUE(RejectsBytes(Finish(b, 32), "dimension 1 is 0"));
  }
  {
    ByteWriter b = Start(1, 0);
    Info(b, "neg", {UINT64_MAX}, kF32Id, 0);
    EXPECT_TRUE(RejectsBytes(Finish(b, 32), "dimension 0 is"));
  }
  {  // 2^32 * 2^32 elements overflow
    ByteWriter b = Start(1, 0);
    Info(b, "big", {uint64_t{1} << 32, uint64_t{1} << 32}, kF32Id, 0);
    EXPECT_TRUE(RejectsBytes(Finish(b, 32), "overflows 64 bits"));
  }
  {  // element count fits int64 but byte size wraps uint64
    ByteWriter b = Start(1, 0);
    Info(b, "bytes", {uint64_t{1} << 31, uint64_t{1} << 31}, kF32Id, 0);
    EXPECT_TRUE(RejectsBytes(Finish(b, 32), "byte size overflows 64 bits"));
  }
  {  // huge but non-overflowing size: past the end
    ByteWriter b = Start(1, 0);
    Info(b, "huge", {uint64_t{1} << 40}, kF32Id, 0);
    EXPECT_TRUE(RejectsBytes(Finish(b, 32), "runs past the end"));
  }
}

TEST(GgufBadFile, UnknownTensorType) {
  for (uint32_t id : {4u, 5u, 31u, 99u, 0xFFFFFFFFu}) {
    ByteWriter b = Start(1, 0);
    Info(b, "t", {32}, id, 0);
    EXPECT_TRUE(RejectsBytes(Finish(b, 256), "unknown tensor type id " + std::to_string(id))) << id;
  }
}

TEST(GgufBadFile, Alignment) {
  for (uint32_t al : {0u, 3u, 48u}) {
    ByteWriter b = Start(1, 1);
    KvU32(b, "general.alignment", al);
    Info(b, "t", {8}, kF32Id, 0);
    EXPECT_TRUE(RejectsBytes(Finish(b, 32), "general.alignment " + std::to_string(al) + " is not a power of two")) << al;
  }
  {  // written through the writer: a string alignment
    GgufWriter w;
    w.SetString("general.alignment", "64");
    w.AddTensor("t", TensorType::kF32, {8}, Pattern(32, 3));
    EXPECT_TRUE(RejectsBytes(w.Serialize(), "general.alignment has type string"));
  }
  {
    GgufWriter w;
    w.SetU64("general.alignment", 64);
    EXPECT_TRUE(RejectsBytes(w.Serialize(), "general.alignment has type uint64"));
  }
}

TEST(GgufBadFile, EmptyKey) {
  ByteWriter b = Start(0, 1);
  KvU32(b, "", 1);
  EXPECT_TRUE(RejectsBytes(b.bytes(), "metadata key 0 is empty"));
}

TEST(GgufBadFile, DuplicateKey) {
  ByteWriter b = Start(0, 2);
  KvU32(b, "general.x", 1);
  KvU32(b, "general.x", 2);
  EXPECT_TRUE(RejectsBytes(b.bytes(), "duplicate metadata key 'general.x'"));
}

TEST(GgufBadFile, DuplicateTensorName) {
  ByteWriter b = Start(2, 0);
  Info(b, "w", {8}, kF32Id, 0);
  Info(b, "w", {8}, kF32Id, 32);
  EXPECT_TRUE(RejectsBytes(Finish(b, 64), "duplicate tensor name 'w'"));
}

TEST(GgufBadFile, EmptyTensorName) {
  ByteWriter b = Start(1, 0);
  Info(b, "", {8}, kF32Id, 0);
  EXPECT_TRUE(RejectsBytes(Finish(b, 32), "empty name"));
}

TEST(GgufBadFile, OffsetNotAligned) {
  ByteWriter b = Start(1, 0);
  Info(b, "w", {4}, kF32Id, 16);
  EXPECT_TRUE(RejectsBytes(Finish(b, 64), "data offset 16 is not aligned to 32"));
}

TEST(GgufBadFile, DataPastEnd) {
  {
    ByteWriter b = Start(1, 0);
    Info(b, "w", {16}, kF32Id, 32);  // [32, 96) of a 64-byte region
    EXPECT_TRUE(RejectsBytes(Finish(b, 64), "runs past the end of the file"));
  }
  {  // offset + size wraps 64 bits
    ByteWriter b = Start(1, 0);
    Info(b, "w", {16}, kF32Id, UINT64_MAX - 31);
    EXPECT_TRUE(RejectsBytes(Finish(b, 64), "runs past the end of the file"));
  }
  {  // header ends, padding missing
    ByteWriter b = Start(1, 0);
    Info(b, "w", {1}, kF32Id, 0);
    EXPECT_TRUE(RejectsBytes(b.bytes(), "truncated before the tensor data"));
  }
}

TEST(GgufBadFile, OverlappingTensors) {
  ByteWriter b = Start(2, 0);
  Info(b, "a", {16}, kF32Id, 0);   // [0, 64)
  Info(b, "b", {8}, kF32Id, 32);   // [32, 64)
  EXPECT_TRUE(RejectsBytes(Finish(b, 64), "overlap"));
}

TEST(GgufBadFile, RowNotMultipleOfBlock) {
  ByteWriter b = Start(1, 0);
  Info(b, "q", {100, 2}, static_cast<uint32_t>(TensorType::kQ4_K), 0);
  EXPECT_TRUE(RejectsBytes(Finish(b, 1024), "row length 100 is not a multiple of the Q4_K block (256)"));
  ByteWriter c = Start(1, 0);
  Info(c, "q", {48}, static_cast<uint32_t>(TensorType::kQ8_0), 0);
  EXPECT_TRUE(RejectsBytes(Finish(c, 1024), "not a multiple of the Q8_0 block (32)"));
}

TEST(GgufBadFile, MissingFile) {
  auto f = GgufFile::Open("/nonexistent/strata/x.gguf");
  EXPECT_TRUE(FailsWith(f.status(), ErrorKind::kNotFound, "/nonexistent/strata/x.gguf", "No such file or directory"));
  EXPECT_EQ(f.status().message(), "cannot open '/nonexistent/strata/x.gguf': No such file or directory");
  TempDir dir;
  const std::string missing = dir.File("absent.gguf");
  EXPECT_TRUE(FailsWith(GgufFile::Open(missing).status(), ErrorKind::kNotFound, missing,
                        "cannot open '" + missing + "': No such file or directory"));
  // A directory exists: not NotFound.
  EXPECT_FALSE(GgufFile::Open(dir.File("")).ok());
  EXPECT_NE(GgufFile::Open(dir.File("")).status().kind(), ErrorKind::kNotFound);
}

// ---------------------------------------------------------------------------
// Memory: what Open allocates is bounded by a small multiple of the file,
// however the file is crafted. (Before arrays stayed encoded, one big uint8
// array cost ~50 bytes of memory per byte of file.)

// Bytes malloc holds now (arena + mmapped blocks).
size_t HeapInUse() {
  struct mallinfo2 mi = ::mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

TEST(GgufMemory, HugeScalarArrayIsNotCopied) {
  constexpr uint64_t kN = uint64_t{8} << 20;  // 8 MiB of uint8
  TempDir dir;
  const std::string path = dir.File("big.gguf");
  {
    ByteWriter b = Start(0, 2);
    Str(b, "big");
    b.U32(static_cast<uint32_t>(GgufValueType::kArray)).U32(static_cast<uint32_t>(GgufValueType::kUint8)).U64(kN);
    std::vector<uint8_t> items(kN);
    for (uint64_t i = 0; i < kN; ++i) items[i] = static_cast<uint8_t>(i * 7);
    b.Raw(items);
    Str(b, "after");
    b.U32(static_cast<uint32_t>(GgufValueType::kUint32)).U32(42);
    testing::WriteBytes(path, b.bytes());
  }
  const size_t before = HeapInUse();
  auto f = GgufFile::Open(path);
  const size_t after = HeapInUse();
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_LT(after - std::min(after, before), size_t{64} << 10) << "Open allocated for an 8 MiB array";
  const auto& a = std::get<GgufArray>((*f)->Find("big")->v);
  EXPECT_EQ(a.count, kN);
  EXPECT_EQ(a.raw.size(), kN);
  EXPECT_GE(reinterpret_cast<const uint8_t*>(a.raw.data()), (*f)->header_bytes());
  EXPECT_LE(reinterpret_cast<const uint8_t*>(a.raw.data()) + a.raw.size(), (*f)->header_bytes() + (*f)->file_size());
  EXPECT_EQ(*(*f)->GetUint("after"), 42u);  // parsing went on past the array
  auto ints = (*f)->GetIntArray("big");
  ASSERT_TRUE(ints.ok()) << ints.status().ToString();
  ASSERT_EQ(ints->size(), kN);
  EXPECT_EQ((*ints)[12345], static_cast<uint8_t>(12345 * 7));
  EXPECT_EQ(ints->back(), static_cast<uint8_t>((kN - 1) * 7));
}

TEST(GgufMemory, StringAndNestedArraysAreNotCopied) {
  constexpr uint64_t kN = 1 << 20;
  TempDir dir;
  const std::string path = dir.File("strings.gguf");
  {
    ByteWriter b = Start(0, 2);
    Str(b, "empty_strings");  // 8 bytes per element, the smallest a string can be
    b.U32(static_cast<uint32_t>(GgufValueType::kArray)).U32(static_cast<uint32_t>(GgufValueType::kString)).U64(kN);
    b.Zeros(8 * kN);
    Str(b, "empty_arrays");  // 12 bytes per element
    b.U32(static_cast<uint32_t>(GgufValueType::kArray)).U32(static_cast<uint32_t>(GgufValueType::kArray)).U64(kN);
    for (uint64_t i = 0; i < kN; ++i) b.U32(static_cast<uint32_t>(GgufValueType::kInt8)).U64(0);
    testing::WriteBytes(path, b.bytes());
  }
  const size_t before = HeapInUse();
  auto f = GgufFile::Open(path);
  const size_t after = HeapInUse();
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_LT(after - std::min(after, before), size_t{64} << 10);
  auto strings = (*f)->GetStringArray("empty_strings");
  ASSERT_TRUE(strings.ok());
  EXPECT_EQ(strings->size(), kN);
  EXPECT_EQ(std::get<GgufArray>((*f)->Find("empty_arrays")->v).count, kN);
}

TEST(GgufMemory, ManySmallKeysStayWithinTheDocumentedBound) {
  // 60000 keys of 5 characters holding one uint8: 18 bytes of file each.
  constexpr int kKeys = 60000;
  TempDir dir;
  const std::string path = dir.File("keys.gguf");
  uint64_t file_size = 0;
  {
    ByteWriter b = Start(0, kKeys);
    char key[8];
    for (int i = 0; i < kKeys; ++i) {
      std::snprintf(key, sizeof(key), "%05d", i);
      Str(b, key);
      b.U32(static_cast<uint32_t>(GgufValueType::kUint8)).U8(1);
    }
    file_size = b.bytes().size();
    testing::WriteBytes(path, b.bytes());
  }
  const size_t before = HeapInUse();
  auto f = GgufFile::Open(path);
  const size_t after = HeapInUse();
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->metadata().size(), static_cast<size_t>(kKeys));
  EXPECT_LT(after - std::min(after, before), 12 * file_size);
}

// ---------------------------------------------------------------------------
// The shared llama.cpp files

class GgufSharedFile : public ::testing::TestWithParam<const char*> {};

TEST_P(GgufSharedFile, OpensWithExpectedMetadata) {
  const std::string path = kShared + "/models/smol-shakespeare.llamacpp-" + GetParam() + ".gguf";
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const GgufFile& g = **f;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(*g.GetString("general.architecture"), "smollm3");
  EXPECT_EQ(*g.GetUint("smollm3.block_count"), 36u);
  auto tokens = g.GetStringArray("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok()) << tokens.status().ToString();
  EXPECT_EQ(tokens->size(), 8192u);
  EXPECT_GE(g.tensors().size(), 250u);
  EXPECT_LE(g.tensors().size(), 330u);
  const GgufTensor* emb = g.FindTensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->ne[1], 8192);
  ASSERT_NE(g.FindTensor("blk.35.ffn_down.weight"), nullptr);
  EXPECT_EQ(g.FindTensor("blk.36.ffn_down.weight"), nullptr);
  for (const GgufTensor& t : g.tensors()) {
    EXPECT_EQ(t.offset % g.alignment(), 0u) << t.name;
    EXPECT_GE(t.data, g.header_bytes() + g.data_offset());
    EXPECT_LE(t.data + t.nbytes, g.header_bytes() + g.file_size());
  }
}

INSTANTIATE_TEST_SUITE_P(Files, GgufSharedFile, ::testing::Values("bf16", "q4_k_m"));

// Serialized size of a value as GGUF v3 stores it.
uint64_t ValueBytes(const GgufValue& v) {
  switch (v.type) {
    case GgufValueType::kUint8: case GgufValueType::kInt8: case GgufValueType::kBool: return 1;
    case GgufValueType::kUint16: case GgufValueType::kInt16: return 2;
    case GgufValueType::kUint32: case GgufValueType::kInt32: case GgufValueType::kFloat32: return 4;
    case GgufValueType::kUint64: case GgufValueType::kInt64: case GgufValueType::kFloat64: return 8;
    case GgufValueType::kString: return 8 + std::get<std::string_view>(v.v).size();
    case GgufValueType::kArray: return 4 + 8 + std::get<GgufArray>(v.v).raw.size();
  }
  return 0;
}

// A copy of the shared Q4_K_M file that the test shrinks and patches in place
// (truncate / pwrite are cheap; rewriting 14 MB per case is not).
class GgufSharedFuzz : public ::testing::Test {
 protected:
  void SetUp() override {
    source_ = kShared + "/models/smol-shakespeare.llamacpp-q4_k_m.gguf";
    bytes_ = testing::ReadBytes(source_);
    auto f = GgufFile::Open(source_);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    data_offset_ = (*f)->data_offset();
    kv_end_ = 24;
    for (const auto& [key, value] : (*f)->metadata()) kv_end_ += 8 + key.size() + 4 + ValueBytes(value);
    info_end_ = kv_end_;
    for (const GgufTensor& t : (*f)->tensors()) info_end_ += 8 + t.name.size() + 4 + 8 * t.n_dims + 4 + 8;
    ASSERT_LE(info_end_, data_offset_);
    ASSERT_LT(data_offset_ - info_end_, (*f)->alignment());
    path_ = dir_.File("fuzz.gguf");
    testing::WriteBytes(path_, bytes_);
  }

  // Opens the working copy: must return (ok or a status naming the file).
  void OpenAndCheck(const std::string& context) {
    auto f = GgufFile::Open(path_);
    if (!f.ok()) {
      EXPECT_NE(f.status().message().find(path_), std::string::npos) << context << ": " << f.status().message();
    } else {
      // Whatever opened must be internally consistent.
      for (const GgufTensor& t : (*f)->tensors())
        ASSERT_LE(t.data + t.nbytes, (*f)->header_bytes() + (*f)->file_size()) << context;
    }
  }

  TempDir dir_;
  std::string source_, path_;
  std::vector<uint8_t> bytes_;
  uint64_t data_offset_ = 0, kv_end_ = 0, info_end_ = 0;
};

TEST_F(GgufSharedFuzz, TruncationNeverCrashes) {
  // Longest first, so each step only shrinks the file.
  std::vector<uint64_t> lengths;
  const uint64_t data_size = bytes_.size() - data_offset_;
  for (int i = 49; i >= 0; --i) lengths.push_back(data_offset_ + data_size * static_cast<uint64_t>(i) / 50);
  for (uint64_t len = data_offset_; len-- > info_end_;) lengths.push_back(len);      // padding
  for (uint64_t len = info_end_; len-- > kv_end_;) lengths.push_back(len);          // every tensor-info byte
  for (uint64_t len = kv_end_; len > 97; len -= 97) lengths.push_back(len - 1);     // metadata, strided
  for (uint64_t len = 97; len-- > 0;) lengths.push_back(len);                       // the fixed header
  int failures = 0;
  for (uint64_t len : lengths) {
    ASSERT_EQ(::truncate(path_.c_str(), static_cast<off_t>(len)), 0);
    auto f = GgufFile::Open(path_);
    if (len < bytes_.size() && len <= data_offset_) {
      ASSERT_FALSE(f.ok()) << "truncated to " << len << " bytes, opened";
    }
    if (!f.ok()) {
      ++failures;
      EXPECT_EQ(f.status().kind(), ErrorKind::kDataLoss) << len << ": " << f.status().ToString();
      EXPECT_NE(f.status().message().find(path_), std::string::npos) << f.status().message();
    }
  }
  EXPECT_GE(failures, static_cast<int>(lengths.size()) - 1);  // only the untruncated first length may open
}

TEST_F(GgufSharedFuzz, BitFlipsNeverCrash) {
  int fd = ::open(path_.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  std::mt19937_64 rng(20240611);
  for (int i = 0; i < 200; ++i) {
    const uint64_t pos = rng() % data_offset_;
    const uint8_t flipped = bytes_[pos] ^ static_cast<uint8_t>(1u << (rng() % 8));
    ASSERT_EQ(::pwrite(fd, &flipped, 1, static_cast<off_t>(pos)), 1);
    OpenAndCheck("flip at " + std::to_string(pos));
    ASSERT_EQ(::pwrite(fd, &bytes_[pos], 1, static_cast<off_t>(pos)), 1);
  }
  // Flips inside the fixed header and the tensor table, where they matter most.
  for (int i = 0; i < 200; ++i) {
    const uint64_t pos = (i % 4 == 0) ? rng() % 24 : kv_end_ + rng() % (info_end_ - kv_end_);
    const uint8_t flipped = bytes_[pos] ^ static_cast<uint8_t>(1u << (rng() % 8));
    ASSERT_EQ(::pwrite(fd, &flipped, 1, static_cast<off_t>(pos)), 1);
    OpenAndCheck("flip at " + std::to_string(pos));
    ASSERT_EQ(::pwrite(fd, &bytes_[pos], 1, static_cast<off_t>(pos)), 1);
  }
  ::close(fd);
  auto f = GgufFile::Open(path_);
  EXPECT_TRUE(f.ok()) << f.status().ToString();
}

}  // namespace
}  // namespace strata
