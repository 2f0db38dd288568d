// The first backward kernel: one pass over the rows of the forward's output and its gradient,
// one warp per row (b, h, t), lanes along D, everything in fp32.
//
// Ungated (o = O, dout = dO): D_i = rowsum(dO ⊙ O), which dS = P ⊙ (dP - D) needs.
// Gated with G1 (o = Y = O ⊙ σ(g), dout = dY; only Y is saved, never O):
//     dO = dY ⊙ σ(g)                        written to dout_attn, the main kernel's dO
//     D_i = rowsum(dO ⊙ O) = rowsum(dY ⊙ Y)  no division by σ(g), which may underflow to 0
//     dg = dY ⊙ O ⊙ σ(g)(1 - σ(g)) = dY ⊙ Y ⊙ (1 - σ(g))        elementwise
//     dg_h = Σ_d dY_d·Y_d·(1 - σ(g_h)) = D_i·(1 - σ(g_h))         headwise
// 1 - σ(g) is computed as σ(-g) (gate.cuh), exact also where σ(g) rounds to 1.
#pragma once
#include <cstdint>

#include "flash/gate.cuh"
#include "flash/params.h"
#include "flash/utils.cuh"

namespace sluice::flash {

// Rows (b, h, t) with index ((b·H + h)·T + t), which is also D's index in dsum.
template <typename E, int kHeadDim, bool kGated>
__global__ void flash_bwd_preprocess_kernel(const BwdParams p) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t n_rows = static_cast<int64_t>(p.batch) * p.heads * p.seqlen_q;
  if (row >= n_rows) return;
  const int t = static_cast<int>(row % p.seqlen_q);
  const int h = static_cast<int>((row / p.seqlen_q) % p.heads);
  const int b = static_cast<int>(row / (static_cast<int64_t>(p.seqlen_q) * p.heads));
  const E* y = static_cast<const E*>(p.o) + b * p.o_batch_stride + h * p.o_head_stride + t * p.o_row_stride;
  const E* dy = static_cast<const E*>(p.dout) + b * p.do_batch_stride + h * p.do_head_stride + t * p.do_row_stride;
  E* dout_attn = nullptr;
  E* dgate = nullptr;
  float g_head = 0.f;  // headwise: the row's one logit
  if constexpr (kGated) {
    dout_attn = static_cast<E*>(p.dout_attn) + b * p.doa_batch_stride + h * p.doa_head_stride + t * p.doa_row_stride;
    dgate = static_cast<E*>(p.dgate) + b * p.dgate_batch_stride + t * p.dgate_row_stride + h * p.dgate_head_stride;
    if (p.gate_headwise) g_head = gate_logit<E>(p, b, h, t, 0);
  }

  float acc = 0.f;
#pragma unroll
  for (int c = lane; c < kHeadDim; c += 32) {
    const float yv = to_float(y[c]), dyv = to_float(dy[c]);
    acc += yv * dyv;
    if constexpr (kGated) {
      const float g = p.gate_headwise ? g_head : gate_logit<E>(p, b, h, t, c);
      dout_attn[c] = from_float<E>(dyv * sigmoid(g));
      if (!p.gate_headwise) dgate[c] = from_float<E>(dyv * yv * sigmoid_complement(g));
    }
  }
#pragma unroll
  for (int s = 16; s > 0; s /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, s);
  if (lane == 0) {
    p.dsum[row] = acc;
    if constexpr (kGated) {
      if (p.gate_headwise) *dgate = from_float<E>(acc * sigmoid_complement(g_head));
    }
  }
}

}  // namespace sluice::flash
