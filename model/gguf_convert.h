// Writes a model as a GGUF in llama.cpp's conventions: `strata convert`
// (HF checkpoint -> GGUF) and `strata quantize` (GGUF -> GGUF of another
// type) are this one routine over ModelFiles, which presents both sources
// with GGUF tensor names. Runs in one process (no MPI).
//
//   STRATA_ASSIGN_OR_RETURN(auto model, ModelFiles::Open("../shared/models/smol-shakespeare"));
//   ConvertOptions o;
//   STRATA_ASSIGN_OR_RETURN(o.mix, ParseQuantMix("q4_k_m"));
//   STRATA_RETURN_IF_ERROR(WriteModelGguf(*model, "smol-q4_k_m.gguf", o, &pool));
//
// What is written:
//   metadata  a GGUF source's keys as they are (general.file_type updated);
//             from an HF directory: general.*, "<arch>.*" hyper-parameters,
//             the tokenizer (model gpt2, pre-tokenizer name, tokens, token
//             types, merges, bos / eos / padding ids, add_bos_token) and the
//             chat template -- the keys llama.cpp's converter writes
//   tensors   every tensor of the architecture's table, in the mix's type
//             (model/quant_mix.h); HF attn_q / attn_k rows are permuted as
//             llama.cpp's converter does (each head's rotary pairs (i, i+d/2)
//             become adjacent (2i, 2i+1)), which is the layout strata and
//             llama.cpp expect of a llama-family GGUF
//   float -> float keeps exact values where the target can hold them (BF16
//   -> BF16 / F32 copies); quantized tensors are re-quantized only with
//   allow_requantize (the error compounds).
// The file is written under OUT.tmp and renamed at the end, so a failed run
// never leaves a partial file under the final name.
#pragma once

#include <functional>
#include <string>

#include "common/status.h"
#include "common/thread_pool.h"
#include "model/model_files.h"
#include "model/quant_mix.h"

namespace strata {

struct ConvertOptions {
  QuantMix mix;
  bool allow_requantize = false;
  // Called once per tensor as it is written: "[ 3/326] blk.0.attn_q.weight BF16 -> Q4_K [256, 256]".
  std::function<void(const std::string&)> progress;
};

Status WriteModelGguf(const ModelFiles& model, const std::string& out_path, const ConvertOptions& opts, ThreadPool* pool);

}  // namespace strata
