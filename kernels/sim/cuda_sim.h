// cuda_sim: runs the kernels' CUDA C++ on the CPU, so tests on machines without a GPU (CI, the
// development machine) execute the kernels' own code: index arithmetic, masks, barriers,
// cp.async pipelines and fragment layouts, not only a re-derivation of their arithmetic.
//
// Include it before any kernel header in a host (g++) translation unit; it defines
// SLUICE_CUDA_SIM, under which kernels/flash/mma.cuh and gate.cuh swap their inline PTX for the
// functions below. One block runs at a time; each of its threads is a fiber on the calling OS
// thread, switched only at __syncthreads and warp collectives (ldmatrix, mma.sync, shuffles,
// votes, __syncwarp), so a run is deterministic. What varies between runs, to expose races:
// the order in which ready threads run (Options::order) and when cp.async copies land
// (Options::copies: at issue, or only at the cp.async.wait_group that covers them).
//
// Checked while it runs, each failure an exception from launch() naming the thread: ldmatrix and
// cp.async addresses inside the launch's dynamic shared memory; cp.async sources inside the
// registered global buffers (GlobalBuffers); all lanes of a warp at the same collective (no
// divergence); no deadlock; no thread ending with cp.async copies it never waited for.
// Dynamic shared memory starts filled with NaN bytes (0xFF) so a read of an unwritten element
// poisons the results. Not modelled: timing, memory ordering beyond the barriers, atomics'
// order (they run in schedule order), fast-math approximations (ex2/rcp are exact here).
#pragma once
#define SLUICE_CUDA_SIM 1

// The CUDA headers keep these if defined first (crt/host_defines.h): static, because one block
// runs at a time and a block's threads share the kernel's static __shared__ variables.
#define __shared__ static
#define __launch_bounds__(...)

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <vector_types.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "sim/launch.h"

namespace sluice::sim {

// --- device side: called by kernel code through the shims below and in mma.cuh/gate.cuh ---
const uint3& thread_index();
const uint3& block_index();
const dim3& block_dim();
const dim3& grid_dim();
[[noreturn]] void fail(const std::string& what);  // aborts the launch with this message
void sync_threads();
void sync_warp();
bool any_sync(unsigned mask, bool predicate);
// Lane l gets `value` of lane l ^ lane_mask (any 4-byte value).
uint32_t shfl_xor_bits(unsigned mask, uint32_t value, int lane_mask);
unsigned char* dynamic_smem();
uint32_t shared_address(const void* p);  // offset into dynamic shared memory
void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr, bool trans);
void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, bool bf16);
void cp_async_16(uint32_t dst, const void* src, int src_bytes);  // src_bytes 16 or 0 (zero-fill)
void cp_async_commit();
void cp_async_wait(int pending_groups);

}  // namespace sluice::sim

// CUDA built-ins the kernels use, as host functions.
#define threadIdx (::sluice::sim::thread_index())
#define blockIdx (::sluice::sim::block_index())
#define blockDim (::sluice::sim::block_dim())
#define gridDim (::sluice::sim::grid_dim())

inline void __syncthreads() { ::sluice::sim::sync_threads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { ::sluice::sim::sync_warp(); }
inline bool __any_sync(unsigned mask, bool predicate) { return ::sluice::sim::any_sync(mask, predicate); }
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T value, int lane_mask) {
  static_assert(sizeof(T) == 4 && std::is_trivially_copyable_v<T>, "4-byte shuffles only");
  uint32_t bits;
  __builtin_memcpy(&bits, &value, 4);
  bits = ::sluice::sim::shfl_xor_bits(mask, bits, lane_mask);
  __builtin_memcpy(&value, &bits, 4);
  return value;
}
// One block at a time on one OS thread: a plain add is atomic here.
inline float atomicAdd(float* address, float value) {
  const float old = *address;
  *address = old + value;
  return old;
}
inline float __fdividef(float a, float b) { return a / b; }
[[noreturn]] inline void __trap() { ::sluice::sim::fail("__trap()"); }
// Device code calls min/max unqualified on ints (CUDA's overloads).
template <typename A, typename B>
inline std::common_type_t<A, B> min(A a, B b) {
  return b < a ? b : a;
}
template <typename A, typename B>
inline std::common_type_t<A, B> max(A a, B b) {
  return a < b ? b : a;
}
