// Tokenizer tests: llama.cpp's Llama-3 test vectors, the shared model's
// reference prompt ids (from tokenizer.json and from the GGUF), hand-made
// vocabularies for the merge rules, invalid UTF-8, streaming decode, and one
// bad tokenizer.json per failure mode.
#include "model/tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "model/gguf.h"
#include "model/unicode.h"

namespace strata {
namespace {

const std::string kShared = STRATA_SHARED_DIR;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Tokenizer TokenizerFromGguf(const std::string& path) {
  auto gguf = GgufFile::Open(path);
  STRATA_CHECK_MSG(gguf.ok(), gguf.status().ToString());
  auto spec = LoadVocabFromGguf(**gguf);
  STRATA_CHECK_MSG(spec.ok(), spec.status().ToString());
  auto tok = Tokenizer::Create(std::move(spec).value());
  STRATA_CHECK_MSG(tok.ok(), tok.status().ToString());
  return std::move(tok).value();
}

Tokenizer TokenizerFromJson(const std::string& dir) {
  auto spec = LoadVocabFromTokenizerJson(dir);
  STRATA_CHECK_MSG(spec.ok(), spec.status().ToString());
  auto tok = Tokenizer::Create(std::move(spec).value());
  STRATA_CHECK_MSG(tok.ok(), tok.status().ToString());
  return std::move(tok).value();
}

const Tokenizer& Llama3() {
  static const Tokenizer tok = TokenizerFromGguf(kShared + "/tokenizer/ggml-vocab-llama-bpe.gguf");
  return tok;
}
const Tokenizer& SmolJson() {
  static const Tokenizer tok = TokenizerFromJson(kShared + "/models/smol-shakespeare");
  return tok;
}
const Tokenizer& SmolGguf() {
  static const Tokenizer tok = TokenizerFromGguf(kShared + "/models/smol-shakespeare.llamacpp-bf16.gguf");
  return tok;
}

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    Utf8Seq q = ClassifyUtf8(s.data() + i, s.size() - i);
    if (q.kind != Utf8Seq::kValid) return false;
    i += q.len;
  }
  return true;
}

std::string IdsToString(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += " " + std::to_string(id);
  return s;
}

// ---------------------------------------------------------------------------
// llama.cpp's test-tokenizer-0 vectors for the Llama-3 vocabulary.
// The .inp file holds each input followed by "\n__ggml_vocab_test__\n" (the
// newline before the marker belongs to the separator, not to the input); the
// .out file holds one line of space-separated ids per input, without BOS
// (test-tokenizer-0 tokenizes with add_special = false).
// ---------------------------------------------------------------------------
TEST(Tokenizer, LlamaBpeVocabTestVectors) {
  const std::string base = kShared + "/tokenizer/ggml-vocab-llama-bpe.gguf";
  const std::string inp = ReadFile(base + ".inp");
  const std::string outp = ReadFile(base + ".out");
  ASSERT_FALSE(inp.empty());
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> inputs;
  size_t pos = 0;
  for (size_t hit; (hit = inp.find(sep, pos)) != std::string::npos; pos = hit + sep.size()) {
    inputs.push_back(inp.substr(pos, hit - pos));
  }
  ASSERT_EQ(pos, inp.size()) << "text after the last separator";
  std::vector<std::vector<int32_t>> expected;
  std::istringstream lines(outp);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream ids(line);
    std::vector<int32_t> v;
    for (int32_t id; ids >> id;) v.push_back(id);
    expected.push_back(v);
  }
  ASSERT_EQ(inputs.size(), expected.size());
  ASSERT_GE(inputs.size(), 40u);

  const Tokenizer& tok = Llama3();
  EXPECT_EQ(tok.vocab_size(), 128256);
  EXPECT_EQ(tok.bos_id(), 128000);
  EXPECT_TRUE(tok.add_bos());  // llama-bpe default; the file has no add_bos_token key
  for (size_t i = 0; i < inputs.size(); ++i) {
    std::vector<int32_t> got = tok.Encode(inputs[i], /*add_bos=*/false);
    EXPECT_EQ(got, expected[i]) << "case " << i << " '" << inputs[i] << "'\n got:" << IdsToString(got)
                                << "\nwant:" << IdsToString(expected[i]);
    EXPECT_EQ(tok.Decode(got), inputs[i]) << "case " << i;
  }
  std::vector<int32_t> with_bos = tok.Encode("Hello world", /*add_bos=*/true);
  EXPECT_EQ(with_bos, (std::vector<int32_t>{128000, 9906, 1917}));
}

