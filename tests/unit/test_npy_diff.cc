// .npy reader/writer and `strata diff`'s core: round trips (1-D..3-D), the
// shared transformers hidden states, one hand-built bad file per failure mode
// (error kind + message naming the file and the problem), and DiffDumps on
// temporary dump directories (identical, one perturbed layer, the stacked
// [L+1,T,H] mapping with its final-norm rule, shape mismatches).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "common/npy.h"
#include "tests/unit/test_util.h"

// cli/*.cc go only into the strata binary, so the test binary compiles the
// diff command's translation unit itself (it is in no library it links).
#include "cli/diff.h"

#include <nlohmann/json.hpp>

namespace strata {
namespace {

using testing::ByteWriter;
using testing::FailsWith;
using testing::TempDir;
using json = nlohmann::json;

// Dump file name of layer i (as strata dump writes it).
std::string LayerName(int64_t i) {
  char b[32];
  std::snprintf(b, sizeof b, "layer_%03lld", static_cast<long long>(i));
  return b;
}

const std::string kShared = STRATA_SHARED_DIR;

std::vector<float> Seeded(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

size_t Count(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

// ---------------------------------------------------------------------------
// .npy

TEST(Npy, RoundTripShapes) {
  TempDir dir;
  const std::vector<std::vector<int64_t>> shapes = {{7}, {1}, {0}, {3, 5}, {13, 256}, {2, 3, 17}, {37, 1, 5}};
  uint32_t seed = 1;
  for (const auto& shape : shapes) {
    std::vector<float> v = Seeded(Count(shape), seed++);
    std::string path = dir.File("a.npy");
    ASSERT_TRUE(WriteNpyF32(path, shape, v.data()).ok());
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
    // numpy pads the header so the data starts on a 64-byte boundary.
    auto bytes = testing::ReadBytes(path);
    ASSERT_EQ((bytes.size() - v.size() * 4) % 64, 0u) << NpyShapeString(shape);
    Result<NpyArray> r = ReadNpyF32(path);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->shape, shape);
    EXPECT_EQ(r->data, v);
  }
}

TEST(Npy, ReadsSharedHiddenStates) {
  const std::string path = kShared + "/reference/smol-shakespeare.hidden_states.npy";
  Result<NpyArray> r = ReadNpyF32(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->shape, (std::vector<int64_t>{37, 13, 256}));
  ASSERT_EQ(r->data.size(), 37u * 13 * 256);
  double norm = 0;
  for (float x : r->data) {
    ASSERT_TRUE(std::isfinite(x));
    norm += double(x) * x;
  }
  EXPECT_GT(norm, 0);
}

// A hand-built file: preamble for `major`, `header` padded as numpy does, then `data_bytes` zero bytes.
std::vector<uint8_t> NpyBytes(const std::string& header_dict, size_t data_bytes, int major = 1, bool pad = true) {
  std::string h = header_dict;
  const size_t pre = major == 1 ? 10 : 12;
  if (pad) {
    h.append((64 - (pre + h.size() + 1) % 64) % 64, ' ');
    h += '\n';
  }
  ByteWriter w;
  w.Raw(std::string("\x93NUMPY", 6)).U8(static_cast<uint8_t>(major)).U8(0);
  if (major == 1) w.Put(static_cast<uint16_t>(h.size()));
  else w.U32(static_cast<uint32_t>(h.size()));
  w.Raw(h).Zeros(data_bytes);
  return w.bytes();
}

TEST(Npy, ReadsOtherVersionsAndDtypes) {
  TempDir dir;
  std::string p = dir.File("v2.npy");
  testing::WriteBytes(p, NpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24, 2));
  Result<NpyArray> r = ReadNpyF32(p);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->shape, (std::vector<int64_t>{2, 3}));

  // '<f8': 1.5, -2.25 ; '<f2': 1.0 (0x3c00), -2.0 (0xc000), 2^-24 (0x0001)
  ByteWriter w8;
  auto b8 = NpyBytes("{\"descr\": \"<f8\", \"fortran_order\": False, \"shape\": (2,)}", 0, 3);
  w8.Raw(b8).Put(1.5).Put(-2.25);
  p = dir.File("f8.npy");
  testing::WriteBytes(p, w8.bytes());
  r = ReadNpyF32(p);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->data, (std::vector<float>{1.5f, -2.25f}));

