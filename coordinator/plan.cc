// The layer plan: parsing explicit ranges and plan files, checking them
// against the model, and the "auto" balancer. Runs on every rank at start-up,
// before any weight is loaded; see plan.h for the cost model.
#include "coordinator/plan.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "model/model_files.h"

namespace strata {
namespace {

// A plan file is a few hundred bytes; anything this large is not one.
constexpr uint64_t kMaxPlanFileBytes = 1 << 20;

// A range as written, before it is checked against the model. int64 so that
// "0-99999999999" is reported as outside the model, not wrapped.
struct RawRange {
  int64_t first = 0;
  int64_t last = 0;
};

std::string RangeText(int64_t first, int64_t last) {
  return first == last ? std::to_string(first) : std::to_string(first) + "-" + std::to_string(last);
}

std::string LayersText(int64_t first, int64_t last) {
  return (first == last ? "layer " : "layers ") + RangeText(first, last);
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// Range text is digits, '-', ',' and blanks; anything else is a file name.
bool LooksLikeRanges(const std::string& spec) {
  return spec.find_first_not_of("0123456789-, \t") == std::string::npos;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A non-negative decimal; values past int64 saturate (they are out of range
// for any model anyway). False when `text` is not all digits.
bool ParseLayer(const std::string& text, int64_t* out) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos) return false;
  uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec == std::errc::result_out_of_range) v = std::numeric_limits<uint64_t>::max();
  else if (ec != std::errc() || ptr != text.data() + text.size()) return false;
  *out = static_cast<int64_t>(std::min<uint64_t>(v, std::numeric_limits<int64_t>::max()));
  return true;
}

// "0-8,9-17,18" -> ranges, in the order written.
Result<std::vector<RawRange>> ParseRangeText(const std::string& spec) {
  std::vector<RawRange> ranges;
  size_t pos = 0;
  while (true) {
    size_t comma = spec.find(',', pos);
    std::string token = Trim(spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
    if (token.empty())
      return InvalidArgument("layer plan '" + spec + "': empty range (expected FIRST-LAST or LAYER between commas)");
    RawRange r;
    size_t dash = token.find('-');
    bool ok = dash == std::string::npos
                  ? ParseLayer(token, &r.first)
                  : ParseLayer(Trim(token.substr(0, dash)), &r.first) && ParseLayer(Trim(token.substr(dash + 1)), &r.last);
    if (dash == std::string::npos) r.last = r.first;
    if (!ok)
      return InvalidArgument("layer plan '" + spec + "': malformed range '" + token +
                             "' (expected FIRST-LAST or LAYER, e.g. '0-8' or '5')");
    ranges.push_back(r);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return ranges;
}

// A JSON plan file: {"model": ..., "stages": [{"layers": [first, last]}, ...]}.
Result<std::vector<RawRange>> ReadPlanFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    return InvalidArgument("cannot read plan file '" + path + "': no such file");
  if (!std::filesystem::is_regular_file(path, ec))
    return InvalidArgument("cannot read plan file '" + path + "': not a regular file");
  uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) return InvalidArgument("cannot read plan file '" + path + "': " + ec.message());
  if (size > kMaxPlanFileBytes)
    return InvalidArgument("plan file '" + path + "' is " + std::to_string(size) + " bytes, expected at most " +
                           std::to_string(kMaxPlanFileBytes));
  std::ifstream in(path, std::ios::binary);
  if (!in) return InvalidArgument("cannot read plan file '" + path + "': " + std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) return InvalidArgument("cannot read plan file '" + path + "': read error");

  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::parse_error& e) {
    return InvalidArgument("plan file '" + path + "' is not valid JSON: " + e.what());
  }
  const std::string shape = " (expected {\"stages\": [{\"layers\": [FIRST, LAST]}, ...]})";
  if (!doc.is_object()) return InvalidArgument("plan file '" + path + "': top level is not an object" + shape);
  auto stages = doc.find("stages");
  if (stages == doc.end()) return InvalidArgument("plan file '" + path + "': no \"stages\" key" + shape);
  if (!stages->is_array()) return InvalidArgument("plan file '" + path + "': \"stages\" is not an array" + shape);

