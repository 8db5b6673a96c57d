// Byte-level BPE tokenizer: vocabulary loaders (tokenizer.json, GGUF), the
// special-token splitter, the PCRE2 pre-tokenizer, the merge loop, decoding
// and the streaming decoder. See tokenizer.h for the algorithm. Rank 0 only.
#include "model/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <fstream>
#include <queue>

#include <nlohmann/json.hpp>

#include "model/gguf.h"
#include "model/unicode.h"
#include "model/untrusted_json.h"

namespace strata {
namespace {

// ---------------------------------------------------------------------------
// Pre-tokenizer patterns
// ---------------------------------------------------------------------------

// Llama-3's Split pattern, exactly as its tokenizer.json stores it.
constexpr const char* kLlama3Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
// GPT-2's ByteLevel(use_regex = true) pattern.
constexpr const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// Names as GGUF's tokenizer.ggml.pre spells them -> pattern; nullptr if unknown.
const char* PatternForPre(std::string_view pre) {
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") return kLlama3Pattern;
  if (pre == "gpt2") return kGpt2Pattern;
  return nullptr;
}
bool IsLlama3Pre(std::string_view pre) { return PatternForPre(pre) == kLlama3Pattern; }

constexpr int64_t kMaxVocab = int64_t{1} << 24;  // bound on ids read from files

// The stored (byte-level) text of a run of raw bytes.
std::string ByteLevelEncode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) AppendUtf8(out, ByteToUnicode(b));
  return out;
}

// Raw bytes of a byte-level token text; code points outside the GPT-2 image
// (or ill-formed UTF-8) are kept as they are stored.
std::string ByteLevelDecode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    Utf8Seq q = ClassifyUtf8(text.data() + i, text.size() - i);
    int b = q.kind == Utf8Seq::kValid ? UnicodeToByte(q.cp) : -1;
    if (b >= 0) {
      out += static_cast<char>(b);
    } else {
      out.append(text.data() + i, q.len);
    }
    i += q.len;
  }
  return out;
}

// ---------------------------------------------------------------------------
// tokenizer.json
// ---------------------------------------------------------------------------

using Json = nlohmann::json;

const char* JsonTypeName(const Json& j) { return j.type_name(); }

Status JsonField(const std::string& file, const std::string& field, const std::string& what) {
  return DataLoss("'" + file + "': field '" + field + "': " + what);
}

Result<Json> ReadJsonFile(const std::string& path) { return ReadUntrustedJsonFile(path, ""); }

// A token named in tokenizer_config.json: either "text" or {"content": "text", ...}.
Result<std::optional<std::string>> ConfigTokenName(const Json& cfg, const std::string& file,
                                                   const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return std::optional<std::string>();
  if (it->is_string()) return std::optional<std::string>(it->get<std::string>());
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return std::optional<std::string>(c->get<std::string>());
  }
  return JsonField(file, key, std::string("expected a string or an object with 'content', got ") +
                                  JsonTypeName(*it));
}