  ByteWriter w2;
  w2.Raw(NpyBytes("{'descr': '<f2', 'fortran_order': False, 'shape': (3,), }", 0))
      .Put(uint16_t{0x3c00}).Put(uint16_t{0xc000}).Put(uint16_t{0x0001});
  p = dir.File("f2.npy");
  testing::WriteBytes(p, w2.bytes());
  r = ReadNpyF32(p);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->data, (std::vector<float>{1.0f, -2.0f, std::ldexp(1.0f, -24)}));
}

TEST(Npy, RejectsBadFiles) {
  TempDir dir;
  struct Case {
    std::string name;
    std::vector<uint8_t> bytes;
    ErrorKind kind;
    std::string what;
  };
  const std::string good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  std::vector<uint8_t> trunc = NpyBytes(good, 24);
  trunc.resize(trunc.size() - 1);
  std::vector<uint8_t> trailing = NpyBytes(good, 28);
  std::vector<uint8_t> header_past_end = NpyBytes(good, 0);
  header_past_end[8] = 0xff;
  header_past_end[9] = 0x7f;
  std::vector<uint8_t> huge_v2 = NpyBytes(good, 24, 2);
  huge_v2[8] = huge_v2[9] = huge_v2[10] = huge_v2[11] = 0xff;
  const std::vector<Case> cases = {
      {"empty", {}, ErrorKind::kDataLoss, "too short"},
      {"magic", {'P', 'K', 3, 4, 0, 0, 0, 0, 0, 0, 0, 0}, ErrorKind::kDataLoss, "bad magic"},
      {"version", NpyBytes(good, 24, 4), ErrorKind::kDataLoss, "unsupported .npy version 4"},
      {"truncated_data", trunc, ErrorKind::kDataLoss, "truncated"},
      {"trailing_data", trailing, ErrorKind::kDataLoss, "trailing bytes"},
      {"header_past_end", header_past_end, ErrorKind::kDataLoss, "runs past the end"},
      {"header_huge", huge_v2, ErrorKind::kDataLoss, "implausibly large"},
      {"not_dict", NpyBytes("[1, 2]", 0), ErrorKind::kDataLoss, "not a dict"},
      {"no_shape", NpyBytes("{'descr': '<f4', 'fortran_order': False}", 0), ErrorKind::kDataLoss, "no 'shape'"},
      {"no_descr", NpyBytes("{'fortran_order': False, 'shape': (1,)}", 4), ErrorKind::kDataLoss, "no 'descr'"},
      {"extra_key", NpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (), 'x': 1}", 4), ErrorKind::kDataLoss,
       "unexpected key 'x'"},
      {"unterminated", NpyBytes("{'descr': '<f4", 0), ErrorKind::kDataLoss, "unterminated string"},
      {"bad_shape", NpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }", 0), ErrorKind::kDataLoss,
       "non-negative integer"},
      {"shape_not_tuple", NpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': [2], }", 8), ErrorKind::kDataLoss,
       "not a tuple"},
      {"overflow_count",
       NpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }", 0),
       ErrorKind::kDataLoss, "overflows the element count"},
      {"overflow_bytes", NpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,), }", 0),
       ErrorKind::kDataLoss, "overflows the data size"},
      {"dim_too_large", NpyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", 0),
       ErrorKind::kDataLoss, "too large"},
      {"fortran", NpyBytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24), ErrorKind::kUnimplemented,
       "Fortran"},
      {"int_dtype", NpyBytes("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", 24), ErrorKind::kUnimplemented,
       "dtype '<i4'"},
      {"big_endian", NpyBytes("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", 24), ErrorKind::kUnimplemented,
       "dtype '>f4'"},
      {"junk_after", NpyBytes(good + " x", 24), ErrorKind::kDataLoss, "junk after"},
  };
  for (const Case& c : cases) {
    std::string path = dir.File(c.name + ".npy");
    testing::WriteBytes(path, c.bytes);
    Result<NpyArray> r = ReadNpyF32(path);
    EXPECT_TRUE(FailsWith(r.status(), c.kind, path, c.what)) << c.name;
  }
  EXPECT_TRUE(FailsWith(ReadNpyF32(dir.File("missing.npy")).status(), ErrorKind::kNotFound, dir.File("missing.npy"), "no such"));
}