TEST(Tokenizer, Llama3SpecialTokens) {
  const Tokenizer& tok = Llama3();
  ASSERT_EQ(tok.FindToken("<|begin_of_text|>"), std::optional<int32_t>(128000));
  ASSERT_EQ(tok.FindToken("<|eot_id|>"), std::optional<int32_t>(128009));
  EXPECT_TRUE(tok.IsSpecial(128009));
  EXPECT_FALSE(tok.IsSpecial(9906));
  std::vector<int32_t> ids = tok.Encode("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", false);
  EXPECT_EQ(ids, (std::vector<int32_t>{128006, 882, 128007, 271, 13347, 128009}));
  EXPECT_EQ(tok.Decode(ids), "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
  // Without parse_special the markers are ordinary text.
  std::vector<int32_t> plain = tok.Encode("<|eot_id|>", false, /*parse_special=*/false);
  EXPECT_GT(plain.size(), 1u);
  for (int32_t id : plain) EXPECT_FALSE(tok.IsSpecial(id));
  EXPECT_EQ(tok.Decode(plain), "<|eot_id|>");
}

// ---------------------------------------------------------------------------
// The shared model: tokenizer.json and the llama.cpp GGUF give transformers' ids.
// ---------------------------------------------------------------------------
void CheckReferencePrompts(const Tokenizer& tok) {
  auto ref = nlohmann::json::parse(ReadFile(kShared + "/reference/smol-shakespeare.hf.json"));
  ASSERT_TRUE(ref.contains("cases"));
  ASSERT_GE(ref["cases"].size(), 3u);
  for (const auto& c : ref["cases"]) {
    std::string prompt = c["prompt"].get<std::string>();
    std::vector<int32_t> want = c["prompt_ids"].get<std::vector<int32_t>>();
    std::vector<int32_t> got = tok.Encode(prompt, /*add_bos=*/tok.add_bos());
    EXPECT_EQ(got, want) << "prompt '" << prompt.substr(0, 60) << "'\n got:" << IdsToString(got)
                         << "\nwant:" << IdsToString(want);
    EXPECT_EQ(tok.Decode(got), prompt);
  }
}

TEST(Tokenizer, SmolReferencePromptsFromTokenizerJson) {
  const Tokenizer& tok = SmolJson();
  EXPECT_EQ(tok.vocab_size(), 8192);
  EXPECT_FALSE(tok.add_bos());
  EXPECT_EQ(tok.bos_id(), 8185);  // <|begin_of_text|>
  EXPECT_EQ(tok.eos_id(), 8190);  // <|im_end|>
  EXPECT_EQ(tok.FindToken("<think>"), std::optional<int32_t>(8187));
  EXPECT_EQ(tok.FindToken("<|im_start|>"), std::optional<int32_t>(8189));
  CheckReferencePrompts(tok);
}

TEST(Tokenizer, SmolReferencePromptsFromGguf) {
  const Tokenizer& tok = SmolGguf();
  EXPECT_EQ(tok.vocab_size(), 8192);
  EXPECT_FALSE(tok.add_bos());
  EXPECT_EQ(tok.bos_id(), 8185);
  EXPECT_EQ(tok.eos_id(), 8190);
  CheckReferencePrompts(tok);
}

TEST(Tokenizer, SmolJsonAndGgufAgreeOnShakespeare) {
  const std::string text = ReadFile(kShared + "/text/shakespeare-val.txt");
  ASSERT_GT(text.size(), 10000u);
  const Tokenizer& a = SmolJson();
  const Tokenizer& b = SmolGguf();
  for (int32_t id = 0; id < a.vocab_size(); ++id) ASSERT_EQ(a.TokenBytes(id), b.TokenBytes(id)) << "id " << id;

  // (Encoding speed: bench/bench_rank0.cc.)
  std::vector<int32_t> ids = a.Encode(text, false);
  EXPECT_EQ(ids, b.Encode(text, false));
  EXPECT_EQ(a.Decode(ids), text);

  // Encoding pieces of the text separately (at line boundaries) decodes back as well.
  const Tokenizer& l3 = Llama3();
  std::vector<int32_t> l3_ids = l3.Encode(text, false);
  EXPECT_EQ(l3.Decode(l3_ids), text);
}

// ---------------------------------------------------------------------------
// Hand-made vocabularies: merge order, ignore_merges, special matching.
// ---------------------------------------------------------------------------
std::string Enc(std::string_view raw) {
  std::string s;
  for (unsigned char c : raw) AppendUtf8(s, ByteToUnicode(c));
  return s;
}

VocabSpec ByteVocab() {
  VocabSpec spec;
  for (int b = 0; b < 256; ++b) spec.tokens.push_back(Enc(std::string(1, static_cast<char>(b))));
  return spec;
}

int32_t Add(VocabSpec& spec, const std::string& text, int32_t type = kTokenNormal) {
  spec.tokens.push_back(text);
  if (!spec.token_types.empty() || type != kTokenNormal) {
    spec.token_types.resize(spec.tokens.size() - 1, kTokenNormal);
    spec.token_types.push_back(type);
  }
  return static_cast<int32_t>(spec.tokens.size() - 1);
}

TEST(Tokenizer, MergesApplyLowestRankFirst) {
  VocabSpec spec = ByteVocab();
  int32_t bc = Add(spec, "bc");
  int32_t ab = Add(spec, "ab");
  spec.merges = {"b c", "a b"};
  spec.ignore_merges = false;
  auto tok = Tokenizer::Create(spec);
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  // "b c" (rank 0) wins over "a b" (rank 1) in "abc".
  EXPECT_EQ(tok->Encode("abc", false), (std::vector<int32_t>{*tok->FindToken("a"), bc}));
  EXPECT_EQ(tok->Encode("abd", false), (std::vector<int32_t>{ab, *tok->FindToken("d")}));
  // Leftmost first among equal ranks: "aaa" with "a a" -> "aa" "a".
  VocabSpec spec2 = ByteVocab();
  int32_t aa = Add(spec2, "aa");
  spec2.merges = {"a a"};
  spec2.ignore_merges = false;
  auto tok2 = Tokenizer::Create(spec2);
  ASSERT_TRUE(tok2.ok());
  EXPECT_EQ(tok2->Encode("aaa", false), (std::vector<int32_t>{aa, *tok2->FindToken("a")}));
  EXPECT_EQ(tok2->Encode("aaaa", false), (std::vector<int32_t>{aa, aa}));
}

TEST(Tokenizer, IgnoreMergesEmitsWholeVocabularyPiece) {
  VocabSpec spec = ByteVocab();
  int32_t ab = Add(spec, "ab");
  int32_t abc = Add(spec, "abc");  // reachable by no merge
  spec.merges = {"a b"};
  spec.ignore_merges = false;
  auto merged = Tokenizer::Create(spec);
  ASSERT_TRUE(merged.ok());
  EXPECT_EQ(merged->Encode("abc", false), (std::vector<int32_t>{ab, *merged->FindToken("c")}));
  spec.ignore_merges = true;
  auto whole = Tokenizer::Create(spec);
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(whole->Encode("abc", false), (std::vector<int32_t>{abc}));
  EXPECT_EQ(whole->Encode("abc\nabc", false), (std::vector<int32_t>{abc, *whole->FindToken(Enc("\n")), abc}));
  // " abc" is one pre-token and not a token itself, so it is merged.
  EXPECT_EQ(whole->Encode(" abc", false), (std::vector<int32_t>{*whole->FindToken(Enc(" ")), ab, *whole->FindToken("c")}));
}

TEST(Tokenizer, SpecialTokensLongestMatchAndUserDefined) {
  VocabSpec spec = ByteVocab();
  int32_t s1 = Add(spec, "<x>", kTokenControl);
  int32_t s2 = Add(spec, "<x>y", kTokenControl);
  int32_t user = Add(spec, "hi there", kTokenUserDefined);
  auto tok = Tokenizer::Create(spec);
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  EXPECT_EQ(tok->Encode("<x>y", false), (std::vector<int32_t>{s2}));
  EXPECT_EQ(tok->Encode("<x>z", false), (std::vector<int32_t>{s1, *tok->FindToken("z")}));
  // User-defined tokens match even without parse_special; control tokens do not.
  std::vector<int32_t> ids = tok->Encode("<x>hi there", false, /*parse_special=*/false);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.back(), user);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), s1), 0);
  EXPECT_EQ(tok->TokenBytes(user), "hi there");  // stored raw, not byte-level
  EXPECT_EQ(tok->Decode(ids), "<x>hi there");
}