// The special tokens a post_processor puts in front of / around a single
// sequence, in template order (TemplateProcessing, possibly inside Sequence).
Status CollectTemplateSpecials(const Json& pp, const std::string& file, const std::string& field,
                               std::vector<std::string>& before_seq, std::vector<std::string>& all) {
  if (pp.is_null()) return Status::Ok();
  if (!pp.is_object()) return JsonField(file, field, std::string("expected an object, got ") + JsonTypeName(pp));
  auto type = pp.find("type");
  if (type == pp.end() || !type->is_string()) return JsonField(file, field + ".type", "expected a string");
  if (*type == "Sequence") {
    auto procs = pp.find("processors");
    if (procs == pp.end() || !procs->is_array()) return JsonField(file, field + ".processors", "expected an array");
    for (size_t i = 0; i < procs->size(); ++i) {
      STRATA_RETURN_IF_ERROR(CollectTemplateSpecials((*procs)[i], file, field + ".processors[" + std::to_string(i) + "]",
                                                     before_seq, all));
    }
    return Status::Ok();
  }
  if (*type != "TemplateProcessing") return Status::Ok();  // ByteLevel etc. add no tokens
  auto single = pp.find("single");
  if (single == pp.end() || !single->is_array()) return JsonField(file, field + ".single", "expected an array");
  bool seen_sequence = false;
  for (const Json& piece : *single) {
    if (!piece.is_object()) return JsonField(file, field + ".single", "expected an array of objects");
    if (piece.contains("Sequence")) seen_sequence = true;
    auto sp = piece.find("SpecialToken");
    if (sp == piece.end()) continue;
    auto id = sp->is_object() ? sp->find("id") : sp->end();
    if (id == sp->end() || !id->is_string())
      return JsonField(file, field + ".single[].SpecialToken.id", "expected a string");
    all.push_back(id->get<std::string>());
    if (!seen_sequence) before_seq.push_back(id->get<std::string>());
  }
  return Status::Ok();
}

// Which of our pre-tokenizers the tokenizer.json describes ("" = unsupported).
std::string DetectPre(const Json& pre) {
  if (!pre.is_object()) return "";
  std::vector<const Json*> parts;
  if (pre.value("type", "") == "Sequence") {
    auto list = pre.find("pretokenizers");
    if (list == pre.end() || !list->is_array()) return "";
    for (const Json& p : *list) parts.push_back(&p);
  } else {
    parts.push_back(&pre);
  }
  std::string found;
  for (const Json* p : parts) {
    if (!p->is_object()) return "";
    std::string type = p->value("type", "");
    if (type == "Split") {
      const Json* pattern = p->contains("pattern") ? &(*p)["pattern"] : nullptr;
      if (!pattern || !pattern->is_object() || !pattern->contains("Regex") || !(*pattern)["Regex"].is_string())
        return "";
      if ((*pattern)["Regex"].get<std::string>() != kLlama3Pattern) return "";
      if (p->value("behavior", "") != "Isolated" || p->value("invert", false)) return "";
      if (!found.empty()) return "";
      found = "llama-bpe";
    } else if (type == "ByteLevel") {
      if (p->value("add_prefix_space", false)) return "";
      if (p->value("use_regex", true)) {
        if (!found.empty()) return "";
        found = "gpt2";
      }
    } else {
      return "";
    }
  }
  return found;
}

}  // namespace

