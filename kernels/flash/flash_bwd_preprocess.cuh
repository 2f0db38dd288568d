// The first backward kernel: one pass over the rows of the forward's output and its gradient,
// lanes along D, everything in fp32.
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
#include "flash/mma.cuh"
#include "flash/params.h"
#include "flash/utils.cuh"

namespace sluice::flash {

// Rows (b, h, t) with index ((b·H + h)·T + t), which is also D's index in dsum. kHeadDim / 8
// lanes per row, 8 elements (16 bytes) per lane: every tensor here is 16-byte aligned with
// strides in multiples of 8 (flash_api.cu's kernel_ready), so each access is one vector.
template <typename E, int kHeadDim, bool kGated>
__global__ void flash_bwd_preprocess_kernel(const BwdParams p) {
  constexpr int kLanesPerRow = kHeadDim / 8;
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kLanesPerRow;
  const int c = (threadIdx.x % kLanesPerRow) * 8;
  const int64_t n_rows = static_cast<int64_t>(p.batch) * p.heads * p.seqlen_q;
  if (row >= n_rows) return;  // whole rows leave together: kLanesPerRow divides 32
  const int t = static_cast<int>(row % p.seqlen_q);
  const int h = static_cast<int>((row / p.seqlen_q) % p.heads);
  const int b = static_cast<int>(row / (static_cast<int64_t>(p.seqlen_q) * p.heads));
  const E* y = static_cast<const E*>(p.o) + b * p.o_batch_stride + h * p.o_head_stride + t * p.o_row_stride + c;
  const E* dy =
      static_cast<const E*>(p.dout) + b * p.do_batch_stride + h * p.do_head_stride + t * p.do_row_stride + c;
  const uint4 yv = *reinterpret_cast<const uint4*>(y), dyv = *reinterpret_cast<const uint4*>(dy);
  const uint32_t* yw = &yv.x;
  const uint32_t* dyw = &dyv.x;
  float yf[8], dyf[8];
  float acc = 0.f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 a = unpack2<E>(yw[i]), d = unpack2<E>(dyw[i]);
    yf[2 * i] = a.x, yf[2 * i + 1] = a.y, dyf[2 * i] = d.x, dyf[2 * i + 1] = d.y;
    acc += a.x * d.x + a.y * d.y;
  }
#pragma unroll
  for (int s = kLanesPerRow / 2; s > 0; s /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, s);
  if (c == 0) p.dsum[row] = acc;

  if constexpr (kGated) {
    E* dout_attn = static_cast<E*>(p.dout_attn) + b * p.doa_batch_stride + h * p.doa_head_stride +
                   t * p.doa_row_stride + c;
    E* dgate = static_cast<E*>(p.dgate) + b * p.dgate_batch_stride + t * p.dgate_row_stride + h * p.dgate_head_stride;
    float g[8];
    if (p.gate_headwise) {
      const float gh = gate_logit<E>(p, b, h, t, 0);
#pragma unroll
      for (int i = 0; i < 8; ++i) g[i] = gh;
      if (c == 0) *dgate = from_float<E>(acc * sigmoid_complement(gh));
    } else {
      const E* gp = static_cast<const E*>(p.gate) + b * p.gate_batch_stride + t * p.gate_row_stride +
                    h * p.gate_head_stride + c;
      const uint4 gv = *reinterpret_cast<const uint4*>(gp);
      const uint32_t* gw = &gv.x;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 x = unpack2<E>(gw[i]);
        g[2 * i] = x.x, g[2 * i + 1] = x.y;
      }
    }
    uint4 doa, dg;
    uint32_t* doaw = &doa.x;
    uint32_t* dgw = &dg.x;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      doaw[i] = pack2<E>(dyf[2 * i] * sigmoid(g[2 * i]), dyf[2 * i + 1] * sigmoid(g[2 * i + 1]));
      dgw[i] = pack2<E>(dyf[2 * i] * yf[2 * i] * sigmoid_complement(g[2 * i]),
                        dyf[2 * i + 1] * yf[2 * i + 1] * sigmoid_complement(g[2 * i + 1]));
    }
    *reinterpret_cast<uint4*>(dout_attn) = doa;
    if (!p.gate_headwise) *reinterpret_cast<uint4*>(dgate + c) = dg;
  }
}

}  // namespace sluice::flash
