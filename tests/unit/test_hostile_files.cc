// Hostile and broken model files at the level of ModelFiles (issue 8): one
// hand-built bad file per failure mode of the config readers (config.json,
// generation_config.json, tokenizer.json, tokenizer_config.json) and of the
// architecture checks (GGUF metadata and tensor table, HF checkpoint), each
// asserting the error kind and a message naming the file and the problem;
// then truncation and bit-flip sweeps over the shared Q4_K_M GGUF through
// ModelFiles::Open + the vocabulary, which must give a clean error or (for
// data bytes) load. The GGUF / safetensors container checks themselves are in
// test_gguf.cc and test_safetensors.cc.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>

#include <nlohmann/json.hpp>

#include "model/gguf_writer.h"
#include "model/model_files.h"
#include "model/tokenizer.h"
#include "model/untrusted_json.h"
#include "tests/unit/test_util.h"

namespace strata {
namespace {

using testing::FailsWith;
using testing::TempDir;
using testing::WriteText;
using Json = nlohmann::json;

const std::string kShared = STRATA_SHARED_DIR;

// ---------------------------------------------------------------------------
// A tiny smollm3: 2 layers, hidden 64, 4 heads (2 kv) of 16, ffn 128, vocab 300.

ModelConfig TinyConfig() {
  ModelConfig c;
  c.arch = "smollm3";
  c.n_layers = 2;
  c.hidden = 64;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.ffn = 128;
  c.vocab = 300;
  c.tied_embeddings = true;
  c.n_ctx_train = 256;
  FillDefaultLayerLists(&c);
  return c;
}

Json TinyConfigJson() {
  return Json::parse(R"({"model_type": "smollm3", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 300, "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": true})");
}

std::vector<uint8_t> Zeros(TensorType type, const std::vector<int64_t>& ne) {
  auto n = GgufWriter::TensorBytes(type, ne);
  STRATA_CHECK(n.ok());
  return std::vector<uint8_t>(*n, 0);
}

// The tiny model's keys, as the architecture writes them.
void TinyKeys(GgufWriter& w) {
  w.SetString("general.architecture", "smollm3");
  STRATA_CHECK(FindArchitecture("smollm3")->write_gguf_metadata(TinyConfig(), &w).ok());
}

// The tiny model, F32 zeros, with tensor `name` given `type` and `ne` (added
// when the table lacks it, left out when type is nullopt). Tests change one
// thing each.
GgufWriter TinyGgufWith(const std::string& name, std::optional<TensorType> type, std::vector<int64_t> ne) {
  GgufWriter w;
  TinyKeys(w);
  bool replaced = false;
  for (const TensorSpec& s : TensorTableOf(TinyConfig())) {
    if (!s.required) continue;
    if (s.gguf_name == name) {
      replaced = true;
      if (type) w.AddTensor(s.gguf_name, *type, ne, Zeros(*type, ne));
      continue;
    }
    w.AddTensor(s.gguf_name, TensorType::kF32, s.ne, Zeros(TensorType::kF32, s.ne));
  }
  if (!replaced && type) w.AddTensor(name, *type, ne, Zeros(*type, ne));
  return w;
}
GgufWriter TinyGguf() { return TinyGgufWith("", std::nullopt, {}); }

// Writes `w` and opens it with ModelFiles; *path gets the file's path.
Result<std::unique_ptr<ModelFiles>> OpenGguf(const TempDir& dir, const GgufWriter& w, std::string* path) {
  *path = dir.File("m.gguf");
  STRATA_CHECK(w.WriteFile(*path).ok());
  return ModelFiles::Open(*path);
}

TEST(HostileGguf, TinyModelOpens) {
  TempDir dir;
  std::string path;
  auto m = OpenGguf(dir, TinyGguf(), &path);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)->config().q_dim(), 64);
  EXPECT_EQ((*m)->config().vocab, 300);
}

