// `strata diff`: entry-by-entry comparison of two activation dumps (see
// diff.h). Runs on rank 0 only; reads .npy files and manifest.json.
#include "cli/diff.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/npy.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Pipeline order of entries: embeddings, layers, final norm, logits.
constexpr int64_t kEmbeddingsKey = -1;
constexpr int64_t kFinalNormKey = int64_t{1} << 40;
constexpr int64_t kLogitsKey = kFinalNormKey + 1;

std::string LayerName(int64_t i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "layer_%03lld", static_cast<long long>(i));
  return buf;
}

// One comparable entry of one side: a whole .npy file, or entry `index` of
// a stacked [n_layers+1, tokens, hidden] file.
struct Entry {
  std::string name;
  std::string file;
  int64_t index = -1;  // >= 0: slice of View::stacked
};

// One side of the comparison.
struct View {
  std::string path;
  bool is_dir = false;
  bool is_stacked = false;                // a single [L+1, T, H] file
  std::shared_ptr<NpyArray> stacked;      // when is_stacked
  json manifest;                          // null when absent
  std::map<int64_t, Entry> entries;       // key: pipeline order
};

struct Tensor {
  std::vector<int64_t> shape;
  NpyArray owned;
  const float* p = nullptr;
  size_t n = 0;
  std::string what;
};

Result<Tensor> Load(const View& v, const Entry& e) {
  Tensor t;
  if (e.index < 0) {
    STRATA_ASSIGN_OR_RETURN(t.owned, ReadNpyF32(e.file));
    t.shape = t.owned.shape;
    t.p = t.owned.data.data();
    t.n = t.owned.data.size();
    t.what = e.file;
  } else {
    const NpyArray& s = *v.stacked;
    t.shape.assign(s.shape.begin() + 1, s.shape.end());
    t.n = s.data.size() / static_cast<size_t>(s.shape[0]);
    t.p = s.data.data() + static_cast<size_t>(e.index) * t.n;
    t.what = v.path + "[" + std::to_string(e.index) + "]";
  }
  return t;
}

