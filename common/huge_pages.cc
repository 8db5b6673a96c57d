#include "common/huge_pages.h"

#include <sys/mman.h>

#include <cstdlib>

namespace strata {

void FreeDeleter::operator()(uint8_t* p) const { std::free(p); }

HugePageBuffer AllocHugePages(uint64_t bytes) {
  constexpr uint64_t kHugePage = 2ull << 20;
  if (bytes == 0) return nullptr;
  const uint64_t total = (bytes + kHugePage - 1) & ~(kHugePage - 1);
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(kHugePage, total));
  if (p != nullptr) madvise(p, total, MADV_HUGEPAGE);
  return HugePageBuffer(p);
}

}  // namespace strata