TEST(HostileGguf, BosOutsideVocabulary) {
  // Was clamped to INT32_MAX and accepted: an id the embedding does not have.
  TempDir dir;
  std::string path;
  GgufWriter w = TinyGguf();
  w.SetU64("tokenizer.ggml.bos_token_id", 1ull << 40);
  EXPECT_TRUE(FailsWith(OpenGguf(dir, w, &path).status(), ErrorKind::kInvalidArgument, path, "bos id"));
  w.SetU32("tokenizer.ggml.bos_token_id", 300);
  EXPECT_TRUE(FailsWith(OpenGguf(dir, w, &path).status(), ErrorKind::kInvalidArgument, path, "bos id 300 is outside the vocabulary"));
}

TEST(HostileGguf, HeadCountThatOverflowsTheAttentionWidth) {
  // 2^30 heads of 2: n_heads * head_dim overflowed int (UB) before the bound.
  TempDir dir;
  std::string path;
  GgufWriter w = TinyGguf();
  w.SetU32("smollm3.attention.head_count", 1u << 30);
  w.SetU32("smollm3.attention.head_count_kv", 1u << 30);
  w.SetU32("smollm3.attention.key_length", 2);
  w.SetU32("smollm3.attention.value_length", 2);
  w.Erase("smollm3.rope.dimension_count");
  EXPECT_TRUE(FailsWith(OpenGguf(dir, w, &path).status(), ErrorKind::kInvalidArgument, path, "attention head count"));
}

TEST(HostileGguf, RopeThetaNotFinite) {
  TempDir dir;
  std::string path;
  GgufWriter w = TinyGguf();
  w.SetF64("smollm3.rope.freq_base", 1e300);  // inf as float
  EXPECT_TRUE(FailsWith(OpenGguf(dir, w, &path).status(), ErrorKind::kDataLoss, path,
                        "'smollm3.rope.freq_base' = 1e+300 is not a finite float32"));
  w.SetF32("smollm3.rope.freq_base", -1.0f);
  EXPECT_TRUE(FailsWith(OpenGguf(dir, w, &path).status(), ErrorKind::kInvalidArgument, path, "rope theta"));
}

TEST(HostileGguf, MetadataOfTheWrongType) {
  TempDir dir;
  std::string path;
  GgufWriter w = TinyGguf();
  w.SetString("smollm3.block_count", "2");
  EXPECT_TRUE(FailsWith(OpenGguf(dir, w, &path).status(), ErrorKind::kDataLoss, path, "'smollm3.block_count' has type string"));
  w = TinyGguf();
  w.SetI32("smollm3.embedding_length", -64);
  EXPECT_TRUE(FailsWith(OpenGguf(dir, w, &path).status(), ErrorKind::kDataLoss, path, "is negative"));
}

TEST(HostileGguf, TensorsThatDisagreeWithTheArchitecture) {
  TempDir dir;
  std::string path;
  EXPECT_TRUE(FailsWith(OpenGguf(dir, TinyGgufWith("blk.1.attn_k.weight", TensorType::kF32, {64, 64}), &path).status(),
                        ErrorKind::kDataLoss, path, "tensor 'blk.1.attn_k.weight': shape [64,64], expected [64,32]"));
  EXPECT_TRUE(FailsWith(OpenGguf(dir, TinyGgufWith("blk.1.ffn_down.weight", std::nullopt, {}), &path).status(),
                        ErrorKind::kDataLoss, path, "required tensor 'blk.1.ffn_down.weight' is missing"));
  EXPECT_TRUE(FailsWith(OpenGguf(dir, TinyGgufWith("blk.2.attn_q.weight", TensorType::kF32, {64, 64}), &path).status(),
                        ErrorKind::kDataLoss, path, "unexpected tensor 'blk.2.attn_q.weight'"));
  EXPECT_TRUE(FailsWith(OpenGguf(dir, TinyGgufWith("blk.0.ffn_up.weight", TensorType::kQ4_1, {64, 128}), &path).status(),
                        ErrorKind::kUnimplemented, path, "'blk.0.ffn_up.weight' has type Q4_1"));
  EXPECT_TRUE(FailsWith(OpenGguf(dir, TinyGgufWith("token_embd.weight", TensorType::kF32, {64, 300, 1, 2}), &path).status(),
                        ErrorKind::kDataLoss, path, "'token_embd.weight' is not 2-D"));
}

