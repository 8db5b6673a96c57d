// The shared lm_head's split and how it adapts (see lm_head_share.h).
#include "coordinator/lm_head_share.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

namespace strata {

Result<LmHeadShareSpec> ParseLmHeadShare(const std::string& text) {
  LmHeadShareSpec s;
  if (text == "off") return s;
  if (text == "auto") {
    // A quarter of SmolLM3-3B's lm_head is about one layer's work: the split
    // starts there and moves a layer's worth either way.
    s.on = s.adaptive = true;
    s.fraction = 0.25;
    s.max_fraction = 0.5;
    return s;
  }
  char* end = nullptr;
  const double f = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || !(f >= 0 && f <= 1))
    return InvalidArgument("--share-lm-head '" + text + "': expected off, auto, or the fraction of the vocabulary rank 0 computes (0 to 1)");
  s.on = true;
  s.fraction = s.max_fraction = f;
  return s;
}

int64_t LmHeadRows(int64_t vocab, double fraction) {
  const int64_t rows = static_cast<int64_t>(std::llround(static_cast<double>(vocab) * fraction / 8.0)) * 8;
  return std::clamp<int64_t>(rows, 0, vocab - vocab % 8);
}

LmHeadShare::LmHeadShare(int64_t vocab, int64_t max_rows, int64_t start_rows, bool adaptive)
    : vocab_(vocab), max_rows_(max_rows), rows_(std::clamp<int64_t>(start_rows, 0, max_rows)), adaptive_(adaptive) {}

void LmHeadShare::Observe(double first_s, double last_s, int64_t rows, double first_lm_head_s) {
  if (!adaptive_) return;
  // A row's cost from enough rows that the call's fixed overhead is small.
  if (rows >= std::max<int64_t>(256, vocab_ / 64) && first_lm_head_s > 0) {
    const double c = first_lm_head_s / static_cast<double>(rows);
    row_cost_s_ = row_cost_s_ > 0 ? 0.8 * row_cost_s_ + 0.2 * c : c;
  }
  if (row_cost_s_ <= 0) return;
  // Where this batch's times say the split belongs: moving r rows changes
  // the difference by 2 r row_cost. The estimate is relative to the rows the
  // batch ran with (other batches in flight may have moved the split since),
  // bounded to a quarter of the range from there (a stalled rank's one slow
  // micro-batch must not throw the split to an end), and the split follows
  // the estimates smoothly.
  const double quarter = static_cast<double>(max_rows_) / 4;
  const double want = static_cast<double>(rows) +
                      std::clamp((last_s - first_s) / (2 * row_cost_s_), -quarter, quarter);
  const double target = std::clamp(want, 0.0, static_cast<double>(max_rows_));
  int64_t next = static_cast<int64_t>(std::llround((rows_ + 0.3 * (target - rows_)) / 8.0)) * 8;
  // Steps of a whole group at least, so that the split reaches the target.
  if (next == rows_ && std::abs(target - rows_) >= 8) next += target > rows_ ? 8 : -8;
  rows_ = std::clamp<int64_t>(next, 0, max_rows_);
}

}  // namespace strata
