// The layer plan: parsing explicit ranges and plan files, checking them
// against the model, the cost model of each weight type, and the balancer of
// "auto" and "measure". Runs on every rank at start-up, before any weight is
// loaded (for "measure", on rank 0 after the calibration); see plan.h.
#include "coordinator/plan.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "model/architecture.h"
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
// The cost of a byte of each weight type on this machine (2-vCPU AMD EPYC VM
// with AVX-512 + VNNI, 1 thread), in ns per byte of the file, from
// `bench/plan_costs.py build/bin/strata_kernel_bench --min-time 0.1
// --repetitions 3`: BM_MatMulCold for decode (weights streamed from DRAM),
// BM_MatMul for a 64-token prefill chunk, in the layout a loaded stage keeps,
// at SmolLM3-3B's FFN shapes; CPU time of the benchmark's thread, the
// fastest of 3 repetitions in random order (the machine was shared with
// other builds, load 6-10). Only ratios matter to the plan: within a pass,
// between types, and between the layers and the lm_head.

struct TypeCost {
  TensorType type;
  double decode[3];  // 1, 2, 4 tokens per pass
  double prefill;    // 64 tokens per pass
};

constexpr TypeCost kTypeCosts[] = {
    {TensorType::kF32, {0.0307, 0.0351, 0.0441}, 0.3405},
    {TensorType::kF16, {0.0896, 0.0923, 0.0982}, 0.6195},
    {TensorType::kBF16, {0.1096, 0.1003, 0.1073}, 0.6609},
    {TensorType::kQ8_0, {0.0408, 0.0466, 0.0653}, 0.5095},
    {TensorType::kQ4_0, {0.0610, 0.0881, 0.2366}, 2.6109},
    {TensorType::kQ5_0, {0.0622, 0.0904, 0.1790}, 2.6373},
    {TensorType::kQ4_K, {0.0419, 0.0495, 0.0564}, 0.8668},
    {TensorType::kQ5_K, {0.0515, 0.0644, 0.1227}, 1.6786},
    {TensorType::kQ6_K, {0.0384, 0.0539, 0.0696}, 0.9464},
};

const TypeCost& CostOf(TensorType type) {
  for (const TypeCost& c : kTypeCosts)
    if (c.type == type) return c;
  return kTypeCosts[0];  // F32: the slowest per element of the float types
}

// ---------------------------------------------------------------------------
// The balancer: exact min-max partition, then the most even among the
// optimal ones. Costs are integers here so that equal layers tie exactly.

// One stage-rank's costs of the balanced pass in integer units.
struct RankUnits {
  std::vector<uint64_t> prefix;  // [n_layers + 1]: sum of layers [0, i)
  uint64_t first = 0, last = 0;  // the first / last stage's extra work
};

// ranks[s]: the costs of stage s's rank. Every sum fits 64 bits (checked by
// the callers: bytes are overflow-checked, time units are below 2^41).
std::vector<LayerRange> Balance(const std::vector<RankUnits>& ranks) {
  const int L = static_cast<int>(ranks[0].prefix.size()) - 1;
  const int S = static_cast<int>(ranks.size());
  // Cost of stage k-1 (k = 1..S) holding layers [j, i).
  auto seg = [&](int k, int j, int i) {
    const RankUnits& r = ranks[static_cast<size_t>(k - 1)];
    return r.prefix[i] - r.prefix[j] + (k == 1 ? r.first : 0) + (k == S ? r.last : 0);
  };
  constexpr uint64_t kNone = std::numeric_limits<uint64_t>::max();

  // minmax[k][i]: the least largest cost of k stages covering layers [0, i).
  std::vector<std::vector<uint64_t>> minmax(S + 1, std::vector<uint64_t>(L + 1, kNone));
  for (int i = 1; i <= L; ++i) minmax[1][i] = seg(1, 0, i);
  for (int k = 2; k <= S; ++k)
    for (int i = k; i <= L; ++i)
      for (int j = k - 1; j < i; ++j)
        if (minmax[k - 1][j] != kNone) minmax[k][i] = std::min(minmax[k][i], std::max(minmax[k - 1][j], seg(k, j, i)));
  const uint64_t bound = minmax[S][L];

  // sumsq[k][i]: the least sum of squared stage costs of k stages covering
  // [0, i) with every stage <= bound; from[k][i]: where stage k-1 starts.
  // Exact: costs are < 2^64, so a sum of squares is < 2^128 for any sane S.
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
        uint64_t c = seg(k, j, i);
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

// Integer units of the ranks' times of one pass: the largest rank's whole
// model maps to 2^40 units (far finer than any measurement).
std::vector<RankUnits> ToUnits(const std::vector<RankCosts>& ranks, bool decode) {
  auto pick = [decode](const PassCost& c) { return decode ? c.decode : c.prefill; };
  double largest = 0;
  for (const RankCosts& r : ranks) {
    double t = pick(r.first) + pick(r.last);
    for (const PassCost& c : r.layers) t += pick(c);
    largest = std::max(largest, t);
  }
  const double scale = largest > 0 ? std::ldexp(1.0, 40) / largest : 1.0;
  auto units = [&](const PassCost& c) { return static_cast<uint64_t>(std::llround(std::max(pick(c), 0.0) * scale)); };
  std::vector<RankUnits> out;
  for (const RankCosts& r : ranks) {
    RankUnits u;
    u.prefix.assign(1, 0);
    for (const PassCost& c : r.layers) u.prefix.push_back(u.prefix.back() + units(c));
    u.first = units(r.first);
    u.last = units(r.last);
    out.push_back(std::move(u));
  }
  return out;
}

RankCosts Scaled(RankCosts r, double speed) {
  for (PassCost& c : r.layers) c.decode /= speed, c.prefill /= speed;
  r.first.decode /= speed, r.first.prefill /= speed, r.last.decode /= speed, r.last.prefill /= speed;
  return r;
}

PassCost StageTime(const RankCosts& r, const LayerRange& layers, bool first, bool last) {
  PassCost t;
  for (int l = layers.first; l <= layers.last; ++l) {
    t.decode += r.layers[static_cast<size_t>(l)].decode;
    t.prefill += r.layers[static_cast<size_t>(l)].prefill;
  }
  if (first) t.decode += r.first.decode, t.prefill += r.first.prefill;
  if (last) t.decode += r.last.decode, t.prefill += r.last.prefill;
  return t;
}

}  // namespace

