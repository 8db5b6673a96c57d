// Which storage type each tensor of a model gets when strata writes a GGUF
// (`convert`, `quantize`, `make-model`): a named mix such as q4_k_m, resolved
// per tensor from its role and layer. Runs in one process (no MPI).
//
//   STRATA_ASSIGN_OR_RETURN(QuantMix mix, ParseQuantMix("q4_k_m"));
//   TensorType t = MixTensorType(mix, spec, cfg);  // spec: a row of the architecture's tensor table
//
// The mixes (llama.cpp's, so files compare with its own):
//   f32, f16, bf16   every matrix in that type
//   q8_0, q4_0, q6_k every matrix in that type
//   q4_k_m           Q4_K; Q6_K for token_embd / output (the lm_head: its
//                    errors reach every logit) and for attn_v and ffn_down of
//                    layers i < n/8, i >= 7n/8 and (i - n/8) % 3 == 2 (the
//                    tensors most sensitive to quantization, in the layers
//                    nearest the ends)
//                    experts (ffn_*_exps) follow their dense counterparts
//                    (ffn_down_exps gets Q6_K by the same layer rule); in
//                    models of 8 experts attn_k and attn_v are Q8_0 (cheap
//                    beside the experts)
// Norm weights, biases and other 1-D tensors stay F32 in every mix, and so do
// the tensors llama.cpp never quantizes: the experts' router (ffn_gate_inp)
// and LFM2's convolution taps. A row whose length is not a multiple of the
// chosen type's block falls back: Q4_K -> Q5_0, Q6_K -> Q8_0 (32-element
// blocks), and to F16 when even 32 does not divide it.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "kernels/tensor_type.h"
#include "model/architecture.h"

namespace strata {

struct QuantMix {
  std::string name;    // "q4_k_m"
  uint32_t file_type;  // llama.cpp's general.file_type (LLAMA_FTYPE_*)
};

// f32, f16, bf16, q8_0, q4_0, q6_k or q4_k_m; InvalidArgument naming the rest.
Result<QuantMix> ParseQuantMix(const std::string& name);
// The names, for help texts: "f32|f16|bf16|q8_0|q4_0|q4_k_m|q6_k".
const char* QuantMixNames();

// The type of one tensor of the table (its role, layer and row length) of a
// model of `cfg` in the mix.
TensorType MixTensorType(const QuantMix& mix, const TensorSpec& spec, const ModelConfig& cfg);

}  // namespace strata