// Every truncation of a valid file is refused, never a crash.
TEST(Npy, TruncationSweep) {
  TempDir dir;
  std::vector<float> v = Seeded(6, 3);
  std::string path = dir.File("t.npy");
  ASSERT_TRUE(WriteNpyF32(path, {2, 3}, v.data()).ok());
  auto bytes = testing::ReadBytes(path);
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::string p = dir.File("cut.npy");
    testing::WriteBytes(p, std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n)));
    Result<NpyArray> r = ReadNpyF32(p);
    EXPECT_FALSE(r.ok()) << n;
    if (!r.ok()) {
      EXPECT_EQ(r.status().kind(), ErrorKind::kDataLoss) << n << ": " << r.status().ToString();
    }
  }
}

TEST(Npy, WriteErrorsNameThePath) {
  float x = 1;
  EXPECT_TRUE(FailsWith(WriteNpyF32("/nonexistent_dir_xyz/a.npy", {1}, &x), ErrorKind::kIo, "/nonexistent_dir_xyz/a.npy", "cannot"));
  EXPECT_TRUE(FailsWith(WriteNpyF32("/tmp/neg.npy", {-1}, &x), ErrorKind::kInvalidArgument, "/tmp/neg.npy", "negative"));
}

// ---------------------------------------------------------------------------
// DiffDumps

constexpr int64_t kLayers = 6, kTokens = 5, kHidden = 8, kVocab = 11;

// Residual stream after entry i of a made-up model: [kTokens, kHidden].
std::vector<float> Stream(int64_t i) { return Seeded(kTokens * kHidden, 100 + static_cast<uint32_t>(i)); }

// A dump directory as `strata dump` writes it, on 2 ranks (layers 0-2, 3-5).
void WriteDump(const std::string& dir, bool with_final_norm = true, int perturbed_layer = -1, int64_t first = 0,
               int64_t last = kLayers - 1) {
  std::filesystem::create_directories(dir);
  ASSERT_TRUE(WriteNpyF32(dir + "/embeddings.npy", {kTokens, kHidden}, Stream(0).data()).ok());
  for (int64_t i = first; i <= last; ++i) {
    std::vector<float> v = Stream(i + 1);
    if (i == perturbed_layer) v[3] += 0.5f;
    ASSERT_TRUE(WriteNpyF32(dir + "/" + LayerName(i) + ".npy", {kTokens, kHidden}, v.data()).ok());
  }
  if (with_final_norm) {
    ASSERT_TRUE(WriteNpyF32(dir + "/final_norm.npy", {kTokens, kHidden}, Stream(99).data()).ok());
  }
  std::vector<float> logits = Seeded(kTokens * kVocab, 7);
  ASSERT_TRUE(WriteNpyF32(dir + "/logits.npy", {kTokens, kVocab}, logits.data()).ok());
  json m = {{"model_fingerprint", "test"},
            {"prompt_ids", {1, 2, 3, 4, 5}},
            {"n_layers", kLayers},
            {"hidden", kHidden},
            {"plan", {{{"rank", 0}, {"host", "vm0"}, {"first_layer", 0}, {"last_layer", 2}},
                      {{"rank", 1}, {"host", "vm1"}, {"first_layer", 3}, {"last_layer", 5}}}},
            {"layers", json::object()}};
  for (int64_t i = first; i <= last; ++i)
    m["layers"][std::to_string(i)] = {{"rank", i < 3 ? 0 : 1}, {"host", i < 3 ? "vm0" : "vm1"}};
  testing::WriteText(dir + "/manifest.json", m.dump());
}

// transformers' output_hidden_states: [kLayers+1, kTokens, kHidden], the last entry after the final norm.
void WriteStacked(const std::string& path) {
  std::vector<float> all;
  for (int64_t i = 0; i < kLayers; ++i) {
    auto v = Stream(i);
    all.insert(all.end(), v.begin(), v.end());
  }
  auto fn = Stream(99);
  all.insert(all.end(), fn.begin(), fn.end());
  ASSERT_TRUE(WriteNpyF32(path, {kLayers + 1, kTokens, kHidden}, all.data()).ok());
}

