// Test-only faults for the fault and dump tests: a rank that corrupts the
// header of the first activations it sends on, a rank that perturbs the
// activations it receives, a rank that stops between a header and its
// payload. They are injected around the transport, never read from the
// environment: only the strata_faults test binary (tests/faults_main.cc)
// installs them, so no variable or flag can turn them on in the strata
// binary a user runs.
//
//   STRATA_ASSIGN_OR_RETURN(FaultSpec f, ParseFaultSpec("corrupt-hidden@0"));
//   transport = InjectFaults(std::move(transport), f);
//
// Specs, KIND@RANK (the rank that misbehaves):
//   corrupt-hidden, corrupt-n_tok, corrupt-payload, corrupt-dtype
//       the first forward batch the rank sends on carries a wrong hidden
//       size, a wrong token count, a payload 4 bytes short, an unknown dtype;
//   perturb-input
//       every f32 activation the rank receives is raised by 0.05 (its first
//       layer then computes from broken input: `strata diff` must name it);
//   stop-after-header
//       the first time the rank sends a message with a payload, it sends the
//       header and stops itself (SIGSTOP) before the payload: invisible to
//       MPI, to be found by the receiver's deadline.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "worker/transport.h"

namespace strata {

struct FaultSpec {
  enum class Kind {
    kCorruptHidden,
    kCorruptNTok,
    kCorruptPayload,
    kCorruptDType,
    kPerturbInput,
    kStopAfterHeader,
  };
  Kind kind = Kind::kCorruptHidden;
  int rank = 0;
};

Result<FaultSpec> ParseFaultSpec(const std::string& spec);

// `inner` with the spec's corruption or perturbation on the rank it names
// (stop-after-header needs the MPI transport's hook below instead).
std::unique_ptr<Transport> InjectFaults(std::unique_ptr<Transport> inner, const FaultSpec& spec);

// The MPI transport's hook for stop-after-header; null for the other kinds.
BetweenHeaderAndPayloadHook FaultHook(const FaultSpec& spec);

}  // namespace strata
