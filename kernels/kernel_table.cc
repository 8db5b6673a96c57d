// The one dispatch point: picks the kernel table once from CPUID, or from
// STRATA_ISA=ref|avx2|avx512 when set (unknown or unsupported: best available).
#include "kernels/kernel_table.h"

#include <cstdlib>
#include <cstring>

#include "kernels/quant_blocks.h"

namespace strata {
namespace {

bool CpuHasAvx2() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") &&
         __builtin_cpu_supports("bmi2");
}

bool CpuHasAvx512() {
  return CpuHasAvx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vnni");
}

Isa PickIsa() {
  Isa best = Isa::kRef;
  if (IsaAvailable(Isa::kAvx2)) best = Isa::kAvx2;
  if (IsaAvailable(Isa::kAvx512)) best = Isa::kAvx512;
  const char* env = std::getenv("STRATA_ISA");
  if (env == nullptr) return best;
  for (Isa isa : {Isa::kRef, Isa::kAvx2, Isa::kAvx512})
    if (std::strcmp(env, IsaName(isa)) == 0 && IsaAvailable(isa)) return isa;
  return best;
}

}  // namespace

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kRef: return "ref";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "?";
}

bool IsaAvailable(Isa isa) {
  switch (isa) {
    case Isa::kRef: return true;
    case Isa::kAvx2: return internal::Avx2KernelTable() != nullptr && CpuHasAvx2();
    case Isa::kAvx512: return internal::Avx512KernelTable() != nullptr && CpuHasAvx512();
  }
  return false;
}

Isa ActiveIsaKind() {
  static const Isa isa = PickIsa();  // thread-safe one-time init
  return isa;
}

const char* ActiveIsa() { return IsaName(ActiveIsaKind()); }

namespace internal {

namespace {
int64_t Round64(int64_t bytes) { return (bytes + 63) & ~int64_t{63}; }
}  // namespace

ActLayout MakeActLayout(ActFormat format, int64_t n) {
  ActLayout l;
  l.n = n;
  l.block = format == ActFormat::kQ8K ? kQKK : kQK;
  l.sum_group = format == ActFormat::kQ8K ? 16 : kQK;
  l.off_d = Round64(n);
  l.off_sums = l.off_d + Round64(n / l.block * static_cast<int64_t>(sizeof(float)));
  l.stride = l.off_sums + Round64(n / l.sum_group * static_cast<int64_t>(sizeof(int16_t)));
  return l;
}

ActFormat ActFormatFor(TensorType type) {
  switch (type) {
    case TensorType::kQ4_K:
    case TensorType::kQ5_K:
    case TensorType::kQ6_K: return ActFormat::kQ8K;
    default: return ActFormat::kQ8_32;
  }
}

const KernelTable& KernelsFor(Isa isa) {
  STRATA_CHECK_MSG(IsaAvailable(isa), "kernel ISA not available on this CPU");
  switch (isa) {
    case Isa::kAvx2: return *Avx2KernelTable();
    case Isa::kAvx512: return *Avx512KernelTable();
    default: return RefKernelTable();
  }
}

const KernelTable& ActiveKernels() {
  static const KernelTable& table = KernelsFor(ActiveIsaKind());
  return table;
}

}  // namespace internal
}  // namespace strata