TEST(Tokenizer, CreateRejectsBadSpecs) {
  {
    VocabSpec spec = ByteVocab();
    spec.merges = {"a zz"};
    auto tok = Tokenizer::Create(spec);
    ASSERT_FALSE(tok.ok());
    EXPECT_NE(tok.status().message().find("merge 0"), std::string::npos) << tok.status().message();
  }
  {
    VocabSpec spec = ByteVocab();
    spec.merges = {"a b"};  // "ab" is not a token
    EXPECT_FALSE(Tokenizer::Create(spec).ok());
  }
  {
    VocabSpec spec = ByteVocab();
    spec.merges = {"ab"};
    EXPECT_FALSE(Tokenizer::Create(spec).ok());
  }
  {
    VocabSpec spec = ByteVocab();
    spec.bos_id = 256;
    EXPECT_FALSE(Tokenizer::Create(spec).ok());
  }
  {
    VocabSpec spec = ByteVocab();
    spec.token_types = {1, 2, 3};
    EXPECT_FALSE(Tokenizer::Create(spec).ok());
  }
  {
    VocabSpec spec = ByteVocab();
    spec.pre = "deepseek-coder";
    auto tok = Tokenizer::Create(spec);
    ASSERT_FALSE(tok.ok());
    EXPECT_EQ(tok.status().kind(), ErrorKind::kUnimplemented);
    EXPECT_NE(tok.status().message().find("deepseek-coder"), std::string::npos);
  }
  EXPECT_FALSE(Tokenizer::Create(VocabSpec{}).ok());
}

