// The element-wise and small vector operations of a llama-family layer:
// RMSNorm, rotary embeddings (both layouts), softmax, SwiGLU's SiLU * up
// (attention's weighted V sum is kernel_table.h's kv_weighted_sum). Run on every
// rank, per token.
//
// Numerics follow the transformers reference in float32 (see each function),
// with a fixed evaluation order that every ISA repeats, so results are the same
// bits on ref, avx2 and avx512; exp is the project's own (internal::ref::Exp,
// within 1 ulp), not the C library's.
#pragma once

#include <cstdint>

namespace strata {

// y = x / sqrt(mean(x^2) + eps) * weight (transformers LlamaRMSNorm:
// weight * (x * rsqrt(variance + eps)), float32). y may alias x. The sum of
// squares is float32 in a fixed 16-lane order, then a fixed pairwise tree.
void RmsNorm(const float* x, const float* weight, float* y, int64_t n, float eps);

// Rotary embedding of n_heads vectors of head_dim (contiguous, [n_heads][head_dim])
// by the angles whose cosines and sines are cos[i], sin[i], i < head_dim / 2
// (model/rope.h computes them per position): (a, b) -> (a c - b s, b c + a s)
// on the pairs (i, i + head_dim/2) when neox (HF rotate_half), else (2i, 2i+1)
// (llama.cpp's GGUF, whose converter permuted the q/k rows).
void RopeRotate(float* v, int n_heads, int head_dim, const float* cos, const float* sin, bool neox);

// In place: x = exp(x - max) / sum. n >= 1.
void Softmax(float* x, int64_t n);

// out = silu(gate) * up = gate / (1 + exp(-gate)) * up. out may alias gate or up.
void SiluMul(const float* gate, const float* up, float* out, int64_t n);

}  // namespace strata
