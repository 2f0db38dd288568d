// Deterministic dQ: the backward's optional third kernel (flash_backward with deterministic set,
// the fused backend under at::globalContext().deterministicAlgorithms()).
//
// The key-tile kernel (flash_bwd_kernel.cuh) adds each key tile's dQ part to an fp32 buffer
// with atomics, in whatever order the blocks reach it, so dQ can differ in the last bits
// between runs. This kernel computes dQ the other way round, like the forward: a block owns
// kBlockM query rows of one (batch, head) (traits.h BwdDqTraits: 4 warps of 16 rows) and walks
// the key tiles those rows can see, from the last down (the masked diagonal first), recomputing
//     S = Q·Kᵀ, P = exp2(S·scale·log2 e - L·log2 e)   (0 where masked),  dP = dO·Vᵀ,
//     dS = P ⊙ (dP - D),  dQ += dS·K
// with dS rounded to the input type from the score registers (as the key-tile kernel rounds
// it into shared memory), and writes scale·dQ once, cast to q's dtype. Every row's sum runs in
// one order: bitwise reproducible. The price is S and dP once more; the key-tile kernel then
// runs without its dQ product and atomics (its kDq flag false). Masks and ALiBi as the forward (flash_fwd_kernel.cuh): the scores get
// (slope/scale)·(key - q_ref), q_ref the warp's first query position, and L·log2 e the row part.
#pragma once
#include <cmath>

#include "flash/key_range.h"
#include "flash/mma.cuh"
#include "flash/params.h"
#include "flash/traits.h"
#include "flash/utils.cuh"

namespace sluice::flash {

// kDocs, kAlibi: as the other kernels. p.dout is the attention's own dO (the launcher passes
// dout_attn when gated) and p.dsum is filled (the preprocess kernel ran).
template <typename Traits, bool kDocs, bool kAlibi>
__global__ void __launch_bounds__(Traits::kNThreads) flash_bwd_dq_kernel(const BwdParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // bf16 mma.sync and cp.async need sm_80; the host API never launches below it
#else
  using E = typename Traits::Element;
  constexpr int D = Traits::kHeadDim;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kNThreads = Traits::kNThreads;
  constexpr int kPitch = Traits::kPitch;
  constexpr int kWarpM = Traits::kWarpM;
  constexpr int kNT = kBlockN / 8;  // n8 score tiles per warp row block
  constexpr int kDT = D / 8;        // n8 dQ tiles
  constexpr int kKStage = Traits::kTileBytes / 2;  // elements between the two K stages

  SLUICE_FLASH_DYNAMIC_SMEM(smem);
  E* sQ = reinterpret_cast<E*>(smem + Traits::kSmemQ);
  E* sdO = reinterpret_cast<E*>(smem + Traits::kSmemdO);
  E* sK = reinterpret_cast<E*>(smem + Traits::kSmemK);
  E* sV = reinterpret_cast<E*>(smem + Traits::kSmemV);

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const TileSlot slot = tile_slot(p.order, blockIdx.x);
  const int m_block = p.order.tiles - 1 - slot.tile_rank;  // rank 0: the last query tile, the heaviest
  const int h = slot.group % p.heads;
  const int b = slot.group / p.heads;
  const int kvh = h / (p.heads / p.kv_heads);
  const int T = p.seqlen_q, S = p.seqlen_k;
  const int q0 = m_block * kBlockM;
  const int offset = S - T;  // queries are the last T of the S positions

  const E* gq = static_cast<const E*>(p.q) + b * p.q_batch_stride + h * p.q_head_stride;
  const E* gdo = static_cast<const E*>(p.dout) + b * p.do_batch_stride + h * p.do_head_stride;
  const E* gk = static_cast<const E*>(p.k) + b * p.k_batch_stride + kvh * p.k_head_stride;
  const E* gv = static_cast<const E*>(p.v) + b * p.v_batch_stride + kvh * p.v_head_stride;

  // Key tiles any row of this tile can see (key_range.h).
  const int* doc_start = kDocs ? p.doc_start + b * p.doc_batch_stride : nullptr;
  const TileSpan key_tiles = visible_key_tiles<kDocs>(q0, kBlockM, T, S, p.window, kDocs ? doc_start[q0] : 0, kBlockN);
  const int n_begin = key_tiles.begin, n_end = key_tiles.end;

  cp_async_rows<kBlockM, D, kPitch, kNThreads>(sQ, gq, p.q_row_stride, q0, T, tid);
  cp_async_rows<kBlockM, D, kPitch, kNThreads>(sdO, gdo, p.do_row_stride, q0, T, tid);
  if (n_end > n_begin) {
    cp_async_rows<kBlockN, D, kPitch, kNThreads>(sK, gk, p.k_row_stride, (n_end - 1) * kBlockN, S, tid);
    cp_async_rows<kBlockN, D, kPitch, kNThreads>(sV, gv, p.v_row_stride, (n_end - 1) * kBlockN, S, tid);
  }
  cp_async_commit();

  // This thread's rows g and g+8 of the warp's 16: L·log2 e (+inf past the end: P = 0 there),
  // D, and (kDocs) the first key each may see.
  const int warp_row0 = q0 + warp * kWarpM;
  const int64_t row_base = (static_cast<int64_t>(b) * p.heads + h) * T;
  float lse2[2], dsum[2];
  int row_lo[2];
  int thread_lo = 0;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int qi = warp_row0 + g + 8 * half;
    lse2[half] = qi < T ? p.lse[row_base + qi] * 1.4426950408889634f : INFINITY;
    dsum[half] = qi < T ? p.dsum[row_base + qi] : 0.f;
    row_lo[half] = kDocs && qi < T ? doc_start[qi] : 0;
    thread_lo = max(thread_lo, row_lo[half]);
  }
  // kAlibi: the slope in raw score units; the row part relative to q_ref = the warp's first
  // query position goes into L (flash_bwd_kernel.cuh does the same).
  float alibi = 0.f;
  if constexpr (kAlibi) {
    const float slope = p.alibi_slopes[h];
    alibi = __fdividef(slope, p.scale);
#pragma unroll
    for (int half = 0; half < 2; ++half) lse2[half] += slope * 1.4426950408889634f * static_cast<float>(g + 8 * half);
  }

