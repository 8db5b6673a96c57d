// Causal attention (attention.h): a running ("online") softmax over tiles of
// keys, for the query heads that share a kv head at once.
//
// One update of a head's state (max m, sum s, weighted V sum o) covers the
// keys of one tile that the token attends to: their scores (kv_dot for the
// whole group, so each K row is read once for all its query heads), the
// tile's max, Exp(score - m') and their sum in softmax's fixed order
// (exp_sum), then o rescaled and the tile's V rows added in position order
// (kv_weighted_sum, one pass for the group). The kernels read F16 / BF16 /
// Q8_0 rows as stored, widening in registers; a tile shared by a block of
// prompt tokens is converted to f32 once instead (the same values, so the
// same bits). Tiles are kAttnChunk positions aligned to absolute positions;
// a segment of kAttnSegment positions starts a fresh state, and segment
// states are merged left to right. So a token's output is one fixed sequence
// of float operations whatever runs it:
//   - prompts: a work item is a block of tokens x one kv head; each tile is
//     read (and converted) once for the whole block;
//   - decoding: a work item is one token x one kv head x one segment, so a
//     long cache is split across threads; the segments are merged afterwards.
// A ring's rows for a tile are one or two runs; scores are per key and the V
// sum continues across runs (kv_weighted_sum's accumulate), so the wrap
// changes no bit.
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/kernel_table.h"