int DecodeTokens(int sequences, int n_stages) {
  return n_stages < 1 ? 1 : std::max(1, (sequences + n_stages - 1) / n_stages);
}

PassCost TypeCostPerByte(TensorType type, int tokens) {
  const TypeCost& c = CostOf(type);
  PassCost out;
  out.prefill = c.prefill;
  if (tokens <= 1) out.decode = c.decode[0];
  else if (tokens == 2) out.decode = c.decode[1];
  else if (tokens <= 4) out.decode = c.decode[2];  // 3 tokens run as a 4-token tile
  else out.decode = c.decode[2] * tokens / 4.0;     // compute-bound: per token as 4
  return out;
}

RankCosts EstimateCosts(const PlanCosts& costs, int decode_tokens) {
  RankCosts r;
  r.layers.resize(costs.layer_bytes.size());
  for (size_t l = 0; l < costs.layer_bytes.size(); ++l) {
    if (costs.layer_matrices.empty()) {
      const PassCost c = TypeCostPerByte(TensorType::kF32, decode_tokens);
      r.layers[l] = {costs.layer_bytes[l] * c.decode * 1e-9, costs.layer_bytes[l] * c.prefill * 1e-9};
      continue;
    }
    for (const MatrixBytes& m : costs.layer_matrices[l]) {
      const PassCost c = TypeCostPerByte(m.type, decode_tokens);
      r.layers[l].decode += m.bytes * c.decode * 1e-9;
      r.layers[l].prefill += m.bytes * c.prefill * 1e-9;
    }
  }
  // The first stage looks up embedding rows: next to nothing. The last
  // multiplies every decode token's row by the lm_head, and one row per
  // prompt (its last) in prefill.
  const TensorType head = costs.layer_matrices.empty() ? TensorType::kF32 : costs.lm_head_type;
  r.last.decode = costs.lm_head_bytes() * TypeCostPerByte(head, decode_tokens).decode * 1e-9;
  r.last.prefill = costs.lm_head_bytes() * TypeCostPerByte(head, 1).decode * 1e-9;
  return r;
}

PlanCosts CostsOf(const ModelFiles& model) {
  PlanCosts costs;
  const int n_layers = model.config().n_layers;
  costs.layer_bytes.reserve(static_cast<size_t>(std::max(n_layers, 0)));
  costs.layer_matrices.resize(static_cast<size_t>(std::max(n_layers, 0)));
  for (int i = 0; i < n_layers; ++i) costs.layer_bytes.push_back(model.LayerBytes(i));
  for (const TensorSpec& spec : model.tensor_table()) {
    if (spec.layer < 0 || spec.layer >= n_layers) continue;
    auto t = model.Tensor(spec.gguf_name);
    if (!t.ok() || t->ne.size() < 2) continue;  // absent optional tensors; norms and biases
    costs.layer_matrices[static_cast<size_t>(spec.layer)].push_back({t->type, t->nbytes});
  }
  costs.embedding_bytes = model.EmbeddingBytes();
  costs.output_bytes = model.OutputBytes();
  costs.tied = model.config().tied_embeddings;
  auto head = model.Tensor(costs.tied ? "token_embd.weight" : "output.weight");
  if (head.ok()) costs.lm_head_type = head->type;
  return costs;
}