  // ldmatrix lane addressing (mma.cuh): A row-major tiles (Q, dO); B = Kᵀ, Vᵀ tiles of
  // row-major K, V (non-transposed); B = K tiles of row-major K (transposed) for dS·K.
  const uint32_t aQ = smem_addr(sQ + (warp * kWarpM + lane % 16) * kPitch + (lane / 16) * 8);
  const uint32_t adO = smem_addr(sdO + (warp * kWarpM + lane % 16) * kPitch + (lane / 16) * 8);
  const uint32_t aKt = smem_addr(sK + (lane % 8 + (lane / 16) * 8) * kPitch + ((lane / 8) % 2) * 8);
  const uint32_t aVt = smem_addr(sV + (lane % 8 + (lane / 16) * 8) * kPitch + ((lane / 8) % 2) * 8);
  const uint32_t aKb = smem_addr(sK + (lane % 8 + ((lane / 8) % 2) * 8) * kPitch + (lane / 16) * 8);

  float dq[kDT][4];
#pragma unroll
  for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
    for (int r = 0; r < 4; ++r) dq[dt][r] = 0.f;

  uint32_t kst = 0;  // bytes: the K stage of the current tile
  for (int n_block = n_end - 1; n_block >= n_begin; --n_block) {
    const int k0 = n_block * kBlockN;
    cp_async_wait<0>();
    __syncthreads();  // K, V (and Q, dO) landed; every warp is done with the other K stage
    if (n_block > n_begin) {
      cp_async_rows<kBlockN, D, kPitch, kNThreads>(sK + (kst == 0 ? kKStage : 0), gk, p.k_row_stride, k0 - kBlockN,
                                                   S, tid);
      cp_async_commit();
    }

    // The warp's one m16 tile of scores (as [1][...]: the shared helpers take m-tiles) and dP.
    float s[1][kNT][4], dp[kNT][4];
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int r = 0; r < 4; ++r) s[0][nt][r] = 0.f, dp[nt][r] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t qa[4], da[4];
      ldmatrix_x4(qa, aQ + kk * 32);
      ldmatrix_x4(da, adO + kk * 32);
#pragma unroll
      for (int np = 0; np < kNT / 2; ++np) {
        uint32_t kb[4], vb[4];
        ldmatrix_x4(kb, aKt + kst + (np * 16 * kPitch + kk * 16) * 2);
        ldmatrix_x4(vb, aVt + (np * 16 * kPitch + kk * 16) * 2);
        mma_16816<E>(s[0][2 * np], qa, kb[0], kb[1]);
        mma_16816<E>(s[0][2 * np + 1], qa, kb[2], kb[3]);
        mma_16816<E>(dp[2 * np], da, vb[0], vb[1]);
        mma_16816<E>(dp[2 * np + 1], da, vb[2], vb[3]);
      }
    }
    __syncthreads();  // every warp is done with this V
    if (n_block > n_begin) {
      cp_async_rows<kBlockN, D, kPitch, kNThreads>(sV, gv, p.v_row_stride, k0 - kBlockN, S, tid);
      cp_async_commit();
    }

    // Hidden scores become -inf (P = 0) where some (row, key) of the warp's tile is hidden:
    // past the end of the keys, right of the diagonal, left of the window or the document.
    const int qpos_first = offset + warp_row0;
    const int qpos_last = qpos_first + kWarpM - 1;
    bool need_mask = (k0 + kBlockN > S) | (k0 + kBlockN - 1 > qpos_first) |
                     ((p.window > 0) & (qpos_last - k0 >= p.window));
    if constexpr (kDocs) need_mask = need_mask || __any_sync(0xffffffffu, k0 < thread_lo);
    if (need_mask) {
      KeyRange rows[2];
#pragma unroll
      for (int half = 0; half < 2; ++half)
        rows[half] = visible_keys(qpos_first + g + 8 * half, S, p.window, kDocs ? row_lo[half] : 0);
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int r = 0; r < 4; ++r)
          if (rows[r / 2].hides(k0 + nt * 8 + 2 * t + (r & 1))) s[0][nt][r] = -INFINITY;
    }
    if constexpr (kAlibi) add_alibi(s, alibi, k0 + 2 * t - qpos_first);
    // dS = P ⊙ (dP - D) in fp32, kept in s.
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const float pv = fast_exp2(fmaf(s[0][nt][r], p.scale_log2, -lse2[r / 2]));
        s[0][nt][r] = pv * (dp[nt][r] - dsum[r / 2]);
      }

    // dQ += dS·K: two adjacent score tiles are one A fragment over 16 keys, rounded to E.
