// `strata convert` and `strata quantize` (see convert.h).
#include "cli/convert.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "common/status.h"
#include "common/thread_pool.h"
#include "model/gguf_convert.h"
#include "model/model_files.h"

namespace strata {
namespace {

struct ConvertFlags {
  std::string input, output, type;
  bool allow_requantize = false;
  int threads = 0;
};
ConvertFlags g_convert, g_quantize;

Status Run(const ConvertFlags& f, bool want_hf) {
  STRATA_ASSIGN_OR_RETURN(QuantMix mix, ParseQuantMix(f.type));
  const bool is_dir = std::filesystem::is_directory(f.input);
  if (want_hf && !is_dir)
    return InvalidArgument("convert: '" + f.input + "' is not a Hugging Face model directory (use `strata quantize` for a GGUF)");
  if (!want_hf && is_dir)
    return InvalidArgument("quantize: '" + f.input + "' is a directory; `strata convert` turns an HF checkpoint into a GGUF");
  if (std::filesystem::exists(f.output) && std::filesystem::equivalent(f.input, f.output))
    return InvalidArgument("the output '" + f.output + "' is the input file");
  STRATA_ASSIGN_OR_RETURN(auto model, ModelFiles::Open(f.input));
  ThreadPool pool(f.threads > 0 ? f.threads : ThreadPool::AvailableCores());
  ConvertOptions opts;
  opts.mix = mix;
  opts.allow_requantize = f.allow_requantize;
  opts.progress = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
  const auto t0 = std::chrono::steady_clock::now();
  std::fprintf(stderr, "%s: %s (%s) -> %s as %s\n", want_hf ? "convert" : "quantize", f.input.c_str(), model->format_name(),
               f.output.c_str(), mix.name.c_str());
  STRATA_RETURN_IF_ERROR(WriteModelGguf(*model, f.output, opts, &pool));
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(f.output, ec);
  std::fprintf(stderr, "wrote %s (%.1f MiB) in %.1f s\n", f.output.c_str(), ec ? 0.0 : bytes / 1048576.0,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return Status::Ok();
}

void AddShared(CLI::App* cmd, ConvertFlags* f) {
  cmd->add_option("--type", f->type, std::string("weight types: ") + QuantMixNames() + " (see model/quant_mix.h)")->required();
  cmd->add_option("-t,--threads", f->threads, "threads (default: the cores this process may use)")->check(CLI::Range(1, 1024));
}

}  // namespace

ConvertCommands AddConvertCommands(CLI::App& app) {
  ConvertCommands c;
  c.convert = app.add_subcommand("convert", "convert a Hugging Face checkpoint into a GGUF that llama.cpp loads");
  c.convert->add_option("hf_dir", g_convert.input, "HF model directory (config.json, *.safetensors, tokenizer.json)")->required();
  c.convert->add_option("-o,--out", g_convert.output, "output .gguf")->required();
  AddShared(c.convert, &g_convert);
  c.quantize = app.add_subcommand("quantize", "re-quantize a GGUF to another type");
  c.quantize->add_option("input", g_quantize.input, "input .gguf")->required();
  c.quantize->add_option("output", g_quantize.output, "output .gguf")->required();
  c.quantize->add_flag("--allow-requantize", g_quantize.allow_requantize,
                       "also re-quantize tensors that are already quantized (their error compounds)");
  AddShared(c.quantize, &g_quantize);
  return c;
}

int RunConvertCommand(const ConvertCommands& cmds) {
  const bool convert = cmds.convert->parsed();
  if (Status st = Run(convert ? g_convert : g_quantize, convert); !st.ok()) {
    std::fprintf(stderr, "strata: error: %s\n", st.message().c_str());
    return 1;
  }
  return 0;
}

}  // namespace strata
