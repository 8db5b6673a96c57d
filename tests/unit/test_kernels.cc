// Tests of the numeric kernels (kernels/): fp16/bf16 conversions, quantize ->
// dequantize round trips, every ISA against the scalar reference (NMSE with
// per-type budgets, odd shapes, guard values after outputs), the MatMul
// determinism contract (bit-equal to DotRow for any batch and thread count),
// the small ops against double-precision formulas, and real GGUF tensors.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "common/thread_pool.h"
#include "kernels/attention.h"
#include "kernels/fp16.h"
#include "kernels/interleave.h"
#include "kernels/isa.h"
#include "kernels/kernel_table.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "kernels/quant_blocks.h"
#include "model/gguf.h"
#include "model/rope.h"

namespace strata {
namespace {

constexpr float kGuard = -12345.678f;
constexpr uint8_t kGuardByte = 0xA5;
constexpr int kGuardCount = 19;

const TensorType kComputableTypes[] = {TensorType::kF32,  TensorType::kF16,  TensorType::kBF16,
                                       TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kQ5_0,
                                       TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K};
const Isa kAllIsas[] = {Isa::kRef, Isa::kAvx2, Isa::kAvx512};

std::vector<float> Gaussian(int64_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

// mse(a, b) / mse(a, 0), in double.
double Nmse(const float* a, const float* b, int64_t n) {
  double err = 0, ref = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    err += d * d;
    ref += static_cast<double>(a[i]) * a[i];
  }
  return ref > 0 ? err / ref : err;
}

uint64_t Bytes(TensorType type, int64_t n) { return RowBytes(type, n).value(); }

// Output buffer with guard values after n floats.
struct Guarded {
  explicit Guarded(int64_t n) : n_(n), v_(static_cast<size_t>(n + kGuardCount), kGuard) {}
  float* data() { return v_.data(); }
  bool GuardsIntact() const {
    for (int i = 0; i < kGuardCount; ++i)
      if (std::memcmp(&v_[n_ + i], &kGuard, 4) != 0) return false;
    return true;
  }
  int64_t n_;
  std::vector<float> v_;
};

int64_t BlockOf(TensorType t) { return Traits(t).block_elems; }

// ---------------------------------------------------------------------------
// fp16 / bf16
// ---------------------------------------------------------------------------

TEST(Fp16Conversion, F16EdgeValues) {
  EXPECT_EQ(F32ToF16(0.0f), 0x0000);
  EXPECT_EQ(F32ToF16(-0.0f), 0x8000);
  EXPECT_EQ(F32ToF16(1.0f), 0x3c00);
  EXPECT_EQ(F32ToF16(-2.0f), 0xc000);
  EXPECT_EQ(F32ToF16(0.1f), 0x2e66);
  EXPECT_EQ(F32ToF16(65504.0f), 0x7bff);
  EXPECT_EQ(F32ToF16(65519.99f), 0x7bff);
  EXPECT_EQ(F32ToF16(65520.0f), 0x7c00);  // tie -> even -> inf
  EXPECT_EQ(F32ToF16(1e10f), 0x7c00);
  EXPECT_EQ(F32ToF16(INFINITY), 0x7c00);
  EXPECT_EQ(F32ToF16(-INFINITY), 0xfc00);
  const uint16_t nan = F32ToF16(NAN);
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x3ff, 0);
  EXPECT_TRUE(std::isnan(F16ToF32(nan)));
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -25)), 0x0000);  // tie -> even (0)
  EXPECT_EQ(F32ToF16(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 ulp: tie -> even (2)
  EXPECT_EQ(F32ToF16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(F32ToF16(std::ldexp(1023.5f, -24)), 0x0400);  // rounds up into the normals
  EXPECT_EQ(F32ToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);      // tie -> even
  EXPECT_EQ(F32ToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie -> even
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(F16ToF32(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToF32(0xfc00), -INFINITY);
  EXPECT_EQ(F32Bits(F16ToF32(0x8000)), 0x80000000u);
  // Every half survives a round trip (nan stays nan).
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = F16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(F16ToF32(F32ToF16(f))));
    } else {
      ASSERT_EQ(F32ToF16(f), h) << std::hex << h;
    }
  }
}

__attribute__((target("f16c"))) uint16_t HardwareF32ToF16(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

TEST(Fp16Conversion, F16MatchesF16cOnRandomBits) {
  if (!__builtin_cpu_supports("f16c")) GTEST_SKIP() << "CPU lacks F16C";
  std::mt19937 rng(7);
  for (int i = 0; i < 2000000; ++i) {
    const float f = F32FromBits(rng());
    if (std::isnan(f)) continue;
    ASSERT_EQ(F32ToF16(f), HardwareF32ToF16(f)) << std::hex << F32Bits(f);
  }
}

TEST(Fp16Conversion, Bf16EdgeValues) {
  EXPECT_EQ(F32ToBf16(1.0f), 0x3f80);
  EXPECT_EQ(F32ToBf16(-0.0f), 0x8000);
  EXPECT_EQ(F32ToBf16(F32FromBits(0x3f808000)), 0x3f80);  // tie -> even
  EXPECT_EQ(F32ToBf16(F32FromBits(0x3f818000)), 0x3f82);  // tie -> even
  EXPECT_EQ(F32ToBf16(F32FromBits(0x3f808001)), 0x3f81);
  EXPECT_EQ(F32ToBf16(INFINITY), 0x7f80);
  EXPECT_EQ(F32ToBf16(F32FromBits(0x7f7fffff)), 0x7f80);  // max float rounds to inf
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(NAN))));
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(F32FromBits(0x7f800001)))));  // payload only in low bits
  EXPECT_EQ(Bf16ToF32(0x4049), 3.140625f);
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = Bf16ToF32(static_cast<uint16_t>(h));
    if (!std::isnan(f)) {
      ASSERT_EQ(F32ToBf16(f), h);
    }
  }
}

// ---------------------------------------------------------------------------
// Quantization round trip
// ---------------------------------------------------------------------------

double RoundTripBudget(TensorType t) {  // relative RMS error on N(0,1) data
  switch (t) {
    case TensorType::kF32: return 0.0;
    case TensorType::kF16: return 1e-3;
    case TensorType::kBF16: return 4e-3;
    case TensorType::kQ8_0: return 0.01;
    case TensorType::kQ4_0: return 0.13;
    case TensorType::kQ5_0: return 0.065;
    case TensorType::kQ4_K: return 0.12;
    case TensorType::kQ5_K: return 0.06;
    case TensorType::kQ6_K: return 0.03;
    default: return 0.0;
  }
}

class QuantRoundTrip : public ::testing::TestWithParam<TensorType> {};