Result<VocabSpec> LoadVocabFromTokenizerJson(const std::string& dir) {
  const std::string file = dir + "/tokenizer.json";
  STRATA_ASSIGN_OR_RETURN(Json root, ReadJsonFile(file));
  try {
    VocabSpec spec;

    // --- model: BPE vocab and merges ---
    auto model = root.find("model");
    if (model == root.end()) return JsonField(file, "model", "missing");
    if (!model->is_object()) return JsonField(file, "model", std::string("expected an object, got ") + JsonTypeName(*model));
    if (auto t = model->find("type"); t != model->end()) {
      if (!t->is_string()) return JsonField(file, "model.type", "expected a string");
      if (*t != "BPE") return Unimplemented("'" + file + "': field 'model.type': '" + t->get<std::string>() +
                                            "', only BPE is supported");
    }
    auto vocab = model->find("vocab");
    if (vocab == model->end()) return JsonField(file, "model.vocab", "missing");
    if (!vocab->is_object()) return JsonField(file, "model.vocab", std::string("expected an object, got ") + JsonTypeName(*vocab));

    auto added = root.find("added_tokens");
    if (added != root.end() && !added->is_null() && !added->is_array())
      return JsonField(file, "added_tokens", std::string("expected an array, got ") + JsonTypeName(*added));
    const bool has_added = added != root.end() && added->is_array();

    // Ids may be sparse; size the table by the largest id (bounded).
    int64_t max_id = -1;
    auto check_id = [&](const Json& id, const std::string& field) -> Status {
      if (!id.is_number_integer()) return JsonField(file, field, std::string("expected an integer id, got ") + JsonTypeName(id));
      int64_t v = id.get<int64_t>();
      if (v < 0 || v >= kMaxVocab)
        return JsonField(file, field, "id " + std::to_string(v) + " out of range [0, " + std::to_string(kMaxVocab) + ")");
      max_id = std::max(max_id, v);
      return Status::Ok();
    };
    for (auto it = vocab->begin(); it != vocab->end(); ++it) {
      STRATA_RETURN_IF_ERROR(check_id(it.value(), "model.vocab['" + it.key() + "']"));
    }
    if (has_added) {
      for (size_t i = 0; i < added->size(); ++i) {
        const Json& a = (*added)[i];
        std::string field = "added_tokens[" + std::to_string(i) + "]";
        if (!a.is_object()) return JsonField(file, field, std::string("expected an object, got ") + JsonTypeName(a));
        if (!a.contains("id")) return JsonField(file, field + ".id", "missing");
        STRATA_RETURN_IF_ERROR(check_id(a["id"], field + ".id"));
        if (!a.contains("content") || !a["content"].is_string()) return JsonField(file, field + ".content", "expected a string");
        if (a.contains("special") && !a["special"].is_boolean()) return JsonField(file, field + ".special", "expected a bool");
      }
    }
    if (max_id < 0) return JsonField(file, "model.vocab", "empty");
    // The id table is sized by the largest id: bound it by what the file
    // lists, so that a few bytes ({"a": 16777215}) cannot allocate 16M tokens.
    const int64_t listed = static_cast<int64_t>(vocab->size() + (has_added ? added->size() : 0));
    if (max_id >= 2 * listed + 1024)
      return JsonField(file, "model.vocab", "id " + std::to_string(max_id) + " is far past the " + std::to_string(listed) +
                                                " tokens listed (ids must be nearly dense)");

    spec.tokens.assign(static_cast<size_t>(max_id) + 1, std::string());
    spec.token_types.assign(spec.tokens.size(), kTokenUnused);  // holes stay unused
    for (auto it = vocab->begin(); it != vocab->end(); ++it) {
      int64_t id = it.value().get<int64_t>();
      if (spec.token_types[id] != kTokenUnused)
        return JsonField(file, "model.vocab['" + it.key() + "']", "id " + std::to_string(id) + " used twice");
      spec.tokens[id] = it.key();
      spec.token_types[id] = kTokenNormal;
    }
    if (has_added) {
      for (const Json& a : *added) {
        int64_t id = a["id"].get<int64_t>();
        spec.tokens[id] = a["content"].get<std::string>();
        spec.token_types[id] = a.value("special", false) ? kTokenControl : kTokenUserDefined;
      }
    }

    auto merges = model->find("merges");
    if (merges == model->end()) return JsonField(file, "model.merges", "missing");
    if (!merges->is_array()) return JsonField(file, "model.merges", std::string("expected an array, got ") + JsonTypeName(*merges));
    spec.merges.reserve(merges->size());
    for (size_t i = 0; i < merges->size(); ++i) {
      const Json& m = (*merges)[i];
      std::string field = "model.merges[" + std::to_string(i) + "]";
      if (m.is_string()) {
        spec.merges.push_back(m.get<std::string>());
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        std::string a = m[0].get<std::string>(), b = m[1].get<std::string>();
        if (a.empty() || b.empty() || b.find(' ') != std::string::npos || a.find(' ', 1) != std::string::npos)
          return Unimplemented("'" + file + "': field '" + field + "': merge parts containing spaces are not supported");
        spec.merges.push_back(a + " " + b);
      } else {
        return JsonField(file, field, std::string("expected \"a b\" or [a, b], got ") + JsonTypeName(m));
      }
    }
    if (auto im = model->find("ignore_merges"); im != model->end() && !im->is_null()) {
      if (!im->is_boolean()) return JsonField(file, "model.ignore_merges", "expected a bool");
      spec.ignore_merges = im->get<bool>();
    } else {
      spec.ignore_merges = false;  // HF's default
    }
    if (auto bf = model->find("byte_fallback"); bf != model->end() && bf->is_boolean() && bf->get<bool>())
      return Unimplemented("'" + file + "': field 'model.byte_fallback': true is not supported (byte-level BPE only)");

    // --- normalizer / pre_tokenizer ---
    if (auto n = root.find("normalizer"); n != root.end() && !n->is_null())
      return Unimplemented("'" + file + "': field 'normalizer': normalizers are not supported");
    auto pre = root.find("pre_tokenizer");
    if (pre == root.end() || pre->is_null())
      return Unimplemented("'" + file + "': field 'pre_tokenizer': missing; a byte-level pre-tokenizer is required");
    spec.pre = DetectPre(*pre);
    if (spec.pre.empty())
      return Unimplemented("'" + file + "': field 'pre_tokenizer': not the Llama-3 Split + ByteLevel or the GPT-2 ByteLevel pre-tokenizer");

    // --- BOS / EOS ---
    auto id_of = [&](const std::string& text) -> int32_t {
      // Added tokens win over vocab entries with the same text.
      for (size_t i = 0; i < spec.tokens.size(); ++i) {
        if (spec.tokens[i] == text && spec.token_types[i] != kTokenNormal) return static_cast<int32_t>(i);
      }
      for (size_t i = 0; i < spec.tokens.size(); ++i) {
        if (spec.tokens[i] == text && spec.token_types[i] == kTokenNormal) return static_cast<int32_t>(i);
      }
      return -1;
    };
    std::vector<std::string> before_seq, all_specials;
    if (auto pp = root.find("post_processor"); pp != root.end()) {
      STRATA_RETURN_IF_ERROR(CollectTemplateSpecials(*pp, file, "post_processor", before_seq, all_specials));
    }
    std::optional<std::string> bos_name, eos_name;
    std::optional<bool> cfg_add_bos;
    const std::string cfg_file = dir + "/tokenizer_config.json";
    if (std::ifstream(cfg_file).good()) {
      STRATA_ASSIGN_OR_RETURN(Json cfg, ReadJsonFile(cfg_file));
      STRATA_ASSIGN_OR_RETURN(bos_name, ConfigTokenName(cfg, cfg_file, "bos_token"));
      STRATA_ASSIGN_OR_RETURN(eos_name, ConfigTokenName(cfg, cfg_file, "eos_token"));
      if (auto ab = cfg.find("add_bos_token"); ab != cfg.end() && !ab->is_null()) {
        if (!ab->is_boolean()) return JsonField(cfg_file, "add_bos_token", "expected a bool");
        cfg_add_bos = ab->get<bool>();
      }
      if (bos_name) {
        spec.bos_id = id_of(*bos_name);
        if (spec.bos_id < 0) return JsonField(cfg_file, "bos_token", "'" + *bos_name + "' is not a token of " + file);
      }
      if (eos_name) {
        spec.eos_id = id_of(*eos_name);
        if (spec.eos_id < 0) return JsonField(cfg_file, "eos_token", "'" + *eos_name + "' is not a token of " + file);
      }
    }
    if (!bos_name && !before_seq.empty()) {
      // No config: the token the template puts first is the BOS.
      bos_name = before_seq.front();
      spec.bos_id = id_of(*bos_name);
      if (spec.bos_id < 0)
        return JsonField(file, "post_processor", "template token '" + *bos_name + "' is not in the vocabulary");
    }
    spec.add_bos = (bos_name && std::find(all_specials.begin(), all_specials.end(), *bos_name) != all_specials.end()) ||
                   cfg_add_bos.value_or(false);
    if (spec.add_bos && spec.bos_id < 0)
      return JsonField(cfg_file, "add_bos_token", "true, but no bos_token is named");
    return spec;
  } catch (const std::exception& e) {
    // Only reachable through a shape the checks above missed; still an error, never a crash.
    return DataLoss("'" + file + "': unexpected structure: " + e.what());
  }
}

