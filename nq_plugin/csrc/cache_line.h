// Memory on 64-byte boundaries for the lookup kernels' tables (packed_products.h, q8_lookup.h),
// its elements left unset until their builder writes every one (no zeroing pass per step): a
// table register's load (32 or 64 bytes) then never spans two cache lines, as with
// std::vector's 16-byte alignment every other 32-byte load would.
#pragma once
#include <cstddef>
#include <new>
#include <utility>

namespace nq_native {

template <typename T>
struct CacheLineAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};
  CacheLineAllocator() = default;
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
  // default-initialized elements (not zeroed): the tables are written whole by their builders
  template <typename U>
  void construct(U*) noexcept {}
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  void deallocate(T* p, std::size_t) { ::operator delete(p, kAlign); }
  template <typename U>
  bool operator==(const CacheLineAllocator<U>&) const { return true; }
};

}  // namespace nq_native