TEST_P(QuantRoundTrip, WithinBudget) {
  const TensorType type = GetParam();
  const int64_t n = 256 * 16;
  std::vector<float> x = Gaussian(n, 1234);
  const uint64_t bytes = Bytes(type, n);
  std::vector<uint8_t> q(bytes + kGuardCount, kGuardByte);
  QuantizeRow(type, x.data(), q.data(), n);
  for (int i = 0; i < kGuardCount; ++i) ASSERT_EQ(q[bytes + i], kGuardByte) << "quantizer wrote past the row";
  Guarded y(n);
  DequantizeRow(Isa::kRef, type, q.data(), y.data(), n);
  EXPECT_TRUE(y.GuardsIntact());
  const double rel_rms = std::sqrt(Nmse(x.data(), y.data(), n));
  RecordProperty("rel_rms", std::to_string(rel_rms));
  std::printf("[          ] %s relative RMS error %.5f (budget %.5f)\n", TypeName(type), rel_rms, RoundTripBudget(type));
  EXPECT_LE(rel_rms, RoundTripBudget(type)) << TypeName(type);

  // Zeros and a constant row quantize without nan.
  std::vector<float> zero(n, 0.0f), konst(n, 0.75f), back(n);
  QuantizeRow(type, zero.data(), q.data(), n);
  DequantizeRow(type, q.data(), back.data(), n);
  for (float v : back) ASSERT_EQ(v, 0.0f);
  QuantizeRow(type, konst.data(), q.data(), n);
  DequantizeRow(type, q.data(), back.data(), n);
  EXPECT_LE(Nmse(konst.data(), back.data(), n), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(AllTypes, QuantRoundTrip, ::testing::ValuesIn(kComputableTypes),
                         [](const auto& info) { return std::string(TypeName(info.param)); });

TEST(QuantFormat, Q4_0AndQ8_0KnownBlocks) {
  // x = -8..7 (twice): Q4_0 maps the extreme -8 to quant 0 with d = 1.
  float x[32];
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j % 16 - 8);
  BlockQ4_0 b4;
  QuantizeRow(TensorType::kQ4_0, x, &b4, 32);
  EXPECT_EQ(b4.d, F32ToF16(1.0f));
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b4.qs[j], (j & 0xF) | ((j & 0xF) << 4));
  BlockQ8_0 b8;
  QuantizeRow(TensorType::kQ8_0, x, &b8, 32);
  EXPECT_EQ(F16ToF32(b8.d), F16ToF32(F32ToF16(8.0f / 127)));
  EXPECT_EQ(b8.qs[0], -127);
}

TEST(QuantFormat, DequantizeRejectsPartialBlocks) {
  std::vector<uint8_t> q(256);
  std::vector<float> y(300);
  EXPECT_DEATH(DequantizeRow(TensorType::kQ4_K, q.data(), y.data(), 100), "multiple");
}

// ---------------------------------------------------------------------------
// Every ISA against the reference
// ---------------------------------------------------------------------------

// A row of n elements in `type` whose packed bytes are random (scales kept
// finite and moderate), so unpacking reaches every bit pattern.
std::vector<uint8_t> RandomRow(TensorType type, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> row(Bytes(type, n));
  if (type == TensorType::kF32 || type == TensorType::kF16 || type == TensorType::kBF16) {
    std::vector<float> x = Gaussian(n, seed);
    QuantizeRow(type, x.data(), row.data(), n);
    return row;
  }
  for (uint8_t& b : row) b = static_cast<uint8_t>(rng());
  std::uniform_real_distribution<float> scale(-0.05f, 0.05f);
  const int64_t bb = Traits(type).block_bytes;
  for (uint64_t off = 0; off < row.size(); off += bb) {
    auto put = [&](int at, float v) {
      const uint16_t h = F32ToF16(v);
      std::memcpy(&row[off + at], &h, 2);
    };
    switch (type) {
      case TensorType::kQ4_K:
      case TensorType::kQ5_K: put(0, scale(rng)); put(2, std::fabs(scale(rng))); break;
      case TensorType::kQ6_K: put(208, scale(rng)); break;
      default: put(0, scale(rng)); break;
    }
  }
  return row;
}

using TypeIsa = std::tuple<TensorType, Isa>;

class KernelIsaTest : public ::testing::TestWithParam<TypeIsa> {
 protected:
  void SetUp() override {
    if (!IsaAvailable(std::get<1>(GetParam())))
      GTEST_SKIP() << "ISA " << IsaName(std::get<1>(GetParam())) << " not available on this machine";
  }
  TensorType type() const { return std::get<0>(GetParam()); }
  Isa isa() const { return std::get<1>(GetParam()); }
  // Row lengths that reach the loop remainders: odd lengths for float types.
  std::vector<int64_t> Lengths() const {
    const int64_t b = BlockOf(type());
    if (b == 1) return {1, 15, 67, 256, 1000};
    if (b == 32) return {32, 96, 288};
    return {256, 768};
  }
};

TEST_P(KernelIsaTest, DequantizeEqualsReferenceExactly) {
  for (int64_t n : Lengths()) {
    std::vector<uint8_t> row = RandomRow(type(), n, 99 + static_cast<uint32_t>(n));
    Guarded a(n), b(n);
    DequantizeRow(Isa::kRef, type(), row.data(), a.data(), n);
    DequantizeRow(isa(), type(), row.data(), b.data(), n);
    EXPECT_TRUE(b.GuardsIntact());
    ASSERT_EQ(std::memcmp(a.data(), b.data(), n * sizeof(float)), 0) << "n=" << n;
  }
}

bool IsQuantized(TensorType t) { return internal::QDotSlot(t) >= 0; }

// x as the integer path sees it: each token row quantized to int8 blocks
// (kernel_table.h) and scaled back; x itself for the float types.
std::vector<float> ActivationsAsSeen(TensorType type, const std::vector<float>& x, int64_t n_in, int64_t n_tok) {
  if (!IsQuantized(type)) return x;
  const internal::ActLayout l = internal::MakeActLayout(internal::ActFormatFor(type), n_in);
  std::vector<uint8_t> buf(l.stride);
  std::vector<float> out(x.size());
  for (int64_t t = 0; t < n_tok; ++t) {
    internal::RefKernelTable().quantize_act(x.data() + t * n_in, l, buf.data());
    const int8_t* q = reinterpret_cast<const int8_t*>(buf.data());
    const float* d = reinterpret_cast<const float*>(buf.data() + l.off_d);
    for (int64_t i = 0; i < n_in; ++i) out[t * n_in + i] = d[i / l.block] * q[i];
  }
  return out;
}

// Float types: the exact dot. Quantized types: the exact dot with the
// activations as the integer path quantizes them, which proves the integer
// sums and their scaling right (only f32 rounding of the block combine left).
TEST_P(KernelIsaTest, MatMulMatchesReference) {
  for (int64_t n_in : Lengths()) {
    for (int64_t n_out : {1, 13, 37}) {
      for (int64_t n_tok : {1, 3, 17}) {
        const uint64_t rb = Bytes(type(), n_in);
        std::vector<uint8_t> w(rb * n_out);
        for (int64_t r = 0; r < n_out; ++r) {
          std::vector<uint8_t> row = RandomRow(type(), n_in, static_cast<uint32_t>(r * 31 + n_in));
          std::memcpy(w.data() + r * rb, row.data(), rb);
        }
        std::vector<float> x = Gaussian(n_in * n_tok, 5 + static_cast<uint32_t>(n_tok));
        const std::vector<float> xs = ActivationsAsSeen(type(), x, n_in, n_tok);
        const MatrixView view{type(), w.data(), n_in, n_out, rb};
        Guarded y(n_out * n_tok);
        ThreadPool pool(2);
        MatMul(isa(), view, x.data(), n_tok, y.data(), &pool);
        EXPECT_TRUE(y.GuardsIntact());
        // Double-precision reference over the exactly dequantized weights.
        std::vector<float> wf(n_in), expect(n_out * n_tok);
        for (int64_t r = 0; r < n_out; ++r) {
          DequantizeRow(Isa::kRef, type(), w.data() + r * rb, wf.data(), n_in);
          for (int64_t t = 0; t < n_tok; ++t) {
            double s = 0;
            for (int64_t i = 0; i < n_in; ++i) s += static_cast<double>(wf[i]) * xs[t * n_in + i];
            expect[t * n_out + r] = static_cast<float>(s);
          }
        }
        const double nmse = Nmse(expect.data(), y.data(), n_out * n_tok);
        ASSERT_LE(nmse, 1e-10) << "n_in=" << n_in << " n_out=" << n_out << " n_tok=" << n_tok;
      }
    }
  }
}

