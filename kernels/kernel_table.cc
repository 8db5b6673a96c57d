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

#if defined(__x86_64__) || defined(__i386__)
uint64_t XGetBv0() {
  uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

internal::CpuidBits ReadCpuidBits() {
  internal::CpuidBits b;
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return b;
  b.leaf1_ecx = ecx;
  // XGETBV faults unless the OS has enabled it (OSXSAVE, leaf 1 ECX bit 27).
  if ((ecx >> 27) & 1u) b.xcr0 = XGetBv0();
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
    b.has_leaf7 = true;
    b.leaf7_ebx = ebx;
    b.leaf7_ecx = ecx;
  }
  return b;
}
#else
internal::CpuidBits ReadCpuidBits() { return {}; }
#endif

const internal::CpuFeatures& Cpu() {
  static const internal::CpuFeatures f = internal::FeaturesFromCpuid(ReadCpuidBits());
  return f;
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

bool IsaAvailable(Isa isa) { return internal::IsaSupported(Cpu(), isa); }

Isa ActiveIsaKind() {
  static const Isa isa = internal::ChooseIsa(Cpu(), std::getenv("STRATA_ISA"));  // thread-safe one-time init
  return isa;
}

const char* ActiveIsa() { return IsaName(ActiveIsaKind()); }

namespace internal {

CpuFeatures FeaturesFromCpuid(const CpuidBits& b) {
  CpuFeatures f;
  const auto bit = [](uint64_t reg, int n) { return ((reg >> n) & 1u) != 0; };
  // Leaf 1 ECX: FMA 12, OSXSAVE 27, AVX 28, F16C 29.
  if (!bit(b.leaf1_ecx, 27) || !bit(b.leaf1_ecx, 28) || !b.has_leaf7) return f;
  if ((b.xcr0 & 0x6) != 0x6) return f;  // XMM and YMM state
  // Leaf 7.0 EBX: AVX2 5, BMI2 8, AVX512F 16, AVX512DQ 17, AVX512BW 30,
  // AVX512VL 31; ECX: AVX512_VNNI 11.
  f.avx2 = bit(b.leaf7_ebx, 5) && bit(b.leaf1_ecx, 12) && bit(b.leaf1_ecx, 29) && bit(b.leaf7_ebx, 8);
  const bool zmm_state = (b.xcr0 & 0xE0) == 0xE0;  // opmask, ZMM_Hi256, Hi16_ZMM
  f.avx512 = f.avx2 && zmm_state && bit(b.leaf7_ebx, 16) && bit(b.leaf7_ebx, 30) && bit(b.leaf7_ebx, 31) &&
             bit(b.leaf7_ebx, 17) && bit(b.leaf7_ecx, 11);
  return f;
}

bool IsaSupported(const CpuFeatures& cpu, Isa isa) {
  switch (isa) {
    case Isa::kRef: return true;
    case Isa::kAvx2: return cpu.avx2;
    case Isa::kAvx512: return cpu.avx512;
  }
  return false;
}

Isa ChooseIsa(const CpuFeatures& cpu, const char* forced) {
  Isa best = Isa::kRef;
  if (IsaSupported(cpu, Isa::kAvx2)) best = Isa::kAvx2;
  if (IsaSupported(cpu, Isa::kAvx512)) best = Isa::kAvx512;
  if (forced == nullptr) return best;
  for (Isa isa : {Isa::kRef, Isa::kAvx2, Isa::kAvx512})
    if (std::strcmp(forced, IsaName(isa)) == 0 && IsaSupported(cpu, isa)) return isa;
  return best;
}

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
    case Isa::kAvx2: return Avx2KernelTable();
    case Isa::kAvx512: return Avx512KernelTable();
    default: return RefKernelTable();
  }
}

const KernelTable& ActiveKernels() {
  static const KernelTable& table = KernelsFor(ActiveIsaKind());
  return table;
}

}  // namespace internal
}  // namespace strata
