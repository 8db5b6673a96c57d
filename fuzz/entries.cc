// Fuzz target bodies (see entries.h). Inputs reach the loaders as files, as a
// model does: GGUF and safetensors bytes through a memfd (no disk traffic per
// run), JSON files in a private temporary directory.
#include "fuzz/entries.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include <nlohmann/json.hpp>

#include "coordinator/chat_template.h"
#include "model/gguf.h"
#include "model/gguf_writer.h"
#include "model/model_files.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"
#include "model/unicode.h"
#include "model/untrusted_json.h"

namespace strata::fuzz {
namespace {

// A memfd reused by every run: truncated and rewritten, opened by path.
class MemFile {
 public:
  explicit MemFile(const char* name) {
    fd_ = ::memfd_create(name, MFD_CLOEXEC);
    STRATA_CHECK_MSG(fd_ >= 0, "memfd_create failed");
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  const std::string& Write(const uint8_t* data, size_t size) {
    STRATA_CHECK(::ftruncate(fd_, 0) == 0);
    size_t done = 0;
    while (done < size) {
      ssize_t n = ::pwrite(fd_, data + done, size - done, static_cast<off_t>(done));
      STRATA_CHECK(n > 0);
      done += static_cast<size_t>(n);
    }
    return path_;
  }

 private:
  int fd_ = -1;
  std::string path_;
};

// A private directory for the JSON files, removed at exit.
class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/strata_fuzz_XXXXXX";
    STRATA_CHECK_MSG(::mkdtemp(tmpl.data()) != nullptr, "mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void WriteFile(const std::string& path, const void* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  STRATA_CHECK_MSG(out.good(), "cannot write " + path);
}
void WriteFile(const std::string& path, const std::string& text) { WriteFile(path, text.data(), text.size()); }

// An error must say which file it is about.
void CheckNames(const Status& st, const std::string& path) {
  STRATA_CHECK_MSG(st.message().find(path) != std::string::npos,
                   "error does not name '" + path + "': " + st.ToString());
}

bool ValidUtf8(const std::string& s) {
  uint64_t bad = 0;
  return IsValidUtf8(reinterpret_cast<const uint8_t*>(s.data()), s.size(), &bad);
}

// Ids in range; the stream decoder emits valid UTF-8. With a complete
// byte-level vocabulary (`exact`: every byte has a token), Encode -> Decode is
// the identity and the stream decoder returns valid UTF-8 text unchanged.
void CheckRoundTrip(const Tokenizer& tok, std::string_view text, bool parse_special, bool exact) {
  std::vector<int32_t> ids = tok.Encode(text, /*add_bos=*/false, parse_special);
  for (int32_t id : ids) STRATA_CHECK_MSG(id >= 0 && id < tok.vocab_size(), "Encode gave id " + std::to_string(id));
  if (exact) STRATA_CHECK_MSG(tok.Decode(ids) == text, "Decode(Encode(text)) differs from the text");
  Tokenizer::StreamDecoder dec(tok);
  std::string streamed;
  for (int32_t id : ids) streamed += dec.Push(id);
  streamed += dec.Flush();
  STRATA_CHECK_MSG(ValidUtf8(streamed), "the stream decoder emitted invalid UTF-8");
  if (exact && ValidUtf8(std::string(text))) STRATA_CHECK_MSG(streamed == text, "the stream decoder changed valid UTF-8 text");
}

// Every typed getter on every key: none may crash, whatever the value type.
void TouchMetadata(const GgufFile& f) {
  for (const auto& [key, value] : f.metadata()) {
    (void)f.GetString(key);
    (void)f.GetUint(key);
    (void)f.GetInt(key);
    (void)f.GetFloat(key);
    (void)f.GetBool(key);
    (void)f.GetStringArray(key);
    (void)f.GetIntArray(key);
    (void)f.GetFloatArray(key);
    if (const auto* a = std::get_if<GgufArray>(&value.v)) {
      if (a->count <= 4096) (void)a->Items();
    }
  }
}

}  // namespace

int GgufEntry(const uint8_t* data, size_t size) {
  static MemFile file("strata_fuzz_gguf");
  const std::string& path = file.Write(data, size);
  auto f = GgufFile::Open(path);
  if (!f.ok()) {
    CheckNames(f.status(), path);
    return 0;
  }
  const GgufFile& g = **f;
  STRATA_CHECK(g.data_offset() <= g.file_size());
  for (const GgufTensor& t : g.tensors()) {
    STRATA_CHECK(t.data >= g.header_bytes() + g.data_offset());
    STRATA_CHECK(t.nbytes <= g.file_size() && t.data + t.nbytes <= g.header_bytes() + g.file_size());
    STRATA_CHECK(t.offset % g.alignment() == 0);
    STRATA_CHECK(t.n_elements() > 0);
  }
  TouchMetadata(g);
  auto model = ModelFiles::Open(path);
  if (!model.ok()) {
    CheckNames(model.status(), path);
  } else {
    STRATA_CHECK((*model)->config().Validate("fuzz").ok());
    for (const TensorSpec& s : (*model)->tensor_table()) {
      auto w = (*model)->Tensor(s.gguf_name);
      if (w.ok()) STRATA_CHECK(w->data + w->nbytes <= g.header_bytes() + g.file_size());
    }
  }
  // The vocabulary, whether or not the rest is a model.
  auto spec = LoadVocabFromGguf(g);
  if (spec.ok()) {
    auto tok = Tokenizer::Create(std::move(*spec));
    if (tok.ok()) CheckRoundTrip(*tok, "Hello world! 123 <|begin_of_text|>", true, false);
  } else {
    CheckNames(spec.status(), path);
  }
  return 0;
}

int SafetensorsEntry(const uint8_t* data, size_t size) {
  static MemFile file("strata_fuzz_safetensors");
  const std::string& path = file.Write(data, size);
  auto m = SafetensorsModel::OpenFile(path);
  if (!m.ok()) {
    CheckNames(m.status(), path);
    return 0;
  }
  // The tensors tile the data region: their sizes add up to it.
  uint64_t header_len = 0;
  std::memcpy(&header_len, data, 8);
  uint64_t total = 0;
  for (const SafetensorsTensor& t : (*m)->tensors()) {
    STRATA_CHECK(t.nbytes <= size);
    total += t.nbytes;
    STRATA_CHECK((*m)->Find(t.name) == &t);
  }
  STRATA_CHECK_MSG(total == size - 8 - header_len, "tensors do not cover the data region");
  return 0;
}

const Tokenizer& FuzzTokenizer() {
  static const Tokenizer* tok = [] {
    std::string path;
    if (const char* env = getenv("STRATA_FUZZ_VOCAB"); env && *env) {
      path = env;
    } else {
      path = STRATA_SHARED_DIR "/tokenizer/ggml-vocab-llama-bpe.gguf";
      if (!std::filesystem::exists(path)) path = STRATA_SOURCE_DIR "/models/smol-shakespeare-q4_k_m.gguf";
    }
    auto g = GgufFile::Open(path);
    STRATA_CHECK_MSG(g.ok(), "fuzz vocabulary: " + g.status().ToString());
    auto spec = LoadVocabFromGguf(**g);
    STRATA_CHECK_MSG(spec.ok(), "fuzz vocabulary: " + spec.status().ToString());
    auto t = Tokenizer::Create(std::move(*spec));
    STRATA_CHECK_MSG(t.ok(), "fuzz vocabulary: " + t.status().ToString());
    return new Tokenizer(std::move(*t));  // lives for the process
  }();
  return *tok;
}

int TokenizerEntry(const uint8_t* data, size_t size) {
  const Tokenizer& tok = FuzzTokenizer();
  std::string_view text(reinterpret_cast<const char*>(data), size);
  CheckRoundTrip(tok, text, /*parse_special=*/true, /*exact=*/true);
  CheckRoundTrip(tok, text, /*parse_special=*/false, /*exact=*/true);
  // Generated ids may be anything a sampler returns; out of range ones are skipped.
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 4 <= size && ids.size() < 64; i += 4) {
    int32_t id;
    std::memcpy(&id, data + i, 4);
    ids.push_back(id);
  }
  Tokenizer::StreamDecoder dec(tok);
  std::string out;
  for (int32_t id : ids) out += dec.Push(id);
  out += dec.Flush();
  STRATA_CHECK(ValidUtf8(out));
  return 0;
}

// ---------------------------------------------------------------------------
// JSON files of an HF directory

namespace {

std::string SmallConfigJson() {
  return R"({"model_type": "smollm3", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
  "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 300, "rms_norm_eps": 1e-6,
  "rope_theta": 10000.0, "no_rope_layers": [1, 0], "bos_token_id": 258, "eos_token_id": 259, "tie_word_embeddings": true})";
}
std::string SmallGenerationConfigJson() { return R"({"bos_token_id": 258, "eos_token_id": [259, 257]})"; }
std::string SmallTokenizerConfigJson() {
  return R"({"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|end_of_text|>"}, "add_bos_token": true})";
}
// A byte-level BPE tokenizer.json: the 256 byte symbols, two merges, two
// special tokens, GPT-2's pre-tokenizer, a template that adds BOS.
std::string SmallTokenizerJson() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    AppendUtf8(s, ByteToUnicode(static_cast<uint8_t>(b)));
    vocab[s] = b;
  }
  vocab["\xC4\xA0t"] = 256;  // "Ġt"
  vocab["he"] = 257;
  nlohmann::json j = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"\xC4\xA0 t", "h e"}}, {"ignore_merges", false}}},
      {"added_tokens",
       {{{"id", 258}, {"content", "<|begin_of_text|>"}, {"special", true}},
        {{"id", 259}, {"content", "<|end_of_text|>"}, {"special", true}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}}}},
  };
  return j.dump();
}

