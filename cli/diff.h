// `strata diff A B [--tol X] [--json]`: compares two activation dumps entry
// by entry and names the first entry (and the rank and host that computed
// it) whose relative L2 error passes the tolerance. Runs on rank 0 only,
// outside any pipeline; no MPI.
//
// A and B are each a dump directory (written by `strata dump`: manifest.json,
// embeddings.npy, layer_NNN.npy, final_norm.npy, logits.npy) or a single
// .npy file. A single [n_layers+1, tokens, hidden] file is transformers'
// output_hidden_states: entry 0 is the embeddings, entry i (1 <= i < n_layers)
// the residual stream after layer i-1, and the LAST entry the output of the
// final norm; against a dump it is compared with final_norm.npy (the dump's
// layer_{n_layers-1}.npy, taken before the final norm, has no counterpart).
// B is the reference: rel_l2 = ||a - b|| / ||b||.
//
//   STRATA_ASSIGN_OR_RETURN(DiffReport r, DiffDumps("dump/", "ref.hidden_states.npy", 1e-4));
//   if (r.first_bad >= 0) ... r.entries[r.first_bad].name, .rank, .host
//
// In cli/main.cc:
//   CLI::App* d = AddDiffCommand(app);
//   ...
//   if (d->parsed()) return RunDiff();
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/status.h"

namespace strata {

struct DiffEntry {
  std::string name;    // "embeddings", "layer_007", "final_norm", "logits", or a file's stem
  std::string a_what;  // where A's values came from: "dir/layer_007.npy" or "file.npy[8]"
  std::string b_what;
  double max_abs = 0;  // max |a - b|
  double rel_l2 = 0;   // ||a - b|| / ||b||  (B is the reference)
  double cosine = 1;   // <a, b> / (||a|| ||b||)
  int rank = -1;       // the rank that computed it, from A's manifest (else B's); -1 unknown
  std::string host;    // that rank's host; empty if unknown
  bool ok = true;      // rel_l2 <= tol (false for NaN)
};

struct DiffReport {
  std::vector<DiffEntry> entries;     // in pipeline order
  std::vector<std::string> skipped;   // entries present on one side only, with why
  std::vector<std::string> notes;     // e.g. the final-norm mapping
  int first_bad = -1;                 // index into entries, -1 if all within tol
  double tol = 1e-4;
  bool ok = true;
};

// Compares A against the reference B. Errors: kNotFound (missing path),
// kInvalidArgument (shape mismatch between A and B naming both and their
// shapes; nothing in common), kDataLoss (corrupt .npy or manifest).
Result<DiffReport> DiffDumps(const std::string& a, const std::string& b, double tol);

// Text table (one line per entry, then skipped entries, notes and verdict).
std::string FormatDiffTable(const DiffReport& report);
// One JSON object: {"entries":[...], "first_bad": {...}|null, "tol", "ok", "skipped", "notes"}.
std::string FormatDiffJson(const DiffReport& report);

// Registers the `diff` subcommand (flags kept in diff.cc) and runs it once
// parsed: exit 0 all within tolerance, 1 something past it, 2 usage/input error.
CLI::App* AddDiffCommand(CLI::App& app);
int RunDiff();

}  // namespace strata