Status ReadManifest(View* v) {
  std::string mpath = v->path + "/manifest.json";
  std::error_code ec;
  if (!fs::exists(mpath, ec)) return Status::Ok();  // rank/host stay unknown
  std::ifstream in(mpath, std::ios::binary);
  if (!in) return IoError("cannot open '" + mpath + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return DataLoss("'" + mpath + "': not a JSON object");
  v->manifest = std::move(j);
  return Status::Ok();
}

// Entries of a dump directory, found by file name.
Status ScanDir(View* v) {
  std::error_code ec;
  for (const auto& de : fs::directory_iterator(v->path, ec)) {
    if (!de.is_regular_file(ec)) continue;
    std::string fname = de.path().filename().string();
    std::string full = de.path().string();
    if (fname == "embeddings.npy") {
      v->entries[kEmbeddingsKey] = {"embeddings", full, -1};
    } else if (fname == "final_norm.npy") {
      v->entries[kFinalNormKey] = {"final_norm", full, -1};
    } else if (fname == "logits.npy") {
      v->entries[kLogitsKey] = {"logits", full, -1};
    } else if (fname.size() > 10 && fname.rfind("layer_", 0) == 0 && fname.ends_with(".npy")) {
      std::string digits = fname.substr(6, fname.size() - 10);
      if (digits.empty() || digits.size() > 6 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
      int64_t i = std::stoll(digits);
      v->entries[i] = {LayerName(i), full, -1};
    }
  }
  if (ec) return IoError("cannot list '" + v->path + "': " + ec.message());
  if (v->entries.empty()) return NotFound("'" + v->path + "': no .npy entries (embeddings.npy, layer_NNN.npy, logits.npy)");
  return ReadManifest(v);
}

// A single [L+1, T, H] file: embeddings, layer_000..layer_{L-2}, final_norm.
void MapStacked(View* v) {
  v->is_stacked = true;
  const int64_t n_layers = v->stacked->shape[0] - 1;
  for (int64_t i = 0; i <= n_layers; ++i) {
    if (i == 0) v->entries[kEmbeddingsKey] = {"embeddings", v->path, 0};
    else if (i == n_layers) v->entries[kFinalNormKey] = {"final_norm", v->path, i};
    else v->entries[i - 1] = {LayerName(i - 1), v->path, i};
  }
}

Result<View> OpenSide(const std::string& path) {
  View v;
  v.path = path;
  while (v.path.size() > 1 && v.path.back() == '/') v.path.pop_back();
  std::error_code ec;
  if (!fs::exists(v.path, ec)) return NotFound("'" + path + "': no such dump directory or .npy file");
  if (fs::is_directory(v.path, ec)) {
    v.is_dir = true;
    STRATA_RETURN_IF_ERROR(ScanDir(&v));
    return v;
  }
  STRATA_ASSIGN_OR_RETURN(NpyArray arr, ReadNpyF32(v.path));
  v.stacked = std::make_shared<NpyArray>(std::move(arr));
  return v;
}

// ---------------------------------------------------------------------------
// Rank and host from a manifest: "layers": {"7": {"rank": 1, "host": "vm"}},
// else the "plan" ranges. Every lookup is type-checked: the manifest is input.

int64_t ManifestLayers(const json& m) {
  if (m.is_object() && m.contains("n_layers") && m["n_layers"].is_number_integer()) return m["n_layers"].get<int64_t>();
  return -1;
}

bool RankOfLayer(const json& m, int64_t layer, int* rank, std::string* host) {
  if (!m.is_object() || layer < 0) return false;
  auto fill = [&](const json& o) {
    if (!o.is_object() || !o.contains("rank") || !o["rank"].is_number_integer()) return false;
    *rank = o["rank"].get<int>();
    *host = (o.contains("host") && o["host"].is_string()) ? o["host"].get<std::string>() : "";
    return true;
  };
  std::string key = std::to_string(layer);
  if (m.contains("layers") && m["layers"].is_object() && m["layers"].contains(key) && fill(m["layers"][key])) return true;
  if (m.contains("plan") && m["plan"].is_array()) {
    for (const json& st : m["plan"]) {
      if (!st.is_object() || !st.contains("first_layer") || !st.contains("last_layer")) continue;
      if (!st["first_layer"].is_number_integer() || !st["last_layer"].is_number_integer()) continue;
      if (st["first_layer"].get<int64_t>() <= layer && layer <= st["last_layer"].get<int64_t>() && fill(st)) return true;
    }
  }
  return false;
}

// Which layer's rank computed an entry: the embedding is stage 0's, the
// final norm and logits the last stage's.
bool RankOfEntry(const json& m, int64_t key, int* rank, std::string* host) {
  int64_t layer = key;
  if (key == kEmbeddingsKey) layer = 0;
  if (key == kFinalNormKey || key == kLogitsKey) {
    layer = ManifestLayers(m) - 1;
    if (layer < 0 && m.is_object() && m.contains("plan") && m["plan"].is_array()) {
      for (const json& st : m["plan"])
        if (st.is_object() && st.contains("last_layer") && st["last_layer"].is_number_integer())
          layer = std::max(layer, st["last_layer"].get<int64_t>());
    }
  }
  return RankOfLayer(m, layer, rank, host);
}

void Compare(const Tensor& a, const Tensor& b, double tol, DiffEntry* e) {
  double max_abs = 0, d2 = 0, a2 = 0, b2 = 0, ab = 0;
  bool nan = false;
  for (size_t i = 0; i < a.n; ++i) {
    const double x = a.p[i], y = b.p[i], d = x - y;
    if (std::isnan(d)) nan = true;
    max_abs = std::max(max_abs, std::fabs(d));
    d2 += d * d;
    a2 += x * x;
    b2 += y * y;
    ab += x * y;
  }
  const double kNaN = std::numeric_limits<double>::quiet_NaN();
  e->max_abs = nan ? kNaN : max_abs;
  if (nan) e->rel_l2 = kNaN;
  else if (b2 > 0) e->rel_l2 = std::sqrt(d2) / std::sqrt(b2);
  else e->rel_l2 = d2 > 0 ? std::numeric_limits<double>::infinity() : 0.0;
  if (nan) e->cosine = kNaN;
  else if (a2 > 0 && b2 > 0) e->cosine = ab / (std::sqrt(a2) * std::sqrt(b2));
  else e->cosine = (a2 == 0 && b2 == 0) ? 1.0 : 0.0;
  e->ok = e->rel_l2 <= tol;  // false for NaN
}

}  // namespace

// ---------------------------------------------------------------------------

Result<DiffReport> DiffDumps(const std::string& a_path, const std::string& b_path, double tol) {
  if (!(tol >= 0)) return InvalidArgument("--tol " + std::to_string(tol) + ": expected a non-negative number");
  STRATA_ASSIGN_OR_RETURN(View a, OpenSide(a_path));
  STRATA_ASSIGN_OR_RETURN(View b, OpenSide(b_path));
  DiffReport report;
  report.tol = tol;

  auto is3d = [](const View& v) { return v.stacked && v.stacked->shape.size() == 3 && v.stacked->shape[0] >= 2; };
  if (!a.is_dir && !b.is_dir) {
    if (a.stacked->shape != b.stacked->shape)
      return InvalidArgument("shape mismatch: '" + a.path + "' is " + NpyShapeString(a.stacked->shape) + ", '" + b.path +
                             "' is " + NpyShapeString(b.stacked->shape));
    if (is3d(a)) {
      MapStacked(&a);
      MapStacked(&b);
    } else {
      std::string stem = fs::path(a.path).stem().string();
      a.entries[0] = {stem, a.path, 0};
      b.entries[0] = {stem, b.path, 0};
      // Treat the whole array as one slice of a [1, ...] stack.
      for (View* v : {&a, &b}) v->stacked->shape.insert(v->stacked->shape.begin(), 1);
    }
  } else if (a.is_dir != b.is_dir) {
    View& file = a.is_dir ? b : a;
    View& dir = a.is_dir ? a : b;
    if (!is3d(file))
      return InvalidArgument("'" + file.path + "' is " + NpyShapeString(file.stacked->shape) +
                             ": to compare with the dump directory '" + dir.path +
                             "' a single file must be [n_layers+1, tokens, hidden] (transformers' hidden states)");
    MapStacked(&file);
    const int64_t n_layers = file.stacked->shape[0] - 1;
    const int64_t dir_layers = ManifestLayers(dir.manifest);
    if (dir_layers >= 0 && dir_layers != n_layers)
      return InvalidArgument("shape mismatch: '" + dir.path + "/manifest.json' has n_layers " + std::to_string(dir_layers) +
                             ", '" + file.path + "' is " + NpyShapeString(file.stacked->shape) + " (" +
                             std::to_string(n_layers) + " layers + embeddings)");
    // The stacked file's last entry is after the final norm: the dump's raw
    // residual stream after the last layer has no counterpart.
    const int64_t last = n_layers - 1;
    if (dir.entries.count(last)) {
      report.skipped.push_back(LayerName(last) + ": '" + file.path + "' has no raw residual stream after the last layer (its entry " +
                               std::to_string(n_layers) + " is after the final norm)");
      dir.entries.erase(last);
    }
    if (dir.entries.count(kFinalNormKey)) {
      report.notes.push_back("'" + file.path + "'[" + std::to_string(n_layers) +
                             "] is the output of the final norm: compared with '" + dir.path + "/final_norm.npy'");
    } else {
      report.skipped.push_back("final_norm: '" + file.path + "'[" + std::to_string(n_layers) +
                               "] is after the final norm and '" + dir.path + "' has no final_norm.npy");
      file.entries.erase(kFinalNormKey);
    }
  }

  // Two dumps of different prompts compare nothing meaningful.
  if (a.is_dir && b.is_dir && a.manifest.is_object() && b.manifest.is_object() && a.manifest.contains("prompt_ids") &&
      b.manifest.contains("prompt_ids") && a.manifest["prompt_ids"] != b.manifest["prompt_ids"])
    return InvalidArgument("'" + a.path + "' and '" + b.path + "' are dumps of different prompts (prompt_ids differ)");

  for (const auto& [key, ea] : a.entries) {
    auto it = b.entries.find(key);
    if (it == b.entries.end()) {
      report.skipped.push_back(ea.name + ": only in A ('" + a.path + "')");
      continue;
    }
    const Entry& eb = it->second;
    STRATA_ASSIGN_OR_RETURN(Tensor ta, Load(a, ea));
    STRATA_ASSIGN_OR_RETURN(Tensor tb, Load(b, eb));
    if (ta.shape != tb.shape)
      return InvalidArgument("shape mismatch in " + ea.name + ": '" + ta.what + "' is " + NpyShapeString(ta.shape) + ", '" +
                             tb.what + "' is " + NpyShapeString(tb.shape));
    DiffEntry e;
    e.name = ea.name;
    e.a_what = ta.what;
    e.b_what = tb.what;
    Compare(ta, tb, tol, &e);
    if (!RankOfEntry(a.manifest, key, &e.rank, &e.host)) RankOfEntry(b.manifest, key, &e.rank, &e.host);
    if (!e.ok && report.first_bad < 0) report.first_bad = static_cast<int>(report.entries.size());
    report.entries.push_back(std::move(e));
  }
  for (const auto& [key, eb] : b.entries)
    if (!a.entries.count(key)) report.skipped.push_back(eb.name + ": only in B ('" + b.path + "')");
  if (report.entries.empty())
    return InvalidArgument("'" + a.path + "' and '" + b.path + "' have no entries in common");
  report.ok = report.first_bad < 0;
  return report;
}

// ---------------------------------------------------------------------------
// Output

namespace {

std::string Where(const DiffEntry& e) {
  if (e.rank < 0) return "-";
  return "rank " + std::to_string(e.rank) + (e.host.empty() ? "" : " (" + e.host + ")");
}

json EntryJson(const DiffEntry& e) {
  // NaN and infinity have no JSON spelling: nlohmann writes null.
  return json{{"name", e.name},
              {"max_abs", e.max_abs},
              {"rel_l2", e.rel_l2},
              {"cosine", e.cosine},
              {"rank", e.rank < 0 ? json(nullptr) : json(e.rank)},
              {"host", e.host.empty() ? json(nullptr) : json(e.host)},
              {"ok", e.ok}};
}

}  // namespace

std::string FormatDiffTable(const DiffReport& r) {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof(line), "%-12s %12s %12s %12s  %s\n", "entry", "max_abs", "rel_l2", "cosine", "computed by");
  out += line;
  for (const DiffEntry& e : r.entries) {
    std::snprintf(line, sizeof(line), "%-12s %12.4e %12.4e %12.9f  %-20s %s\n", e.name.c_str(), e.max_abs, e.rel_l2, e.cosine,
                  Where(e).c_str(), e.ok ? "" : "<-- past tol");
    out += line;
  }
  for (const std::string& s : r.skipped) out += "skipped " + s + "\n";
  for (const std::string& n : r.notes) out += "note: " + n + "\n";
  std::snprintf(line, sizeof(line), "%g", r.tol);
  if (r.ok) {
    out += "ok: " + std::to_string(r.entries.size()) + " entries within rel_l2 tolerance " + line + "\n";
  } else {
    const DiffEntry& e = r.entries[static_cast<size_t>(r.first_bad)];
    char num[32];
    std::snprintf(num, sizeof(num), "%.4e", e.rel_l2);
    out += "FIRST DIVERGENCE: " + e.name + " (rel_l2 " + num + " > tol " + line + "), computed by " +
           (e.rank < 0 ? std::string("an unknown rank (no manifest)") : Where(e)) + "\n";
  }
  return out;
}

