// The backward's last kernel (default, non-deterministic dQ): dq = scale·dq_accum, cast once to
// q's dtype. dq_accum is [B, H, T rounded up, D] fp32 (the key-tile kernel's atomic sums of
// dS·K, flash_bwd_kernel.cuh); dq is [B, H, T, D] with SelfAttention's strides ([B, T, H, D]
// memory). Rows as in flash_bwd_preprocess.cuh: kHeadDim / 8 lanes per row, 8 elements per lane,
// two 16-byte loads and one 16-byte store each (ATen's strided copy did this with per-element
// index arithmetic and a separate multiply in the key-tile kernel's loop).
#pragma once
#include <cstdint>

#include "flash/mma.cuh"
#include "flash/params.h"

namespace sluice::flash {

template <typename E, int kHeadDim>
__global__ void flash_bwd_convert_dq_kernel(const BwdParams p) {
  constexpr int kLanesPerRow = kHeadDim / 8;
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kLanesPerRow;
  const int c = (threadIdx.x % kLanesPerRow) * 8;
  const int64_t n_rows = static_cast<int64_t>(p.batch) * p.heads * p.seqlen_q;
  if (row >= n_rows) return;
  const int t = static_cast<int>(row % p.seqlen_q);
  const int64_t bh = row / p.seqlen_q;  // b·H + h
  const int h = static_cast<int>(bh % p.heads);
  const int b = static_cast<int>(bh / p.heads);
  const float* src = p.dq_accum + (bh * p.dq_accum_rows + t) * kHeadDim + c;
  const float4 lo = *reinterpret_cast<const float4*>(src), hi = *reinterpret_cast<const float4*>(src + 4);
  uint4 out;
  out.x = pack2<E>(lo.x * p.scale, lo.y * p.scale);
  out.y = pack2<E>(lo.z * p.scale, lo.w * p.scale);
  out.z = pack2<E>(hi.x * p.scale, hi.y * p.scale);
  out.w = pack2<E>(hi.z * p.scale, hi.w * p.scale);
  E* dst = static_cast<E*>(p.dq) + b * p.dq_batch_stride + h * p.dq_head_stride + t * p.dq_row_stride + c;
  *reinterpret_cast<uint4*>(dst) = out;
}

}  // namespace sluice::flash
