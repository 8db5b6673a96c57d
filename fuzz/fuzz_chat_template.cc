// libFuzzer target: chat_template (body in entries.cc, shared with strata_fuzz_replay).
#include "fuzz/entries.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) { return strata::fuzz::ChatTemplateEntry(data, size); }
