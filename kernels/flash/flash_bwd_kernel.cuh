// FlashAttention-2-style backward (Dao 2023, Algorithm 2) with WMMA tensor-core tiles.
//
// 1. flash_bwd_dsum_kernel: D_i = rowsum(dO_i ⊙ O_i) in fp32, one warp per row.
// 2. flash_bwd_kernel, grid (ceil(S / kBlockN), KV, B): a block owns kBlockN keys of one
//    (batch, kv head). For each query head of the GQA group (h = kvh·G .. kvh·G + G-1) and each
//    query tile that can see these keys it recomputes
//        S = Q·Kᵀ, P = exp(scale·S - L)   (0 where masked),  dP = dO·Vᵀ,  dS = P ⊙ (dP - D),
//    and accumulates dV += Pᵀ·dO and dK += dSᵀ·Q in fp32 WMMA accumulators held in registers
//    for the whole walk (warp w owns key rows 16w..16w+15), so dK/dV of a kv head sum over its
//    query heads in fp32 before the single cast at the end. dQ_i += dS·K (times scale) is
//    added to a global fp32 buffer with atomicAdd, cast to the input type afterwards.
//
// Determinism: dK and dV are bitwise reproducible (one block per key tile, fixed order). dQ is
// NOT: fp32 atomicAdds from the key-tile blocks land in an unspecified order, so dQ can differ
// in the last bits between runs. (A separate dQ kernel looping over key tiles would make it
// deterministic at the cost of recomputing S and dP once more.)
//
// P and dS are rounded to the input type before the dV/dK/dQ products, as in FlashAttention-2.
#pragma once
#include <mma.h>

#include <cmath>

#include "flash/params.h"
#include "flash/traits.h"
#include "flash/utils.cuh"