// The integer path is bit-identical on every ISA (kernels_ref.cc defines it).
TEST_P(KernelIsaTest, QuantizedMatMulBitEqualsReference) {
  if (!IsQuantized(type())) GTEST_SKIP() << "float type: ISAs differ in the last bits (isa.h)";
  const int64_t n_in = Lengths().back();
  const uint64_t rb = Bytes(type(), n_in);
  for (int64_t n_out : {1, 7, 13, 37}) {
    std::vector<uint8_t> w(rb * n_out);
    for (int64_t r = 0; r < n_out; ++r) {
      std::vector<uint8_t> row = RandomRow(type(), n_in, static_cast<uint32_t>(r * 7 + n_out));
      std::memcpy(w.data() + r * rb, row.data(), rb);
    }
    const MatrixView view{type(), w.data(), n_in, n_out, rb};
    for (int64_t n_tok : {1, 2, 3, 5, 17, 64}) {
      std::vector<float> x = Gaussian(n_in * n_tok, 900 + static_cast<uint32_t>(n_tok));
      std::vector<float> expect(n_out * n_tok);
      Guarded y(n_out * n_tok);
      MatMul(Isa::kRef, view, x.data(), n_tok, expect.data(), nullptr);
      ThreadPool pool(2);
      MatMul(isa(), view, x.data(), n_tok, y.data(), &pool);
      EXPECT_TRUE(y.GuardsIntact());
      ASSERT_EQ(std::memcmp(y.data(), expect.data(), expect.size() * sizeof(float)), 0)
          << "n_out=" << n_out << " n_tok=" << n_tok;
    }
  }
}

// Against plain math: realistic weights (quantized from Gaussian values), the
// integer path vs the exact product of the dequantized rows with the f32 x.
TEST_P(KernelIsaTest, QuantizedMatMulCloseToFloatProduct) {
  if (!IsQuantized(type())) GTEST_SKIP() << "float type";
  const int64_t n_in = 2048, n_out = 24, n_tok = 5;
  const uint64_t rb = Bytes(type(), n_in);
  std::vector<uint8_t> w(rb * n_out);
  for (int64_t r = 0; r < n_out; ++r) {
    std::vector<float> wf = Gaussian(n_in, 300 + static_cast<uint32_t>(r), 0.02f);
    QuantizeRow(type(), wf.data(), w.data() + r * rb, n_in);
  }
  std::vector<float> x = Gaussian(n_in * n_tok, 17), y(n_out * n_tok), expect(n_out * n_tok), wf(n_in);
  for (int64_t r = 0; r < n_out; ++r) {
    DequantizeRow(Isa::kRef, type(), w.data() + r * rb, wf.data(), n_in);
    for (int64_t t = 0; t < n_tok; ++t) {
      double s = 0;
      for (int64_t i = 0; i < n_in; ++i) s += static_cast<double>(wf[i]) * x[t * n_in + i];
      expect[t * n_out + r] = static_cast<float>(s);
    }
  }
  MatMul(isa(), MatrixView{type(), w.data(), n_in, n_out, rb}, x.data(), n_tok, y.data(), nullptr);
  const double rel_rms = std::sqrt(Nmse(expect.data(), y.data(), y.size()));
  std::printf("[          ] %s %s: integer path relative RMS error %.2e\n", TypeName(type()), IsaName(isa()), rel_rms);
  EXPECT_LT(rel_rms, 1e-2);
}

// The determinism contract of matmul.h.
TEST_P(KernelIsaTest, MatMulBitEqualsDotRowForAnyBatchAndThreads) {
  const int64_t n_in = Lengths().back(), n_out = 37;
  const uint64_t rb = Bytes(type(), n_in);
  std::vector<uint8_t> w(rb * n_out);
  for (int64_t r = 0; r < n_out; ++r) {
    std::vector<uint8_t> row = RandomRow(type(), n_in, static_cast<uint32_t>(1000 + r));
    std::memcpy(w.data() + r * rb, row.data(), rb);
  }
  const MatrixView view{type(), w.data(), n_in, n_out, rb};
  const int64_t kTok = 17;
  std::vector<float> x = Gaussian(n_in * kTok, 77);
  std::vector<float> expect(n_out * kTok);
  for (int64_t t = 0; t < kTok; ++t)
    for (int64_t r = 0; r < n_out; ++r)
      expect[t * n_out + r] = DotRow(isa(), type(), w.data() + r * rb, x.data() + t * n_in, n_in);
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int64_t n_tok : {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{5}, kTok}) {
      for (int64_t t0 = 0; t0 + n_tok <= kTok; t0 += n_tok) {
        std::vector<float> y(n_out * n_tok);
        MatMul(isa(), view, x.data() + t0 * n_in, n_tok, y.data(), threads == 1 ? nullptr : &pool);
        ASSERT_EQ(std::memcmp(y.data(), expect.data() + t0 * n_out, y.size() * sizeof(float)), 0)
            << "threads=" << threads << " n_tok=" << n_tok << " t0=" << t0;
      }
    }
  }
}

// The row-interleaved layout (interleave.h) holds the same bytes: undoing it
// gives the file's rows back, including scale bits the quantizer never writes.
TEST_P(KernelIsaTest, InterleavedLayoutRoundTrips) {
  if (!CanInterleave(type(), 8) || isa() != Isa::kRef) GTEST_SKIP() << "no interleaved layout, or not the ref pass";
  for (int64_t n_in : Lengths()) {
    const uint64_t rb = Bytes(type(), n_in);
    const int64_t n_out = 24;
    std::vector<uint8_t> w(rb * n_out);
    for (int64_t r = 0; r < n_out; ++r) {
      std::vector<uint8_t> row = RandomRow(type(), n_in, static_cast<uint32_t>(5000 + r));
      for (uint8_t& b : row) b ^= static_cast<uint8_t>(r * 37);  // every bit of every field, scales too
      std::memcpy(w.data() + r * rb, row.data(), rb);
    }
    std::vector<uint8_t> x8(InterleavedBytes(type(), n_in, n_out)), back(8 * rb);
    const MatrixView view = InterleaveRows(MatrixView{type(), w.data(), n_in, n_out, rb}, x8.data());
    EXPECT_EQ(view.layout, MatrixLayout::kInterleaved8);
    for (int64_t g = 0; g < n_out / 8; ++g) {
      DeinterleaveGroup(type(), x8.data() + g * InterleavedGroupBytes(type(), n_in), n_in, back.data());
      ASSERT_EQ(std::memcmp(back.data(), w.data() + 8 * g * rb, 8 * rb), 0) << "n_in=" << n_in << " group " << g;
    }
  }
}