  std::vector<RawRange> ranges;
  for (size_t i = 0; i < stages->size(); ++i) {
    const nlohmann::json& stage = (*stages)[i];
    std::string where = "plan file '" + path + "': stages[" + std::to_string(i) + "]";
    if (!stage.is_object()) return InvalidArgument(where + " is not an object" + shape);
    auto layers = stage.find("layers");
    if (layers == stage.end()) return InvalidArgument(where + " has no \"layers\"" + shape);
    if (!layers->is_array() || layers->size() != 2)
      return InvalidArgument(where + ".layers is " + layers->dump() + ", expected [FIRST, LAST]");
    int64_t v[2];
    for (int k = 0; k < 2; ++k) {
      const nlohmann::json& x = (*layers)[k];
      if (x.is_number_unsigned()) {
        v[k] = static_cast<int64_t>(std::min<uint64_t>(x.get<uint64_t>(), std::numeric_limits<int64_t>::max()));
      } else {
        return InvalidArgument(where + ".layers is " + layers->dump() +
                               ", expected [FIRST, LAST] of non-negative integers");
      }
    }
    ranges.push_back({v[0], v[1]});
  }
  return ranges;
}

// Every check an explicit plan must pass, in the order a user would want to
// hear about them. Stage i is range i.
Status CheckRanges(const std::vector<RawRange>& ranges, int n_stages, int n_layers) {
  for (const RawRange& r : ranges)
    if (r.first > r.last)
      return InvalidArgument("reversed range '" + std::to_string(r.first) + "-" + std::to_string(r.last) +
                             "': the first layer comes after the last");
  if (static_cast<int64_t>(ranges.size()) != n_stages)
    return InvalidArgument(std::to_string(ranges.size()) + (ranges.size() == 1 ? " range for " : " ranges for ") +
                           std::to_string(n_stages) + (n_stages == 1 ? " stage" : " stages"));
  for (const RawRange& r : ranges)
    if (r.last >= n_layers)
      return InvalidArgument("layer " + std::to_string(r.last) + " is outside the model's " +
                             std::to_string(n_layers) + " layers (range '" + RangeText(r.first, r.last) + "')");
  for (size_t i = 0; i < ranges.size(); ++i)
    for (size_t j = i + 1; j < ranges.size(); ++j) {
      int64_t lo = std::max(ranges[i].first, ranges[j].first);
      int64_t hi = std::min(ranges[i].last, ranges[j].last);
      if (lo <= hi)
        return InvalidArgument(LayersText(lo, hi) + (lo == hi ? " is" : " are") + " in both stage " +
                               std::to_string(i) + " (" + RangeText(ranges[i].first, ranges[i].last) +
                               ") and stage " + std::to_string(j) + " (" +
                               RangeText(ranges[j].first, ranges[j].last) + ")");
    }
  std::vector<bool> covered(static_cast<size_t>(n_layers), false);
  for (const RawRange& r : ranges)
    for (int64_t l = r.first; l <= r.last; ++l) covered[static_cast<size_t>(l)] = true;
  for (int l = 0; l < n_layers; ++l) {
    if (covered[static_cast<size_t>(l)]) continue;
    int e = l;
    while (e + 1 < n_layers && !covered[static_cast<size_t>(e + 1)]) ++e;
    return InvalidArgument(LayersText(l, e) + (l == e ? " is" : " are") + " not in any stage");
  }
  // No gap, no overlap: a partition. Stage i must follow stage i-1 along the pipeline.
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first != ranges[i - 1].last + 1)
      return InvalidArgument("stage " + std::to_string(i) + " (" + RangeText(ranges[i].first, ranges[i].last) +
                             ") comes after stage " + std::to_string(i - 1) + " (" +
                             RangeText(ranges[i - 1].first, ranges[i - 1].last) +
                             "): stages must hold ascending layers");
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// auto: exact min-max partition, then the most even among the optimal ones.

std::vector<LayerRange> AutoRanges(int n_stages, const std::vector<uint64_t>& prefix, uint64_t lm_head) {
  const int L = static_cast<int>(prefix.size()) - 1;
  const int S = n_stages;
  // Cost of a stage holding layers [j, i); only the last stage ends at L.
  auto seg = [&](int j, int i) { return prefix[i] - prefix[j] + (i == L ? lm_head : 0); };
  constexpr uint64_t kNone = std::numeric_limits<uint64_t>::max();

  // minmax[k][i]: the least largest cost of k stages covering layers [0, i).
  std::vector<std::vector<uint64_t>> minmax(S + 1, std::vector<uint64_t>(L + 1, kNone));
  for (int i = 1; i <= L; ++i) minmax[1][i] = seg(0, i);
  for (int k = 2; k <= S; ++k)
    for (int i = k; i <= L; ++i)
      for (int j = k - 1; j < i; ++j) minmax[k][i] = std::min(minmax[k][i], std::max(minmax[k - 1][j], seg(j, i)));
  const uint64_t bound = minmax[S][L];

  // sumsq[k][i]: the least sum of squared stage costs of k stages covering
  // [0, i) with every stage <= bound; from[k][i]: where stage k-1 starts.
  // Exact: the total is < 2^64 (checked by the caller), so the sum of squares
  // is < 2^128.
  using U128 = unsigned __int128;
  const U128 kInf = ~U128(0);
  std::vector<std::vector<U128>> sumsq(S + 1, std::vector<U128>(L + 1, kInf));
  std::vector<std::vector<int>> from(S + 1, std::vector<int>(L + 1, -1));
  sumsq[0][0] = 0;
  for (int k = 1; k <= S; ++k)
    for (int i = k; i <= L; ++i)
      // j ascending and strict '<': on a tie this stage starts earliest, i.e.
      // takes the most layers, leaving fewer to the stages before it.
      for (int j = k - 1; j < i; ++j) {
        uint64_t c = seg(j, i);
        if (c > bound || sumsq[k - 1][j] == kInf) continue;
        U128 total = sumsq[k - 1][j] + U128(c) * c;
        if (total < sumsq[k][i]) sumsq[k][i] = total, from[k][i] = j;
      }
  STRATA_CHECK(from[S][L] >= 0);

  std::vector<LayerRange> ranges(static_cast<size_t>(S));
  for (int k = S, i = L; k >= 1; --k) {
    int j = from[k][i];
    ranges[static_cast<size_t>(k - 1)] = LayerRange{j, i - 1};
    i = j;
  }
  return ranges;
}

}  // namespace

