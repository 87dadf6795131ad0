// Large read-only operands of the packed steps (the wide and lane layouts, several MB read
// whole at every step) on transparent huge pages: with 4 KiB pages a 5 MB layout spans ~1300
// pages and the step's reads miss the TLB; on this project's AMD EPYC (THP "madvise") the
// ternary H=2000 step took 0.15 ms in some processes and 0.19 ms in others with the same code,
// 0.15 ms in every one with the layout on 2 MiB pages (torch's THP_MEM_ALLOC_ENABLE=1, which
// does the same for every allocation of a process).
#include <ATen/ATen.h>

#include <cstdlib>
#include <cstring>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "native.h"

namespace {
constexpr size_t kHugePage = size_t(2) << 20;
}

at::Tensor huge_page_copy(const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), "huge_page_copy: a CPU tensor expected");
  const at::Tensor src = t.contiguous();
  const size_t bytes = src.numel() * src.element_size();
#if defined(__linux__)
  if (bytes >= kHugePage) {
    const size_t size = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    void* p = std::aligned_alloc(kHugePage, size);
    TORCH_CHECK(p != nullptr, "huge_page_copy: out of memory (", size, " bytes)");
    madvise(p, size, MADV_HUGEPAGE);  // before the first touch; advisory (may be refused)
    std::memcpy(p, src.data_ptr(), bytes);
    return at::from_blob(p, src.sizes(), [](void* q) { std::free(q); }, src.options());
  }
#endif
  return src.clone();
}
