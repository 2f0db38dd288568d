// FlashAttention-2-style forward (Dao 2023, Algorithm 1) with WMMA tensor-core tiles.
//
// Grid (ceil(T / kBlockM), H, B); a block owns kBlockM query rows of one (batch, head) and
// walks the key tiles those rows can see (causal, optional window). Warp w owns query rows
// 16w..16w+15 for everything after the K/V load: S_w = Q_w·Kᵀ (fp32 WMMA accumulators, stored
// to shared memory because the fragment layout is opaque), the online softmax in fp32 (a lane
// pair per row, statistics in registers), P_w rounded to the input type, O_w += P_w·V with
// O_w kept in fp32 shared memory (rescaled by exp(m_old - m_new) per row before each
// update). Scores are kept in log2 units (scale·log2 e folded in) so exponentials are exp2.
//
// No global N×N matrix: only O and the per-row log-sum-exp L = m + log(l) (natural log) are
// written. Deterministic: no atomics, fixed reduction order.
#pragma once
#include <mma.h>

#include <cmath>

#include "flash/gate.cuh"
#include "flash/params.h"
#include "flash/traits.h"
#include "flash/utils.cuh"

namespace sluice::flash {

template <typename Traits>
__global__ void __launch_bounds__(Traits::kNThreads) flash_fwd_kernel(const FwdParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // bf16 WMMA needs sm_80; the host API never launches below it
#else
  namespace wmma = nvcuda::wmma;
  using E = typename Traits::Element;
  constexpr int D = Traits::kHeadDim;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kNThreads = Traits::kNThreads;
  constexpr int kPitchQKV = Traits::kPitchQKV;
  constexpr int kPitchS = Traits::kPitchS;
  constexpr int kPitchP = Traits::kPitchP;
  constexpr int kPitchO = Traits::kPitchO;

  extern __shared__ __align__(128) unsigned char smem[];
  E* sQ = reinterpret_cast<E*>(smem + Traits::kSmemQ);
  E* sK = reinterpret_cast<E*>(smem + Traits::kSmemK);
  E* sV = reinterpret_cast<E*>(smem + Traits::kSmemV);
  float* sS = reinterpret_cast<float*>(smem + Traits::kSmemS);
  E* sP = reinterpret_cast<E*>(smem + Traits::kSmemP);
  float* sO = reinterpret_cast<float*>(smem + Traits::kSmemO);

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int m_block = blockIdx.x;
  const int h = blockIdx.y;
  const int b = blockIdx.z;
  const int kvh = h / (p.heads / p.kv_heads);
  const int T = p.seqlen_q, S = p.seqlen_k;
  const int q0 = m_block * kBlockM;

  const E* gq = static_cast<const E*>(p.q) + b * p.q_batch_stride + h * p.q_head_stride;
  const E* gk = static_cast<const E*>(p.k) + b * p.k_batch_stride + kvh * p.k_head_stride;
  const E* gv = static_cast<const E*>(p.v) + b * p.v_batch_stride + kvh * p.v_head_stride;
  E* go = static_cast<E*>(p.o) + b * p.o_batch_stride + h * p.o_head_stride;

  // Keys any row of this tile can see: from the first row's window start to the last valid
  // row's own position (queries are the last T of S positions).
  const int offset = S - T;
  const int q_last = min(q0 + kBlockM, T) - 1;
  const int key_end = min(S, offset + q_last + 1);
  const int key_begin = p.window > 0 ? max(0, offset + q0 - p.window + 1) : 0;
  const int n_begin = key_begin / kBlockN;
  const int n_end = (key_end + kBlockN - 1) / kBlockN;

  load_rows<kBlockM, D, kPitchQKV, kNThreads>(sQ, gq, p.q_row_stride, q0, T, tid);

  // This warp's slices: 16 query rows of S, P and O.
  float* sSw = sS + warp * 16 * kPitchS;
  E* sPw = sP + warp * 16 * kPitchP;
  float* sOw = sO + warp * 16 * kPitchO;
  for (int i = lane; i < 16 * D; i += 32) sOw[(i / D) * kPitchO + i % D] = 0.f;

  // Softmax statistics of row `row` (both lanes of the pair hold the same values).
  const int row = lane / 2;
  const int half = lane % 2;  // this lane handles columns half, half+2, half+4, ...
  const int q_idx = q0 + warp * 16 + row;
  float m_i = -INFINITY;  // running max of the log2-scaled scores
  float l_i = 0.f;        // running sum of exp2(score - m_i)

  __syncthreads();  // Q tile in shared memory
  wmma::fragment<wmma::matrix_a, 16, 16, 16, E, wmma::row_major> qf[D / 16];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) wmma::load_matrix_sync(qf[kk], sQ + warp * 16 * kPitchQKV + kk * 16, kPitchQKV);

