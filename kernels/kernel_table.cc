// The one dispatch point: picks the kernel table once from CPUID, or from
// STRATA_ISA=ref|avx2|avx512 when set (unknown or unsupported: best available).
#include "kernels/kernel_table.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "kernels/quant_blocks.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace strata {
namespace {

// What the CPU and the OS offer, read from CPUID and XCR0 directly: gcc's
// and clang's __builtin_cpu_supports disagree on the names they accept
// (clang 14 has no "f16c"), and a feature is usable only when the OS saves
// its registers on a context switch (OSXSAVE, then XCR0's state bits), which
// the builtins check and a bare CPUID bit does not.
struct CpuFeatures {
  bool avx2 = false;    // AVX2 + FMA + F16C + BMI2 with YMM state enabled: the avx2 kernels' -m flags
  bool avx512 = false;  // AVX-512 F/BW/VL/DQ/VNNI with ZMM and opmask state enabled, on top of avx2
};

#if defined(__x86_64__) || defined(__i386__)
uint64_t XGetBv0() {
  uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

CpuFeatures ReadCpuFeatures() {
  CpuFeatures f;
  unsigned eax, ebx, ecx1, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx1, &edx)) return f;
  const auto bit = [](unsigned reg, int n) { return ((reg >> n) & 1u) != 0; };
  // Leaf 1 ECX: FMA 12, OSXSAVE 27, AVX 28, F16C 29.
  if (!bit(ecx1, 27) || !bit(ecx1, 28)) return f;
  const uint64_t xcr0 = XGetBv0();
  if ((xcr0 & 0x6) != 0x6) return f;  // XMM and YMM state
  unsigned ebx7, ecx7;
  if (!__get_cpuid_count(7, 0, &eax, &ebx7, &ecx7, &edx)) return f;
  // Leaf 7.0 EBX: AVX2 5, BMI2 8, AVX512F 16, AVX512DQ 17, AVX512BW 30,
  // AVX512VL 31; ECX: AVX512_VNNI 11.
  f.avx2 = bit(ebx7, 5) && bit(ecx1, 12) && bit(ecx1, 29) && bit(ebx7, 8);
  const bool zmm_state = (xcr0 & 0xE0) == 0xE0;  // opmask, ZMM_Hi256, Hi16_ZMM
  f.avx512 = f.avx2 && zmm_state && bit(ebx7, 16) && bit(ebx7, 30) && bit(ebx7, 31) && bit(ebx7, 17) &&
             bit(ecx7, 11);
  return f;
}
#else
CpuFeatures ReadCpuFeatures() { return {}; }
#endif

const CpuFeatures& Cpu() {
  static const CpuFeatures f = ReadCpuFeatures();
  return f;
}

bool CpuHasAvx2() { return Cpu().avx2; }
bool CpuHasAvx512() { return Cpu().avx512; }

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