std::vector<uint8_t> Bytes(uint8_t kind, const std::string& text) {
  std::vector<uint8_t> b{kind};
  b.insert(b.end(), text.begin(), text.end());
  return b;
}

std::vector<uint8_t> TinyGguf() {
  ModelConfig c;
  c.n_layers = 1;
  c.hidden = 32;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 16;
  c.ffn = 64;
  c.vocab = 260;
  c.tied_embeddings = true;
  c.arch = "smollm3";
  c.rms_eps = 1e-6f;
  FillDefaultLayerLists(&c);
  GgufWriter w;
  w.SetString("general.architecture", "smollm3");
  STRATA_CHECK(FindArchitecture("smollm3")->write_gguf_metadata(c, &w).ok());
  w.SetString("tokenizer.ggml.model", "gpt2");
  w.SetString("tokenizer.ggml.pre", "llama-bpe");
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  for (int b = 0; b < 256; ++b) {
    std::string s;
    AppendUtf8(s, ByteToUnicode(static_cast<uint8_t>(b)));
    tokens.push_back(s);
    types.push_back(kTokenNormal);
  }
  for (const char* t : {"\xC4\xA0t", "he", "<|begin_of_text|>", "<|end_of_text|>"}) tokens.push_back(t);
  types.insert(types.end(), {kTokenNormal, kTokenNormal, kTokenControl, kTokenControl});
  w.SetStringArray("tokenizer.ggml.tokens", tokens);
  w.SetI32Array("tokenizer.ggml.token_type", types);
  w.SetStringArray("tokenizer.ggml.merges", {"\xC4\xA0 t", "h e"});
  w.SetU32("tokenizer.ggml.bos_token_id", 258);
  w.SetU32("tokenizer.ggml.eos_token_id", 259);
  w.SetBool("tokenizer.ggml.add_bos_token", true);
  // Q8_0 / Q4_0 / F16 / F32 tensors, so mutations reach every type's size rule.
  const TensorType kTypes[] = {TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kF16, TensorType::kF32};
  int i = 0;
  for (const TensorSpec& s : TensorTableOf(c)) {
    if (!s.required) continue;
    TensorType type = s.ne.size() == 1 ? TensorType::kF32 : kTypes[i++ % 4];
    auto n = GgufWriter::TensorBytes(type, s.ne);
    STRATA_CHECK(n.ok());
    w.AddTensor(s.gguf_name, type, s.ne, std::vector<uint8_t>(*n, 0));
  }
  return w.Serialize();
}