namespace sluice::flash {

template <typename Traits>
__global__ void __launch_bounds__(Traits::kNThreads) flash_bwd_kernel(const BwdParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // bf16 WMMA needs sm_80; the host API never launches below it
#else
  namespace wmma = nvcuda::wmma;
  using E = typename Traits::Element;
  using AccFrag = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;
  constexpr int D = Traits::kHeadDim;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kNThreads = Traits::kNThreads;
  constexpr int kPitchQKV = Traits::kPitchQKV;
  constexpr int kPitchS = Traits::kPitchS;
  constexpr int kPitchP = Traits::kPitchP;
  constexpr int kPitchAcc = Traits::kPitchAcc;

  extern __shared__ __align__(128) unsigned char smem[];
  E* sQ = reinterpret_cast<E*>(smem + Traits::kSmemQ);
  E* sdO = reinterpret_cast<E*>(smem + Traits::kSmemdO);
  E* sK = reinterpret_cast<E*>(smem + Traits::kSmemK);
  E* sV = reinterpret_cast<E*>(smem + Traits::kSmemV);
  float* sS = reinterpret_cast<float*>(smem + Traits::kSmemS);
  float* sdP = reinterpret_cast<float*>(smem + Traits::kSmemdP);
  float* sAcc = reinterpret_cast<float*>(smem + Traits::kSmemAcc);  // aliases sS/sdP
  E* sP = reinterpret_cast<E*>(smem + Traits::kSmemP);
  E* sdS = reinterpret_cast<E*>(smem + Traits::kSmemdS);
  float* sL = reinterpret_cast<float*>(smem + Traits::kSmemL);
  float* sDsum = reinterpret_cast<float*>(smem + Traits::kSmemDsum);

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int n_block = blockIdx.x;
  const int kvh = blockIdx.y;
  const int b = blockIdx.z;
  const int group = p.heads / p.kv_heads;
  const int T = p.seqlen_q, S = p.seqlen_k;
  const int offset = S - T;
  const int k0 = n_block * kBlockN;

  const E* gk = static_cast<const E*>(p.k) + b * p.k_batch_stride + kvh * p.k_head_stride;
  const E* gv = static_cast<const E*>(p.v) + b * p.v_batch_stride + kvh * p.v_head_stride;
  load_rows<kBlockN, D, kPitchQKV, kNThreads>(sK, gk, p.k_row_stride, k0, S, tid);
  load_rows<kBlockN, D, kPitchQKV, kNThreads>(sV, gv, p.v_row_stride, k0, S, tid);

  // Queries that can see a key of this tile: position >= k0 (causal) and, with a window,
  // position < last key + window.
  const int k_last = min(k0 + kBlockN, S) - 1;
  const int q_begin = max(0, k0 - offset);
  const int q_end = p.window > 0 ? min(T, k_last + p.window - offset) : T;
  const int m_begin = q_begin / kBlockM;
  const int m_end = q_end > q_begin ? (q_end + kBlockM - 1) / kBlockM : m_begin;

  AccFrag dk_acc[D / 16], dv_acc[D / 16];
#pragma unroll
  for (int nt = 0; nt < D / 16; ++nt) {
    wmma::fill_fragment(dk_acc[nt], 0.f);
    wmma::fill_fragment(dv_acc[nt], 0.f);
  }

  const int row = lane / 2;   // the row of S/dP this lane pair turns into P/dS
  const int half = lane % 2;  // columns half, half+2, ...

  for (int hh = 0; hh < group; ++hh) {
    const int h = kvh * group + hh;
    const E* gq = static_cast<const E*>(p.q) + b * p.q_batch_stride + h * p.q_head_stride;
    const E* gdo = static_cast<const E*>(p.dout) + b * p.do_batch_stride + h * p.do_head_stride;
    const float* glse = p.lse + (static_cast<int64_t>(b) * p.heads + h) * T;
    const float* gdsum = p.dsum + (static_cast<int64_t>(b) * p.heads + h) * T;

    for (int m_block = m_begin; m_block < m_end; ++m_block) {
      const int q0 = m_block * kBlockM;
      __syncthreads();  // every warp is done with the previous Q/dO/P/dS tiles and the dQ scratch
      load_rows<kBlockM, D, kPitchQKV, kNThreads>(sQ, gq, p.q_row_stride, q0, T, tid);
      load_rows<kBlockM, D, kPitchQKV, kNThreads>(sdO, gdo, p.do_row_stride, q0, T, tid);
      for (int i = tid; i < kBlockM; i += kNThreads) {
        const bool valid = q0 + i < T;
        sL[i] = valid ? glse[q0 + i] * 1.4426950408889634f : 0.f;
        sDsum[i] = valid ? gdsum[q0 + i] : 0.f;
      }
      __syncthreads();

      // S and dP for query rows 16w..16w+15 (Kᵀ, Vᵀ as column-major matrix_b = K, V row-major).
      float* sSw = sS + warp * 16 * kPitchS;
      float* sdPw = sdP + warp * 16 * kPitchS;
#pragma unroll
      for (int nt = 0; nt < kBlockN / 16; ++nt) {
        AccFrag acc_s, acc_dp;
        wmma::fill_fragment(acc_s, 0.f);
        wmma::fill_fragment(acc_dp, 0.f);
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, E, wmma::row_major> a;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, E, wmma::col_major> bt;
          wmma::load_matrix_sync(a, sQ + warp * 16 * kPitchQKV + kk * 16, kPitchQKV);
          wmma::load_matrix_sync(bt, sK + nt * 16 * kPitchQKV + kk * 16, kPitchQKV);
          wmma::mma_sync(acc_s, a, bt, acc_s);
          wmma::load_matrix_sync(a, sdO + warp * 16 * kPitchQKV + kk * 16, kPitchQKV);
          wmma::load_matrix_sync(bt, sV + nt * 16 * kPitchQKV + kk * 16, kPitchQKV);
          wmma::mma_sync(acc_dp, a, bt, acc_dp);
        }
        wmma::store_matrix_sync(sSw + nt * 16, acc_s, kPitchS, wmma::mem_row_major);
        wmma::store_matrix_sync(sdPw + nt * 16, acc_dp, kPitchS, wmma::mem_row_major);
      }
      __syncwarp();

      // P = exp2(S·scale·log2 e - L·log2 e) on visible entries, dS = P ⊙ (dP - D_i).
      {
        const int r = warp * 16 + row;
        const int q_idx = q0 + r;
        const float l2 = sL[r];
        const float di = sDsum[r];
#pragma unroll
        for (int j = 0; j < kBlockN / 2; ++j) {
          const int c = half + 2 * j;
          const float pv = visible(q_idx, k0 + c, T, S, p.window) ? exp2f(sS[r * kPitchS + c] * p.scale_log2 - l2) : 0.f;
          sP[r * kPitchP + c] = from_float<E>(pv);
          sdS[r * kPitchP + c] = from_float<E>(pv * (sdP[r * kPitchS + c] - di));
        }
      }
      __syncthreads();  // all rows of P and dS are needed below; S/dP are dead from here on

      // dV += Pᵀ·dO, dK += dSᵀ·Q for key rows 16w..16w+15 (Pᵀ, dSᵀ: column-major views of P, dS).
#pragma unroll
      for (int kk = 0; kk < kBlockM / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, E, wmma::col_major> pt, dst;
        wmma::load_matrix_sync(pt, sP + kk * 16 * kPitchP + warp * 16, kPitchP);
        wmma::load_matrix_sync(dst, sdS + kk * 16 * kPitchP + warp * 16, kPitchP);
#pragma unroll
        for (int nt = 0; nt < D / 16; ++nt) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, E, wmma::row_major> bf;
          wmma::load_matrix_sync(bf, sdO + kk * 16 * kPitchQKV + nt * 16, kPitchQKV);
          wmma::mma_sync(dv_acc[nt], pt, bf, dv_acc[nt]);
          wmma::load_matrix_sync(bf, sQ + kk * 16 * kPitchQKV + nt * 16, kPitchQKV);
          wmma::mma_sync(dk_acc[nt], dst, bf, dk_acc[nt]);
        }
      }

      // dQ for query rows 16w..16w+15: dS_w·K, through fp32 scratch (row-owned by this warp).
      float* sAccw = sAcc + warp * 16 * kPitchAcc;
#pragma unroll
      for (int nt = 0; nt < D / 16; ++nt) {
        AccFrag acc;
        wmma::fill_fragment(acc, 0.f);
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk) {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, E, wmma::row_major> a;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, E, wmma::row_major> bk;
          wmma::load_matrix_sync(a, sdS + warp * 16 * kPitchP + kk * 16, kPitchP);
          wmma::load_matrix_sync(bk, sK + kk * 16 * kPitchQKV + nt * 16, kPitchQKV);
          wmma::mma_sync(acc, a, bk, acc);
        }
        wmma::store_matrix_sync(sAccw + nt * 16, acc, kPitchAcc, wmma::mem_row_major);
      }
      __syncwarp();
      for (int r = 0; r < 16; ++r) {
        const int q_idx = q0 + warp * 16 + r;
        if (q_idx >= T) break;
        float* dq = p.dq_accum + ((static_cast<int64_t>(b) * T + q_idx) * p.heads + h) * D;
        for (int c = lane; c < D; c += 32) atomicAdd(dq + c, sAccw[r * kPitchAcc + c] * p.scale);
      }
    }
  }

  // Epilogue: dK = scale·Σ dSᵀQ and dV, cast once, through the fp32 scratch (key rows 16w..).
  __syncthreads();  // the scratch aliases S/dP, which other warps may still be reading
  float* sAccw = sAcc + warp * 16 * kPitchAcc;
  E* gdk = static_cast<E*>(p.dk) + b * p.dk_batch_stride + kvh * p.dk_head_stride;
  E* gdv = static_cast<E*>(p.dv) + b * p.dv_batch_stride + kvh * p.dv_head_stride;
#pragma unroll
  for (int pass = 0; pass < 2; ++pass) {
#pragma unroll
    for (int nt = 0; nt < D / 16; ++nt)
      wmma::store_matrix_sync(sAccw + nt * 16, pass == 0 ? dk_acc[nt] : dv_acc[nt], kPitchAcc, wmma::mem_row_major);
    __syncwarp();
    const float mult = pass == 0 ? p.scale : 1.f;
    E* g = pass == 0 ? gdk : gdv;
    const int64_t row_stride = pass == 0 ? p.dk_row_stride : p.dv_row_stride;
    for (int r = 0; r < 16; ++r) {
      const int key = k0 + warp * 16 + r;
      if (key >= S) break;
      for (int c = lane; c < D; c += 32) g[key * row_stride + c] = from_float<E>(sAccw[r * kPitchAcc + c] * mult);
    }
    __syncwarp();  // the second pass overwrites the scratch
  }
#endif
}

}  // namespace sluice::flash
