// Byte-level BPE tokenizer (GPT-2 / Llama-3 family), loaded from an HF
// tokenizer.json or from a GGUF's tokenizer.ggml.* keys. Runs on rank 0.
//
// Encoding, as HF tokenizers and llama.cpp's "llama-bpe" do it:
//   1. added / special tokens are cut out of the text first (leftmost match,
//      the longest one where several start at the same byte); control tokens
//      only when parse_special is set, user-defined tokens always;
//   2. each remaining fragment is split by the pre-tokenizer regex (Llama-3:
//      contractions, letters, 1-3 digits, punctuation, whitespace runs), run by
//      PCRE2 in UTF + UCP mode; invalid UTF-8 bytes never match and become
//      pieces of their own, so any byte string encodes and decodes back intact;
//   3. each piece is mapped byte -> printable code point (GPT-2 alphabet);
//      with ignore_merges a piece that is itself a token is emitted whole,
//      otherwise the merges are applied lowest rank first.
//
//   STRATA_ASSIGN_OR_RETURN(VocabSpec spec, LoadVocabFromTokenizerJson(dir));
//   STRATA_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::Create(std::move(spec)));
//   std::vector<int32_t> ids = tok.Encode("<|im_start|>user\nHi", /*add_bos=*/tok.add_bos());
//   Tokenizer::StreamDecoder dec(tok);
//   for (int32_t id : generated) std::cout << dec.Push(id);
//   std::cout << dec.Flush();
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"

namespace strata {

class GgufFile;

// GGUF token types (llama.cpp's llama_token_type).
enum TokenType : int32_t {
  kTokenNormal = 1,
  kTokenUnknown = 2,
  kTokenControl = 3,
  kTokenUserDefined = 4,
  kTokenUnused = 5,
  kTokenByte = 6,
};

struct VocabSpec {
  std::vector<std::string> tokens;    // token text as stored (byte-level encoded, e.g. "Ġthe")
  std::vector<std::string> merges;    // "a b" pairs, rank = index
  std::vector<int32_t> token_types;   // TokenType per token; empty = all normal
  int32_t bos_id = -1, eos_id = -1;
  bool add_bos = false;
  bool ignore_merges = true;
  std::string pre = "llama-bpe";      // GGUF tokenizer.ggml.pre; "llama-bpe" (aliases
                                      // "llama3", "llama-v3") or "gpt2"
};

// dir/tokenizer.json (+ dir/tokenizer_config.json when present: bos/eos token
// names, add_bos_token). Errors name the file and the field.
Result<VocabSpec> LoadVocabFromTokenizerJson(const std::string& dir);
// tokenizer.ggml.model must be "gpt2"; reads tokens, merges, token_type,
// bos/eos ids, add_bos_token and pre.
Result<VocabSpec> LoadVocabFromGguf(const GgufFile& gguf);

class Tokenizer {
 public:
  // Validates the spec: non-empty vocabulary, token_types sized like tokens
  // and in 1..6, bos/eos in range, every merge "a b" naming two known tokens
  // whose concatenation is a token, a known pre-tokenizer.
  static Result<Tokenizer> Create(VocabSpec spec);

  std::vector<int32_t> Encode(std::string_view text, bool add_bos, bool parse_special = true) const;
  // Concatenated bytes of the tokens (control tokens as their text); ids out
  // of range are skipped. The result need not be valid UTF-8.
  std::string Decode(const std::vector<int32_t>& ids) const;
  // The raw bytes of one token ("" for an id out of range).
  std::string TokenBytes(int32_t id) const;

  int32_t vocab_size() const { return static_cast<int32_t>(tokens_.size()); }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  bool add_bos() const { return add_bos_; }
  // Control or user-defined (matched in the text as a whole, never merged).
  bool IsSpecial(int32_t id) const;
  // Exact token text lookup, e.g. "<think>" or "Ġthe".
  std::optional<int32_t> FindToken(std::string_view text) const;

  // Turns generated ids into text without ever emitting a broken UTF-8
  // sequence: an incomplete trailing sequence is held back until a later token
  // completes it; bytes that cannot become valid are emitted as U+FFFD.
  class StreamDecoder {
   public:
    explicit StreamDecoder(const Tokenizer& tok) : tok_(&tok) {}
    std::string Push(int32_t id);
    // Emits what is held back (an unfinished sequence becomes U+FFFD).
    std::string Flush();
    size_t pending_bytes() const { return pending_.size(); }

   private:
    const Tokenizer* tok_;
    std::string pending_;  // bytes not yet emitted: at most one incomplete sequence
  };

 private:
  struct Merge {
    int32_t rank;
    int32_t id;  // the merged token
  };
  struct Special {
    std::string text;
    int32_t id;
    bool control;
  };
  struct TransparentHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using TextMap = std::unordered_map<std::string, int32_t, TransparentHash, std::equal_to<>>;

  Tokenizer() = default;
  // Appends the ids of one pre-tokenized piece (raw bytes).
  void EncodePiece(std::string_view piece, std::vector<int32_t>& out) const;
  // Pre-tokenizes and BPE-encodes a fragment that holds no special token.
  // `match_data` is this call's pcre2_match_data; `cache` maps pieces already
  // encoded in this call to their ids.
  void EncodeFragment(std::string_view text, void* match_data, std::vector<int32_t>& out,
                      std::unordered_map<std::string, std::vector<int32_t>>& cache) const;

  std::vector<std::string> tokens_;       // [vocab] stored text
  std::vector<std::string> token_bytes_;  // [vocab] decoded bytes
  std::vector<int8_t> types_;             // [vocab] TokenType
  TextMap text_to_id_;                    // stored text -> first id with it
  std::unordered_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> merge
  std::array<int32_t, 256> byte_ids_{};   // id of each single-byte token, -1 if absent
  std::array<std::vector<Special>, 256> specials_;  // by first byte, longest first
  std::shared_ptr<void> regex_;           // pcre2_code_8 (opaque here)
  int32_t bos_id_ = -1, eos_id_ = -1;
  bool add_bos_ = false;
  bool ignore_merges_ = true;
};

}  // namespace strata