std::vector<uint8_t> TinySafetensors() {
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
      R"("b":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]},"c":{"dtype":"F16","shape":[1],"data_offsets":[22,24]}})";
  std::vector<uint8_t> b(8, 0);
  const uint64_t n = header.size();
  std::memcpy(b.data(), &n, 8);
  b.insert(b.end(), header.begin(), header.end());
  b.resize(b.size() + 24, 0x3F);
  return b;
}

}  // namespace

namespace {

// ---------------------------------------------------------------------------
// Chat templates

constexpr const char* kSmallConversation = R"({"messages": [
  {"role": "system", "content": "Be brief."},
  {"role": "user", "content": "Hi \u00e9 <think>"},
  {"role": "assistant", "content": "", "reasoning_content": "hmm", "tool_calls": [
    {"type": "function", "function": {"name": "f", "arguments": {"x": 1, "y": [true, null, 2.5]}}}]},
  {"role": "tool", "content": [{"type": "text", "text": "42"}]},
  {"role": "assistant", "content": "<think>\nr\n</think>\n\nDone."}],
 "tools": [{"type": "function", "function": {"name": "f", "description": "d",
   "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}}]})";

// Most of the subset at once: loops with loop.*, namespaces, macros, slices,
// filters, tests, tojson, string methods, whitespace control.
constexpr const char* kFeatureTemplate = R"J({%- macro render(m, depth=0) -%}
{{ m.role | upper }}{% if m.content is string %}: {{ m.content | trim }}{% else %}{% for p in m.content %}[{{ p.text }}]{% endfor %}{% endif %}
{%- endmacro -%}
{{ bos_token }}{% set ns = namespace(n=0, last='') %}
{%- if tools %}{% for t in tools %}{{ t | tojson(indent=2) }}{{ t.function.name ~ '|' ~ (t.function.parameters.required | join(',')) }}{% endfor %}{% endif %}
{%- for m in messages[::-1] if m.role != 'tool' %}{% set ns.n = ns.n + 1 %}{% set ns.last = m.role %}{% endfor %}
{%- for m in messages %}
  {%- if loop.first and m.role == 'system' %}<sys>{{ m.content }}</sys>{% continue %}{% endif %}
  {{- render(m) }}{{ '
' if not loop.last }}
  {%- if m.tool_calls is defined %}{% for c in m.tool_calls %}{{ c.function.arguments | tojson(sort_keys=true) }}{{ c.function.arguments.items() | list }}{% endfor %}{% endif %}
  {%- if m.content is string and '</think>' in m.content %}{{ m.content.split('</think>')[-1].lstrip('
') }}{% endif %}
{%- endfor %}
{%- set a, b = ns.n, ns.last %}{{ a }}{{ b[:3] }}{{ range(3) | map('string') | join('-') }}{{ messages | map(attribute='role') | unique | list }}
{%- if add_generation_prompt %}<assistant>{% if enable_thinking is defined and not enable_thinking %}<think>

</think>{% endif %}{% endif %}
{{- eos_token })J";

std::vector<uint8_t> ChatTemplateInput(const std::string& source, const std::string& conversation) {
  std::vector<uint8_t> b(source.begin(), source.end());
  b.push_back(0);
  b.insert(b.end(), conversation.begin(), conversation.end());
  return b;
}

// A template error names its line.
void CheckTemplateError(const Status& st) {
  STRATA_CHECK_MSG(st.message().rfind("chat template line ", 0) == 0, "template error without a line: " + st.ToString());
}

}  // namespace

std::vector<Seed> Seeds() {
  return {
      {"gguf", "tiny_smollm3", TinyGguf()},
      {"safetensors", "tiny", TinySafetensors()},
      {"json_config", "config", Bytes(0, SmallConfigJson())},
      {"json_config", "generation_config", Bytes(1, SmallGenerationConfigJson())},
      {"json_config", "tokenizer_config", Bytes(2, SmallTokenizerConfigJson())},
      {"json_config", "tokenizer", Bytes(3, SmallTokenizerJson())},
      {"chat_template", "features", ChatTemplateInput(kFeatureTemplate, kSmallConversation)},
  };
}

int JsonConfigEntry(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static TempDir dir;
  static const std::string config = SmallConfigJson(), tokenizer = SmallTokenizerJson();
  const std::string& d = dir.path();
  const int kind = data[0] % 4;
  ++data;
  --size;
  std::error_code ec;
  for (const char* name : {"config.json", "generation_config.json", "tokenizer_config.json", "tokenizer.json"})
    std::filesystem::remove(d + "/" + name, ec);
  if (kind <= 1) {
    const std::string path = d + (kind == 0 ? "/config.json" : "/generation_config.json");
    if (kind == 1) WriteFile(d + "/config.json", config);
    WriteFile(path, data, size);
    auto c = ReadHfConfig(d);
    if (!c.ok()) {
      CheckNames(c.status(), path);
      return 0;
    }
    STRATA_CHECK(c->Validate("fuzz").ok());
    for (int32_t id : c->eos_ids) STRATA_CHECK(id >= 0 && id < c->vocab);
    (void)TensorTableOf(*c);
    return 0;
  }
  const std::string path = d + (kind == 2 ? "/tokenizer_config.json" : "/tokenizer.json");
  if (kind == 2) WriteFile(d + "/tokenizer.json", tokenizer);
  WriteFile(path, data, size);
  auto spec = LoadVocabFromTokenizerJson(d);
  if (!spec.ok()) {
    CheckNames(spec.status(), path);
    return 0;
  }
  auto tok = Tokenizer::Create(std::move(*spec));
  if (tok.ok()) {
    if (tok->add_bos()) STRATA_CHECK(tok->bos_id() >= 0 && tok->bos_id() < tok->vocab_size());
    // The fixed tokenizer.json has every byte; a fuzzed one need not.
    CheckRoundTrip(*tok, "Hello the world <|begin_of_text|>", true, /*exact=*/kind == 2);
  }
  return 0;
}

int ChatTemplateEntry(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t nul = in.find('\0');
  const std::string source(in.substr(0, nul));
  const std::string conv_text = nul == std::string_view::npos ? std::string(kSmallConversation) : std::string(in.substr(nul + 1));
  auto conv = ParseConversation(conv_text);
  if (!conv.ok()) return 0;
  auto t = ChatTemplate::Create(source, "<|begin_of_text|>", "<|end_of_text|>");
  if (!t.ok()) {
    CheckTemplateError(t.status());
    return 0;
  }
  const ChatOptions kOptions[] = {{.add_generation_prompt = true, .enable_thinking = std::nullopt},
                                  {.add_generation_prompt = false, .enable_thinking = true},
                                  {.add_generation_prompt = true, .enable_thinking = false}};
  for (const ChatOptions& opts : kOptions) {
    auto prompt = t->Apply(*conv, opts);
    if (!prompt.ok()) CheckTemplateError(prompt.status());
    else (void)PromptOpensThinking(*prompt);
  }
  return 0;
}

const std::vector<Target>& Targets() {
  static const std::vector<Target> targets = {{"gguf", GgufEntry},
                                              {"safetensors", SafetensorsEntry},
                                              {"tokenizer", TokenizerEntry},
                                              {"json_config", JsonConfigEntry},
                                              {"chat_template", ChatTemplateEntry}};
  return targets;
}

}  // namespace strata::fuzz
