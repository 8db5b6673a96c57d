// Block layouts of the ggml quantization formats strata reads and writes,
// bit-compatible with GGUF files written by llama.cpp. Every block starts at a
// 2-byte aligned offset inside a row (row sizes are multiples of the block
// size, and GGUF aligns tensor data to >= 32 bytes). Half-precision scales are
// stored as raw uint16_t bits: convert with F16ToF32 / F32ToF16 (fp16.h).
//
// QK_K super-blocks (Q4_K, Q5_K, Q6_K) hold 256 weights split into
// sub-blocks with their own 6- or 8-bit scales; the legacy formats (Q4_0,
// Q5_0, Q8_0) hold 32 weights with one fp16 scale.
#pragma once

#include <cstdint>

#include "kernels/isa_namespace.h"

namespace strata {

inline constexpr int kQK = 32;    // elements per legacy block
inline constexpr int kQKK = 256;  // elements per K-quant super-block

// Q8_0: 32 weights, 8.5 bits/weight.  y[i] = d * qs[i].
struct BlockQ8_0 {
  uint16_t d;       // fp16 scale
  int8_t qs[kQK];   // signed quants
};
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block must be 34 bytes");

// Q4_0: 32 weights, 4.5 bits/weight.
//   y[j]      = d * ((qs[j] & 0xF) - 8)   for j < 16
//   y[j + 16] = d * ((qs[j] >> 4)  - 8)
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block must be 18 bytes");

// Q5_0: 32 weights, 5.5 bits/weight. qh is a little-endian uint32 whose bit j
// is the 5th bit of element j (j < 32).
//   y[j]      = d * (((qs[j] & 0xF) | bit(qh, j) << 4)      - 16)   for j < 16
//   y[j + 16] = d * (((qs[j] >> 4)  | bit(qh, j + 16) << 4) - 16)
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ5_0) == 22, "Q5_0 block must be 22 bytes");

// Q4_K: 256 weights in 8 sub-blocks of 32, 4.5 bits/weight.
//   y = (d * sc[s]) * q - (dmin * m[s]),  q in [0, 15], sc/m 6-bit unsigned.
// scales[12] packs the eight (sc, m) pairs (see UnpackScaleMinK4 in quant.cc):
//   s < 4:  sc = scales[s] & 63,                 m = scales[s + 4] & 63
//   s >= 4: sc = (scales[s + 4] & 0xF) | (scales[s - 4] >> 6) << 4,
//           m  = (scales[s + 4] >> 4)  | (scales[s]     >> 6) << 4
// qs: for each 64-weight chunk c (0..3), bytes qs[32c .. 32c+31]; sub-block 2c
// is their low nibbles, sub-block 2c+1 their high nibbles.
struct BlockQ4_K {
  uint16_t d;     // fp16 super-scale of the scales
  uint16_t dmin;  // fp16 super-scale of the mins
  uint8_t scales[12];
  uint8_t qs[kQKK / 2];
};
static_assert(sizeof(BlockQ4_K) == 144, "Q4_K block must be 144 bytes");

// Compiled into the ISA files too: one copy per ISA (isa_namespace.h).
inline namespace STRATA_ISA_NAMESPACE {
// The 6-bit (scale, min) pair of sub-block s (0..7) of a Q4_K / Q5_K block.
inline void UnpackScaleMinK4(int s, const uint8_t* scales, int* sc, int* m) {
  if (s < 4) {
    *sc = scales[s] & 63;
    *m = scales[s + 4] & 63;
  } else {
    *sc = (scales[s + 4] & 0xF) | ((scales[s - 4] >> 6) << 4);
    *m = (scales[s + 4] >> 4) | ((scales[s] >> 6) << 4);
  }
}
}  // namespace STRATA_ISA_NAMESPACE

// Q5_K: as Q4_K plus a 5th bit per weight, 5.5 bits/weight.
//   y = (d * sc[s]) * q - (dmin * m[s]),  q = nibble | bit(qh[l], s) << 4 in [0, 31]
// where l (0..31) is the position inside sub-block s; nibbles laid out as Q4_K.
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[kQKK / 8];
  uint8_t qs[kQKK / 2];
};
static_assert(sizeof(BlockQ5_K) == 176, "Q5_K block must be 176 bytes");

