// Google Benchmark of the kernels. MatMul at SmolLM3-3B projection shapes, per type, for
// decode (n_tok = 1), small decode batches (2, 4) and a prefill chunk
// (n_tok = 64), on 1 and 2 threads.
//   strata_kernel_bench --benchmark_filter='type:12/' --benchmark_min_time=0.3
// Counters: weight bytes read per second and FLOP/s (2 per multiply-add);
// compare bytes/s with the machine's measured read bandwidth for decode.
// BM_MatMulCold is decode as a model runs it (1 token, or a micro-batch of 2
// or 4): it cycles through copies of the matrix that together far exceed the
// last-level cache, so every weight byte comes from DRAM. The x8 argument runs the row-interleaved layout
// (kernels/interleave.h) of the types that have one, as a loaded rank does.
// The small ops (RMSNorm, SiLU * up, softmax, attention's weighted V sum,
// RoPE) run per ISA; BM_Attention runs the whole attention of one layer.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "common/huge_pages.h"
#include "common/thread_pool.h"
#include "kernels/attention.h"
#include "kernels/interleave.h"
#include "kernels/isa.h"
#include "kernels/kernel_table.h"
#include "kernels/matmul.h"
#include "kernels/quant.h"

namespace strata {
namespace {

const TensorType kBenchTypes[] = {TensorType::kF32, TensorType::kF16,  TensorType::kBF16, TensorType::kQ8_0,
                                  TensorType::kQ4_0, TensorType::kQ5_0, TensorType::kQ4_K, TensorType::kQ5_K,
                                  TensorType::kQ6_K};

ThreadPool& Pool(int threads) {
  static ThreadPool one(1), two(2);
  return threads == 1 ? one : two;
}

// The matrix as MatMul will read it: w itself, or its interleaved copy in x8.
MatrixView LayoutView(const MatrixView& w, bool interleaved, std::vector<uint8_t>* x8) {
  if (!interleaved) return w;
  x8->resize(InterleavedBytes(w.type, w.n_in, w.n_out));
  return InterleaveRows(w, x8->data());
}

// n_out rows of n_in weights ~ N(0, 0.02), quantized to type.
std::vector<uint8_t> RandomMatrix(TensorType type, int64_t n_in, int64_t n_out) {
  const uint64_t rb = RowBytes(type, n_in).value();
  std::vector<uint8_t> w(rb * n_out);
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  std::vector<float> row(n_in);
  for (int64_t r = 0; r < n_out; ++r) {
    for (float& v : row) v = dist(rng);
    QuantizeRow(type, row.data(), w.data() + r * rb, n_in);
  }
  return w;
}

std::vector<float> RandomActivations(int64_t n) {
  std::vector<float> x(n);
  std::mt19937 rng(2);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (float& v : x) v = dist(rng);
  return x;
}

std::string Label(TensorType type, const MatrixView& view, const ThreadPool& pool) {
  return std::string(TypeName(type)) + (view.layout == MatrixLayout::kInterleaved8 ? " x8 " : " ") + ActiveIsa() +
         " t=" + std::to_string(pool.size());
}

void BM_MatMul(benchmark::State& state) {
  const TensorType type = static_cast<TensorType>(state.range(0));
  const int64_t n_in = state.range(1), n_out = state.range(2), n_tok = state.range(3);
  ThreadPool& pool = Pool(static_cast<int>(state.range(4)));
  const uint64_t rb = RowBytes(type, n_in).value();
  const std::vector<uint8_t> w = RandomMatrix(type, n_in, n_out);
  const std::vector<float> x = RandomActivations(n_in * n_tok);
  std::vector<float> y(n_out * n_tok);
  std::vector<uint8_t> x8;
  const MatrixView view = LayoutView(MatrixView{type, w.data(), n_in, n_out, rb}, state.range(5) != 0, &x8);
  for (auto _ : state) {
    MatMul(view, x.data(), n_tok, y.data(), &pool);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetLabel(Label(type, view, pool));
  state.counters["bytes/s"] = benchmark::Counter(static_cast<double>(w.size()), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * n_in * n_out * n_tok, benchmark::Counter::kIsIterationInvariantRate);
}

void MatMulArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"type", "n_in", "n_out", "n_tok", "threads", "x8"});
  for (TensorType t : kBenchTypes)
    for (int64_t x8 = 0; x8 <= (CanInterleave(t, 8) ? 1 : 0); ++x8)
      for (auto [n_in, n_out] : {std::pair<int64_t, int64_t>{2048, 2048}, {2048, 11008}, {11008, 2048}})
        for (int64_t n_tok : {1, 2, 4, 64})
          for (int64_t threads : {1, 2}) b->Args({static_cast<int64_t>(t), n_in, n_out, n_tok, threads, x8});
}

