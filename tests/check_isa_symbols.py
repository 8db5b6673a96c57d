#!/usr/bin/env python3
"""The ISA translation units of strata_kernels (*_avx2.cc, *_avx512.cc,
compiled with -mavx2 / -mavx512f) must not hand the linker any code it could
merge with another file's: every global code symbol they define is their
kernel table's accessor or lives in their own per-ISA namespace
(kernels/isa_namespace.h). An inline function left in a shared namespace
could otherwise be emitted there as a weak symbol, and the linker might keep
the AVX-512 copy for the scalar path (a one-definition-rule violation that
faults on a CPU without AVX-512).

Run by ctest: check_isa_symbols.py OBJECT... (the library's objects, as one
;-separated argument or several). Exits 1 naming each offending symbol."""
import re, subprocess, sys

objects = [o for a in sys.argv[1:] for o in a.split(";") if o]
isa_objects = [o for o in objects if re.search(r"_(avx2|avx512)\.cc\.o(bj)?$", o)]
if len(isa_objects) < 2:
    print(f"FAIL expected the avx2 and avx512 objects among {objects}")
    sys.exit(1)
bad = []
for obj in isa_objects:
    isa = re.search(r"_(avx2|avx512)\.cc\.o", obj).group(1)
    out = subprocess.run(["nm", "-C", "--defined-only", obj], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) < 3:
            continue
        kind, name = parts[1], parts[2]
        # Local symbols (lower case) cannot be merged; weak/strong data
        # such as DW.ref.__gxx_personality_v0 hold no ISA code.
        if kind not in ("T", "W", "i", "u"):
            continue
        if f"::isa_{isa}::" in name or re.fullmatch(r"strata::internal::Avx(2|512)KernelTable\(\)", name):
            continue
        bad.append(f"{obj}: {kind} {name}")
for b in bad:
    print(f"FAIL global code outside the per-ISA namespace: {b}")
print(f"{len(isa_objects)} ISA objects checked, {len(bad)} offending symbols")
sys.exit(1 if bad else 0)
