// The whole strata program behind main(): MPI start-up when launched by
// mpirun, the subcommands (cli/command.h), and the rank's part of the parsed
// one. cli/main.cc calls it with no hooks; the fault tests' binary
// (tests/faults_main.cc) with test-only faults around the transport.
#pragma once

#include <functional>
#include <memory>

#include "worker/transport.h"

namespace strata {

// Test-only: what the strata_faults binary puts around the MPI transport
// (worker/fault_injection.h). The strata binary passes none.
struct TestHooks {
  std::function<std::unique_ptr<Transport>(std::unique_ptr<Transport>)> wrap_transport;
  BetweenHeaderAndPayloadHook between_header_and_payload;
};

// The process exit status.
int StrataMain(int argc, char** argv, const TestHooks& hooks = {});

}  // namespace strata