BENCHMARK(BM_MatMul)->Apply(MatMulArgs)->UseRealTime()->Unit(benchmark::kMicrosecond);

void BM_MatMulCold(benchmark::State& state) {
  const TensorType type = static_cast<TensorType>(state.range(0));
  const int64_t n_in = state.range(1), n_out = state.range(2), n_tok = state.range(3);
  ThreadPool& pool = Pool(static_cast<int>(state.range(4)));
  const uint64_t rb = RowBytes(type, n_in).value();
  constexpr uint64_t kColdBytes = uint64_t{512} << 20;  // well past any L3
  const uint64_t matrix_bytes = rb * n_out;
  const int64_t copies = static_cast<int64_t>((kColdBytes + matrix_bytes - 1) / matrix_bytes);
  const std::vector<uint8_t> w = RandomMatrix(type, n_in, n_out);
  const bool interleaved = state.range(5) != 0;
  std::vector<uint8_t> x8;
  const MatrixView first = LayoutView(MatrixView{type, w.data(), n_in, n_out, rb}, interleaved, &x8);
  const uint64_t stored_bytes = interleaved ? x8.size() : matrix_bytes;
  const uint8_t* stored = interleaved ? x8.data() : w.data();
  // On huge pages, as a loaded rank keeps its weights (worker/stage.cc).
  HugePageBuffer copies_buf = AllocHugePages(stored_bytes * copies);  // [copies][the matrix as stored]
  if (copies_buf == nullptr) {
    state.SkipWithError("cannot allocate the cold copies");
    return;
  }
  for (int64_t c = 0; c < copies; ++c) std::memcpy(copies_buf.get() + c * stored_bytes, stored, stored_bytes);
  const std::vector<float> x = RandomActivations(n_in * n_tok);
  std::vector<float> y(n_out * n_tok);
  int64_t c = 0;
  for (auto _ : state) {
    MatrixView view = first;
    view.data = copies_buf.get() + c * stored_bytes;
    MatMul(view, x.data(), n_tok, y.data(), &pool);
    benchmark::DoNotOptimize(y.data());
    c = (c + 1) % copies;
  }
  state.SetLabel(Label(type, first, pool));
  state.counters["bytes/s"] = benchmark::Counter(static_cast<double>(stored_bytes), benchmark::Counter::kIsIterationInvariantRate);
}

void MatMulColdArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"type", "n_in", "n_out", "n_tok", "threads", "x8"});
  // Every computable weight type: coordinator/plan.cc's cost per byte of each
  // type in decode comes from these (bench/plan_costs.py).
  for (TensorType t : kBenchTypes)
    for (int64_t x8 = 0; x8 <= (CanInterleave(t, 8) ? 1 : 0); ++x8)
      for (auto [n_in, n_out] : {std::pair<int64_t, int64_t>{2048, 11008}, {11008, 2048}})
        for (int64_t n_tok : {1, 2, 4})
          for (int64_t threads : {1, 2}) b->Args({static_cast<int64_t>(t), n_in, n_out, n_tok, threads, x8});
}

BENCHMARK(BM_MatMulCold)->Apply(MatMulColdArgs)->UseRealTime()->Unit(benchmark::kMicrosecond);