// ---------------------------------------------------------------------------
// GGUF
// ---------------------------------------------------------------------------

Result<VocabSpec> LoadVocabFromGguf(const GgufFile& gguf) {
  const std::string& path = gguf.path();
  STRATA_ASSIGN_OR_RETURN(std::string model, gguf.GetString("tokenizer.ggml.model"));
  if (model != "gpt2")
    return Unimplemented("GGUF file '" + path + "': tokenizer.ggml.model is '" + model + "', only 'gpt2' (byte-level BPE) is supported");
  VocabSpec spec;
  auto pre = gguf.GetString("tokenizer.ggml.pre");
  if (!pre.ok()) {
    if (pre.status().kind() == ErrorKind::kNotFound)
      return Unimplemented("GGUF file '" + path + "': no tokenizer.ggml.pre; the pre-tokenizer is unknown");
    return pre.status();
  }
  spec.pre = *pre;
  if (!PatternForPre(spec.pre))
    return Unimplemented("GGUF file '" + path + "': tokenizer.ggml.pre '" + spec.pre + "' is not supported (llama-bpe, gpt2)");
  // llama.cpp's defaults for the pre-tokenizer; the file's keys override them.
  spec.ignore_merges = IsLlama3Pre(spec.pre);
  spec.add_bos = IsLlama3Pre(spec.pre);

  STRATA_ASSIGN_OR_RETURN(auto tokens, gguf.GetStringArray("tokenizer.ggml.tokens"));
  if (tokens.empty() || static_cast<int64_t>(tokens.size()) > kMaxVocab)
    return DataLoss("GGUF file '" + path + "': tokenizer.ggml.tokens has " + std::to_string(tokens.size()) + " entries");
  spec.tokens.assign(tokens.begin(), tokens.end());
  STRATA_ASSIGN_OR_RETURN(auto merges, gguf.GetStringArray("tokenizer.ggml.merges"));
  spec.merges.assign(merges.begin(), merges.end());

  auto types = gguf.GetIntArray("tokenizer.ggml.token_type");
  if (types.ok()) {
    if (types->size() != spec.tokens.size())
      return DataLoss("GGUF file '" + path + "': tokenizer.ggml.token_type has " + std::to_string(types->size()) +
                      " entries, expected " + std::to_string(spec.tokens.size()));
    spec.token_types.reserve(types->size());
    for (size_t i = 0; i < types->size(); ++i) {
      int64_t t = (*types)[i];
      if (t < kTokenNormal || t > kTokenByte)
        return DataLoss("GGUF file '" + path + "': tokenizer.ggml.token_type[" + std::to_string(i) + "] = " +
                        std::to_string(t) + ", expected 1..6");
      spec.token_types.push_back(static_cast<int32_t>(t));
    }
  } else if (types.status().kind() != ErrorKind::kNotFound) {
    return types.status();
  }

  auto read_id = [&](const char* key, int32_t* out) -> Status {
    auto v = gguf.GetUint(key);
    if (!v.ok()) return v.status().kind() == ErrorKind::kNotFound ? Status::Ok() : v.status();
    if (*v >= spec.tokens.size())
      return DataLoss("GGUF file '" + path + "': " + key + " = " + std::to_string(*v) + ", vocabulary has " +
                      std::to_string(spec.tokens.size()) + " tokens");
    *out = static_cast<int32_t>(*v);
    return Status::Ok();
  };
  STRATA_RETURN_IF_ERROR(read_id("tokenizer.ggml.bos_token_id", &spec.bos_id));
  STRATA_RETURN_IF_ERROR(read_id("tokenizer.ggml.eos_token_id", &spec.eos_id));
  auto add_bos = gguf.GetBool("tokenizer.ggml.add_bos_token");
  if (add_bos.ok()) {
    spec.add_bos = *add_bos;
  } else if (add_bos.status().kind() != ErrorKind::kNotFound) {
    return add_bos.status();
  }
  if (spec.bos_id < 0) spec.add_bos = false;
  return spec;
}