TEST(Diff, IdenticalDumpsAreZero) {
  TempDir t;
  WriteDump(t.File("a"));
  WriteDump(t.File("b"));
  Result<DiffReport> r = DiffDumps(t.File("a"), t.File("b/"), 1e-4);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->ok);
  EXPECT_EQ(r->first_bad, -1);
  ASSERT_EQ(r->entries.size(), static_cast<size_t>(kLayers + 3));  // embeddings, layers, final_norm, logits
  EXPECT_EQ(r->entries.front().name, "embeddings");
  EXPECT_EQ(r->entries[1].name, "layer_000");
  EXPECT_EQ(r->entries[kLayers + 1].name, "final_norm");
  EXPECT_EQ(r->entries.back().name, "logits");
  EXPECT_EQ(r->entries.back().rank, 1);
  for (const DiffEntry& e : r->entries) {
    EXPECT_EQ(e.max_abs, 0) << e.name;
    EXPECT_EQ(e.rel_l2, 0) << e.name;
    EXPECT_NEAR(e.cosine, 1, 1e-12) << e.name;
    EXPECT_TRUE(e.ok);
  }
  EXPECT_TRUE(r->skipped.empty());
  json j = json::parse(FormatDiffJson(*r));
  EXPECT_TRUE(j["ok"].get<bool>());
  EXPECT_TRUE(j["first_bad"].is_null());
  EXPECT_EQ(j["entries"].size(), static_cast<size_t>(kLayers + 3));
}

TEST(Diff, PerturbedLayerNamesFirstBadAndRank) {
  TempDir t;
  WriteDump(t.File("a"), true, /*perturbed_layer=*/4);
  WriteDump(t.File("b"));
  Result<DiffReport> r = DiffDumps(t.File("a"), t.File("b"), 1e-4);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->ok);
  ASSERT_GE(r->first_bad, 0);
  const DiffEntry& bad = r->entries[static_cast<size_t>(r->first_bad)];
  EXPECT_EQ(bad.name, "layer_004");
  EXPECT_EQ(bad.rank, 1);
  EXPECT_EQ(bad.host, "vm1");
  EXPECT_NEAR(bad.max_abs, 0.5, 1e-6);
  EXPECT_GT(bad.rel_l2, 1e-4);
  EXPECT_LT(bad.cosine, 1);
  for (int i = 0; i < r->first_bad; ++i) EXPECT_TRUE(r->entries[static_cast<size_t>(i)].ok);
  std::string table = FormatDiffTable(*r);
  EXPECT_NE(table.find("FIRST DIVERGENCE: layer_004"), std::string::npos) << table;
  EXPECT_NE(table.find("rank 1 (vm1)"), std::string::npos) << table;
  json j = json::parse(FormatDiffJson(*r));
  EXPECT_FALSE(j["ok"].get<bool>());
  EXPECT_EQ(j["first_bad"]["name"], "layer_004");
  EXPECT_EQ(j["first_bad"]["rank"], 1);
  // A looser tolerance accepts it.
  r = DiffDumps(t.File("a"), t.File("b"), 10.0);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->ok);
}

TEST(Diff, PartialLayersAreSkipped) {
  TempDir t;
  WriteDump(t.File("a"), true, -1, 2, 4);  // dump --layers 2-4
  WriteDump(t.File("b"));
  Result<DiffReport> r = DiffDumps(t.File("a"), t.File("b"), 1e-4);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->ok);
  EXPECT_EQ(r->entries.size(), 6u);  // embeddings, layer 2-4, final_norm, logits
  EXPECT_EQ(r->skipped.size(), 3u);  // layers 0, 1, 5 only in B
  EXPECT_NE(r->skipped[0].find("layer_000: only in B"), std::string::npos) << r->skipped[0];
}