// ---------------------------------------------------------------------------
// Invalid UTF-8, round trips, streaming.
// ---------------------------------------------------------------------------
TEST(Tokenizer, InvalidUtf8EncodesAndDecodesBack) {
  const std::vector<std::string> cases = {
      "\x80", "abc\x80\x80 def", "\xE2\x82", "truncated \xE2\x82", "\xFF", "\xFF\xFE\xFD", "\xC0\xAF",
      "h\xC3\xA9llo \xED\xA0\x80 world", "\xF0\x9F\xA6", "x\xF0\x9F\xA6 y", "\xF4\x90\x80\x80", "  \x80\n\n\xFF  ",
      std::string("nul\0byte", 8), "'s\x80'RE\xC3",
  };
  for (const Tokenizer* tok : {&Llama3(), &SmolJson()}) {
    for (const std::string& s : cases) {
      std::vector<int32_t> ids = tok->Encode(s, false);
      EXPECT_EQ(tok->Decode(ids), s) << IdsToString(ids);
    }
    std::mt19937 rng(1234);
    for (int trial = 0; trial < 300; ++trial) {
      std::string s(rng() % 40, '\0');
      for (char& c : s) {
        // Bias towards bytes that make interesting UTF-8: ASCII, continuations, leads.
        uint32_t r = rng() % 4;
        c = static_cast<char>(r == 0 ? 0x20 + rng() % 0x60 : r == 1 ? 0x80 + rng() % 0x40 : rng() % 256);
      }
      std::vector<int32_t> ids = tok->Encode(s, false);
      ASSERT_EQ(tok->Decode(ids), s) << "trial " << trial;
    }
  }
}

TEST(Tokenizer, RoundTripsValidText) {
  const std::vector<std::string> cases = {
      "", " ", "Hello, world!", "  leading and trailing  ", "tabs\tand\r\nCRLF\n\n\n",
      "数字 123456789 and ½ ⅞", "emoji 🦙🚀👨‍👩‍👧 done", "Ünïcödé ÄÖÜ ß", "I'M sure you'LL see 'tis",
      "<think>\nhmm\n</think>\n<|im_start|>user\nhello<|im_end|>",
  };
  for (const Tokenizer* tok : {&Llama3(), &SmolJson(), &SmolGguf()}) {
    for (const std::string& s : cases) {
      std::vector<int32_t> ids = tok->Encode(s, false);
      EXPECT_EQ(tok->Decode(ids), s);
      std::vector<int32_t> raw = tok->Encode(s, false, /*parse_special=*/false);
      EXPECT_EQ(tok->Decode(raw), s);
    }
  }
  // Out-of-range ids decode to nothing rather than crash.
  EXPECT_EQ(Llama3().Decode({-5, 9906, 1 << 30}), "Hello");
  EXPECT_EQ(Llama3().TokenBytes(-1), "");
}