// ---------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------

Result<Tokenizer> Tokenizer::Create(VocabSpec spec) {
  const size_t n = spec.tokens.size();
  if (n == 0) return InvalidArgument("tokenizer: empty vocabulary");
  if (static_cast<int64_t>(n) > kMaxVocab)
    return InvalidArgument("tokenizer: vocabulary of " + std::to_string(n) + " tokens, at most " + std::to_string(kMaxVocab));
  if (!spec.token_types.empty() && spec.token_types.size() != n)
    return InvalidArgument("tokenizer: " + std::to_string(spec.token_types.size()) + " token types for " +
                           std::to_string(n) + " tokens");
  auto check_id = [&](int32_t id, const char* what) -> Status {
    if (id < -1 || id >= static_cast<int64_t>(n))
      return InvalidArgument(std::string("tokenizer: ") + what + " " + std::to_string(id) + " out of range [0, " +
                             std::to_string(n) + ")");
    return Status::Ok();
  };
  STRATA_RETURN_IF_ERROR(check_id(spec.bos_id, "bos id"));
  STRATA_RETURN_IF_ERROR(check_id(spec.eos_id, "eos id"));
  if (spec.add_bos && spec.bos_id < 0) return InvalidArgument("tokenizer: add_bos set but no bos id");
  const char* pattern = PatternForPre(spec.pre);
  if (!pattern) return Unimplemented("tokenizer: unknown pre-tokenizer '" + spec.pre + "' (supported: llama-bpe, gpt2)");

  Tokenizer tok;
  tok.bos_id_ = spec.bos_id;
  tok.eos_id_ = spec.eos_id;
  tok.add_bos_ = spec.add_bos;
  tok.ignore_merges_ = spec.ignore_merges;
  tok.types_.resize(n, kTokenNormal);
  for (size_t i = 0; i < spec.token_types.size(); ++i) {
    int32_t t = spec.token_types[i];
    if (t < kTokenNormal || t > kTokenByte)
      return InvalidArgument("tokenizer: token " + std::to_string(i) + " has type " + std::to_string(t) + ", expected 1..6");
    tok.types_[i] = static_cast<int8_t>(t);
  }

  tok.text_to_id_.reserve(n);
  tok.token_bytes_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string& text = spec.tokens[i];
    const bool special = tok.types_[i] == kTokenControl || tok.types_[i] == kTokenUserDefined;
    tok.token_bytes_[i] = special ? text : ByteLevelDecode(text);
    if (!text.empty()) tok.text_to_id_.emplace(text, static_cast<int32_t>(i));
    if (special && !text.empty()) {
      tok.specials_[static_cast<unsigned char>(text[0])].push_back(
          {text, static_cast<int32_t>(i), tok.types_[i] == kTokenControl});
    }
  }
  for (auto& list : tok.specials_) {
    std::stable_sort(list.begin(), list.end(),
                     [](const Special& a, const Special& b) { return a.text.size() > b.text.size(); });
  }
  for (int b = 0; b < 256; ++b) {
    std::string text;
    AppendUtf8(text, ByteToUnicode(static_cast<uint8_t>(b)));
    auto it = tok.text_to_id_.find(text);
    tok.byte_ids_[b] = it == tok.text_to_id_.end() ? -1 : it->second;
  }

  tok.merges_.reserve(spec.merges.size());
  std::string joined;
  for (size_t r = 0; r < spec.merges.size(); ++r) {
    const std::string& m = spec.merges[r];
    size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string::npos;
    if (sp == std::string::npos || sp + 1 >= m.size())
      return InvalidArgument("tokenizer: merge " + std::to_string(r) + " '" + m + "': expected two tokens separated by a space");
    std::string_view a(m.data(), sp), b(m.data() + sp + 1, m.size() - sp - 1);
    auto ia = tok.text_to_id_.find(a), ib = tok.text_to_id_.find(b);
    if (ia == tok.text_to_id_.end() || ib == tok.text_to_id_.end())
      return InvalidArgument("tokenizer: merge " + std::to_string(r) + " '" + m + "' names a token not in the vocabulary");
    joined.assign(a);
    joined.append(b);
    auto ij = tok.text_to_id_.find(joined);
    if (ij == tok.text_to_id_.end())
      return InvalidArgument("tokenizer: merge " + std::to_string(r) + " '" + m + "': result '" + joined +
                             "' is not in the vocabulary");
    uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(ia->second)) << 32) | static_cast<uint32_t>(ib->second);
    tok.merges_.emplace(key, Merge{static_cast<int32_t>(r), ij->second});  // first (lowest rank) wins
  }
  tok.tokens_ = std::move(spec.tokens);

  int err = 0;
  PCRE2_SIZE err_off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &err_off, nullptr);
  if (!code) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof(buf));
    return Internal("tokenizer: pre-tokenizer regex does not compile at " + std::to_string(err_off) + ": " +
                    reinterpret_cast<const char*>(buf));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // optional: the interpreter is used if JIT is unavailable
  tok.regex_ = std::shared_ptr<void>(code, [](void* p) { pcre2_code_free(static_cast<pcre2_code*>(p)); });
  return tok;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return false;
  return types_[id] == kTokenControl || types_[id] == kTokenUserDefined;
}