TEST(HostileGguf, IntArrayValueAboveInt64) {
  // A uint64 element above INT64_MAX used to come back negative.
  TempDir dir;
  GgufWriter w;
  w.Set("a", GgufWriter::Value::Array(GgufValueType::kUint64, {GgufWriter::Value::U64(5), GgufWriter::Value::U64(~0ull)}));
  const std::string path = dir.File("a.gguf");
  ASSERT_TRUE(w.WriteFile(path).ok());
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_TRUE(FailsWith((*f)->GetIntArray("a").status(), ErrorKind::kDataLoss, path, "does not fit int64"));
}

TEST(HostileGguf, VocabularyOnlyFileEndingBeforeThePadding) {
  // No tensors, and the file stops right after the metadata (as llama.cpp's
  // vocab-only files may): the data region is empty and inside the file.
  TempDir dir;
  GgufWriter w;
  w.SetString("general.architecture", "llama");
  w.SetString("x", "abc");  // makes the header end off the alignment
  std::vector<uint8_t> bytes = w.Serialize();
  const std::string path = dir.File("v.gguf");
  int opened = 0;
  for (size_t cut = 0; cut < 32 && cut < bytes.size(); ++cut) {
    testing::WriteBytes(path, std::vector<uint8_t>(bytes.begin(), bytes.end() - static_cast<std::ptrdiff_t>(cut)));
    auto f = GgufFile::Open(path);
    if (!f.ok()) continue;
    ++opened;
    EXPECT_LE((*f)->data_offset(), (*f)->file_size()) << "cut " << cut;  // the fingerprint hashes [0, data_offset)
  }
  EXPECT_GT(opened, 1);
  testing::WriteBytes(path, bytes);
  auto m = ModelFiles::Open(path);
  EXPECT_TRUE(FailsWith(m.status(), ErrorKind::kNotFound, path, "no metadata 'llama.block_count'"));
}

// ---------------------------------------------------------------------------
// HF directory: config.json, generation_config.json

// Writes config.json (and generation_config.json when given) into `dir`.
Result<ModelConfig> ReadConfigText(const TempDir& dir, const std::string& config, const std::string& generation = "") {
  WriteText(dir.File("config.json"), config);
  if (!generation.empty()) WriteText(dir.File("generation_config.json"), generation);
  else std::filesystem::remove(dir.File("generation_config.json"));
  return ReadHfConfig(dir.path());
}
Result<ModelConfig> ReadConfig(const TempDir& dir, const Json& config) { return ReadConfigText(dir, config.dump()); }

TEST(HostileConfig, TinyConfigReads) {
  TempDir dir;
  auto c = ReadConfig(dir, TinyConfigJson());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->bos_id, 1);
  EXPECT_EQ(c->q_dim(), 64);
}

