// Which instruction set the kernels run with. One dispatch point
// (kernel_table.cc) picks the best ISA the CPU supports, once, at first use;
// the environment variable STRATA_ISA=ref|avx2|avx512 forces a choice (an
// unknown value or an ISA the CPU lacks falls back to the best available,
// silently). Callers never #ifdef on the ISA.
//
// Numerics per ISA: for the float types (F32/F16/BF16) avx2 and avx512 use the
// same 16-lane f32 accumulation order and the same reduction tree, so they give
// bit-identical results; ref sums sequentially and differs from them in the
// last bits. For the quantized types (integer path, matmul.h) and the small
// ops (ops.h: RMSNorm, softmax, SiLU, RoPE, attention's weighted sum) all three
// are bit-identical. avx512 requires AVX512 F/BW/VL/DQ and VNNI.
#pragma once

namespace strata {

enum class Isa { kRef = 0, kAvx2 = 1, kAvx512 = 2 };
inline constexpr int kNumIsas = 3;

const char* IsaName(Isa isa);       // "ref", "avx2", "avx512"
bool IsaAvailable(Isa isa);         // the CPU (and this build) can run it
Isa ActiveIsaKind();                // the choice made at start-up
const char* ActiveIsa();            // IsaName(ActiveIsaKind())

}  // namespace strata
