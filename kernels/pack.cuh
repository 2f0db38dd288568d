// Vectorised access for the elementwise kernels: N elements loaded and stored as one unit, so a
// thread moves 16 bytes per access (8 bf16/fp16 values) instead of 2.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>

namespace sluice::kernels {

// Alignment capped at 16 bytes (the widest load), which aligned16 checks for the bases.
template <typename T, int N>
struct alignas(sizeof(T) * N > 16 ? 16 : sizeof(T) * N) Pack {
  T v[N];
};

// Stores a Pack to global memory; 8 two-byte values as one 16-byte store (left to itself the
// compiler split a Pack, or a uint4 built from it, into 4-byte stores in pair_map_kernel).
template <typename T, int N>
__device__ __forceinline__ void store_pack(Pack<T, N>* dst, const Pack<T, N>& v) {
  if constexpr (sizeof(T) == 2 && N == 8) {
    uint32_t w[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      uint16_t lo, hi;
      memcpy(&lo, &v.v[2 * k], 2);
      memcpy(&hi, &v.v[2 * k + 1], 2);
      w[k] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
    }
    asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"l"(dst), "r"(w[0]), "r"(w[1]), "r"(w[2]), "r"(w[3])
                 : "memory");
  } else {
    *dst = v;
  }
}

// Every non-null pointer 16-byte aligned.
inline bool aligned16(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs)
    if (p != nullptr && reinterpret_cast<std::uintptr_t>(p) % 16 != 0) return false;
  return true;
}

}  // namespace sluice::kernels