TEST(HostileConfig, RopeScalingTypeNotAString) {
  // Used to throw nlohmann::type_error out of ModelFiles::Open (std::terminate).
  TempDir dir;
  for (const char* key : {"rope_type", "type"}) {
    Json j = TinyConfigJson();
    j["rope_scaling"] = {{key, 5}};
    EXPECT_TRUE(FailsWith(ReadConfig(dir, j).status(), ErrorKind::kDataLoss, dir.File("config.json"),
                          std::string("rope scaling field '") + key + "' is not a string"));
    j.erase("rope_scaling");
    j["rope_parameters"] = {{"rope_theta", 1e4}, {key, Json::array()}};
    EXPECT_TRUE(FailsWith(ReadConfig(dir, j).status(), ErrorKind::kDataLoss, dir.File("config.json"), "is not a string"));
  }
  Json j = TinyConfigJson();
  j["rope_scaling"] = {{"rope_type", "longrope"}, {"factor", 4.0}};
  EXPECT_TRUE(FailsWith(ReadConfig(dir, j).status(), ErrorKind::kUnimplemented, dir.File("config.json"), "rope scaling 'longrope'"));
  // YaRN is implemented; its parameters are checked.
  for (double factor : {0.0, -2.0}) {
    j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", factor}, {"original_max_position_embeddings", 128}};
    EXPECT_TRUE(FailsWith(ReadConfig(dir, j).status(), ErrorKind::kDataLoss, dir.File("config.json"),
                          "rope scaling 'factor' = " + std::to_string(factor) + " must be positive"));
  }
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"original_max_position_embeddings", 128}};
  EXPECT_TRUE(FailsWith(ReadConfig(dir, j).status(), ErrorKind::kDataLoss, dir.File("config.json"), "missing field 'factor'"));
}

TEST(HostileConfig, BosTokenId) {
  TempDir dir;
  Json j = TinyConfigJson();
  j["bos_token_id"] = 4294967297ull;  // used to wrap to 1 through get<int32_t>
  EXPECT_TRUE(FailsWith(ReadConfig(dir, j).status(), ErrorKind::kDataLoss, dir.File("config.json"), "'bos_token_id'"));
  j["bos_token_id"] = "1";
  EXPECT_TRUE(FailsWith(ReadConfig(dir, j).status(), ErrorKind::kDataLoss, dir.File("config.json"), "'bos_token_id'"));
  j["bos_token_id"] = 300;
  EXPECT_TRUE(FailsWith(ReadConfig(dir, j).status(), ErrorKind::kInvalidArgument, dir.File("config.json"), "bos id 300"));
}

TEST(HostileConfig, NoRopeLayersThatWrap) {
  TempDir dir;
  Json j = TinyConfigJson();
  j["no_rope_layers"] = {4294967297ull, 1};  // was read through get<int> as 1
  EXPECT_TRUE(FailsWith(ReadConfig(dir, j).status(), ErrorKind::kDataLoss, dir.File("config.json"), "no_rope_layers[0] must be 0 or 1"));
  j["no_rope_layers"] = {1};
  EXPECT_TRUE(FailsWith(ReadConfig(dir, j).status(), ErrorKind::kDataLoss, dir.File("config.json"), "'no_rope_layers' has 1 entries"));
}

TEST(HostileConfig, SizesOutOfRange) {
  TempDir dir;
  Json j = TinyConfigJson();
  j["num_attention_heads"] = 1 << 30;
  j["num_key_value_heads"] = 1 << 30;
  j["head_dim"] = 2;
  EXPECT_TRUE(FailsWith(ReadConfig(dir, j).status(), ErrorKind::kInvalidArgument, dir.File("config.json"), "attention head count"));
  j = TinyConfigJson();
  j["hidden_size"] = -64;
  EXPECT_TRUE(FailsWith(ReadConfig(dir, j).status(), ErrorKind::kDataLoss, dir.File("config.json"), "'hidden_size' = -64 is out of range"));
  j = TinyConfigJson();
  j["num_hidden_layers"] = 1.5;
  EXPECT_TRUE(FailsWith(ReadConfig(dir, j).status(), ErrorKind::kDataLoss, dir.File("config.json"), "'num_hidden_layers' is not an integer"));
  j = TinyConfigJson();
  j["rope_theta"] = 1e300;
  EXPECT_TRUE(FailsWith(ReadConfig(dir, j).status(), ErrorKind::kInvalidArgument, dir.File("config.json"), "rope theta"));
  j = TinyConfigJson();
  j["num_key_value_heads"] = 3;
  EXPECT_TRUE(FailsWith(ReadConfig(dir, j).status(), ErrorKind::kInvalidArgument, dir.File("config.json"), "not a multiple of kv heads"));
}

