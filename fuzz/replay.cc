// strata_fuzz_replay: runs saved inputs through the fuzz entries without
// libFuzzer (normal build, ctest `fuzz_regressions`), or writes the built-in
// seeds.
//
//   strata_fuzz_replay DIR            # DIR/<target>/* through each target's entry
//   strata_fuzz_replay --target gguf FILE...
//   strata_fuzz_replay --seeds DIR    # DIR/<target>/seed_* (the small valid inputs of entries.cc)
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz/entries.h"

namespace fs = std::filesystem;
using strata::fuzz::Target;

static std::vector<uint8_t> Read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

static int RunOne(const Target& t, const fs::path& p) {
  std::vector<uint8_t> bytes = Read(p);
  t.entry(bytes.data(), bytes.size());  // aborts on a broken invariant
  return 1;
}

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--seeds") == 0) {
    for (const auto& seed : strata::fuzz::Seeds()) {
      fs::path dir = fs::path(argv[2]) / seed.target;
      fs::create_directories(dir);
      std::ofstream out(dir / ("seed_" + seed.name), std::ios::binary);
      out.write(reinterpret_cast<const char*>(seed.bytes.data()), static_cast<std::streamsize>(seed.bytes.size()));
    }
    return 0;
  }
  if (argc >= 4 && std::strcmp(argv[1], "--target") == 0) {
    for (const Target& t : strata::fuzz::Targets()) {
      if (t.name != std::string(argv[2])) continue;
      for (int i = 3; i < argc; ++i) RunOne(t, argv[i]);
      std::printf("%d inputs ok\n", argc - 3);
      return 0;
    }
    std::fprintf(stderr, "unknown target '%s'\n", argv[2]);
    return 2;
  }
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR | --target NAME FILE... | --seeds DIR\n", argv[0]);
    return 2;
  }
  int total = 0;
  for (const Target& t : strata::fuzz::Targets()) {
    fs::path dir = fs::path(argv[1]) / t.name;
    if (!fs::is_directory(dir)) continue;
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    int n = 0;
    for (const fs::path& p : files) n += RunOne(t, p);
    std::printf("%-14s %d inputs ok\n", t.name, n);
    total += n;
  }
  if (total == 0) {
    std::fprintf(stderr, "no inputs under %s\n", argv[1]);
    return 1;
  }
  return 0;
}