TEST(Tokenizer, StreamDecoderHoldsBackSplitCharacters) {
  const Tokenizer& tok = Llama3();
  const std::string text = "a 🦙 b";
  std::vector<int32_t> ids = tok.Encode(text, false);
  // The llama is three tokens here (" " + split emoji bytes), so some token ends mid-character.
  bool saw_partial = false;
  for (int32_t id : ids) {
    if (!IsValidUtf8(tok.TokenBytes(id))) saw_partial = true;
  }
  ASSERT_TRUE(saw_partial) << IdsToString(ids);
  Tokenizer::StreamDecoder dec(tok);
  std::string all;
  for (int32_t id : ids) {
    std::string piece = dec.Push(id);
    EXPECT_TRUE(IsValidUtf8(piece)) << "piece for id " << id;
    all += piece;
  }
  all += dec.Flush();
  EXPECT_EQ(all, text);
  EXPECT_EQ(dec.pending_bytes(), 0u);

  // Byte by byte through single-byte tokens: nothing until the last byte.
  const std::string llama = "🦙";
  Tokenizer::StreamDecoder dec2(tok);
  for (size_t i = 0; i + 1 < llama.size(); ++i) {
    EXPECT_EQ(dec2.Push(tok.Encode(llama.substr(i, 1), false).at(0)), "");
  }
  EXPECT_EQ(dec2.Push(tok.Encode(llama.substr(llama.size() - 1), false).at(0)), llama);
}

TEST(Tokenizer, StreamDecoderFlushesInvalidBytes) {
  const Tokenizer& tok = Llama3();
  auto byte_token = [&](char b) { return tok.Encode(std::string(1, b), false).at(0); };
  const std::string fffd = "\xEF\xBF\xBD";
  Tokenizer::StreamDecoder dec(tok);
  EXPECT_EQ(dec.Push(byte_token('\x80')), fffd);  // a lone continuation byte cannot wait
  EXPECT_EQ(dec.Push(byte_token('\xFF')), fffd);
  EXPECT_EQ(dec.Push(byte_token('\xE2')), "");     // could still become a character
  EXPECT_EQ(dec.Push(byte_token('A')), fffd + "A");  // ...but 'A' shows it will not
  EXPECT_EQ(dec.Push(byte_token('\xF0')), "");
  EXPECT_EQ(dec.Push(byte_token('\x9F')), "");
  EXPECT_EQ(dec.Flush(), fffd);  // stream ended mid-character
  EXPECT_EQ(dec.pending_bytes(), 0u);
  EXPECT_EQ(dec.Push(9906), "Hello");
}

TEST(Tokenizer, Utf8Classification) {
  EXPECT_EQ(SanitizeUtf8("ok"), "ok");
  EXPECT_EQ(SanitizeUtf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");          // overlong: two subparts
  EXPECT_EQ(SanitizeUtf8("\xE2\x82"), "\xEF\xBF\xBD");                      // truncated: one
  EXPECT_EQ(SanitizeUtf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(SanitizeUtf8("\xE2\x82\xAC"), "\xE2\x82\xAC");                  // euro sign
  for (int b = 0; b < 256; ++b) EXPECT_EQ(UnicodeToByte(ByteToUnicode(static_cast<uint8_t>(b))), b);
  EXPECT_EQ(ByteToUnicode(' '), U'\u0120');
  EXPECT_EQ(ByteToUnicode('\n'), U'\u010A');
  EXPECT_EQ(ByteToUnicode('a'), U'a');
}

// ---------------------------------------------------------------------------
// Bad tokenizer.json files: each gives an error naming the file and the field.
// ---------------------------------------------------------------------------
class BadTokenizerJson : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("strata_tok_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  Status Load(const std::string& json, const std::string& config = "") {
    std::ofstream(dir_ / "tokenizer.json") << json;
    if (!config.empty()) std::ofstream(dir_ / "tokenizer_config.json") << config;
    auto spec = LoadVocabFromTokenizerJson(dir_.string());
    return spec.ok() ? Status::Ok() : spec.status();
  }
  void ExpectError(const std::string& json, const std::string& field, const std::string& config = "",
                   const std::string& file = "tokenizer.json") {
    Status st = Load(json, config);
    ASSERT_FALSE(st.ok()) << json;
    EXPECT_NE(st.message().find((dir_ / file).string()), std::string::npos) << st.message();
    EXPECT_NE(st.message().find(field), std::string::npos) << st.message();
  }
  std::filesystem::path dir_;
};

constexpr const char* kPre =
    R"("pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true})";