TEST(HostileConfig, JsonOfTheWrongShape) {
  TempDir dir;
  const std::string path = dir.File("config.json");
  EXPECT_TRUE(FailsWith(ReadConfigText(dir, "[1, 2]").status(), ErrorKind::kDataLoss, path, "not a JSON object"));
  EXPECT_TRUE(FailsWith(ReadConfigText(dir, "{\"model_type\": ").status(), ErrorKind::kDataLoss, path, "not valid JSON"));
  EXPECT_TRUE(FailsWith(ReadConfigText(dir, "{\"model_type\": 3}").status(), ErrorKind::kDataLoss, path, "'model_type'"));
  EXPECT_TRUE(FailsWith(ReadConfigText(dir, "").status(), ErrorKind::kDataLoss, path, "not valid JSON"));
  // Duplicate keys: nlohmann keeps the last one silently.
  std::string dup = TinyConfigJson().dump();
  dup.insert(1, "\"hidden_size\": 32, ");
  EXPECT_TRUE(FailsWith(ReadConfigText(dir, dup).status(), ErrorKind::kDataLoss, path, "duplicate key 'hidden_size'"));
  // Invalid UTF-8 and NUL bytes inside strings.
  std::string bad = TinyConfigJson().dump();
  bad.insert(bad.size() - 1, ", \"name\": \"a\xC0\xAF\"");
  EXPECT_TRUE(FailsWith(ReadConfigText(dir, bad).status(), ErrorKind::kDataLoss, path, "not valid UTF-8"));
  std::string nul = TinyConfigJson().dump();
  nul.insert(nul.size() - 1, std::string(", \"name\": \"a\0b\"", 15));
  EXPECT_TRUE(FailsWith(ReadConfigText(dir, nul).status(), ErrorKind::kDataLoss, path, "NUL byte"));
  // Nesting that would overflow the stack of anything recursive (dump()).
  std::string deep = TinyConfigJson().dump();
  deep.insert(deep.size() - 1, ", \"x\": " + std::string(100000, '[') + std::string(100000, ']'));
  EXPECT_TRUE(FailsWith(ReadConfigText(dir, deep).status(), ErrorKind::kDataLoss, path, "nests JSON deeper than 64"));
  // A directory where the file should be.
  std::filesystem::remove(path);
  std::filesystem::create_directory(path);
  EXPECT_FALSE(ReadHfConfig(dir.path()).ok());
}

TEST(HostileConfig, GenerationConfig) {
  TempDir dir;
  const std::string cfg = TinyConfigJson().dump(), path = dir.File("generation_config.json");
  auto ok = ReadConfigText(dir, cfg, R"({"eos_token_id": [2, 7]})");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->eos_ids, (std::vector<int32_t>{2, 7}));
  EXPECT_TRUE(FailsWith(ReadConfigText(dir, cfg, R"({"eos_token_id": "x"})").status(), ErrorKind::kDataLoss, path, "eos_token_id"));
  EXPECT_TRUE(FailsWith(ReadConfigText(dir, cfg, R"({"eos_token_id": [2, -1]})").status(), ErrorKind::kDataLoss, path, "eos_token_id"));
  EXPECT_TRUE(FailsWith(ReadConfigText(dir, cfg, R"({"eos_token_id": 5000})").status(), ErrorKind::kInvalidArgument, path,
                        "eos id 5000 is outside the vocabulary"));
  EXPECT_TRUE(FailsWith(ReadConfigText(dir, cfg, "[2]").status(), ErrorKind::kDataLoss, path, "not a JSON object"));
  EXPECT_TRUE(FailsWith(ReadConfigText(dir, cfg, R"({"eos_token_id": 2, "eos_token_id": 3})").status(), ErrorKind::kDataLoss, path,
                        "duplicate key 'eos_token_id'"));
}