std::optional<int32_t> Tokenizer::FindToken(std::string_view text) const {
  auto it = text_to_id_.find(text);
  if (it == text_to_id_.end()) return std::nullopt;
  return it->second;
}

std::string Tokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return std::string();
  return token_bytes_[id];
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) {
    if (id >= 0 && id < vocab_size()) out += token_bytes_[id];
  }
  return out;
}

// BPE over one piece: start from one symbol per byte and repeatedly merge the
// adjacent pair with the lowest rank (leftmost first on ties), as HF's
// BPE::merge_word does. A min-heap holds candidate pairs; entries made stale by
// earlier merges are recognised on pop and dropped. O(n log n) per piece.
void Tokenizer::EncodePiece(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (piece.size() == 1) {
    int32_t id = byte_ids_[static_cast<unsigned char>(piece[0])];
    if (id >= 0) out.push_back(id);
    return;
  }
  if (ignore_merges_) {
    auto it = text_to_id_.find(ByteLevelEncode(piece));
    if (it != text_to_id_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  struct Symbol {
    int32_t id;  // -1: a byte without a token (never merges); -2: merged away
    int32_t prev, next;
  };
  const int n = static_cast<int>(piece.size());
  std::vector<Symbol> sym(n);
  for (int i = 0; i < n; ++i) sym[i] = {byte_ids_[static_cast<unsigned char>(piece[i])], i - 1, i + 1 < n ? i + 1 : -1};

  struct Cand {
    int32_t rank;
    int32_t left, right;     // symbol positions
    int32_t left_id, right_id;
    int32_t merged_id;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto consider = [&](int l, int r) {
    if (l < 0 || r < 0 || sym[l].id < 0 || sym[r].id < 0) return;
    uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(sym[l].id)) << 32) | static_cast<uint32_t>(sym[r].id);
    auto it = merges_.find(key);
    if (it != merges_.end()) heap.push({it->second.rank, l, r, sym[l].id, sym[r].id, it->second.id});
  };
  for (int i = 0; i + 1 < n; ++i) consider(i, i + 1);
  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    Symbol& l = sym[c.left];
    if (l.id != c.left_id || l.next != c.right || sym[c.right].id != c.right_id) continue;  // stale
    l.id = c.merged_id;
    Symbol& r = sym[c.right];
    r.id = -2;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = c.left;
    consider(l.prev, c.left);
    consider(c.left, l.next);
  }
  for (int i = 0; i >= 0; i = sym[i].next) {
    if (sym[i].id >= 0) out.push_back(sym[i].id);
  }
}