// MatMul on the interleaved layout equals the reference on the file's rows bit
// for bit, for every token count (tiles of 8, 4, 2 and 1 tokens) and thread split.
TEST_P(KernelIsaTest, InterleavedMatMulBitEqualsReference) {
  if (!CanInterleave(type(), 8)) GTEST_SKIP() << "no interleaved layout for this type";
  for (int64_t n_in : Lengths()) {
    const uint64_t rb = Bytes(type(), n_in);
    for (int64_t n_out : {8, 40}) {
      std::vector<uint8_t> w(rb * n_out);
      for (int64_t r = 0; r < n_out; ++r) {
        std::vector<uint8_t> row = RandomRow(type(), n_in, static_cast<uint32_t>(r * 11 + n_out + n_in));
        std::memcpy(w.data() + r * rb, row.data(), rb);
      }
      const MatrixView rows{type(), w.data(), n_in, n_out, rb};
      std::vector<uint8_t> x8(InterleavedBytes(type(), n_in, n_out));
      const MatrixView view = InterleaveRows(rows, x8.data());
      for (int64_t n_tok : {1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 33}) {
        std::vector<float> x = Gaussian(n_in * n_tok, 700 + static_cast<uint32_t>(n_tok));
        std::vector<float> expect(n_out * n_tok);
        MatMul(Isa::kRef, rows, x.data(), n_tok, expect.data(), nullptr);
        for (int threads : {1, 2}) {
          ThreadPool pool(threads);
          Guarded y(n_out * n_tok);
          MatMul(isa(), view, x.data(), n_tok, y.data(), threads == 1 ? nullptr : &pool);
          EXPECT_TRUE(y.GuardsIntact());
          ASSERT_EQ(std::memcmp(y.data(), expect.data(), expect.size() * sizeof(float)), 0)
              << "n_in=" << n_in << " n_out=" << n_out << " n_tok=" << n_tok << " threads=" << threads;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypesAllIsas, KernelIsaTest,
                         ::testing::Combine(::testing::ValuesIn(kComputableTypes), ::testing::ValuesIn(kAllIsas)),
                         [](const auto& info) {
                           return std::string(TypeName(std::get<0>(info.param))) + "_" +
                                  IsaName(std::get<1>(info.param));
                         });

// avx2 and avx512 share the accumulation order (isa.h): same bits.
class KernelSimdAgreeTest : public ::testing::TestWithParam<TensorType> {};

TEST_P(KernelSimdAgreeTest, Avx2AndAvx512BitForBit) {
  if (!IsaAvailable(Isa::kAvx2) || !IsaAvailable(Isa::kAvx512)) GTEST_SKIP() << "needs both avx2 and avx512";
  const TensorType type = GetParam();
  const int64_t b = BlockOf(type), odd = b == 1 ? 7 : 0;
  for (int64_t n : {b, 8 * b + odd, 3072 + odd}) {
    std::vector<uint8_t> row = RandomRow(type, n, 4242);
    std::vector<float> x = Gaussian(n, 4243);
    const float a = DotRow(Isa::kAvx2, type, row.data(), x.data(), n);
    const float b = DotRow(Isa::kAvx512, type, row.data(), x.data(), n);
    ASSERT_EQ(F32Bits(a), F32Bits(b)) << "n=" << n;
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, KernelSimdAgreeTest, ::testing::ValuesIn(kComputableTypes),
                         [](const auto& info) { return std::string(TypeName(info.param)); });

// The dispatch decision as a table: what CPUID and XGETBV report -> the ISA
// chosen. The CPUs are real ones (bits from Intel's SDM and AMD's APM); the
// gate must never pick an ISA whose -m flags the CPU lacks.
namespace cpuid {
constexpr uint32_t kFma = 1u << 12, kOsxsave = 1u << 27, kAvx = 1u << 28, kF16c = 1u << 29;     // leaf 1 ECX
constexpr uint32_t kAvx2 = 1u << 5, kBmi2 = 1u << 8, kAvx512F = 1u << 16, kAvx512Dq = 1u << 17,  // leaf 7 EBX
    kAvx512Cd = 1u << 28, kAvx512Bw = 1u << 30, kAvx512Vl = 1u << 31;
constexpr uint32_t kAvx512Vnni = 1u << 11;                                                        // leaf 7 ECX
constexpr uint64_t kXmmYmm = 0x7, kXmmYmmZmm = 0xE7;  // XCR0: x87 | SSE | AVX (| opmask | ZMM_Hi256 | Hi16_ZMM)

constexpr uint32_t kLeaf1Avx2Era = kFma | kOsxsave | kAvx | kF16c;
constexpr uint32_t kHaswell7 = kAvx2 | kBmi2;
constexpr uint32_t kSkylakeX7 = kHaswell7 | kAvx512F | kAvx512Dq | kAvx512Cd | kAvx512Bw | kAvx512Vl;
}  // namespace cpuid

struct DispatchCase {
  const char* cpu;
  internal::CpuidBits bits;
  const char* forced;  // STRATA_ISA, or null
  Isa want;
};

TEST(KernelDispatch, CpuidBitsToIsa) {
  using namespace cpuid;
  const internal::CpuidBits haswell{kLeaf1Avx2Era, true, kHaswell7, 0, kXmmYmm};
  const internal::CpuidBits skylake_x{kLeaf1Avx2Era, true, kSkylakeX7, 0, kXmmYmmZmm};
  // Cascade Lake / Ice Lake: AVX-512 VNNI without AVX512_BF16 (which the
  // avx512 kernels must therefore not be compiled for).
  const internal::CpuidBits cascade_lake{kLeaf1Avx2Era, true, kSkylakeX7, kAvx512Vnni, kXmmYmmZmm};
  const DispatchCase cases[] = {
      {"Haswell", haswell, nullptr, Isa::kAvx2},
      {"Skylake-X (AVX-512 without VNNI)", skylake_x, nullptr, Isa::kAvx2},
      {"Cascade Lake (VNNI, no BF16)", cascade_lake, nullptr, Isa::kAvx512},
      {"Cascade Lake, OS saves no ZMM state", {kLeaf1Avx2Era, true, kSkylakeX7, kAvx512Vnni, kXmmYmm}, nullptr, Isa::kAvx2},
      {"Cascade Lake without AVX512VL", {kLeaf1Avx2Era, true, kSkylakeX7 & ~kAvx512Vl, kAvx512Vnni, kXmmYmmZmm}, nullptr,
       Isa::kAvx2},
      {"Knights Landing (F/CD, no BW/DQ/VL)", {kLeaf1Avx2Era, true, kHaswell7 | kAvx512F | kAvx512Cd, 0, kXmmYmmZmm}, nullptr,
       Isa::kAvx2},
      {"Haswell, OS without OSXSAVE", {kFma | kAvx | kF16c, true, kHaswell7, 0, 0}, nullptr, Isa::kRef},
      {"Haswell, OS saves no YMM state", {kLeaf1Avx2Era, true, kHaswell7, 0, 0x3}, nullptr, Isa::kRef},
      {"Ivy Bridge (AVX + F16C, no AVX2)", {kOsxsave | kAvx | kF16c, true, 0, 0, kXmmYmm}, nullptr, Isa::kRef},
      {"AVX2 without FMA", {kOsxsave | kAvx | kF16c, true, kHaswell7, 0, kXmmYmm}, nullptr, Isa::kRef},
      {"AVX2 without F16C", {kFma | kOsxsave | kAvx, true, kHaswell7, 0, kXmmYmm}, nullptr, Isa::kRef},
      {"AVX2 without BMI2 (a VM that masks it)", {kLeaf1Avx2Era, true, kAvx2, 0, kXmmYmm}, nullptr, Isa::kRef},
      {"no CPUID leaf 7", {kLeaf1Avx2Era, false, 0, 0, kXmmYmm}, nullptr, Isa::kRef},
      {"nothing", {}, nullptr, Isa::kRef},
      {"Cascade Lake, STRATA_ISA=ref", cascade_lake, "ref", Isa::kRef},
      {"Cascade Lake, STRATA_ISA=avx2", cascade_lake, "avx2", Isa::kAvx2},
      {"Cascade Lake, STRATA_ISA=avx512", cascade_lake, "avx512", Isa::kAvx512},
      {"Cascade Lake, STRATA_ISA=bogus (the best)", cascade_lake, "bogus", Isa::kAvx512},
      {"Cascade Lake, STRATA_ISA= (the best)", cascade_lake, "", Isa::kAvx512},
      {"Haswell, STRATA_ISA=avx512 (unsupported: the best)", haswell, "avx512", Isa::kAvx2},
      {"Haswell, STRATA_ISA=ref", haswell, "ref", Isa::kRef},
  };
  for (const DispatchCase& c : cases) {
    const internal::CpuFeatures f = internal::FeaturesFromCpuid(c.bits);
    EXPECT_EQ(IsaName(internal::ChooseIsa(f, c.forced)), std::string(IsaName(c.want))) << c.cpu;
    // Whatever is chosen is supported.
    EXPECT_TRUE(internal::IsaSupported(f, internal::ChooseIsa(f, c.forced))) << c.cpu;
  }
}

// ---------------------------------------------------------------------------
// Small ops against double-precision formulas
// ---------------------------------------------------------------------------

TEST(KernelOps, RmsNorm) {
  for (int64_t n : {1, 7, 64, 2049}) {
    std::vector<float> x = Gaussian(n, 11, 3.0f), w = Gaussian(n, 12);
    double ss = 0;
    for (float v : x) ss += static_cast<double>(v) * v;
    const double inv = 1.0 / std::sqrt(ss / n + 1e-6);
    std::vector<float> expect(n);
    for (int64_t i = 0; i < n; ++i) expect[i] = static_cast<float>(x[i] * inv * w[i]);
    Guarded y(n);
    RmsNorm(x.data(), w.data(), y.data(), n, 1e-6f);
    EXPECT_TRUE(y.GuardsIntact());
    EXPECT_LE(Nmse(expect.data(), y.data(), n), 1e-12) << n;
    RmsNorm(x.data(), w.data(), x.data(), n, 1e-6f);  // in place
    EXPECT_EQ(std::memcmp(x.data(), y.data(), n * 4), 0);
  }
}

void RopeExpect(std::vector<float>& v, int n_heads, int head_dim, int64_t pos, double theta, bool neox) {
  const int half = head_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* q = v.data() + h * head_dim;
    for (int i = 0; i < half; ++i) {
      const double ang = pos / std::pow(theta, 2.0 * i / head_dim);
      const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
      const double qa = q[a], qb = q[b];
      q[a] = static_cast<float>(qa * std::cos(ang) - qb * std::sin(ang));
      q[b] = static_cast<float>(qb * std::cos(ang) + qa * std::sin(ang));
    }
  }
}

TEST(KernelOps, RopeBothLayouts) {
  const int n_heads = 3, head_dim = 64;
  for (bool neox : {true, false}) {
    for (int64_t pos : {0, 1, 17, 1000}) {
      std::vector<float> v = Gaussian(n_heads * head_dim, 21), expect = v;
      RopeExpect(expect, n_heads, head_dim, pos, 10000.0, neox);
      RopeConfig rope;
      rope.theta = 10000.0f;
      RopeTable table(rope, head_dim);
      const int64_t positions[] = {pos};
      table.Fill(positions);
      RopeRotate(v.data(), n_heads, head_dim, table.cos(0), table.sin(0), neox);
      // float32 angles at pos 1000 carry ~1e-4 absolute error, as in transformers.
      EXPECT_LE(Nmse(expect.data(), v.data(), v.size()), pos >= 1000 ? 1e-7 : 1e-11) << neox << " " << pos;
    }
  }
  // pos 0 is the identity.
  std::vector<float> v = Gaussian(64, 3), orig = v;
  RopeConfig rope;
  rope.theta = 5e6f;
  RopeTable table(rope, 64);
  const int64_t zero[] = {0};
  table.Fill(zero);
  RopeRotate(v.data(), 1, 64, table.cos(0), table.sin(0), true);
  EXPECT_EQ(v, orig);
}

TEST(KernelOps, SoftmaxSiluMulDotWeightedSum) {
  for (int64_t n : {1, 5, 100, 1001}) {
    std::vector<float> x = Gaussian(n, 31, 4.0f), expect(n);
    double mx = -1e30, sum = 0;
    for (float v : x) mx = std::max<double>(mx, v);
    for (float v : x) sum += std::exp(v - mx);
    for (int64_t i = 0; i < n; ++i) expect[i] = static_cast<float>(std::exp(x[i] - mx) / sum);
    Softmax(x.data(), n);
    EXPECT_LE(Nmse(expect.data(), x.data(), n), 1e-12);

    std::vector<float> g = Gaussian(n, 32, 3.0f), u = Gaussian(n, 33), out(n);
    for (int64_t i = 0; i < n; ++i) expect[i] = static_cast<float>(g[i] / (1.0 + std::exp(-double(g[i]))) * u[i]);
    SiluMul(g.data(), u.data(), out.data(), n);
    EXPECT_LE(Nmse(expect.data(), out.data(), n), 1e-12);
    SiluMul(g.data(), u.data(), g.data(), n);  // aliasing gate
    EXPECT_EQ(g, out);

    std::vector<float> a = Gaussian(n, 34), b = Gaussian(n, 35);
    double dot = 0;
    for (int64_t i = 0; i < n; ++i) dot += static_cast<double>(a[i]) * b[i];
    // Attention's scores: the active dot tile, one row and one token.
    float tile_dot;
    internal::ActiveKernels().dot_tile(a.data(), n, 1, b.data(), n, 1, n, &tile_dot, 1);
    EXPECT_NEAR(tile_dot, dot, 1e-5 * (1 + std::sqrt(double(n))));
    EXPECT_EQ(F32Bits(tile_dot), F32Bits(DotRow(TensorType::kF32, a.data(), b.data(), n)));

    // Three rows of n, weighted, added in row order.
    const std::vector<float> rows = Gaussian(3 * (n + 2), 36), w = {0.5f, -0.25f, 2.0f};
    std::vector<float> y(n);
    internal::ActiveKernels().kv_weighted_sum[internal::KvSlot(TensorType::kF32)](
        w.data(), 0, 1, reinterpret_cast<const uint8_t*>(rows.data()), (n + 2) * sizeof(float), 3, n, y.data(), 0, false);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(y[i], ((0.0f + w[0] * rows[i]) + w[1] * rows[n + 2 + i]) + w[2] * rows[2 * (n + 2) + i]) << i;
  }
}

// Distance in units in the last place between float results a and b of the
// same sign (subnormals included).
int64_t UlpDistance(float a, float b) {
  return std::abs(static_cast<int64_t>(F32Bits(a)) - static_cast<int64_t>(F32Bits(b)));
}

TEST(KernelOps, ExpAccuracy) {
  // Every 61st float of [-104, 89] (about 34 million floats: 0.55 million
  // points), against exp in double.
  int64_t worst = 0;
  float worst_x = 0;
  auto check = [&](float x) {
    const double want = std::exp(static_cast<double>(x));
    const float got = internal::ref::Exp(x);
    if (want > 3.4028234663852886e38) {
      ASSERT_EQ(got, INFINITY) << x;
    } else {
      const int64_t d = UlpDistance(got, static_cast<float>(want));
      if (d > worst) worst = d, worst_x = x;
    }
  };
  for (uint32_t bits = F32Bits(-104.0f); bits > F32Bits(-0.0f); bits -= 61) check(F32FromBits(bits));
  for (uint32_t bits = 0; bits < F32Bits(89.0f); bits += 61) check(F32FromBits(bits));
  EXPECT_LE(worst, 1) << "at x = " << worst_x;
  std::printf("[          ] exp: worst %lld ulp at x = %.9g\n", static_cast<long long>(worst), worst_x);
  EXPECT_EQ(internal::ref::Exp(0.0f), 1.0f);
  EXPECT_EQ(internal::ref::Exp(-0.0f), 1.0f);
  EXPECT_EQ(internal::ref::Exp(1.0f), std::exp(1.0f));
  EXPECT_EQ(internal::ref::Exp(INFINITY), INFINITY);
  EXPECT_EQ(internal::ref::Exp(-INFINITY), 0.0f);
  EXPECT_EQ(internal::ref::Exp(200.0f), INFINITY);
  EXPECT_EQ(internal::ref::Exp(-200.0f), 0.0f);
  EXPECT_TRUE(std::isnan(internal::ref::Exp(NAN)));
  // The smallest subnormals: exp(-103.28) ~ 1.4e-45.
  EXPECT_GT(internal::ref::Exp(-103.0f), 0.0f);
  EXPECT_LE(UlpDistance(internal::ref::Exp(-100.0f), static_cast<float>(std::exp(-100.0))), 1);
}

// ---------------------------------------------------------------------------
// Small ops: every ISA gives the reference's bits (kernel_table.h)
// ---------------------------------------------------------------------------

class KernelOpsIsaTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!IsaAvailable(GetParam())) GTEST_SKIP() << "ISA " << IsaName(GetParam()) << " not available on this machine";
  }
  const internal::KernelTable& k() const { return internal::KernelsFor(GetParam()); }
  const internal::KernelTable& ref() const { return internal::RefKernelTable(); }
};

// Lengths around the 16-lane chunks and the 64-wide register blocks.
const int64_t kOpLengths[] = {1, 2, 7, 15, 16, 17, 31, 63, 64, 65, 100, 128, 2049};

// memcmp of n floats, as a gtest assertion that names the first differing index.
::testing::AssertionResult SameBits(const float* want, const float* got, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (F32Bits(want[i]) != F32Bits(got[i]))
      return ::testing::AssertionFailure() << "index " << i << ": " << want[i] << " vs " << got[i];
  return ::testing::AssertionSuccess();
}

TEST_P(KernelOpsIsaTest, RmsNormBitEqualsReference) {
  for (int64_t n : kOpLengths) {
    const std::vector<float> x = Gaussian(n, 51, 5.0f), w = Gaussian(n, 52);
    std::vector<float> want(n);
    ref().rms_norm(x.data(), w.data(), want.data(), n, 1e-6f);
    Guarded got(n);
    k().rms_norm(x.data(), w.data(), got.data(), n, 1e-6f);
    EXPECT_TRUE(got.GuardsIntact()) << n;
    EXPECT_TRUE(SameBits(want.data(), got.data(), n)) << n;
    std::vector<float> in_place = x;
    k().rms_norm(in_place.data(), w.data(), in_place.data(), n, 1e-6f);
    EXPECT_TRUE(SameBits(want.data(), in_place.data(), n)) << n;
  }
}

TEST_P(KernelOpsIsaTest, SoftmaxBitEqualsReference) {
  for (int64_t n : kOpLengths) {
    // Attention scores: a wide range, so that exp meets underflow too.
    std::vector<float> want = Gaussian(n, 53, 30.0f);
    want[n / 2] = -1e4f;
    Guarded got(n);
    std::memcpy(got.data(), want.data(), n * sizeof(float));
    ref().softmax(want.data(), n);
    k().softmax(got.data(), n);
    EXPECT_TRUE(got.GuardsIntact()) << n;
    EXPECT_TRUE(SameBits(want.data(), got.data(), n)) << n;
  }
  // All equal (every lane's max), and all negative (the tail's fill must not
  // raise the max).
  for (float v : {0.0f, -3.0f}) {
    std::vector<float> want(17, v), got(17, v);
    ref().softmax(want.data(), 17);
    k().softmax(got.data(), 17);
    EXPECT_TRUE(SameBits(want.data(), got.data(), 17));
    EXPECT_FLOAT_EQ(got[0], 1.0f / 17);
  }
}

// Attention's scaled scores and their max, as ExpSum's m.
TEST_P(KernelOpsIsaTest, ScaleMaxBitEqualsReference) {
  for (int64_t n : kOpLengths) {
    std::vector<float> want = Gaussian(n, 56, 30.0f);
    Guarded got(n);
    std::memcpy(got.data(), want.data(), n * sizeof(float));
    const float m_want = ref().scale_max(want.data(), n, 0.0883883f);
    const float m_got = k().scale_max(got.data(), n, 0.0883883f);
    EXPECT_TRUE(got.GuardsIntact()) << n;
    EXPECT_TRUE(SameBits(want.data(), got.data(), n)) << n;
    EXPECT_EQ(m_got, m_want) << n;
    EXPECT_EQ(m_got, *std::max_element(want.begin(), want.end())) << n;
  }
  // All negative: the tail's fill must not raise the max.
  std::vector<float> x(17, -3.0f);
  x[16] = -2.0f;
  EXPECT_EQ(k().scale_max(x.data(), 17, 0.5f), -1.0f);
  EXPECT_EQ(x[0], -1.5f);
}

TEST_P(KernelOpsIsaTest, SiluMulBitEqualsReference) {
  for (int64_t n : kOpLengths) {
    std::vector<float> g = Gaussian(n, 54, 4.0f), u = Gaussian(n, 55);
    // exp(-g) overflows and underflows, and NaN passes through.
    g[0] = -120.0f;
    if (n > 1) g[1] = 95.0f;
    if (n > 2) g[2] = NAN;
    if (n > 3) g[3] = -0.0f;
    std::vector<float> want(n);
    ref().silu_mul(g.data(), u.data(), want.data(), n);
    Guarded got(n);
    k().silu_mul(g.data(), u.data(), got.data(), n);
    EXPECT_TRUE(got.GuardsIntact()) << n;
    EXPECT_TRUE(SameBits(want.data(), got.data(), n)) << n;
    k().silu_mul(g.data(), u.data(), g.data(), n);  // out aliases gate
    EXPECT_TRUE(SameBits(want.data(), g.data(), n)) << n;
  }
}

// n_rows rows of n Gaussian values stored in `type`, `stride` bytes apart
// (a cache's rows: one kv head's slice of wider rows), and the same rows
// dequantized to f32, n apart.
struct StoredRows {
  uint64_t stride;
  std::vector<uint8_t> bytes;
  std::vector<float> f32;
  StoredRows(TensorType type, int64_t n_rows, int64_t n, uint64_t seed)
      : stride(*RowBytes(type, n) + 6), bytes(n_rows * stride, 0xA5), f32(n_rows * n) {
    const std::vector<float> x = Gaussian(n_rows * n, seed);
    const internal::DequantFn dequant = internal::RefKernelTable().dequant[internal::DequantSlot(type)];
    for (int64_t r = 0; r < n_rows; ++r) {
      QuantizeRow(type, x.data() + r * n, bytes.data() + r * stride, n);
      dequant(bytes.data() + r * stride, f32.data() + r * n, n);
    }
  }
};

const TensorType kKvTypes[] = {TensorType::kF32, TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0};

// Attention's weighted V sum on rows in each cache type: the reference's bits
// on every ISA, and rows summed in two calls (a ring's two runs) give the
// bits of one.
TEST_P(KernelOpsIsaTest, KvWeightedSumBitEqualsReference) {
  for (TensorType type : kKvTypes) {
    const int slot = internal::KvSlot(type);
    for (int64_t n : kOpLengths) {
      if (n % Traits(type).block_elems != 0) continue;
      for (int64_t n_rows : {1, 3, 40}) {
        // 1 set, a block of 4, and 4 + 1.
        for (int n_sets : {1, 4, 5}) {
          const int64_t w_stride = n_rows + 2, y_stride = n + 3, y_size = (n_sets - 1) * y_stride + n;
          const StoredRows rows(type, n_rows, n, 56);
          const std::vector<float> w = Gaussian(n_sets * w_stride, 57);
          std::vector<float> want(y_size, kGuard);
          ref().kv_weighted_sum[slot](w.data(), w_stride, n_sets, rows.bytes.data(), rows.stride, n_rows, n, want.data(),
                                      y_stride, false);
          Guarded got(y_size);
          k().kv_weighted_sum[slot](w.data(), w_stride, n_sets, rows.bytes.data(), rows.stride, n_rows, n, got.data(),
                                    y_stride, false);
          EXPECT_TRUE(got.GuardsIntact()) << n;
          // The gaps between sets stay untouched too.
          EXPECT_TRUE(SameBits(want.data(), got.data(), y_size))
              << TypeName(type) << " " << n << " x " << n_rows << ", " << n_sets << " sets";
          // The same sum over the dequantized f32 rows.
          Guarded from_f32(y_size);
          k().kv_weighted_sum[0](w.data(), w_stride, n_sets, reinterpret_cast<const uint8_t*>(rows.f32.data()),
                                 n * sizeof(float), n_rows, n, from_f32.data(), y_stride, false);
          EXPECT_TRUE(SameBits(want.data(), from_f32.data(), y_size)) << TypeName(type) << " " << n;
          const int64_t a = n_rows / 2;
          Guarded split(y_size);
          k().kv_weighted_sum[slot](w.data(), w_stride, n_sets, rows.bytes.data(), rows.stride, a, n, split.data(),
                                    y_stride, false);
          k().kv_weighted_sum[slot](w.data() + a, w_stride, n_sets, rows.bytes.data() + a * rows.stride, rows.stride,
                                    n_rows - a, n, split.data(), y_stride, true);
          EXPECT_TRUE(split.GuardsIntact()) << n;
          for (int g = 0; g < n_sets; ++g)
            EXPECT_TRUE(SameBits(want.data() + g * y_stride, split.data() + g * y_stride, n)) << n << " split at " << a;
        }
      }
    }
  }
}

// Attention's scores on rows in each cache type: the bits of this ISA's
// dot_tile over the dequantized rows, for any number of rows and query
// vectors (the register blocks and their remainders).
TEST_P(KernelOpsIsaTest, KvDotBitEqualsDotTileOnDequantizedRows) {
  for (TensorType type : kKvTypes) {
    const int slot = internal::KvSlot(type);
    for (int64_t n : kOpLengths) {
      if (n % Traits(type).block_elems != 0) continue;
      for (int64_t n_rows : {1, 3, 5, 9, 64}) {
        for (int64_t n_tok : {1, 2, 4, 5, 8}) {
          const StoredRows rows(type, n_rows, n, 58);
          const int64_t xs = n + 1, ys = n_rows + 2;
          const std::vector<float> x = Gaussian(n_tok * xs, 59);
          std::vector<float> want(n_tok * ys, kGuard), got(n_tok * ys, kGuard);
          k().dot_tile(rows.f32.data(), n, n_rows, x.data(), xs, n_tok, n, want.data(), ys);
          k().kv_dot[slot](rows.bytes.data(), rows.stride, n_rows, x.data(), xs, n_tok, n, got.data(), ys);
          EXPECT_TRUE(SameBits(want.data(), got.data(), want.size()))
              << TypeName(type) << " " << n << " x " << n_rows << " rows, " << n_tok << " vectors";
        }
      }
    }
  }
}

TEST_P(KernelOpsIsaTest, RopeRotateBitEqualsReference) {
  for (int head_dim : {2, 6, 16, 34, 64, 128}) {
    const int n_heads = 3, half = head_dim / 2;
    const std::vector<float> cos = Gaussian(half, 58), sin = Gaussian(half, 59);
    for (bool neox : {true, false}) {
      std::vector<float> want = Gaussian(n_heads * head_dim, 60);
      Guarded got(n_heads * head_dim);
      std::memcpy(got.data(), want.data(), want.size() * sizeof(float));
      ref().rope_rotate(want.data(), n_heads, head_dim, cos.data(), sin.data(), neox);
      k().rope_rotate(got.data(), n_heads, head_dim, cos.data(), sin.data(), neox);
      EXPECT_TRUE(got.GuardsIntact()) << head_dim;
      EXPECT_TRUE(SameBits(want.data(), got.data(), n_heads * head_dim)) << head_dim << " neox " << neox;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, KernelOpsIsaTest, ::testing::ValuesIn(kAllIsas),
                         [](const auto& info) { return std::string(IsaName(info.param)); });

// A KV cache of `capacity` rows in `type` holding positions [lo, hi) of the
// f32 rows k, v ([positions][kv_dim]) at row p % capacity.
struct TypedCache {
  TensorType type;
  uint64_t row_bytes;
  int64_t capacity;
  std::vector<uint8_t> k, v;
  TypedCache(TensorType t, const std::vector<float>& kf, const std::vector<float>& vf, int64_t kv_dim, int64_t lo, int64_t hi,
             int64_t cap)
      : type(t), row_bytes(*RowBytes(t, kv_dim)), capacity(cap), k(cap * row_bytes), v(cap * row_bytes) {
    for (int64_t p = lo; p < hi; ++p) {
      QuantizeRow(t, kf.data() + p * kv_dim, k.data() + (p % cap) * row_bytes, kv_dim);
      QuantizeRow(t, vf.data() + p * kv_dim, v.data() + (p % cap) * row_bytes, kv_dim);
    }
  }
  KvView view() const { return {type, k.data(), v.data(), row_bytes, capacity}; }
};

// Attention against a double-precision formula over a cache long enough to
// span three segments (each cache type within its rounding), and a token's
// outputs do not depend on how its sequence is batched, threaded or split:
// prompt blocks and a decoding token's segment split give the same bits.
TEST(KernelOps, CausalAttention) {
  const AttentionShape shape{8, 2, 64};
  const int64_t q_dim = 8 * 64, kv_dim = 2 * 64, pos0 = 2 * kAttnSegment + 37, n_tok = 40, n_pos = pos0 + n_tok;
  const std::vector<float> q = Gaussian(n_tok * q_dim, 61), kc = Gaussian(n_pos * kv_dim, 62), vc = Gaussian(n_pos * kv_dim, 63);
  std::vector<float> expect(n_tok * q_dim);
  for (int64_t t = 0; t < n_tok; ++t) {
    for (int h = 0; h < 8; ++h) {
      const int kvh = h / 4;
      std::vector<double> p(pos0 + t + 1);
      double mx = -1e300, sum = 0;
      for (int64_t j = 0; j <= pos0 + t; ++j) {
        double d = 0;
        for (int i = 0; i < 64; ++i) d += double(q[t * q_dim + h * 64 + i]) * kc[j * kv_dim + kvh * 64 + i];
        p[j] = 2.0 * d / 8.0;  // sharper than random: the softmax matters
        mx = std::max(mx, p[j]);
      }
      for (double& v : p) sum += (v = std::exp(v - mx));
      for (int i = 0; i < 64; ++i) {
        double o = 0;
        for (int64_t j = 0; j <= pos0 + t; ++j) o += p[j] / sum * vc[j * kv_dim + kvh * 64 + i];
        expect[t * q_dim + h * 64 + i] = static_cast<float>(o);
      }
    }
  }
  std::vector<float> q2 = q;
  for (float& x : q2) x *= 2.0f;  // exact
  ThreadPool pool(2);
  for (auto [type, limit] : {std::pair{TensorType::kF32, 1e-12}, {TensorType::kF16, 1e-6}, {TensorType::kBF16, 1e-4},
                             {TensorType::kQ8_0, 1e-3}}) {
    SCOPED_TRACE(TypeName(type));
    const TypedCache cache(type, kc, vc, kv_dim, 0, n_pos, n_pos);
    std::vector<float> batched(n_tok * q_dim);
    CausalAttention(shape, q2.data(), cache.view(), pos0, n_tok, 0, batched.data(), &pool);
    EXPECT_LE(Nmse(expect.data(), batched.data(), batched.size()), limit);
    for (int64_t t = 0; t < n_tok; t += 7) {
      std::vector<float> one(q_dim), alone(q_dim);
      CausalAttention(shape, q2.data() + t * q_dim, cache.view(), pos0 + t, 1, 0, one.data(), &pool);  // segments on 2 threads
      CausalAttention(shape, q2.data() + t * q_dim, cache.view(), pos0 + t, 1, 0, alone.data(), nullptr);
      EXPECT_TRUE(SameBits(batched.data() + t * q_dim, one.data(), q_dim)) << "token " << t;
      EXPECT_TRUE(SameBits(one.data(), alone.data(), q_dim)) << "token " << t;
    }
  }
}

// A sliding window over a ring: the same bits as the window over a full
// cache, wherever the ring wraps, for every cache type; and a window as long
// as the context is full attention.
TEST(KernelOps, CausalAttentionWindowOverRing) {
  const AttentionShape shape{4, 2, 32};
  const int64_t q_dim = 4 * 32, kv_dim = 2 * 32, window = 70, pos0 = 1100, n_tok = 3, n_pos = pos0 + n_tok;
  const std::vector<float> q = Gaussian(n_tok * q_dim, 64), kc = Gaussian(n_pos * kv_dim, 65), vc = Gaussian(n_pos * kv_dim, 66);
  for (TensorType type : {TensorType::kF32, TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0}) {
    SCOPED_TRACE(TypeName(type));
    const TypedCache full(type, kc, vc, kv_dim, 0, n_pos, n_pos);
    std::vector<float> want(n_tok * q_dim), all(n_tok * q_dim), whole(n_tok * q_dim);
    CausalAttention(shape, q.data(), full.view(), pos0, n_tok, window, want.data(), nullptr);
    CausalAttention(shape, q.data(), full.view(), pos0, n_tok, 0, all.data(), nullptr);
    CausalAttention(shape, q.data(), full.view(), pos0, n_tok, n_pos, whole.data(), nullptr);
    EXPECT_TRUE(SameBits(all.data(), whole.data(), all.size()));
    EXPECT_FALSE(SameBits(all.data(), want.data(), all.size()));  // the window changes the answer
    for (int64_t capacity : {window - 1 + n_tok, window + 2, int64_t{100}, int64_t{128}}) {
      const TypedCache ring(type, kc, vc, kv_dim, pos0 - window + 1, n_pos, capacity);
      std::vector<float> got(n_tok * q_dim);
      ThreadPool pool(2);
      CausalAttention(shape, q.data(), ring.view(), pos0, n_tok, window, got.data(), &pool);
      EXPECT_TRUE(SameBits(want.data(), got.data(), want.size())) << "capacity " << capacity;
    }
  }
}

// ---------------------------------------------------------------------------
// Real tensors from the shared GGUF files
// ---------------------------------------------------------------------------

TEST(KernelRealData, Q4KMFileAgainstBf16File) {
  const std::string dir = std::string(STRATA_SHARED_DIR) + "/models/";
  auto bf16 = GgufFile::Open(dir + "smol-shakespeare.llamacpp-bf16.gguf");
  auto q4 = GgufFile::Open(dir + "smol-shakespeare.llamacpp-q4_k_m.gguf");
  if (!bf16.ok() || !q4.ok()) GTEST_SKIP() << "shared GGUF files not readable: " << bf16.status().ToString() << " / "
                                           << q4.status().ToString();
  for (const char* name : {"blk.0.ffn_down.weight", "blk.0.attn_q.weight", "blk.0.ffn_up.weight"}) {
    const GgufTensor* tb = (*bf16)->FindTensor(name);
    const GgufTensor* tq = (*q4)->FindTensor(name);
    ASSERT_NE(tb, nullptr) << name;
    ASSERT_NE(tq, nullptr) << name;
    ASSERT_EQ(tb->ne[0], tq->ne[0]);
    ASSERT_EQ(tb->ne[1], tq->ne[1]);
    const int64_t n_in = tb->ne[0], n_out = tb->ne[1];
    const uint64_t rb_b = Bytes(tb->type, n_in), rb_q = Bytes(tq->type, n_in);
    std::vector<float> wb(n_in * n_out), wq(n_in * n_out), wmine(n_in * n_out);
    for (int64_t r = 0; r < n_out; ++r) {
      DequantizeRow(tb->type, tb->data + r * rb_b, wb.data() + r * n_in, n_in);
      DequantizeRow(tq->type, tq->data + r * rb_q, wq.data() + r * n_in, n_in);
    }
    // Our quantizer on the same weights must be about as good as llama.cpp's.
    std::vector<uint8_t> mine(rb_q);
    for (int64_t r = 0; r < n_out; ++r) {
      QuantizeRow(tq->type, wb.data() + r * n_in, mine.data(), n_in);
      DequantizeRow(tq->type, mine.data(), wmine.data() + r * n_in, n_in);
    }
    const double file_nmse = Nmse(wb.data(), wq.data(), wb.size());
    const double mine_nmse = Nmse(wb.data(), wmine.data(), wb.size());
    std::printf("[          ] %s [%lld x %lld] %s: llama.cpp NMSE %.3g, strata quantizer NMSE %.3g\n", name,
                static_cast<long long>(n_out), static_cast<long long>(n_in), TypeName(tq->type), file_nmse, mine_nmse);
    EXPECT_LE(file_nmse, 0.02) << name;  // the file decodes to the same weights, up to quantization
    EXPECT_LE(mine_nmse, file_nmse * 1.5) << name;

    // MatMul on real weights: every ISA against ref, and quantized vs bf16.
    const int64_t n_tok = 5;
    std::vector<float> x = Gaussian(n_in * n_tok, 8);
    std::vector<float> yb(n_out * n_tok), yref(n_out * n_tok), y(n_out * n_tok);
    ThreadPool pool(3);
    MatMul(MatrixView{tb->type, tb->data, n_in, n_out, rb_b}, x.data(), n_tok, yb.data(), &pool);
    const MatrixView vq{tq->type, tq->data, n_in, n_out, rb_q};
    MatMul(Isa::kRef, vq, x.data(), n_tok, yref.data(), nullptr);
    EXPECT_LE(Nmse(yb.data(), yref.data(), y.size()), 0.03) << name;
    for (Isa isa : kAllIsas) {
      if (!IsaAvailable(isa)) continue;
      MatMul(isa, vq, x.data(), n_tok, y.data(), &pool);
      EXPECT_LE(Nmse(yref.data(), y.data(), y.size()), 1e-10) << name << " " << IsaName(isa);
    }
  }
}

}  // namespace
}  // namespace strata