// ---------------------------------------------------------------------------
// HF directory: tokenizer.json, tokenizer_config.json

std::string ByteLevelVocabJson(int extra_id) {
  Json vocab = Json::object();
  const char* letters = "abcdefghijklmnopqrstuvwxyz";
  for (int i = 0; i < 26; ++i) vocab[std::string(1, letters[i])] = i;
  vocab["zz"] = extra_id;
  Json j = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", Json::array()}}},
            {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}}};
  return j.dump();
}

TEST(HostileTokenizerFiles, SparseIdsCannotAllocateUnbounded) {
  // 27 tokens and an id of 16M used to allocate a 16M-entry table.
  TempDir dir;
  const std::string path = dir.File("tokenizer.json");
  WriteText(path, ByteLevelVocabJson(26));
  auto ok = LoadVocabFromTokenizerJson(dir.path());
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->tokens.size(), 27u);
  WriteText(path, ByteLevelVocabJson((1 << 24) - 1));
  EXPECT_TRUE(FailsWith(LoadVocabFromTokenizerJson(dir.path()).status(), ErrorKind::kDataLoss, path, "far past the 27 tokens"));
  WriteText(path, ByteLevelVocabJson(1 << 24));
  EXPECT_TRUE(FailsWith(LoadVocabFromTokenizerJson(dir.path()).status(), ErrorKind::kDataLoss, path, "out of range"));
}

TEST(HostileTokenizerFiles, JsonChecks) {
  TempDir dir;
  const std::string path = dir.File("tokenizer.json"), cfg = dir.File("tokenizer_config.json");
  std::string dup = ByteLevelVocabJson(26);
  dup.insert(dup.find("\"a\":"), "\"a\":5,");
  WriteText(path, dup);
  EXPECT_TRUE(FailsWith(LoadVocabFromTokenizerJson(dir.path()).status(), ErrorKind::kDataLoss, path, "duplicate key 'a'"));
  WriteText(path, "\xEF\xBB\xBF" + ByteLevelVocabJson(26) + "\xFF");
  EXPECT_TRUE(FailsWith(LoadVocabFromTokenizerJson(dir.path()).status(), ErrorKind::kDataLoss, path, "not valid UTF-8"));
  WriteText(path, ByteLevelVocabJson(26));
  WriteText(cfg, R"({"bos_token": "a", "bos_token": "b"})");
  EXPECT_TRUE(FailsWith(LoadVocabFromTokenizerJson(dir.path()).status(), ErrorKind::kDataLoss, cfg, "duplicate key 'bos_token'"));
  WriteText(cfg, R"({"bos_token": 7})");
  EXPECT_TRUE(FailsWith(LoadVocabFromTokenizerJson(dir.path()).status(), ErrorKind::kDataLoss, cfg, "bos_token"));
  WriteText(cfg, R"({"bos_token": "<s>"})");
  EXPECT_TRUE(FailsWith(LoadVocabFromTokenizerJson(dir.path()).status(), ErrorKind::kDataLoss, cfg, "'<s>' is not a token"));
  WriteText(cfg, R"({"add_bos_token": true})");
  EXPECT_TRUE(FailsWith(LoadVocabFromTokenizerJson(dir.path()).status(), ErrorKind::kDataLoss, cfg, "no bos_token is named"));
  WriteText(cfg, "[]");
  EXPECT_TRUE(FailsWith(LoadVocabFromTokenizerJson(dir.path()).status(), ErrorKind::kDataLoss, cfg, "not a JSON object"));
}

// ---------------------------------------------------------------------------
// HF directory: the checkpoint against the architecture