TEST(Diff, DumpAgainstStackedHiddenStates) {
  TempDir t;
  WriteDump(t.File("a"));
  WriteStacked(t.File("ref.npy"));
  Result<DiffReport> r = DiffDumps(t.File("a"), t.File("ref.npy"), 1e-4);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // embeddings, layer_000..layer_004, final_norm (vs entry 6); layer_005 and logits skipped.
  ASSERT_EQ(r->entries.size(), static_cast<size_t>(kLayers + 1));
  EXPECT_TRUE(r->ok) << FormatDiffTable(*r);
  EXPECT_EQ(r->entries.back().name, "final_norm");
  EXPECT_EQ(r->entries.back().b_what, t.File("ref.npy") + "[6]");
  EXPECT_EQ(r->entries[1].b_what, t.File("ref.npy") + "[1]");
  EXPECT_EQ(r->entries[1].name, "layer_000");
  ASSERT_EQ(r->notes.size(), 1u);
  EXPECT_NE(r->notes[0].find("final norm"), std::string::npos);
  EXPECT_EQ(r->skipped.size(), 2u);  // layer_005 and logits
  std::string table = FormatDiffTable(*r);
  EXPECT_NE(table.find("final_norm.npy"), std::string::npos) << table;

  // Either order.
  r = DiffDumps(t.File("ref.npy"), t.File("a"), 1e-4);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->ok);
  EXPECT_EQ(r->entries.back().rank, 1);  // from B's manifest

  // Without final_norm.npy the last entry is skipped, not compared with the raw stream.
  WriteDump(t.File("c"), /*with_final_norm=*/false);
  r = DiffDumps(t.File("c"), t.File("ref.npy"), 1e-4);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->ok);
  EXPECT_EQ(r->entries.size(), static_cast<size_t>(kLayers));
  bool said = false;
  for (const auto& s : r->skipped) said |= s.find("no final_norm.npy") != std::string::npos;
  EXPECT_TRUE(said);

  // Stacked against stacked.
  r = DiffDumps(t.File("ref.npy"), t.File("ref.npy"), 0);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->ok);
  EXPECT_EQ(r->entries.size(), static_cast<size_t>(kLayers + 1));
}

TEST(Diff, ShapeMismatchIsAnError) {
  TempDir t;
  WriteDump(t.File("a"));
  WriteDump(t.File("b"));
  std::vector<float> v = Seeded(4 * kHidden, 1);
  ASSERT_TRUE(WriteNpyF32(t.File("b/layer_002.npy"), {4, kHidden}, v.data()).ok());
  Result<DiffReport> r = DiffDumps(t.File("a"), t.File("b"), 1e-4);
  EXPECT_TRUE(FailsWith(r.status(), ErrorKind::kInvalidArgument, t.File("a/layer_002.npy"), "[5,8]"));
  EXPECT_TRUE(FailsWith(r.status(), ErrorKind::kInvalidArgument, t.File("b/layer_002.npy"), "[4,8]"));

  // A stacked file with a different layer count than the manifest.
  std::vector<float> s = Seeded(4 * kTokens * kHidden, 2);
  ASSERT_TRUE(WriteNpyF32(t.File("s.npy"), {4, kTokens, kHidden}, s.data()).ok());
  r = DiffDumps(t.File("a"), t.File("s.npy"), 1e-4);
  EXPECT_TRUE(FailsWith(r.status(), ErrorKind::kInvalidArgument, t.File("s.npy"), "n_layers 6"));
  // A 2-D file against a dump.
  r = DiffDumps(t.File("a"), t.File("a/logits.npy"), 1e-4);
  EXPECT_TRUE(FailsWith(r.status(), ErrorKind::kInvalidArgument, t.File("a/logits.npy"), "[n_layers+1, tokens, hidden]"));
  // File vs file of different shapes.
  r = DiffDumps(t.File("a/logits.npy"), t.File("a/layer_000.npy"), 1e-4);
  EXPECT_TRUE(FailsWith(r.status(), ErrorKind::kInvalidArgument, t.File("a/logits.npy"), "[5,8]"));
  // Missing.
  r = DiffDumps(t.File("nope"), t.File("b"), 1e-4);
  EXPECT_TRUE(FailsWith(r.status(), ErrorKind::kNotFound, t.File("nope"), "no such"));
  // Corrupt manifest.
  testing::WriteText(t.File("b/manifest.json"), "{not json");
  r = DiffDumps(t.File("a"), t.File("b"), 1e-4);
  EXPECT_TRUE(FailsWith(r.status(), ErrorKind::kDataLoss, t.File("b/manifest.json"), "not a JSON object"));
}

TEST(Diff, NanIsPastTolerance) {
  TempDir t;
  std::vector<float> a = Seeded(10, 1), b = a;
  a[4] = std::nanf("");
  ASSERT_TRUE(WriteNpyF32(t.File("a.npy"), {10}, a.data()).ok());
  ASSERT_TRUE(WriteNpyF32(t.File("b.npy"), {10}, b.data()).ok());
  Result<DiffReport> r = DiffDumps(t.File("a.npy"), t.File("b.npy"), 1e-4);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->ok);
  EXPECT_EQ(r->first_bad, 0);
  EXPECT_EQ(r->entries[0].name, "a");
  EXPECT_TRUE(json::parse(FormatDiffJson(*r))["entries"][0]["rel_l2"].is_null());
}

}  // namespace
}  // namespace strata
