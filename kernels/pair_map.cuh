// The rotate-half pair loop behind the RoPE and CoCA kernels (rope.cu, coca.cu). x is a
// contiguous [B, T, H, D] tensor seen as rows of D = 2·half elements, row = (b·T + t)·H + h;
// pair j of a row is (x[j], x[j + half]), rotated by (cos, sin)[t][j] (fp32 [T, half]).
//
// Each thread maps kVec consecutive pairs of one row: with kVec = 8 and a 2-byte type, x[j..j+7]
// and x[j+half..j+half+7] are one 16-byte load each and cos/sin two each, so a warp moves 512
// contiguous bytes per access instead of 64, and the row/position division is done once per 8
// pairs. pair_map_vec_ok() says when that layout holds (half % 8 == 0, 16-byte aligned bases);
// otherwise kVec = 1, one pair per thread.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "pack.cuh"
#include "pair_index.h"

namespace sluice::kernels {

// A pair's two results (at j and j + half).
struct PairOut {
  float a, b;
};

// out[pair] = op(x1, x2, y1, y2, c, s) for every pair, y the optional second input (a
// gradient, or unused: then y1 = y2 = 0). kVec pairs per thread.
template <typename scalar_t, int kVec, bool kTwoInputs, typename Op>
__global__ void pair_map_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ y,
                                const float* __restrict__ cos, const float* __restrict__ sin,
                                scalar_t* __restrict__ out, int64_t n_chunks, int64_t T, int64_t H, int64_t half,
                                Op op) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_chunks) return;
  const PairChunk k = pair_chunk(i, kVec, T, H, half);
  using P = Pack<scalar_t, kVec>;
  using F = Pack<float, kVec>;
  const P x1 = *reinterpret_cast<const P*>(x + k.lo), x2 = *reinterpret_cast<const P*>(x + k.hi);
  P y1{}, y2{};
  if constexpr (kTwoInputs) y1 = *reinterpret_cast<const P*>(y + k.lo), y2 = *reinterpret_cast<const P*>(y + k.hi);
  const F c = *reinterpret_cast<const F*>(cos + k.table), s = *reinterpret_cast<const F*>(sin + k.table);
  P o1, o2;
#pragma unroll
  for (int v = 0; v < kVec; ++v) {
    const PairOut r = op(static_cast<float>(x1.v[v]), static_cast<float>(x2.v[v]),
                         kTwoInputs ? static_cast<float>(y1.v[v]) : 0.0f,
                         kTwoInputs ? static_cast<float>(y2.v[v]) : 0.0f, c.v[v], s.v[v]);
    o1.v[v] = static_cast<scalar_t>(r.a);
    o2.v[v] = static_cast<scalar_t>(r.b);
  }
  store_pack(reinterpret_cast<P*>(out + k.lo), o1);
  store_pack(reinterpret_cast<P*>(out + k.hi), o2);
}

// The inputs every pair map takes: x a contiguous CUDA [B, T, H, D] with D even, out (and the
// gradient dy, when given) shaped and typed like x, cos/sin fp32 contiguous [T, D/2].
inline void check_pair_map(const char* name, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                           const at::Tensor& out, const at::Tensor* dy = nullptr) {
  TORCH_CHECK(x.is_cuda() && x.dim() == 4 && x.is_contiguous(), name, ": input must be a contiguous CUDA [B, T, H, D]");
  TORCH_CHECK(out.is_contiguous() && out.sizes() == x.sizes() && out.scalar_type() == x.scalar_type(), name,
              ": output must match the input");
  if (dy != nullptr)
    TORCH_CHECK(dy->is_contiguous() && dy->sizes() == x.sizes() && dy->scalar_type() == x.scalar_type(), name,
                ": gradient must match the input");
  const int64_t T = x.size(1), D = x.size(3);
  TORCH_CHECK(D % 2 == 0, name, ": head dim must be even, got ", D);
  TORCH_CHECK(cos.scalar_type() == at::kFloat && cos.is_contiguous() && cos.dim() == 2 && cos.size(0) == T &&
                  cos.size(1) == D / 2,
              name, ": cos must be fp32 [T, D/2]");
  TORCH_CHECK(sin.sizes() == cos.sizes() && sin.scalar_type() == at::kFloat && sin.is_contiguous(), name,
              ": sin must match cos");
}

// Whether the 8-pair layout applies: 2-byte elements, half % 8 == 0 and 16-byte aligned bases
// (cos/sin rows then start at multiples of 32 bytes too).
inline bool pair_map_vec_ok(int64_t element_size, int64_t half, std::initializer_list<const void*> ptrs) {
  return element_size == 2 && half % 8 == 0 && aligned16(ptrs);
}

// Launches pair_map_kernel over x's pairs (x contiguous [B, T, H, 2·half]; y null or like x).
template <typename scalar_t, bool kTwoInputs, typename Op>
void launch_pair_map(const scalar_t* x, const scalar_t* y, const float* cos, const float* sin, scalar_t* out,
                     int64_t n_pairs, int64_t T, int64_t H, int64_t half, Op op, cudaStream_t stream) {
  constexpr int kThreads = 256;
  if (n_pairs == 0) return;
  if constexpr (sizeof(scalar_t) == 2) {
    if (pair_map_vec_ok(sizeof(scalar_t), half, {x, y, cos, sin, out})) {
      const int64_t n_chunks = n_pairs / 8;
      pair_map_kernel<scalar_t, 8, kTwoInputs><<<static_cast<unsigned>((n_chunks + kThreads - 1) / kThreads),
                                                 kThreads, 0, stream>>>(x, y, cos, sin, out, n_chunks, T, H, half, op);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
  }
  pair_map_kernel<scalar_t, 1, kTwoInputs><<<static_cast<unsigned>((n_pairs + kThreads - 1) / kThreads), kThreads, 0,
                                             stream>>>(x, y, cos, sin, out, n_pairs, T, H, half, op);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace sluice::kernels