PlanCosts CostsOf(const ModelFiles& model) {
  PlanCosts costs;
  const int n_layers = model.config().n_layers;
  costs.layer_bytes.reserve(static_cast<size_t>(std::max(n_layers, 0)));
  for (int i = 0; i < n_layers; ++i) costs.layer_bytes.push_back(model.LayerBytes(i));
  costs.embedding_bytes = model.EmbeddingBytes();
  costs.output_bytes = model.OutputBytes();
  costs.tied = model.config().tied_embeddings;
  return costs;
}

Result<LayerPlan> MakeLayerPlan(const std::string& spec_in, int n_stages, const PlanCosts& costs) {
  if (n_stages < 1) return InvalidArgument("layer plan for " + std::to_string(n_stages) + " stages: need at least 1");
  if (costs.layer_bytes.size() > static_cast<size_t>(INT_MAX))
    return InvalidArgument("layer plan: " + std::to_string(costs.layer_bytes.size()) + " layers is too many");
  const int n_layers = static_cast<int>(costs.layer_bytes.size());
  if (n_stages > n_layers)
    return InvalidArgument(std::to_string(n_stages) + " stages for a model of " + std::to_string(n_layers) +
                           " layers: every stage needs at least one layer");

  // prefix[i]: bytes of layers [0, i); overflow-checked once here so every
  // sum below (stage costs, weight_bytes) fits.
  std::vector<uint64_t> prefix(static_cast<size_t>(n_layers) + 1, 0);
  const uint64_t lm_head = costs.lm_head_bytes();
  for (int i = 0; i < n_layers; ++i) {
    if (costs.layer_bytes[i] > std::numeric_limits<uint64_t>::max() - lm_head - prefix[i])
      return InvalidArgument("layer plan: the model's weight bytes overflow 64 bits");
    prefix[i + 1] = prefix[i] + costs.layer_bytes[i];
  }

  const std::string spec = Trim(spec_in);
  LayerPlan plan;
  std::vector<LayerRange> ranges;
  if (spec.empty()) {
    return InvalidArgument("empty layer plan: expected \"auto\", ranges such as \"0-8,9-17\", or a plan file");
  } else if (spec == "auto") {
    plan.source = "auto";
    ranges = AutoRanges(n_stages, prefix, lm_head);
  } else {
    std::vector<RawRange> raw;
    std::error_code ec;
    bool is_file = !LooksLikeRanges(spec) && (EndsWith(spec, ".json") || std::filesystem::exists(spec, ec));
    if (is_file) {
      plan.source = spec;
      STRATA_ASSIGN_OR_RETURN(raw, ReadPlanFile(spec));
      if (static_cast<int64_t>(raw.size()) != n_stages)
        return InvalidArgument("plan file '" + spec + "' has " + std::to_string(raw.size()) + " stages, expected " +
                               std::to_string(n_stages) + " (one per pipeline rank)");
      STRATA_RETURN_IF_ERROR(CheckRanges(raw, n_stages, n_layers).WithContext("plan file '" + spec + "'"));
    } else {
      plan.source = "explicit";
      STRATA_ASSIGN_OR_RETURN(raw, ParseRangeText(spec));
      STRATA_RETURN_IF_ERROR(CheckRanges(raw, n_stages, n_layers).WithContext("layer plan '" + spec + "'"));
    }
    for (const RawRange& r : raw) ranges.push_back(LayerRange{static_cast<int>(r.first), static_cast<int>(r.last)});
  }

  for (size_t s = 0; s < ranges.size(); ++s) {
    StagePlan stage;
    stage.layers = ranges[s];
    stage.first = s == 0;
    stage.last = s + 1 == ranges.size();
    stage.weight_bytes = prefix[ranges[s].last + 1] - prefix[ranges[s].first] + (stage.last ? lm_head : 0);
    plan.stages.push_back(stage);
  }
  return plan;
}

std::string DescribePlan(const LayerPlan& plan) {
  int n_layers = 0;
  for (const StagePlan& s : plan.stages) n_layers += s.layers.count();
  std::string out = "layer plan (" + plan.source + "): " + std::to_string(plan.stages.size()) +
                    (plan.stages.size() == 1 ? " stage" : " stages") + " over " + std::to_string(n_layers) +
                    " layers\n";
  char line[160];
  std::snprintf(line, sizeof line, "%5s  %-9s %3s  %10s\n", "stage", "layers", "n", "weight MiB");
  out += line;
  for (size_t i = 0; i < plan.stages.size(); ++i) {
    const StagePlan& s = plan.stages[i];
    std::string role = s.first && s.last ? "  first, last (+ lm_head)"
                       : s.first         ? "  first"
                       : s.last          ? "  last (+ lm_head)"
                                         : "";
    std::snprintf(line, sizeof line, "%5zu  %-9s %3d  %10.1f%s\n", i,
                  RangeText(s.layers.first, s.layers.last).c_str(), s.layers.count(),
                  static_cast<double>(s.weight_bytes) / (1024.0 * 1024.0), role.c_str());
    out += line;
  }
  return out;
}

}  // namespace strata