namespace {
// PCRE2 match data for one Encode call (it cannot be shared between threads).
struct MatchData {
  explicit MatchData(const pcre2_code* code) : md(pcre2_match_data_create_from_pattern(code, nullptr)) {}
  ~MatchData() { pcre2_match_data_free(md); }
  MatchData(const MatchData&) = delete;
  MatchData& operator=(const MatchData&) = delete;
  pcre2_match_data* md;
};
}  // namespace

void Tokenizer::EncodeFragment(std::string_view text, void* match_data, std::vector<int32_t>& out,
                               std::unordered_map<std::string, std::vector<int32_t>>& cache) const {
  if (text.empty()) return;
  const auto* code = static_cast<const pcre2_code*>(regex_.get());
  auto* md = static_cast<pcre2_match_data*>(match_data);
  auto emit = [&](size_t begin, size_t end) {
    std::string_view piece = text.substr(begin, end - begin);
    if (piece.size() <= 2) {
      EncodePiece(piece, out);
      return;
    }
    auto it = cache.find(std::string(piece));
    if (it == cache.end()) {
      std::vector<int32_t> ids;
      EncodePiece(piece, ids);
      it = cache.emplace(std::string(piece), std::move(ids)).first;
    }
    out.insert(out.end(), it->second.begin(), it->second.end());
  };
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    int rc = pcre2_match(code, subject, text.size(), pos, 0, md, nullptr);
    if (rc < 0) {  // no further match (or a matcher error): the rest is one piece
      emit(pos, text.size());
      break;
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t s = ov[0], e = ov[1];
    if (s < pos || e < s || e > text.size()) {  // cannot happen; never loop forever
      emit(pos, text.size());
      break;
    }
    if (s > pos) emit(pos, s);  // bytes no alternative matched (invalid UTF-8)
    if (e == s) {               // empty match: take one character so the loop advances
      Utf8Seq q = ClassifyUtf8(text.data() + s, text.size() - s);
      e = s + q.len;
    }
    emit(s, e);
    pos = e;
  }
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_bos, bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos && bos_id_ >= 0) out.push_back(bos_id_);

  const auto* code = static_cast<const pcre2_code*>(regex_.get());
  MatchData match(code);
  std::unordered_map<std::string, std::vector<int32_t>> cache;

  size_t frag = 0, i = 0;
  while (i < text.size()) {
    const Special* hit = nullptr;
    for (const Special& s : specials_[static_cast<unsigned char>(text[i])]) {
      if (!parse_special && s.control) continue;
      if (text.compare(i, s.text.size(), s.text) == 0) {
        hit = &s;  // the list is longest first
        break;
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    EncodeFragment(text.substr(frag, i - frag), match.md, out, cache);
    out.push_back(hit->id);
    i += hit->text.size();
    frag = i;
  }
  EncodeFragment(text.substr(frag), match.md, out, cache);
  return out;
}

// ---------------------------------------------------------------------------
// Streaming decoder
// ---------------------------------------------------------------------------

std::string Tokenizer::StreamDecoder::Push(int32_t id) {
  pending_ += tok_->TokenBytes(id);
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    Utf8Seq q = ClassifyUtf8(pending_.data() + i, pending_.size() - i);
    if (q.kind == Utf8Seq::kIncomplete) break;  // hold back until completed
    if (q.kind == Utf8Seq::kValid) {
      out.append(pending_, i, q.len);
    } else {
      AppendUtf8(out, 0xFFFD);
    }
    i += q.len;
  }
  pending_.erase(0, i);
  return out;
}

std::string Tokenizer::StreamDecoder::Flush() {
  std::string out = SanitizeUtf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace strata
