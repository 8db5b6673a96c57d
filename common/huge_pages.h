// Anonymous memory on transparent huge pages, for data streamed at memory
// bandwidth (a rank's weights, the kernel benches' cold copies): with 4 KiB
// pages the TLB misses cut a single core's DRAM stream by about a quarter.
//
//   HugePageBuffer buf = AllocHugePages(bytes);  // null when it cannot
//   if (buf == nullptr) return FailedPrecondition("...");
#pragma once

#include <cstdint>
#include <memory>

namespace strata {

struct FreeDeleter {
  void operator()(uint8_t* p) const;
};
using HugePageBuffer = std::unique_ptr<uint8_t[], FreeDeleter>;

// At least `bytes` (rounded up to whole 2 MiB pages), 2 MiB-aligned and
// advised MADV_HUGEPAGE; null if the allocation fails or bytes is 0.
HugePageBuffer AllocHugePages(uint64_t bytes);

}  // namespace strata
