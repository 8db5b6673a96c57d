// Rotary frequencies and per-batch cos / sin tables (rope.h).
#include "model/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace strata {
namespace {

// theta^(2i / head_dim) in float32, as transformers' base ** (arange(0, d, 2).float() / d).
float PosFreq(int i, int head_dim, float theta) {
  const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
  return std::pow(theta, exponent);
}

// YaRN (transformers' _compute_yarn_parameters): frequencies below the
// correction range are interpolated (divided by factor), above it kept, with a
// linear ramp between; the range's ends are the dimensions whose wavelength
// turns beta_fast / beta_slow times over the original context.
std::vector<float> YarnInvFreq(const RopeConfig& r, int head_dim) {
  const int half = head_dim / 2;
  const double base = r.theta;
  auto correction_dim = [&](double rotations) {
    return (head_dim * std::log(r.original_ctx / (rotations * 2 * std::numbers::pi))) / (2 * std::log(base));
  };
  const double low = std::max(std::floor(correction_dim(r.beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(r.beta_slow)), static_cast<double>(head_dim - 1));
  if (low == high) high += 0.001;  // as transformers: no division by zero
  std::vector<float> inv(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) {
    const float pos_freq = PosFreq(i, head_dim, r.theta);
    const float extrapolation = 1.0f / pos_freq;
    const float interpolation = 1.0f / (r.factor * pos_freq);
    const float ramp = std::clamp((static_cast<float>(i) - static_cast<float>(low)) / static_cast<float>(high - low), 0.0f, 1.0f);
    const float extrapolation_factor = 1.0f - ramp;
    inv[i] = interpolation * (1.0f - extrapolation_factor) + extrapolation * extrapolation_factor;
  }
  return inv;
}

// Llama 3.1 (transformers' _compute_llama3_parameters): wavelengths longer
// than original_ctx / low_freq_factor are divided by factor, shorter than
// original_ctx / high_freq_factor kept, a smooth mix between.
void ApplyLlama3(const RopeConfig& r, std::vector<float>* inv) {
  const double low_wavelen = r.original_ctx / r.low_freq_factor;
  const double high_wavelen = r.original_ctx / r.high_freq_factor;
  for (float& f : *inv) {
    const float wavelen = static_cast<float>(2 * std::numbers::pi) / f;
    float scaled = wavelen > low_wavelen ? f / r.factor : f;
    if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
      const float smooth = (static_cast<float>(r.original_ctx) / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
      scaled = (1.0f - smooth) * scaled / r.factor + smooth * scaled;
    }
    f = scaled;
  }
}

}  // namespace

std::vector<float> RopeInvFreq(const RopeConfig& r, int head_dim) {
  if (r.scaling == RopeScaling::kYarn) return YarnInvFreq(r, head_dim);
  std::vector<float> inv(static_cast<size_t>(head_dim / 2));
  for (int i = 0; i < head_dim / 2; ++i) inv[i] = 1.0f / PosFreq(i, head_dim, r.theta);
  if (r.scaling == RopeScaling::kLlama3) ApplyLlama3(r, &inv);
  // llama.cpp's rope_freqs.weight: theta_i / factor_i.
  for (size_t i = 0; i < r.freq_factors.size() && i < inv.size(); ++i) inv[i] /= r.freq_factors[i];
  return inv;
}

RopeTable::RopeTable(const RopeConfig& rope, int head_dim)
    : inv_freq_(RopeInvFreq(rope, head_dim)),
      attention_factor_(rope.scaling == RopeScaling::kYarn ? rope.attention_factor : 1.0f),
      half_(head_dim / 2) {}

void RopeTable::Fill(std::span<const int64_t> positions) {
  cos_.resize(positions.size() * half_);
  sin_.resize(positions.size() * half_);
  for (size_t t = 0; t < positions.size(); ++t) {
    float* c = cos_.data() + t * half_;
    float* s = sin_.data() + t * half_;
    for (int i = 0; i < half_; ++i) {
      const float angle = static_cast<float>(positions[t]) * inv_freq_[i];
      c[i] = std::cos(angle) * attention_factor_;
      s[i] = std::sin(angle) * attention_factor_;
    }
  }
}

}  // namespace strata