// model.safetensors with F32 zeros; shapes row-major (HF order).
void WriteSafetensors(const std::string& path, const std::vector<std::pair<std::string, std::vector<int64_t>>>& tensors) {
  Json header = Json::object();
  uint64_t offset = 0;
  for (const auto& [name, shape] : tensors) {
    uint64_t n = 4;
    for (int64_t d : shape) n *= static_cast<uint64_t>(d);
    header[name] = {{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  testing::ByteWriter b;
  b.U64(text.size()).Raw(text).Zeros(offset);
  testing::WriteBytes(path, b.bytes());
}

std::vector<std::pair<std::string, std::vector<int64_t>>> TinyHfTensors() {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  for (const TensorSpec& s : TensorTableOf(TinyConfig()))
    if (s.required) out.push_back({s.hf_name, std::vector<int64_t>(s.ne.rbegin(), s.ne.rend())});
  return out;
}

TEST(HostileHfCheckpoint, TensorTable) {
  TempDir dir;
  WriteText(dir.File("config.json"), TinyConfigJson().dump());
  const std::string st = dir.File("model.safetensors");
  WriteSafetensors(st, TinyHfTensors());
  auto ok = ModelFiles::Open(dir.path());
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();

  // The same weight under its HF and its GGUF name: which one was used
  // depended on map order (the GGUF-named one silently won).
  auto both = TinyHfTensors();
  both.push_back({"output_norm.weight", {64}});
  WriteSafetensors(st, both);
  EXPECT_TRUE(FailsWith(ModelFiles::Open(dir.path()).status(), ErrorKind::kDataLoss, dir.path(), "same weight under two names"));

  auto wrong = TinyHfTensors();
  for (auto& [name, shape] : wrong)
    if (name == "model.layers.1.self_attn.k_proj.weight") shape = {64, 64};
  WriteSafetensors(st, wrong);
  EXPECT_TRUE(FailsWith(ModelFiles::Open(dir.path()).status(), ErrorKind::kDataLoss, dir.path(),
                        "tensor 'model.layers.1.self_attn.k_proj.weight': shape [64,64], expected [32,64]"));

  auto extra = TinyHfTensors();
  extra.push_back({"model.layers.7.mlp.up_proj.weight", {4}});
  WriteSafetensors(st, extra);
  EXPECT_TRUE(FailsWith(ModelFiles::Open(dir.path()).status(), ErrorKind::kDataLoss, dir.path(), "unexpected tensor"));

  auto missing = TinyHfTensors();
  missing.pop_back();
  WriteSafetensors(st, missing);
  EXPECT_TRUE(FailsWith(ModelFiles::Open(dir.path()).status(), ErrorKind::kDataLoss, dir.path(), "is missing"));
}

// ---------------------------------------------------------------------------
// Sweeps over the shared Q4_K_M GGUF, through ModelFiles and the vocabulary

class ModelFilesSweep : public ::testing::Test {
 protected:
  void SetUp() override {
    source_ = kShared + "/models/smol-shakespeare.llamacpp-q4_k_m.gguf";
    if (!std::filesystem::exists(source_)) source_ = STRATA_SOURCE_DIR "/models/smol-shakespeare-q4_k_m.gguf";
    bytes_ = testing::ReadBytes(source_);
    auto f = GgufFile::Open(source_);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    data_offset_ = (*f)->data_offset();
    // Where the tensor table starts: after the last metadata value.
    info_start_ = data_offset_;
    for (const GgufTensor& t : (*f)->tensors()) {
      const uint64_t name_at = static_cast<uint64_t>(reinterpret_cast<const uint8_t*>(t.name.data()) - (*f)->header_bytes());
      info_start_ = std::min(info_start_, name_at - 8);
    }
    path_ = dir_.File("sweep.gguf");
    testing::WriteBytes(path_, bytes_);
  }

  // Opens the working copy as a model and reads its vocabulary: ok, or one
  // error naming the file. Returns whether everything loaded.
  bool OpenAndCheck(const std::string& context) {
    auto m = ModelFiles::Open(path_);
    if (!m.ok()) {
      EXPECT_NE(m.status().message().find(path_), std::string::npos) << context << ": " << m.status().ToString();
      return false;
    }
    for (const TensorSpec& s : (*m)->tensor_table()) {
      auto w = (*m)->Tensor(s.gguf_name);
      if (!w.ok()) continue;
      EXPECT_LE(w->data + w->nbytes, (*m)->gguf()->header_bytes() + (*m)->gguf()->file_size()) << context;
    }
    auto spec = (*m)->LoadVocab();
    if (!spec.ok()) {
      EXPECT_NE(spec.status().message().find(path_), std::string::npos) << context << ": " << spec.status().ToString();
      return false;
    }
    auto tok = Tokenizer::Create(std::move(*spec));
    if (!tok.ok()) return false;
    (void)tok->Encode("ROMEO: hear me speak", tok->add_bos());
    return true;
  }

  TempDir dir_;
  std::string source_, path_;
  std::vector<uint8_t> bytes_;
  uint64_t data_offset_ = 0, info_start_ = 0;
};

TEST_F(ModelFilesSweep, TruncationIsACleanError) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<uint64_t> lengths;
  const uint64_t data_size = bytes_.size() - data_offset_;
  for (int i = 199; i >= 1; --i) lengths.push_back(data_offset_ + data_size * static_cast<uint64_t>(i) / 200);  // data
  // Every tensor-info and padding byte; STRATA_SWEEP_STRIDE=N takes every Nth
  // (the sanitizer build, where each open costs ten times more).
  const char* stride_env = std::getenv("STRATA_SWEEP_STRIDE");
  const uint64_t stride = stride_env != nullptr && std::atoi(stride_env) > 0 ? static_cast<uint64_t>(std::atoi(stride_env)) : 1;
  for (uint64_t len = data_offset_ + 1; len > info_start_ + stride - 1;) {
    len -= stride;
    lengths.push_back(len);
  }
  for (uint64_t len = info_start_; len > 64; len -= 61) lengths.push_back(len - 1);    // metadata, strided
  for (uint64_t len = 64; len-- > 0;) lengths.push_back(len);                          // the fixed header
  for (uint64_t len : lengths) {
    ASSERT_EQ(::truncate(path_.c_str(), static_cast<off_t>(len)), 0);
    // Tensor data past the end is found from the header alone: every cut
    // is an error, none a crash.
    ASSERT_FALSE(OpenAndCheck("truncated to " + std::to_string(len))) << "truncated to " << len << " bytes, loaded";
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%zu truncations in %.1f s\n", lengths.size(), s);
}

TEST_F(ModelFilesSweep, BitFlipsAreACleanErrorOrLoad) {
  int fd = ::open(path_.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  std::mt19937_64 rng(8);
  auto flip_and_open = [&](uint64_t pos) {
    const uint8_t flipped = bytes_[pos] ^ static_cast<uint8_t>(1u << (rng() % 8));
    EXPECT_EQ(::pwrite(fd, &flipped, 1, static_cast<off_t>(pos)), 1);
    bool loaded = OpenAndCheck("flip at " + std::to_string(pos));
    EXPECT_EQ(::pwrite(fd, &bytes_[pos], 1, static_cast<off_t>(pos)), 1);
    return loaded;
  };
  int header_errors = 0;
  for (int i = 0; i < 600; ++i) {
    // A third in the fixed header and the tensor table, the rest anywhere in the header.
    const uint64_t pos = i % 3 == 0 ? (i % 2 ? rng() % 24 : info_start_ + rng() % (data_offset_ - info_start_)) : rng() % data_offset_;
    header_errors += !flip_and_open(pos);
  }
  EXPECT_GT(header_errors, 100);  // most header flips are caught
  // Data bytes are not checked at load (they are the weights): a flip there loads.
  for (int i = 0; i < 50; ++i) EXPECT_TRUE(flip_and_open(data_offset_ + rng() % (bytes_.size() - data_offset_)));
  ::close(fd);
  EXPECT_TRUE(OpenAndCheck("restored"));
}

}  // namespace
}  // namespace strata
