// The namespace that inline code shared with the ISA translation units lives
// in. kernels_avx2.cc and kernels_avx512.cc are compiled with -mavx2 /
// -mavx512f, and every inline function they include (fp16.h, quant_blocks.h,
// kernel_table.h's slot helpers) is compiled with those flags too; an inline
// function with external linkage may be emitted in several translation units
// and the linker keeps one copy, possibly an AVX-512 one for the scalar path
// (a one-definition-rule violation that faults on a CPU without AVX-512).
// Wrapping such functions in an inline namespace named after the target
// makes each ISA's copies distinct symbols, while callers still write
// strata::F16ToF32 (the way Highway's HWY_NAMESPACE does it):
//
//   namespace strata {
//   inline namespace STRATA_ISA_NAMESPACE {
//   inline float F16ToF32(uint16_t h) { ... }
//   }  // namespace STRATA_ISA_NAMESPACE
//   }  // namespace strata
//
// The name follows the compiler's own target macros, so a file built with
// other -m flags gets its own copies without anyone keeping a list.
// tests/check_isa_symbols.py checks the ISA objects define nothing else
// that the linker could merge.
#pragma once

#if defined(__AVX512F__)
#define STRATA_ISA_NAMESPACE isa_avx512
#elif defined(__AVX2__)
#define STRATA_ISA_NAMESPACE isa_avx2
#else
#define STRATA_ISA_NAMESPACE isa_base
#endif