TEST_F(BadTokenizerJson, MissingFile) {
  auto spec = LoadVocabFromTokenizerJson((dir_ / "nowhere").string());
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().kind(), ErrorKind::kNotFound);
  EXPECT_NE(spec.status().message().find("tokenizer.json"), std::string::npos);
}

TEST_F(BadTokenizerJson, NotJson) { ExpectError("{\"model\": ", "not valid JSON"); }
TEST_F(BadTokenizerJson, TopLevelArray) { ExpectError("[1, 2]", "top level"); }
TEST_F(BadTokenizerJson, MissingModel) { ExpectError(std::string("{") + kPre + "}", "model"); }
TEST_F(BadTokenizerJson, ModelNotObject) { ExpectError(R"({"model": 3})", "model"); }
TEST_F(BadTokenizerJson, WrongModelType) {
  ExpectError(R"({"model": {"type": "WordPiece", "vocab": {"a": 0}, "merges": []}})", "model.type");
}
TEST_F(BadTokenizerJson, VocabIsArray) {
  ExpectError(R"({"model": {"type": "BPE", "vocab": ["a"], "merges": []}})", "model.vocab");
}
TEST_F(BadTokenizerJson, VocabIdNotInteger) {
  ExpectError(R"({"model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []}})", "model.vocab['a']");
}
TEST_F(BadTokenizerJson, VocabIdNegative) {
  ExpectError(R"({"model": {"type": "BPE", "vocab": {"a": -1}, "merges": []}})", "model.vocab['a']");
}
TEST_F(BadTokenizerJson, MergesNotArray) {
  ExpectError(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": 7}})", "model.merges");
}
TEST_F(BadTokenizerJson, MergeWrongShape) {
  ExpectError(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [["a"]]}})", "model.merges[0]");
}
TEST_F(BadTokenizerJson, AddedTokenWithoutContent) {
  ExpectError(std::string(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "added_tokens": [{"id": 1}], )") +
                  kPre + "}",
              "added_tokens[0].content");
}
TEST_F(BadTokenizerJson, UnsupportedPreTokenizer) {
  ExpectError(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Whitespace"}})",
              "pre_tokenizer");
}
TEST_F(BadTokenizerJson, BadConfigBosToken) {
  ExpectError(std::string(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, )") + kPre + "}",
              "bos_token", R"({"bos_token": 5})", "tokenizer_config.json");
}
TEST_F(BadTokenizerJson, ConfigBosTokenUnknown) {
  ExpectError(std::string(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, )") + kPre + "}",
              "bos_token", R"({"bos_token": "<s>"})", "tokenizer_config.json");
}

TEST_F(BadTokenizerJson, MinimalValidFileAndBosFromTemplate) {
  const std::string json = std::string(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]},
    "added_tokens": [{"id": 3, "content": "<s>", "special": true}],
    "post_processor": {"type": "Sequence", "processors": [
      {"type": "ByteLevel"},
      {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                {"Sequence": {"id": "A", "type_id": 0}}],
       "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [3], "tokens": ["<s>"]}}}]},
    )") + kPre + "}";
  ASSERT_TRUE(Load(json).ok()) << Load(json).ToString();
  auto spec = LoadVocabFromTokenizerJson(dir_.string());
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->bos_id, 3);
  EXPECT_TRUE(spec->add_bos);
  EXPECT_EQ(spec->pre, "gpt2");
  EXPECT_FALSE(spec->ignore_merges);
  ASSERT_EQ(spec->merges.size(), 1u);
  EXPECT_EQ(spec->merges[0], "a b");
  auto tok = Tokenizer::Create(std::move(spec).value());
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  EXPECT_EQ(tok->Encode("ab", tok->add_bos()), (std::vector<int32_t>{3, 2}));
}

}  // namespace
}  // namespace strata
