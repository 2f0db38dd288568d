// Device helpers shared by the forward and backward kernels.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

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

// The mask of AttentionMask (src/model/attention_core.cpp, allowed_positions): query q_idx
// (absolute position offset + q_idx, offset = S - T) sees key k_idx iff k_idx <= position and,
// with a window w > 0, position - k_idx < w. Rows/keys past the ends of the tile are padding.
__device__ __forceinline__ bool visible(int q_idx, int k_idx, int seqlen_q, int seqlen_k, int window) {
  const int qpos = seqlen_k - seqlen_q + q_idx;
  return q_idx < seqlen_q && k_idx < seqlen_k && k_idx <= qpos && (window == 0 || qpos - k_idx < window);
}

// Copies rows row0 .. row0+kRows-1 of a [rows, kHeadDim] matrix (row stride in elements) into
// shared memory with row pitch kPitch, 16 bytes per thread per step; rows >= n_rows are
// zero-filled (padding must be finite: 0·NaN would poison the products).
template <int kRows, int kHeadDim, int kPitch, int kNThreads, typename E>
__device__ __forceinline__ void load_rows(E* __restrict__ smem, const E* __restrict__ g, int64_t row_stride,
                                          int row0, int n_rows, int tid) {
  constexpr int kChunks = kHeadDim / 8;  // 8 half-precision elements = 16 bytes
  for (int i = tid; i < kRows * kChunks; i += kNThreads) {
    const int r = i / kChunks;
    const int c = (i % kChunks) * 8;
    uint4 val = make_uint4(0u, 0u, 0u, 0u);
    if (row0 + r < n_rows) val = *reinterpret_cast<const uint4*>(g + static_cast<int64_t>(row0 + r) * row_stride + c);
    *reinterpret_cast<uint4*>(smem + r * kPitch + c) = val;
  }
}

}  // namespace sluice::flash
