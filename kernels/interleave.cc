// Row interleaving: a byte shuffle of the file's blocks (quant_blocks.h); the
// Q4_K scales and mins are unpacked from their 6-bit packing to bytes so the
// kernels can widen 8 rows' values with one instruction.
#include "kernels/interleave.h"

#include <cstring>

#include "common/status.h"
#include "kernels/kernel_table.h"
#include "kernels/quant_blocks.h"

namespace strata {
namespace {

void InterleaveQ4K(const BlockQ4_K* const (&rows)[8], BlockQ4_Kx8* out) {
  for (int r = 0; r < 8; ++r) {
    const BlockQ4_K& b = *rows[r];
    out->d[r] = b.d;
    out->dmin[r] = b.dmin;
    for (int s = 0; s < 8; ++s) {
      int sc, m;
      UnpackScaleMinK4(s, b.scales, &sc, &m);
      out->scales[s][r] = static_cast<uint8_t>(sc);
      out->mins[s / 2][r][s % 2] = static_cast<uint8_t>(m);
    }
    for (int c = 0; c < 4; ++c)
      for (int j = 0; j < 8; ++j) std::memcpy(out->qs[c][j][r], b.qs + 32 * c + 4 * j, 4);
  }
}

// Inverse of UnpackScaleMinK4: packs the eight (sc, m) pairs into 12 bytes.
void PackScalesMinsK4(const int (&sc)[8], const int (&m)[8], uint8_t* scales) {
  for (int s = 0; s < 4; ++s) {
    scales[s] = static_cast<uint8_t>((sc[s] & 63) | (sc[s + 4] >> 4) << 6);
    scales[s + 4] = static_cast<uint8_t>((m[s] & 63) | (m[s + 4] >> 4) << 6);
    scales[s + 8] = static_cast<uint8_t>((sc[s + 4] & 0xF) | (m[s + 4] & 0xF) << 4);
  }
}

void DeinterleaveQ4K(BlockQ4_K* const (&rows)[8], const BlockQ4_Kx8* group) {
  const BlockQ4_Kx8& in = *group;
  for (int r = 0; r < 8; ++r) {
    BlockQ4_K& b = *rows[r];
    b.d = in.d[r];
    b.dmin = in.dmin[r];
    int sc[8], m[8];
    for (int s = 0; s < 8; ++s) {
      sc[s] = in.scales[s][r];
      m[s] = in.mins[s / 2][r][s % 2];
    }
    PackScalesMinsK4(sc, m, b.scales);
    for (int c = 0; c < 4; ++c)
      for (int j = 0; j < 8; ++j) std::memcpy(b.qs + 32 * c + 4 * j, in.qs[c][j][r], 4);
  }
}

void InterleaveQ6K(const BlockQ6_K* const (&rows)[8], BlockQ6_Kx8* out) {
  for (int r = 0; r < 8; ++r) {
    const BlockQ6_K& b = *rows[r];
    out->d[r] = b.d;
    for (int s = 0; s < 16; ++s) out->scales[s / 2][r][s % 2] = b.scales[s];
    for (int h = 0; h < 2; ++h) {
      for (int m = 0; m < 16; ++m) std::memcpy(out->ql[h][m][r], b.ql + 64 * h + 4 * m, 4);
      for (int n = 0; n < 8; ++n) std::memcpy(out->qh[h][n][r], b.qh + 32 * h + 4 * n, 4);
    }
  }
}

void DeinterleaveQ6K(BlockQ6_K* const (&rows)[8], const BlockQ6_Kx8* group) {
  const BlockQ6_Kx8& in = *group;
  for (int r = 0; r < 8; ++r) {
    BlockQ6_K& b = *rows[r];
    b.d = in.d[r];
    for (int s = 0; s < 16; ++s) b.scales[s] = in.scales[s / 2][r][s % 2];
    for (int h = 0; h < 2; ++h) {
      for (int m = 0; m < 16; ++m) std::memcpy(b.ql + 64 * h + 4 * m, in.ql[h][m][r], 4);
      for (int n = 0; n < 8; ++n) std::memcpy(b.qh + 32 * h + 4 * n, in.qh[h][n][r], 4);
    }
  }
}

void InterleaveQ8_0(const BlockQ8_0* const (&rows)[8], BlockQ8_0x8* out) {
  for (int r = 0; r < 8; ++r) {
    out->d[r] = rows[r]->d;
    for (int j = 0; j < 8; ++j) std::memcpy(out->qs[j][r], rows[r]->qs + 4 * j, 4);
  }
}

void DeinterleaveQ8_0(BlockQ8_0* const (&rows)[8], const BlockQ8_0x8* group) {
  const BlockQ8_0x8& in = *group;
  for (int r = 0; r < 8; ++r) {
    rows[r]->d = in.d[r];
    for (int j = 0; j < 8; ++j) std::memcpy(rows[r]->qs + 4 * j, in.qs[j][r], 4);
  }
}

// Runs convert(block b of the 8 rows, block b of the group) for every block.
template <class RowBlock, class GroupBlock, class RowPtr, class GroupPtr, class Fn>
void ForEachBlock(RowPtr rows_base, uint64_t row_bytes, GroupPtr group, int64_t nb, Fn convert) {
  for (int64_t b = 0; b < nb; ++b) {
    RowBlock* rows[8];
    for (int r = 0; r < 8; ++r) rows[r] = reinterpret_cast<RowBlock*>(rows_base + r * row_bytes) + b;
    convert(rows, reinterpret_cast<GroupBlock*>(group) + b);
  }
}

}  // namespace

bool CanInterleave(TensorType type, int64_t n_out) {
  return internal::QDotX8Slot(type) >= 0 && n_out > 0 && n_out % 8 == 0;
}

uint64_t InterleavedGroupBytes(TensorType type, int64_t n_in) {
  switch (type) {
    case TensorType::kQ4_K: return static_cast<uint64_t>(n_in / kQKK) * sizeof(BlockQ4_Kx8);
    case TensorType::kQ6_K: return static_cast<uint64_t>(n_in / kQKK) * sizeof(BlockQ6_Kx8);
    case TensorType::kQ8_0: return static_cast<uint64_t>(n_in / kQK) * sizeof(BlockQ8_0x8);
    default: STRATA_CHECK_MSG(false, std::string("no interleaved layout for ") + TypeName(type)); return 0;
  }
}

uint64_t InterleavedBytes(TensorType type, int64_t n_in, int64_t n_out) {
  return InterleavedGroupBytes(type, n_in) * static_cast<uint64_t>(n_out / 8);
}

MatrixView InterleaveRows(const MatrixView& w, uint8_t* dst) {
  STRATA_CHECK_MSG(w.layout == MatrixLayout::kRows && CanInterleave(w.type, w.n_out),
                   "InterleaveRows: needs a Q4_K, Q6_K or Q8_0 matrix in row layout with a multiple of 8 rows");
  const uint64_t group_bytes = InterleavedGroupBytes(w.type, w.n_in);
  const int64_t nb = w.n_in / Traits(w.type).block_elems;
  for (int64_t g = 0; g < w.n_out / 8; ++g) {
    const uint8_t* rows = w.data + static_cast<uint64_t>(8 * g) * w.row_bytes;
    uint8_t* group = dst + static_cast<uint64_t>(g) * group_bytes;
    switch (w.type) {
      case TensorType::kQ4_K: ForEachBlock<const BlockQ4_K, BlockQ4_Kx8>(rows, w.row_bytes, group, nb, InterleaveQ4K); break;
      case TensorType::kQ6_K: ForEachBlock<const BlockQ6_K, BlockQ6_Kx8>(rows, w.row_bytes, group, nb, InterleaveQ6K); break;
      default: ForEachBlock<const BlockQ8_0, BlockQ8_0x8>(rows, w.row_bytes, group, nb, InterleaveQ8_0); break;
    }
  }
  MatrixView out = w;
  out.data = dst;
  out.layout = MatrixLayout::kInterleaved8;
  return out;
}

void DeinterleaveGroup(TensorType type, const uint8_t* group, int64_t n_in, uint8_t* rows) {
  const uint64_t row_bytes = *RowBytes(type, n_in);
  const int64_t nb = n_in / Traits(type).block_elems;
  switch (type) {
    case TensorType::kQ4_K: ForEachBlock<BlockQ4_K, const BlockQ4_Kx8>(rows, row_bytes, group, nb, DeinterleaveQ4K); break;
    case TensorType::kQ6_K: ForEachBlock<BlockQ6_K, const BlockQ6_Kx8>(rows, row_bytes, group, nb, DeinterleaveQ6K); break;
    case TensorType::kQ8_0: ForEachBlock<BlockQ8_0, const BlockQ8_0x8>(rows, row_bytes, group, nb, DeinterleaveQ8_0); break;
    default: STRATA_CHECK_MSG(false, std::string("no interleaved layout for ") + TypeName(type));
  }
}

MatrixView MatrixRows(const MatrixView& w, int64_t from, int64_t to) {
  STRATA_CHECK(0 <= from && from <= to && to <= w.n_out);
  MatrixView rows = w;
  rows.n_out = to - from;
  if (w.layout == MatrixLayout::kRows) {
    rows.data = w.data + static_cast<uint64_t>(from) * w.row_bytes;
  } else {
    STRATA_CHECK_MSG(from % 8 == 0 && (to % 8 == 0 || to == w.n_out), "MatrixRows: interleaved rows go in groups of 8");
    rows.data = w.data + static_cast<uint64_t>(from / 8) * InterleavedGroupBytes(w.type, w.n_in);
  }
  return rows;
}

}  // namespace strata
