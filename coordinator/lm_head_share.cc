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
    // A quarter of SmolLM3-3B's lm_head is about one layer's work: the plan
    // counts that much on rank 0, which can take a layer's worth either way.
    s.on = s.steal = true;
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

LmHeadShare::LmHeadShare(int64_t vocab, int64_t rows, bool steal)
    : vocab_(vocab), rows_(std::clamp<int64_t>(rows, 0, vocab)), steal_(steal) {}

void LmHeadShare::Record(int64_t rows) {
  recorded_rows_ += static_cast<double>(rows);
  ++batches_;
}

int64_t LmHeadShare::mean_rows() const {
  return batches_ == 0 ? rows_ : std::llround(recorded_rows_ / static_cast<double>(batches_));
}

}  // namespace strata