  for (int n_block = n_begin; n_block < n_end; ++n_block) {
    const int k0 = n_block * kBlockN;
    __syncthreads();  // every warp is done with the previous K/V tile
    load_rows<kBlockN, D, kPitchQKV, kNThreads>(sK, gk, p.k_row_stride, k0, S, tid);
    load_rows<kBlockN, D, kPitchQKV, kNThreads>(sV, gv, p.v_row_stride, k0, S, tid);
    __syncthreads();

    // S_w = Q_w·Kᵀ: Kᵀ as a column-major matrix_b is K row-major.
#pragma unroll
    for (int nt = 0; nt < kBlockN / 16; ++nt) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, E, wmma::col_major> kf;
        wmma::load_matrix_sync(kf, sK + nt * 16 * kPitchQKV + kk * 16, kPitchQKV);
        wmma::mma_sync(acc, qf[kk], kf, acc);
      }
      wmma::store_matrix_sync(sSw + nt * 16, acc, kPitchS, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax of row `row` over this key tile.
    float* srow = sSw + row * kPitchS;
    float tile_max = -INFINITY;
#pragma unroll
    for (int j = 0; j < kBlockN / 2; ++j) {
      const int c = half + 2 * j;
      const float s = visible(q_idx, k0 + c, T, S, p.window) ? srow[c] * p.scale_log2 : -INFINITY;
      srow[c] = s;
      tile_max = fmaxf(tile_max, s);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    const float m_new = fmaxf(m_i, tile_max);
    // A row that has seen no visible key yet keeps m = -inf; subtracting 0 instead keeps
    // exp2(-inf - m) = 0 rather than NaN.
    const float m_use = m_new == -INFINITY ? 0.f : m_new;
    const float alpha = exp2f(m_i - m_use);
    float tile_sum = 0.f;
    E* prow = sPw + row * kPitchP;
#pragma unroll
    for (int j = 0; j < kBlockN / 2; ++j) {
      const int c = half + 2 * j;
      const float pv = exp2f(srow[c] - m_use);
      tile_sum += pv;
      prow[c] = from_float<E>(pv);
    }
    tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, 1);
    l_i = l_i * alpha + tile_sum;
    m_i = m_new;
    float* orow = sOw + row * kPitchO;
#pragma unroll
    for (int j = 0; j < D / 2; ++j) orow[half + 2 * j] *= alpha;
    __syncwarp();

    // O_w += P_w·V
#pragma unroll
    for (int nt = 0; nt < D / 16; ++nt) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, sOw + nt * 16, kPitchO, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, E, wmma::row_major> pf;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, E, wmma::row_major> vf;
        wmma::load_matrix_sync(pf, sPw + kk * 16, kPitchP);
        wmma::load_matrix_sync(vf, sV + kk * 16 * kPitchQKV + nt * 16, kPitchQKV);
        wmma::mma_sync(acc, pf, vf, acc);
      }
      wmma::store_matrix_sync(sOw + nt * 16, acc, kPitchO, wmma::mem_row_major);
    }
    __syncwarp();
  }

  // Epilogue: O = O_acc / l, L = (m + log2 l)·ln 2. Every valid row sees at least its own key,
  // so l > 0 there; padding rows (q_idx >= T) are not written.
  const float inv_l = l_i > 0.f ? 1.f / l_i : 0.f;
  if (half == 0 && q_idx < T) {
    p.lse[(static_cast<int64_t>(b) * p.heads + h) * T + q_idx] =
        l_i > 0.f ? (m_i + log2f(l_i)) * 0.69314718055994531f : -INFINITY;
  }
  // Write 16 rows with the lanes along D (coalesced); row r's 1/l lives in lane 2r.
  for (int r = 0; r < 16; ++r) {
    const float inv = __shfl_sync(0xffffffffu, inv_l, 2 * r);
    const int qi = q0 + warp * 16 + r;
    if (qi >= T) continue;
    E* orow_g = go + static_cast<int64_t>(qi) * p.o_row_stride;
    for (int c = lane; c < D; c += 32) {
      float o = sOw[r * kPitchO + c] * inv;
      if (p.gate != nullptr) o *= gate_sigmoid<E>(p, b, h, qi, c);  // G1 gate: one rounding of O ⊙ σ(g)
      orow_g[c] = from_float<E>(o);
    }
  }
#endif
}

}  // namespace sluice::flash