// ---------------------------------------------------------------------------
// Small ops per ISA (isa: 0 ref, 1 avx2, 2 avx512), at SmolLM3-3B sizes;
// bytes/s counts each input and output once.
// ---------------------------------------------------------------------------

// The table of the benchmark's ISA argument, or nullptr (and the run skipped)
// where this machine lacks it.
const internal::KernelTable* OpsTable(benchmark::State& state) {
  const Isa isa = static_cast<Isa>(state.range(0));
  if (!IsaAvailable(isa)) {
    state.SkipWithError("ISA not available on this machine");
    return nullptr;
  }
  state.SetLabel(IsaName(isa));
  return &internal::KernelsFor(isa);
}

void SetBytes(benchmark::State& state, int64_t bytes_per_iteration) {
  state.counters["bytes/s"] =
      benchmark::Counter(static_cast<double>(bytes_per_iteration), benchmark::Counter::kIsIterationInvariantRate);
}

void IsaAndSizes(benchmark::internal::Benchmark* b, std::initializer_list<int64_t> sizes) {
  b->ArgNames({"isa", "n"});
  for (int64_t isa = 0; isa < kNumIsas; ++isa)
    for (int64_t n : sizes) b->Args({isa, n});
}

void BM_RmsNorm(benchmark::State& state) {
  const internal::KernelTable* k = OpsTable(state);
  if (k == nullptr) return;
  const int64_t n = state.range(1);
  const std::vector<float> x = RandomActivations(n), w = RandomActivations(n);
  std::vector<float> y(n);
  for (auto _ : state) {
    k->rms_norm(x.data(), w.data(), y.data(), n, 1e-6f);
    benchmark::DoNotOptimize(y.data());
  }
  SetBytes(state, 3 * n * 4);
}
BENCHMARK(BM_RmsNorm)->Apply([](auto* b) { IsaAndSizes(b, {2048}); });

// n = one token's FFN (11008) and a 64-token prefill chunk's.
void BM_SiluMul(benchmark::State& state) {
  const internal::KernelTable* k = OpsTable(state);
  if (k == nullptr) return;
  const int64_t n = state.range(1);
  const std::vector<float> g = RandomActivations(n), u = RandomActivations(n);
  std::vector<float> y(n);
  for (auto _ : state) {
    k->silu_mul(g.data(), u.data(), y.data(), n);
    benchmark::DoNotOptimize(y.data());
  }
  SetBytes(state, 3 * n * 4);
}
BENCHMARK(BM_SiluMul)->Apply([](auto* b) { IsaAndSizes(b, {11008, 64 * 11008}); });

// n = the keys one query head attends to.
void BM_Softmax(benchmark::State& state) {
  const internal::KernelTable* k = OpsTable(state);
  if (k == nullptr) return;
  const int64_t n = state.range(1);
  const std::vector<float> scores = RandomActivations(n);
  std::vector<float> x(n);
  for (auto _ : state) {
    std::memcpy(x.data(), scores.data(), n * sizeof(float));
    k->softmax(x.data(), n);
    benchmark::DoNotOptimize(x.data());
  }
  SetBytes(state, 2 * n * 4);
}
BENCHMARK(BM_Softmax)->Apply([](auto* b) { IsaAndSizes(b, {512, 4096}); });

// The outputs of the 4 query heads of one kv head over n keys: V rows of a
// 4-kv-head cache, read once.
void BM_WeightedSum(benchmark::State& state) {
  const internal::KernelTable* k = OpsTable(state);
  if (k == nullptr) return;
  const int64_t n_keys = state.range(1), head_dim = 128, kv_dim = 4 * head_dim;
  const std::vector<float> v = RandomActivations(n_keys * kv_dim), p = RandomActivations(4 * n_keys);
  std::vector<float> y(4 * head_dim);
  for (auto _ : state) {
    k->kv_weighted_sum[0](p.data(), n_keys, 4, reinterpret_cast<const uint8_t*>(v.data()), kv_dim * sizeof(float), n_keys,
                          head_dim, y.data(), head_dim, false);
    benchmark::DoNotOptimize(y.data());
  }
  SetBytes(state, n_keys * head_dim * 4);
}
BENCHMARK(BM_WeightedSum)->Apply([](auto* b) { IsaAndSizes(b, {512, 4096}); });