// Q6_K: 256 weights in 16 sub-blocks of 16, 6.5625 bits/weight.
//   y = (d * scales[s]) * (q - 32),  q 6-bit unsigned, scales int8.
// Two halves of 128 weights (h = 0, 1) use ql[64h ..], qh[32h ..], scales[8h ..].
// Inside a half, for l < 32:
//   q[l]      = (ql[l]      & 0xF) | ((qh[l] >> 0) & 3) << 4   scale index l/16
//   q[l + 32] = (ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4   scale index l/16 + 2
//   q[l + 64] = (ql[l]      >> 4)  | ((qh[l] >> 4) & 3) << 4   scale index l/16 + 4
//   q[l + 96] = (ql[l + 32] >> 4)  | ((qh[l] >> 6) & 3) << 4   scale index l/16 + 6
struct BlockQ6_K {
  uint8_t ql[kQKK / 2];
  uint8_t qh[kQKK / 4];
  int8_t scales[kQKK / 16];
  uint16_t d;
};
static_assert(sizeof(BlockQ6_K) == 210, "Q6_K block must be 210 bytes");

// ---------------------------------------------------------------------------
// Row-interleaved layouts (never in a file: a rank builds them from the
// file's rows at load, kernels/interleave.h)
// ---------------------------------------------------------------------------
// A group of 8 consecutive rows is stored block by block (block b of all 8
// rows, then block b + 1, ...), with the quants of the 8 rows interleaved 4
// bytes at a time, so that one 32-byte vector holds 4 consecutive weights of
// each row and one vpdpbusd against a broadcast activation dword serves all
// 8 rows (lane r = row r). Per-row scales sit side by side as vectors of 8.

// Q4_K x 8 rows: block b of rows r = 0..7.
//   d[r], dmin[r]: block b's fp16 super-scales of row r.
//   scales[s][r]: the 6-bit scale of sub-block s (unpacked to a byte).
//   mins[i][r][k]: the 6-bit min of sub-block 2i + k.
//   qs[c][j][r][k]: qs[32c + 4j + k] of row r (chunk c, low nibbles =
//     sub-block 2c, high nibbles = sub-block 2c + 1, as in BlockQ4_K).
struct BlockQ4_Kx8 {
  uint16_t d[8];
  uint16_t dmin[8];
  uint8_t scales[8][8];
  uint8_t mins[4][8][2];
  uint8_t qs[4][8][8][4];
};
static_assert(sizeof(BlockQ4_Kx8) == 1184, "Q4_K x8 block must be 1184 bytes");

// Q6_K x 8 rows: block b of rows r = 0..7 (same size as 8 Q6_K blocks).
//   scales[i][r][k]: the int8 scale of sub-block 2i + k of row r.
//   ql[h][m][r][k]: ql[64h + 4m + k] of row r (m < 16: low nibbles are
//     elements 128h + 4m + k, high nibbles 128h + 64 + 4m + k).
//   qh[h][n][r][k]: qh[32h + 4n + k] of row r (n < 8).
struct BlockQ6_Kx8 {
  uint16_t d[8];
  int8_t scales[8][8][2];
  uint8_t ql[2][16][8][4];
  uint8_t qh[2][8][8][4];
};
static_assert(sizeof(BlockQ6_Kx8) == 8 * sizeof(BlockQ6_K), "Q6_K x8 block must be 8 Q6_K blocks");

// Q8_0 x 8 rows: block b of rows r = 0..7; qs[j][r][k] = qs[4j + k] of row r.
struct BlockQ8_0x8 {
  uint16_t d[8];
  int8_t qs[8][8][4];
};
static_assert(sizeof(BlockQ8_0x8) == 8 * sizeof(BlockQ8_0), "Q8_0 x8 block must be 8 Q8_0 blocks");

}  // namespace strata