Result<LayerPlan> MakeLayerPlan(const std::string& spec_in, int n_stages, const PlanCosts& costs,
                                const PlanOptions& options) {
  if (n_stages < 1) return InvalidArgument("layer plan for " + std::to_string(n_stages) + " stages: need at least 1");
  if (costs.layer_bytes.size() > static_cast<size_t>(INT_MAX))
    return InvalidArgument("layer plan: " + std::to_string(costs.layer_bytes.size()) + " layers is too many");
  const int n_layers = static_cast<int>(costs.layer_bytes.size());
  if (n_stages > n_layers)
    return InvalidArgument(std::to_string(n_stages) + " stages for a model of " + std::to_string(n_layers) +
                           " layers: every stage needs at least one layer");
  if (!costs.layer_matrices.empty() && costs.layer_matrices.size() != costs.layer_bytes.size())
    return InvalidArgument("layer plan: matrices of " + std::to_string(costs.layer_matrices.size()) + " layers for " +
                           std::to_string(n_layers) + " layers");
  if (!options.speeds.empty()) {
    if (static_cast<int>(options.speeds.size()) != n_stages)
      return InvalidArgument(std::to_string(options.speeds.size()) + " speeds for " + std::to_string(n_stages) +
                             " stages: give one per stage's rank");
    for (double v : options.speeds)
      if (!(v > 0) || !std::isfinite(v))
        return InvalidArgument("speed " + std::to_string(v) + ": expected a positive number (1 = this machine)");
  }
  const int sequences = std::max(1, options.sequences);
  const int decode_tokens = DecodeTokens(sequences, n_stages);

  // prefix[i]: bytes of layers [0, i); overflow-checked once here so every
  // sum below (stage costs, weight_bytes) fits.
  std::vector<uint64_t> prefix(static_cast<size_t>(n_layers) + 1, 0);
  const uint64_t lm_head = costs.lm_head_bytes();
  for (int i = 0; i < n_layers; ++i) {
    if (costs.layer_bytes[i] > std::numeric_limits<uint64_t>::max() - lm_head - prefix[i])
      return InvalidArgument("layer plan: the model's weight bytes overflow 64 bits");
    prefix[i + 1] = prefix[i] + costs.layer_bytes[i];
  }

  // Each stage's rank's costs: measured, or the cost model's (over its speed).
  std::vector<RankCosts> rank_costs;
  const std::string spec = Trim(spec_in);
  const bool measure = spec == "measure";
  if (measure && options.measured.empty() && n_stages == 1) {
    // One stage holds everything: nothing to measure.
    rank_costs.push_back(EstimateCosts(costs, decode_tokens));
  } else if (measure) {
    if (static_cast<int>(options.measured.size()) != n_stages)
      return InvalidArgument("layer plan 'measure': " + std::to_string(options.measured.size()) + " ranks measured for " +
                             std::to_string(n_stages) + " stages (it runs under mpirun, where every stage's rank times its layers)");
    for (size_t s = 0; s < options.measured.size(); ++s)
      if (options.measured[s].layers.size() != static_cast<size_t>(n_layers))
        return InvalidArgument("layer plan 'measure': stage " + std::to_string(s) + "'s rank measured " +
                               std::to_string(options.measured[s].layers.size()) + " layers, the model has " +
                               std::to_string(n_layers));
    rank_costs = options.measured;
  } else {
    const RankCosts estimate = EstimateCosts(costs, decode_tokens);
    for (int s = 0; s < n_stages; ++s)
      rank_costs.push_back(options.speeds.empty() ? estimate : Scaled(estimate, options.speeds[static_cast<size_t>(s)]));
  }

  if (!(options.lm_head_share >= 0 && options.lm_head_share <= 1))
    return InvalidArgument("layer plan: the first stage's share of the lm_head must be in [0, 1]");
  const double share = n_stages > 1 ? options.lm_head_share : 0;
  if (share > 0) {
    PassCost& first = rank_costs.front().first;
    PassCost& last = rank_costs.back().last;
    first.decode += share * last.decode, first.prefill += share * last.prefill;
    last.decode *= 1 - share, last.prefill *= 1 - share;
  }

  LayerPlan plan;
  plan.lm_head_share = share;
  plan.decode_tokens = decode_tokens;
  plan.balances_decode = n_stages > 1 && sequences >= n_stages;
  plan.measured = measure && !options.measured.empty();
  std::vector<LayerRange> ranges;
  if (spec.empty()) {
    return InvalidArgument("empty layer plan: expected \"auto\", \"measure\", ranges such as \"0-8,9-17\", or a plan file");
  } else if (spec == "auto" || measure) {
    plan.source = spec;
    std::vector<RankUnits> units;
    if (!measure && costs.layer_matrices.empty() && options.speeds.empty()) {
      // Hand-made costs without types: every byte costs the same, exactly.
      const auto moved = static_cast<uint64_t>(std::llround(share * static_cast<double>(lm_head)));
      units.assign(static_cast<size_t>(n_stages), RankUnits{prefix, moved, lm_head - moved});
    } else {
      units = ToUnits(rank_costs, plan.balances_decode);
    }
    ranges = Balance(units);
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
    stage.time = StageTime(rank_costs[s], stage.layers, stage.first, stage.last);
    plan.stages.push_back(stage);
  }
  return plan;
}

