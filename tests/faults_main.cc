// strata_faults: the strata program with one test-only fault injected around
// the transport (worker/fault_injection.h), for the fault and dump tests.
// Built with the tests, never installed; the strata binary has no way to
// inject a fault.
//
//   mpirun -np 2 strata_faults --fault corrupt-hidden@0 generate -m MODEL -p "ROMEO:" -n 4
#include <cstdio>
#include <cstring>
#include <string>

#include "cli/strata_main.h"
#include "worker/fault_injection.h"

int main(int argc, char** argv) {
  using namespace strata;
  if (argc < 3 || std::strcmp(argv[1], "--fault") != 0) {
    std::fprintf(stderr, "usage: strata_faults --fault KIND@RANK STRATA_ARGS... (worker/fault_injection.h)\n");
    return 2;
  }
  auto spec = ParseFaultSpec(argv[2]);
  if (!spec.ok()) {
    std::fprintf(stderr, "strata_faults: %s\n", spec.status().message().c_str());
    return 2;
  }
  TestHooks hooks;
  const FaultSpec f = *spec;
  hooks.wrap_transport = [f](std::unique_ptr<Transport> t) { return InjectFaults(std::move(t), f); };
  hooks.between_header_and_payload = FaultHook(f);
  // The program sees its own name and the strata arguments.
  argv[2] = argv[0];
  return StrataMain(argc - 2, argv + 2, hooks);
}