namespace strata {

bool IsKvType(TensorType type) {
  return type == TensorType::kF32 || type == TensorType::kF16 || type == TensorType::kBF16 || type == TensorType::kQ8_0;
}

namespace {

using internal::KernelTable;

// What every work item of one call shares.
struct Job {
  const KernelTable& k;
  const KvView& kv;
  int group;
  int64_t hd, q_dim, kv_dim;
  float scale;
  uint64_t head_bytes;  // one head's slice of a row in the stored type
  int64_t pos0, window;
  int64_t first(int64_t t) const { return window > 0 ? std::max<int64_t>(0, pos0 + t - window + 1) : 0; }
  int64_t last(int64_t t) const { return pos0 + t; }
};

// The running softmax of a group of query heads: [group][hd] o, then
// [group] m, then [group] s; `started` once a tile has been added.
struct State {
  float* o;
  float* m;
  float* s;
  bool started;
  static int64_t Floats(int group, int64_t hd) { return group * (hd + 2); }
  static State At(float* base, int group, int64_t hd) { return {base, base + group * hd, base + group * hd + group, false}; }
  void Clear(int group, int64_t hd) {
    std::fill(o, o + group * hd, 0.0f);
    started = false;
  }
};

// A tile: positions [p0, p1) of one kv head as one or two runs of rows (a
// ring may wrap inside it), in `type`: the cache's rows where they are, or,
// for a tile that many prompt tokens share, F32 rows converted once into the
// caller's buffers.
struct Tile {
  int64_t p0 = 0, p1 = 0;
  TensorType type = TensorType::kF32;
  int n_runs = 0;
  const uint8_t* k[2];
  const uint8_t* v[2];
  uint64_t stride[2];  // bytes from one position to the next
  int64_t n[2];        // positions in each run
};

constexpr int64_t kConvertAhead = 16;  // rows

Tile LoadTile(const Job& j, int kvh, int64_t p0, int64_t p1, bool convert, float* k_buf, float* v_buf) {
  Tile t;
  t.p0 = p0;
  t.p1 = p1;
  const int64_t cap = j.kv.capacity;
  if (!convert || j.kv.type == TensorType::kF32) {
    t.type = j.kv.type;
    int64_t p = p0;
    while (p < p1) {
      const int64_t row = p % cap, n = std::min(p1 - p, cap - row);
      const int r = t.n_runs++;
      t.k[r] = j.kv.k + row * j.kv.row_bytes + kvh * j.head_bytes;
      t.v[r] = j.kv.v + row * j.kv.row_bytes + kvh * j.head_bytes;
      t.stride[r] = j.kv.row_bytes;
      t.n[r] = n;
      p += n;
    }
    return t;
  }
  const internal::DequantFn dequant = j.k.dequant[internal::DequantSlot(j.kv.type)];
  const uint64_t head = kvh * j.head_bytes;
  // Ring rows of position p and of p + kConvertAhead, stepped (no division per row).
  int64_t row = p0 % cap, ahead = (p0 + kConvertAhead) % cap;
  for (int64_t p = p0; p < p1; ++p) {
    const uint64_t at = static_cast<uint64_t>(row) * j.kv.row_bytes + head;
    const uint64_t next = static_cast<uint64_t>(ahead) * j.kv.row_bytes + head;
    // The first read of these rows: the head's slice is a few lines at the
    // stride of a whole row, which the hardware prefetchers follow poorly.
    for (uint64_t b = 0; b < j.head_bytes; b += 64) {
      __builtin_prefetch(j.kv.k + next + b);
      __builtin_prefetch(j.kv.v + next + b);
    }
    dequant(j.kv.k + at, k_buf + (p - p0) * j.hd, j.hd);
    dequant(j.kv.v + at, v_buf + (p - p0) * j.hd, j.hd);
    if (++row == cap) row = 0;
    if (++ahead == cap) ahead = 0;
  }
  t.n_runs = 1;
  t.k[0] = reinterpret_cast<const uint8_t*>(k_buf);
  t.v[0] = reinterpret_cast<const uint8_t*>(v_buf);
  t.stride[0] = j.hd * sizeof(float);
  t.n[0] = p1 - p0;
  return t;
}

// Adds positions [a, b] of tile `t` to state `st` for the group's queries q
// ([group][hd]). scores: at least group * kAttnChunk floats.
void AddKeys(const Job& j, const Tile& t, int64_t a, int64_t b, const float* q, State& st, float* scores) {
  const int64_t n = b - a + 1;
  // The runs' parts inside [a, b], in position order.
  struct Part {
    const uint8_t* k;
    const uint8_t* v;
    uint64_t stride;
    int64_t n, at;  // at: index of its first key in [a, b]
  } parts[2];
  int n_parts = 0;
  int64_t run_p0 = t.p0;
  for (int r = 0; r < t.n_runs; ++r) {
    const int64_t lo = std::max(a, run_p0), hi = std::min(b, run_p0 + t.n[r] - 1);
    if (lo <= hi) {
      const uint64_t skip = static_cast<uint64_t>(lo - run_p0) * t.stride[r];
      parts[n_parts++] = {t.k[r] + skip, t.v[r] + skip, t.stride[r], hi - lo + 1, lo - a};
    }
    run_p0 += t.n[r];
  }
  const int slot = internal::KvSlot(t.type);
  for (int i = 0; i < n_parts; ++i)
    j.k.kv_dot[slot](parts[i].k, parts[i].stride, parts[i].n, q, j.hd, j.group, j.hd, scores + parts[i].at, n);
  for (int g = 0; g < j.group; ++g) {
    float* sc = scores + g * n;
    const float mx = j.k.scale_max(sc, n, j.scale);
    float* o = st.o + g * j.hd;
    if (!st.started) {
      st.m[g] = mx;
      st.s[g] = j.k.exp_sum(sc, n, mx);
    } else if (mx <= st.m[g]) {
      // The max holds (as it mostly does deep into a prompt): alpha would be
      // Exp(0) = 1 exactly, which changes no bit of s or o.
      st.s[g] = st.s[g] + j.k.exp_sum(sc, n, st.m[g]);
    } else {
      const float m = std::max(st.m[g], mx);
      const float alpha = internal::ref::Exp(st.m[g] - m);
      const float sum = j.k.exp_sum(sc, n, m);
      st.s[g] = st.s[g] * alpha + sum;
      for (int64_t i = 0; i < j.hd; ++i) o[i] *= alpha;
      st.m[g] = m;
    }
  }
  for (int i = 0; i < n_parts; ++i)
    j.k.kv_weighted_sum[slot](scores + parts[i].at, n, j.group, parts[i].v, parts[i].stride, parts[i].n, j.hd, st.o, j.hd,
                              true);
  st.started = true;
}

// into = into (+) from, the earlier positions' state first.
void Merge(const Job& j, State& into, const State& from) {
  if (!from.started) return;
  if (!into.started) {
    std::memcpy(into.o, from.o, sizeof(float) * j.group * j.hd);
    std::memcpy(into.m, from.m, sizeof(float) * j.group);
    std::memcpy(into.s, from.s, sizeof(float) * j.group);
    into.started = true;
    return;
  }
  for (int g = 0; g < j.group; ++g) {
    const float m = std::max(into.m[g], from.m[g]);
    const float ea = internal::ref::Exp(into.m[g] - m), eb = internal::ref::Exp(from.m[g] - m);
    into.s[g] = into.s[g] * ea + from.s[g] * eb;
    float* o = into.o + g * j.hd;
    const float* fo = from.o + g * j.hd;
    for (int64_t i = 0; i < j.hd; ++i) o[i] = o[i] * ea + fo[i] * eb;
    into.m[g] = m;
  }
}

void Finish(const Job& j, const State& st, float* out) {
  for (int g = 0; g < j.group; ++g)
    for (int64_t i = 0; i < j.hd; ++i) out[g * j.hd + i] = st.o[g * j.hd + i] / st.s[g];
}

// Per-thread buffers.
struct Scratch {
  std::vector<float> k_tile, v_tile, scores, states;
  void Fit(const Job& j, int64_t n_states) {
    const int64_t tile = kAttnChunk * j.hd;
    if (static_cast<int64_t>(k_tile.size()) < tile) k_tile.resize(tile), v_tile.resize(tile);
    if (static_cast<int64_t>(scores.size()) < j.group * kAttnChunk) scores.resize(j.group * kAttnChunk);
    const int64_t f = n_states * State::Floats(j.group, j.hd);
    if (static_cast<int64_t>(states.size()) < f) states.resize(f);
  }
};
thread_local Scratch t_scratch;

// The state of segment `seg` for token t of kv head kvh (its positions inside the segment).
void SegmentState(const Job& j, const float* q, int64_t t, int kvh, int64_t seg, State& st, Scratch& sc) {
  const int64_t lo = std::max(j.first(t), seg * kAttnSegment), hi = std::min(j.last(t), (seg + 1) * kAttnSegment - 1);
  st.Clear(j.group, j.hd);
  for (int64_t c = lo / kAttnChunk; c <= hi / kAttnChunk; ++c) {
    const int64_t a = std::max(lo, c * kAttnChunk), b = std::min(hi, c * kAttnChunk + kAttnChunk - 1);
    const Tile tile = LoadTile(j, kvh, a, b + 1, false, nullptr, nullptr);
    AddKeys(j, tile, a, b, q, st, sc.scores.data());
  }
}

constexpr int64_t kConvertTokens = 4;

// A block of prompt tokens [t0, t1) x one kv head: every tile of the block's
// keys is loaded once and added to each token that attends to it.
void PromptBlock(const Job& j, const float* q, float* out, int64_t t0, int64_t t1, int kvh) {
  Scratch& sc = t_scratch;
  const int64_t nb = t1 - t0;
  sc.Fit(j, 2 * nb);
  const int64_t fl = State::Floats(j.group, j.hd);
  std::vector<State> acc(nb), seg(nb);
  for (int64_t i = 0; i < nb; ++i) {
    acc[i] = State::At(sc.states.data() + i * fl, j.group, j.hd);
    seg[i] = State::At(sc.states.data() + (nb + i) * fl, j.group, j.hd);
    acc[i].Clear(j.group, j.hd);
  }
  const int64_t lo = j.first(t0), hi = j.last(t1 - 1);
  // Converting a tile once pays when enough tokens reread it; a decoding
  // token reads the cache's rows directly.
  const bool convert = nb >= kConvertTokens;
  auto q_of = [&](int64_t t) { return q + t * j.q_dim + static_cast<int64_t>(kvh) * j.group * j.hd; };
  for (int64_t s = lo / kAttnSegment; s <= hi / kAttnSegment; ++s) {
    for (int64_t i = 0; i < nb; ++i) seg[i].Clear(j.group, j.hd);
    const int64_t s_lo = std::max(lo, s * kAttnSegment), s_hi = std::min(hi, (s + 1) * kAttnSegment - 1);
    for (int64_t c = s_lo / kAttnChunk; c <= s_hi / kAttnChunk; ++c) {
      const int64_t c_lo = std::max(s_lo, c * kAttnChunk), c_hi = std::min(s_hi, c * kAttnChunk + kAttnChunk - 1);
      const Tile tile = LoadTile(j, kvh, c_lo, c_hi + 1, convert, sc.k_tile.data(), sc.v_tile.data());
      for (int64_t i = 0; i < nb; ++i) {
        const int64_t a = std::max(c_lo, j.first(t0 + i)), b = std::min(c_hi, j.last(t0 + i));
        if (a <= b) AddKeys(j, tile, a, b, q_of(t0 + i), seg[i], sc.scores.data());
      }
    }
    for (int64_t i = 0; i < nb; ++i) Merge(j, acc[i], seg[i]);
  }
  for (int64_t i = 0; i < nb; ++i) Finish(j, acc[i], out + (t0 + i) * j.q_dim + static_cast<int64_t>(kvh) * j.group * j.hd);
}

constexpr int64_t kPromptBlock = 32;  // tokens sharing each tile

}  // namespace

void CausalAttention(const AttentionShape& s, const float* q, const KvView& kv, int64_t pos0, int64_t n_tok, int64_t window,
                     float* out, ThreadPool* pool) {
  const int group = s.n_heads / s.n_kv_heads;
  const int64_t hd = s.head_dim;
  const Job j{internal::ActiveKernels(), kv, group, hd, s.n_heads * hd, s.n_kv_heads * hd, 1.0f / std::sqrt(static_cast<float>(hd)),
              *RowBytes(kv.type, hd), pos0, window};
  const int threads = pool ? pool->size() : 1;
  const int64_t blocks = (n_tok + kPromptBlock - 1) / kPromptBlock;
  if (blocks * s.n_kv_heads >= 2 * threads || pos0 + n_tok <= kAttnSegment) {
    // Enough (token block, kv head) items to keep every thread busy. The
    // blocks of one kv head run one after another, so the threads reread its
    // slice of the cache from the last-level cache rather than from memory.
    auto work = [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item % blocks;
        PromptBlock(j, q, out, b * kPromptBlock, std::min(n_tok, (b + 1) * kPromptBlock), static_cast<int>(item / blocks));
      }
    };
    if (pool) pool->ParallelForDynamic(blocks * s.n_kv_heads, 1, work);
    else work(0, blocks * s.n_kv_heads);
    return;
  }
  // Few tokens, a long cache: (token, kv head, segment) items, merged after.
  const int64_t seg_lo = j.first(0) / kAttnSegment, n_seg = j.last(n_tok - 1) / kAttnSegment - seg_lo + 1;
  const int64_t fl = State::Floats(group, hd);
  std::vector<float> partial(static_cast<size_t>(n_tok * s.n_kv_heads * n_seg * fl));
  std::vector<char> filled(static_cast<size_t>(n_tok * s.n_kv_heads * n_seg), 0);
  const int64_t items = n_tok * s.n_kv_heads * n_seg;
  auto work = [&](int64_t begin, int64_t end) {
    Scratch& sc = t_scratch;
    sc.Fit(j, 0);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t t = item / (s.n_kv_heads * n_seg);
      const int kvh = static_cast<int>(item / n_seg % s.n_kv_heads);
      const int64_t seg = seg_lo + item % n_seg;
      if (seg < j.first(t) / kAttnSegment || seg > j.last(t) / kAttnSegment) continue;
      State st = State::At(partial.data() + item * fl, group, hd);
      SegmentState(j, q + t * j.q_dim + static_cast<int64_t>(kvh) * group * hd, t, kvh, seg, st, sc);
      filled[item] = 1;
    }
  };
  if (pool) pool->ParallelForDynamic(items, 1, work);
  else work(0, items);
  std::vector<float> acc_buf(fl);
  for (int64_t t = 0; t < n_tok; ++t)
    for (int kvh = 0; kvh < s.n_kv_heads; ++kvh) {
      State acc = State::At(acc_buf.data(), group, hd);
      acc.Clear(group, hd);
      for (int64_t i = 0; i < n_seg; ++i) {
        const int64_t item = (t * s.n_kv_heads + kvh) * n_seg + i;
        if (!filled[item]) continue;
        State st = State::At(partial.data() + item * fl, group, hd);
        st.started = true;
        Merge(j, acc, st);
      }
      Finish(j, acc, out + t * j.q_dim + static_cast<int64_t>(kvh) * group * hd);
    }
}

}  // namespace strata