std::string DescribePlan(const LayerPlan& plan) {
  int n_layers = 0;
  for (const StagePlan& s : plan.stages) n_layers += s.layers.count();
  std::string out = "layer plan (" + plan.source + ", balances " +
                    (plan.balances_decode ? "decode micro-batches of " + std::to_string(plan.decode_tokens) +
                                                (plan.decode_tokens == 1 ? " token" : " tokens")
                                          : std::string("prefill chunks")) +
                    "): " + std::to_string(plan.stages.size()) + (plan.stages.size() == 1 ? " stage" : " stages") +
                    " over " + std::to_string(n_layers) + " layers\n";
  char line[200];
  std::snprintf(line, sizeof line, "%5s  %-9s %3s  %10s  %10s  %10s\n", "stage", "layers", "n", "weight MiB",
                plan.measured ? "decode ms" : "decode ms*", plan.measured ? "prefill ms" : "prefill ms*");
  out += line;
  for (size_t i = 0; i < plan.stages.size(); ++i) {
    const StagePlan& s = plan.stages[i];
    const std::string share = plan.lm_head_share > 0 && plan.stages.size() > 1
                                  ? " (+ " + std::to_string(static_cast<int>(std::lround(plan.lm_head_share * 100))) + " % of the lm_head)"
                                  : "";
    std::string role = s.first && s.last ? "  first, last (+ lm_head)"
                       : s.first         ? "  first" + share
                       : s.last          ? "  last (+ lm_head)"
                                         : "";
    std::snprintf(line, sizeof line, "%5zu  %-9s %3d  %10.1f  %10.2f  %10.1f%s\n", i,
                  RangeText(s.layers.first, s.layers.last).c_str(), s.layers.count(),
                  static_cast<double>(s.weight_bytes) / (1024.0 * 1024.0), s.time.decode * 1e3, s.time.prefill * 1e3,
                  role.c_str());
    out += line;
  }
  if (!plan.measured)
    out += "  * predicted by the cost model (1 thread of the machine the kernel benches ran on; prefill: a 64-token chunk)\n";
  return out;
}

std::string DescribeMeasuredCosts(const std::vector<RankCosts>& per_rank, const std::vector<std::string>& who) {
  std::string out;
  char line[200];
  for (size_t r = 0; r < per_rank.size(); ++r) {
    const RankCosts& c = per_rank[r];
    out += (r < who.size() ? who[r] : "stage " + std::to_string(r)) + ": ms per pass (decode / prefill)";
    // Runs of layers with the same figures are shown once.
    size_t l = 0;
    while (l < c.layers.size()) {
      size_t e = l;
      while (e + 1 < c.layers.size() && c.layers[e + 1].decode == c.layers[l].decode &&
             c.layers[e + 1].prefill == c.layers[l].prefill)
        ++e;
      std::snprintf(line, sizeof line, "%s %s %.2f/%.1f", l == 0 ? "" : ",",
                    RangeText(static_cast<int64_t>(l), static_cast<int64_t>(e)).c_str(), c.layers[l].decode * 1e3,
                    c.layers[l].prefill * 1e3);
      out += line;
      l = e + 1;
    }
    std::snprintf(line, sizeof line, "; embedding %.2f/%.2f; lm_head %.2f/%.2f\n", c.first.decode * 1e3,
                  c.first.prefill * 1e3, c.last.decode * 1e3, c.last.prefill * 1e3);
    out += line;
  }
  return out;
}

}  // namespace strata