// A token's queries (16 heads of 128), both layouts (n: 1 neox, 0 interleaved).
void BM_RopeRotate(benchmark::State& state) {
  const internal::KernelTable* k = OpsTable(state);
  if (k == nullptr) return;
  const bool neox = state.range(1) != 0;
  const int n_heads = 16, head_dim = 128;
  const std::vector<float> cos = RandomActivations(head_dim / 2), sin = RandomActivations(head_dim / 2);
  std::vector<float> q = RandomActivations(n_heads * head_dim);
  for (auto _ : state) {
    k->rope_rotate(q.data(), n_heads, head_dim, cos.data(), sin.data(), neox);
    benchmark::DoNotOptimize(q.data());
  }
  SetBytes(state, 2 * n_heads * head_dim * 4);
}
BENCHMARK(BM_RopeRotate)->Apply([](auto* b) { IsaAndSizes(b, {0, 1}); });

// CausalAttention at SmolLM3-3B's shape (16 query heads, 4 kv heads of 128),
// active ISA: n_tok new tokens after pos0 cached ones. bytes/s: the K and V
// rows read, once per (token, kv head).
const TensorType kKvBenchTypes[] = {TensorType::kF32, TensorType::kF16, TensorType::kQ8_0};

// One layer of SmolLM3-3B's attention (16 query heads over 4 kv heads of
// 128): n_tok new tokens after pos0 cached ones, the cache stored in
// kKvBenchTypes[kv].
void BM_Attention(benchmark::State& state) {
  const int64_t pos0 = state.range(0), n_tok = state.range(1);
  ThreadPool& pool = Pool(static_cast<int>(state.range(2)));
  const TensorType type = kKvBenchTypes[state.range(3)];
  const AttentionShape shape{16, 4, 128};
  const int64_t q_dim = 16 * 128, kv_dim = 4 * 128, n_pos = pos0 + n_tok;
  const uint64_t row_bytes = RowBytes(type, kv_dim).value();
  const std::vector<float> q = RandomActivations(n_tok * q_dim), kf = RandomActivations(n_pos * kv_dim),
                           vf = RandomActivations(n_pos * kv_dim);
  std::vector<uint8_t> kc(n_pos * row_bytes), vc(n_pos * row_bytes);
  for (int64_t j = 0; j < n_pos; ++j) {
    QuantizeRow(type, kf.data() + j * kv_dim, kc.data() + j * row_bytes, kv_dim);
    QuantizeRow(type, vf.data() + j * kv_dim, vc.data() + j * row_bytes, kv_dim);
  }
  std::vector<float> out(n_tok * q_dim);
  for (auto _ : state) {
    CausalAttention(shape, q.data(), KvView{type, kc.data(), vc.data(), row_bytes, n_pos}, pos0, n_tok, 0, out.data(), &pool);
    benchmark::DoNotOptimize(out.data());
  }
  int64_t rows = 0;
  for (int64_t t = 0; t < n_tok; ++t) rows += pos0 + t + 1;
  state.SetLabel(std::string(ActiveIsa()) + " t=" + std::to_string(pool.size()) + " kv=" + TypeName(type));
  SetBytes(state, static_cast<int64_t>(2 * rows * row_bytes));
}
BENCHMARK(BM_Attention)
    ->ArgNames({"pos0", "n_tok", "threads", "kv"})
    ->ArgsProduct({{0}, {64}, {1, 2}, {0}})
    ->ArgsProduct({{1024, 4096}, {1, 4}, {1, 2}, {0}})
    // At depth: a decoding token and a 256-token prompt chunk, per cache type.
    ->ArgsProduct({{4096, 16384}, {1, 256}, {1, 2}, {0, 1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace strata
