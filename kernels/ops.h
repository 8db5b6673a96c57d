// The element-wise and small vector operations of a llama-family layer:
// RMSNorm, rotary embeddings (both layouts), softmax, SwiGLU's SiLU * up, and
// f32 dot / axpy for attention. Run on every rank, per token.
//
// Numerics follow the transformers reference in float32 (see each function),
// with a fixed evaluation order, so results are deterministic for a given ISA.
#pragma once

#include <cstdint>

namespace strata {

// y = x / sqrt(mean(x^2) + eps) * weight (transformers LlamaRMSNorm:
// weight * (x * rsqrt(variance + eps)), float32). y may alias x. The sum of
// squares is float32 in a fixed 16-lane order, then a fixed pairwise tree.
void RmsNorm(const float* x, const float* weight, float* y, int64_t n, float eps);

// Rotary embedding of n_heads vectors of head_dim (contiguous, [n_heads][head_dim])
// at position pos. inv_freq_i = 1 / theta^(2i / head_dim) computed like
// transformers in float32, angle = float(pos) * inv_freq_i in float32, then
// cosf / sinf of that angle.
// RopeNeox: HF rotate_half layout, pairs (i, i + head_dim/2).
void RopeNeox(float* v, int n_heads, int head_dim, int64_t pos, float theta);
// RopeInterleaved: llama.cpp GGUF layout (q/k rows permuted by the converter),
// pairs (2i, 2i+1).
void RopeInterleaved(float* v, int n_heads, int head_dim, int64_t pos, float theta);

// In place: x = exp(x - max) / sum. n >= 1.
void Softmax(float* x, int64_t n);

// out = silu(gate) * up = gate / (1 + exp(-gate)) * up. out may alias gate or up.
void SiluMul(const float* gate, const float* up, float* out, int64_t n);

// Dispatched like DotRow(kF32): the active ISA's fixed-order f32 dot.
float DotF32(const float* a, const float* b, int64_t n);
// y += a * x.
void AxpyF32(float a, const float* x, float* y, int64_t n);

}  // namespace strata