std::string FormatDiffJson(const DiffReport& r) {
  json entries = json::array();
  for (const DiffEntry& e : r.entries) entries.push_back(EntryJson(e));
  json j{{"entries", entries},
         {"first_bad", r.first_bad < 0 ? json(nullptr) : EntryJson(r.entries[static_cast<size_t>(r.first_bad)])},
         {"tol", r.tol},
         {"ok", r.ok},
         {"skipped", r.skipped},
         {"notes", r.notes}};
  return j.dump();
}

// ---------------------------------------------------------------------------
// Command line

namespace {
struct DiffFlags {
  std::string a, b;
  double tol = 1e-4;
  bool json = false;
};
DiffFlags g_diff_flags;
}  // namespace

CLI::App* AddDiffCommand(CLI::App& app) {
  CLI::App* d = app.add_subcommand("diff",
                                   "compare two activation dumps (directories from `strata dump`, or .npy files; B is the "
                                   "reference) and name the first entry past tolerance and the rank that computed it");
  d->add_option("A", g_diff_flags.a, "dump directory or .npy file")->required();
  d->add_option("B", g_diff_flags.b, "reference dump directory or .npy file (e.g. transformers' hidden_states.npy)")->required();
  d->add_option("--tol", g_diff_flags.tol, "tolerance on the relative L2 error ||a-b||/||b|| (default 1e-4)")
      ->check(CLI::Range(0.0, 1.0e6));
  d->add_flag("--json", g_diff_flags.json, "print one JSON object on stdout");
  return d;
}

int RunDiff() {
  Result<DiffReport> r = DiffDumps(g_diff_flags.a, g_diff_flags.b, g_diff_flags.tol);
  if (!r.ok()) {
    std::fprintf(stderr, "strata diff: %s\n", r.status().message().c_str());
    return 2;
  }
  std::string text = g_diff_flags.json ? FormatDiffJson(*r) + "\n" : FormatDiffTable(*r);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
  return r->ok ? 0 : 1;
}

}  // namespace strata