#pragma unroll
    for (int kc = 0; kc < kBlockN / 16; ++kc) {
      uint32_t a[4];
      a[0] = pack2<E>(s[0][2 * kc][0], s[0][2 * kc][1]);
      a[1] = pack2<E>(s[0][2 * kc][2], s[0][2 * kc][3]);
      a[2] = pack2<E>(s[0][2 * kc + 1][0], s[0][2 * kc + 1][1]);
      a[3] = pack2<E>(s[0][2 * kc + 1][2], s[0][2 * kc + 1][3]);
#pragma unroll
      for (int dp2 = 0; dp2 < D / 16; ++dp2) {
        uint32_t kb[4];
        ldmatrix_x4_trans(kb, aKb + kst + (kc * 16 * kPitch + dp2 * 16) * 2);
        mma_16816<E>(dq[2 * dp2], a, kb[0], kb[1]);
        mma_16816<E>(dq[2 * dp2 + 1], a, kb[2], kb[3]);
      }
    }
    kst ^= kKStage * 2;
  }

  // Epilogue: scale·dQ, one rounding; rows past T are not written.
  E* gdq = static_cast<E*>(p.dq) + b * p.dq_batch_stride + h * p.dq_head_stride;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int qi = warp_row0 + g + 8 * half;
    if (qi >= T) continue;
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt)
      *reinterpret_cast<uint32_t*>(gdq + qi * p.dq_row_stride + dt * 8 + 2 * t) =
          pack2<E>(dq[dt][2 * half] * p.scale, dq[dt][2 * half + 1] * p.scale);
  }
#endif
}

}  // namespace sluice::flash
