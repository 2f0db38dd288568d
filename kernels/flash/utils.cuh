// Device helpers shared by the forward and backward kernels.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

// The kernel's dynamic shared memory (one 128-byte-aligned byte array per block).
#if defined(SLUICE_CUDA_SIM)
#define SLUICE_FLASH_DYNAMIC_SMEM(name) unsigned char* name = ::sluice::sim::dynamic_smem()
#else
#define SLUICE_FLASH_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif

namespace sluice::flash {

__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

template <typename E>
__device__ __forceinline__ E from_float(float x);
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}

// ALiBi's key-dependent part on a warp's score fragments (m16n8 accumulators: element r of
// n-tile nt is column nt·8 + 2t + (r & 1)): s += alibi·(key - q_ref), key - q_ref = first_dist
// + nt·8 + (r & 1) with first_dist = (the thread's first key) - q_ref. The distances are exact in
// fp32 and -inf stays -inf (flash_fwd_kernel.cuh explains q_ref).
template <int MT, int NT>
__device__ __forceinline__ void add_alibi(float (&s)[MT][NT][4], float alibi, int first_dist) {
  const float dist0 = static_cast<float>(first_dist);
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const float dist = dist0 + static_cast<float>(nt * 8 + c);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int half = 0; half < 2; ++half) s[mt][nt][2 * half + c] = fmaf(alibi, dist, s[mt][nt][2 * half + c]);
    }
}

}  // namespace sluice::flash
