// FlashAttention-2-style backward (Dao 2023, Algorithm 2) on mma.sync tensor cores.
//
// 1. flash_bwd_preprocess_kernel (flash_bwd_preprocess.cuh): D_i = rowsum(dO_i ⊙ O_i) in fp32, one
//    warp per row; with the fused G1 gate also dO = dY ⊙ σ(g) and the gate's gradient.
// 2. flash_bwd_kernel, 1-D grid of ceil(S / kBlockN) key tiles x B·KV groups in p.order
//    (tile_order.h): a block owns kBlockN keys of one
//    (batch, kv head), K and V in shared memory. For each query head of the GQA group and each
//    query tile that can see these keys (Q, dO double-buffered with cp.async) it recomputes
//        S = Q·Kᵀ, P = exp2(S·scale·log2 e - L·log2 e)   (0 where masked),  dP = dO·Vᵀ,
//        dS = P ⊙ (dP - D)
//    in registers, stores P and dS (rounded to the input type, as FlashAttention-2) to shared
//    memory, and accumulates dV += Pᵀ·dO and dK += dSᵀ·Q in fp32 registers for the whole walk,
//    so dK/dV of a kv head sum over its query heads before the single cast at the end.
//    dQ_i += dS·K is added to a global fp32 buffer with atomics; flash_bwd_convert_dq.cuh scales
//    and casts it afterwards.
//    Warp tilings: traits.h (BwdTraits). ALiBi as in the forward (flash_fwd_kernel.cuh): the
//    scores get (slope/scale)·(key - q_ref), q_ref the warp's first query position, and each
//    row's L·log2 e the row part slope·log2 e·(qpos - q_ref); the bias is constant, so dS and
//    the products are unchanged.
//
// Determinism: dK and dV are bitwise reproducible (one block per key tile, fixed order). dQ is
// NOT: fp32 atomic adds from the key-tile blocks land in an unspecified order, so dQ can differ
// in the last bits between runs. Under deterministic dQ this kernel runs with kDq false and
// flash_bwd_dq_kernel.cuh computes dQ over key tiles in a fixed order instead.
#pragma once
#include <cmath>

#include "flash/key_range.h"
#include "flash/mma.cuh"
#include "flash/params.h"
#include "flash/traits.h"
#include "flash/utils.cuh"

namespace sluice::flash {

// dq[0..1] += (x, y): one vector reduction on sm_90, two scalar ones before.
__device__ __forceinline__ void atomic_add2(float* dq, float x, float y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(dq), "f"(x), "f"(y) : "memory");
#else
  atomicAdd(dq, x);
  atomicAdd(dq + 1, y);
#endif
}

// kDocs: documents packed in rows (params.h doc_start/doc_end); kAlibi: the ALiBi bias
// (params.h alibi_slopes); kDq: dQ into dq_accum (false under deterministic dQ, which
// flash_bwd_dq_kernel.cuh computes). Template flags.
template <typename Traits, bool kDocs, bool kAlibi, bool kDq>
__global__ void __launch_bounds__(Traits::kNThreads, Traits::kMinBlocksPerSm) flash_bwd_kernel(const BwdParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // bf16 mma.sync and cp.async need sm_80; the host API never launches below it
#else
  using E = typename Traits::Element;
  constexpr int D = Traits::kHeadDim;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kNThreads = Traits::kNThreads;
  constexpr int kPitch = Traits::kPitch;
  constexpr int kPitchP = Traits::kPitchP;
  constexpr int kSdpMT = Traits::kSdpMT, kSdpNT = Traits::kSdpNT;
  constexpr int kKvMT = Traits::kKvMT, kKvNT = Traits::kKvNT;
  constexpr int kDqMT = Traits::kDqMT, kDqNT = Traits::kDqNT;
  constexpr int kQStage = Traits::kQTileBytes / 2;  // elements between the two Q (dO) stages

  SLUICE_FLASH_DYNAMIC_SMEM(smem);
  E* sK = reinterpret_cast<E*>(smem + Traits::kSmemK);
  E* sV = reinterpret_cast<E*>(smem + Traits::kSmemV);
  E* sQ = reinterpret_cast<E*>(smem + Traits::kSmemQ);
  E* sdO = reinterpret_cast<E*>(smem + Traits::kSmemdO);
  E* sP = reinterpret_cast<E*>(smem + Traits::kSmemP);
  E* sdS = reinterpret_cast<E*>(smem + Traits::kSmemdS);

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const TileSlot slot = tile_slot(p.order, blockIdx.x);
  const int n_block = slot.tile_rank;  // key tile 0 is seen by every query: the heaviest
  const int kvh = slot.group % p.kv_heads;
  const int b = slot.group / p.kv_heads;
  const int k0 = n_block * kBlockN;
  // The query walk and the epilogue re-read b, kvh and k0 from shared memory: decoded from
  // blockIdx.x (a division) the compiler holds them in registers through the walk (5 spills in
  // the hd128 loop), where the former blockIdx.x/y/z could be re-read for free.
  __shared__ int s_block[3];
  if (tid == 0) s_block[0] = b, s_block[1] = kvh, s_block[2] = k0;
  const volatile int* block_of = s_block;
  const int group = p.heads / p.kv_heads;
  const int T = p.seqlen_q, S = p.seqlen_k;
  const int offset = S - T;

  const E* gk = static_cast<const E*>(p.k) + b * p.k_batch_stride + kvh * p.k_head_stride;
  const E* gv = static_cast<const E*>(p.v) + b * p.v_batch_stride + kvh * p.v_head_stride;

  // Queries that can see a key of this tile: position >= k0 (causal) and, with a window,
  // position < last key + window.
  const int k_last = min(k0 + kBlockN, S) - 1;
  const int q_begin = max(0, k0 - offset);
  int q_end = p.window > 0 ? min(T, k_last + p.window - offset) : T;
  const int* doc_start = kDocs ? p.doc_start + b * p.doc_batch_stride : nullptr;
  if constexpr (kDocs) {
    if (k0 < S) q_end = min(q_end, p.doc_end[b * p.doc_batch_stride + k_last]);  // ends never decrease
  }
  const int m_begin = q_begin / kBlockM;
  const int m_count = q_end > q_begin ? (q_end + kBlockM - 1) / kBlockM - m_begin : 0;
  const int n_iters = m_count * group;  // (head, query tile) pairs, head-major

  // Warp roles (traits.h): S/dP rows and key columns, dK/dV key rows and d columns, dQ rows
  // and d columns.
  const int sdp_row0 = (warp / 4) * (kBlockM / 2), sdp_col0 = (warp % 4) * (kBlockN / 4);
  const int kv_row0 = (warp % 4) * (kBlockN / 4), kv_col0 = (warp / 4) * (D / 2);
  const int dq_row0 = (warp / 4) * (kBlockM / 2), dq_col0 = (warp % 4) * (D / 4);

  // ldmatrix lane addressing (mma.cuh): A row-major tiles, B = Xᵀ tiles of row-major X
  // (non-transposed ldmatrix), B = X tiles of row-major X (transposed ldmatrix), Aᵀ tiles.
  const int a_row = lane % 16, a_col = (lane / 16) * 8;
  const int bt_row = lane % 8 + (lane / 16) * 8, bt_col = ((lane / 8) % 2) * 8;
  const int b_row = lane % 8 + ((lane / 8) % 2) * 8, b_col = (lane / 16) * 8;
  const int at_row = lane % 8 + (lane / 16) * 8, at_col = ((lane / 8) % 2) * 8;
  const uint32_t aQ = smem_addr(sQ + (sdp_row0 + a_row) * kPitch + a_col);
  const uint32_t adO = smem_addr(sdO + (sdp_row0 + a_row) * kPitch + a_col);
  const uint32_t aKt = smem_addr(sK + (sdp_col0 + bt_row) * kPitch + bt_col);
  const uint32_t aVt = smem_addr(sV + (sdp_col0 + bt_row) * kPitch + bt_col);
  const uint32_t aPt = smem_addr(sP + at_row * kPitchP + kv_row0 + at_col);
  const uint32_t adSt = smem_addr(sdS + at_row * kPitchP + kv_row0 + at_col);
  const uint32_t adOb = smem_addr(sdO + b_row * kPitch + kv_col0 + b_col);
  const uint32_t aQb = smem_addr(sQ + b_row * kPitch + kv_col0 + b_col);
  const uint32_t adS = smem_addr(sdS + (dq_row0 + a_row) * kPitchP + a_col);
  const uint32_t aKb = smem_addr(sK + b_row * kPitch + dq_col0 + b_col);

  // The walk's step (head, tile): query head kvh·group + head, query tile m_begin + tile; rows
  // from n_rows on are zero-filled without reading global memory.
  auto load_q_tile = [&](int head, int tile, int stage, int b, int kvh, int n_rows) {
    const int h = kvh * group + head;
    const int q0 = (m_begin + tile) * kBlockM;
    const E* gq = static_cast<const E*>(p.q) + b * p.q_batch_stride + h * p.q_head_stride;
    const E* gdo = static_cast<const E*>(p.dout) + b * p.do_batch_stride + h * p.do_head_stride;
    cp_async_rows<kBlockM, D, kPitch, kNThreads>(sQ + stage * kQStage, gq, p.q_row_stride, q0, n_rows, tid);
    cp_async_rows<kBlockM, D, kPitch, kNThreads>(sdO + stage * kQStage, gdo, p.do_row_stride, q0, n_rows, tid);
  };

  cp_async_rows<kBlockN, D, kPitch, kNThreads>(sK, gk, p.k_row_stride, k0, S, tid);
  cp_async_rows<kBlockN, D, kPitch, kNThreads>(sV, gv, p.v_row_stride, k0, S, tid);
  if (n_iters > 0) load_q_tile(0, 0, 0, b, kvh, T);
  cp_async_commit();
  __syncthreads();  // s_block

  float dk[kKvMT][kKvNT][4], dv[kKvMT][kKvNT][4];
#pragma unroll
  for (int mt = 0; mt < kKvMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < kKvNT; ++nt)
#pragma unroll
      for (int r = 0; r < 4; ++r) dk[mt][nt][r] = 0.f, dv[mt][nt][r] = 0.f;

  // Counters instead of it / m_count and it % m_count: an integer division per iteration.
  int head_i = 0, m_i = 0;
  for (int it = 0; it < n_iters; ++it) {
    int next_head = head_i, next_m = m_i + 1;
    if (next_m == m_count) next_m = 0, ++next_head;
    const int stage = it % 2;
    const int b = block_of[0], kvh = block_of[1];
    const int h = kvh * group + head_i;
    const int q0 = (m_begin + m_i) * kBlockM;
    const uint32_t qoff = stage * kQStage * 2;  // bytes

    // This thread's rows of S: L·log2 e (+inf past the end: P = 0 there) and D.
    float lse2[kSdpMT][2], dsum[kSdpMT][2];
    int row_lo[kSdpMT][2];  // kDocs: first visible key of the row
    int thread_lo = 0;
    const int64_t row_base = (static_cast<int64_t>(b) * p.heads + h) * T;
#pragma unroll
    for (int mt = 0; mt < kSdpMT; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int qi = q0 + sdp_row0 + mt * 16 + g + 8 * half;
        lse2[mt][half] = qi < T ? p.lse[row_base + qi] * 1.4426950408889634f : INFINITY;
        dsum[mt][half] = qi < T ? p.dsum[row_base + qi] : 0.f;
        row_lo[mt][half] = kDocs && qi < T ? doc_start[qi] : 0;
        thread_lo = max(thread_lo, row_lo[mt][half]);
      }

    // kAlibi: this head's slope in raw score units; q_ref = qpos_first below. Adding the row
    // part to L here keeps the per-score cost one FMA.
    float alibi = 0.f;
    if constexpr (kAlibi) {
      const float slope = p.alibi_slopes[h];
      alibi = __fdividef(slope, p.scale);
#pragma unroll
      for (int mt = 0; mt < kSdpMT; ++mt)
#pragma unroll
        for (int half = 0; half < 2; ++half)
          lse2[mt][half] += slope * 1.4426950408889634f * static_cast<float>(mt * 16 + g + 8 * half);
    }

    cp_async_wait<0>();
    __syncthreads();  // this Q/dO stage (and K/V) landed; the previous tile's P/dS are consumed
    // The next step's Q and dO into the other stage, free since the barrier. Without a branch
    // (after the last step the copy only zero-fills that stage) and with b and kvh already in
    // registers, ptxas computes the copy's addresses before the barrier: behind a branch and
    // shared-memory reads they held every warp (one block per SM) 106 instructions after each
    // barrier before its first product at head dim 128, 77 at 64 (now 41 and 24).
    const bool more = it + 1 < n_iters;
    load_q_tile(more ? next_head : head_i, more ? next_m : m_i, stage ^ 1, b, kvh, more ? T : 0);
    cp_async_commit();

    float s[kSdpMT][kSdpNT][4], dp[kSdpMT][kSdpNT][4];
#pragma unroll
    for (int mt = 0; mt < kSdpMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kSdpNT; ++nt)
#pragma unroll
        for (int r = 0; r < 4; ++r) s[mt][nt][r] = 0.f, dp[mt][nt][r] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t qa[kSdpMT][4], da[kSdpMT][4];
#pragma unroll
      for (int mt = 0; mt < kSdpMT; ++mt) {
        ldmatrix_x4(qa[mt], aQ + qoff + (mt * 16 * kPitch + kk * 16) * 2);
        ldmatrix_x4(da[mt], adO + qoff + (mt * 16 * kPitch + kk * 16) * 2);
      }
#pragma unroll
      for (int np = 0; np < kSdpNT / 2; ++np) {
        uint32_t kb[4], vb[4];
        ldmatrix_x4(kb, aKt + (np * 16 * kPitch + kk * 16) * 2);
        ldmatrix_x4(vb, aVt + (np * 16 * kPitch + kk * 16) * 2);
#pragma unroll
        for (int mt = 0; mt < kSdpMT; ++mt) {
          mma_16816<E>(s[mt][2 * np], qa[mt], kb[0], kb[1]);
          mma_16816<E>(s[mt][2 * np + 1], qa[mt], kb[2], kb[3]);
          mma_16816<E>(dp[mt][2 * np], da[mt], vb[0], vb[1]);
          mma_16816<E>(dp[mt][2 * np + 1], da[mt], vb[2], vb[3]);
        }
      }
    }

    // P and dS, rounded to E, into shared memory.
    const int qpos_first = offset + q0 + sdp_row0;
    const int key_first = block_of[2] + sdp_col0;
    bool need_mask = key_first + kBlockN / 4 > S || key_first + kBlockN / 4 - 1 > qpos_first ||
                     (p.window > 0 && qpos_first + kBlockM / 2 - 1 - key_first >= p.window);
    if constexpr (kDocs) need_mask = need_mask || __any_sync(0xffffffffu, key_first < thread_lo);
    // Hidden scores become -inf (so P = exp2(-inf) = 0) in one uniform branch: a test inside
    // the element loop below compiled to one divergent branch per element.
    if (need_mask) {
      // Each row's visible keys as one interval (key_range.h): two compares per score.
      KeyRange rows[kSdpMT][2];
#pragma unroll
      for (int mt = 0; mt < kSdpMT; ++mt)
#pragma unroll
        for (int half = 0; half < 2; ++half)
          rows[mt][half] = visible_keys(qpos_first + mt * 16 + g + 8 * half, S, p.window, kDocs ? row_lo[mt][half] : 0);
#pragma unroll
      for (int mt = 0; mt < kSdpMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kSdpNT; ++nt)
#pragma unroll
          for (int r = 0; r < 4; ++r)
            if (rows[mt][r / 2].hides(key_first + nt * 8 + 2 * t + (r & 1))) s[mt][nt][r] = -INFINITY;
    }
    if constexpr (kAlibi) add_alibi(s, alibi, key_first + 2 * t - qpos_first);
#pragma unroll
    for (int mt = 0; mt < kSdpMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kSdpNT; ++nt) {
        float pv[4], ds[4];
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int half = r / 2;
          pv[r] = fast_exp2(fmaf(s[mt][nt][r], p.scale_log2, -lse2[mt][half]));
          ds[r] = pv[r] * (dp[mt][nt][r] - dsum[mt][half]);
        }
        const int row = sdp_row0 + mt * 16 + g;
        const int col = sdp_col0 + nt * 8 + 2 * t;
        *reinterpret_cast<uint32_t*>(sP + row * kPitchP + col) = pack2<E>(pv[0], pv[1]);
        *reinterpret_cast<uint32_t*>(sP + (row + 8) * kPitchP + col) = pack2<E>(pv[2], pv[3]);
        *reinterpret_cast<uint32_t*>(sdS + row * kPitchP + col) = pack2<E>(ds[0], ds[1]);
        *reinterpret_cast<uint32_t*>(sdS + (row + 8) * kPitchP + col) = pack2<E>(ds[2], ds[3]);
      }
    __syncthreads();  // every row of P and dS is needed below

    // dV += Pᵀ·dO, dK += dSᵀ·Q over the tile's kBlockM queries.
#pragma unroll
    for (int kq = 0; kq < kBlockM / 16; ++kq) {
      uint32_t pt[kKvMT][4], dst[kKvMT][4];
#pragma unroll
      for (int mt = 0; mt < kKvMT; ++mt) {
        ldmatrix_x4_trans(pt[mt], aPt + (kq * 16 * kPitchP + mt * 16) * 2);
        ldmatrix_x4_trans(dst[mt], adSt + (kq * 16 * kPitchP + mt * 16) * 2);
      }
#pragma unroll
      for (int np = 0; np < kKvNT / 2; ++np) {
        uint32_t ob[4], qb[4];
        ldmatrix_x4_trans(ob, adOb + qoff + (kq * 16 * kPitch + np * 16) * 2);
        ldmatrix_x4_trans(qb, aQb + qoff + (kq * 16 * kPitch + np * 16) * 2);
#pragma unroll
        for (int mt = 0; mt < kKvMT; ++mt) {
          mma_16816<E>(dv[mt][2 * np], pt[mt], ob[0], ob[1]);
          mma_16816<E>(dv[mt][2 * np + 1], pt[mt], ob[2], ob[3]);
          mma_16816<E>(dk[mt][2 * np], dst[mt], qb[0], qb[1]);
          mma_16816<E>(dk[mt][2 * np + 1], dst[mt], qb[2], qb[3]);
        }
      }
    }

    // dQ += dS·K for this warp's rows and columns (the scale comes in the conversion); kDq
    // false: the deterministic dQ kernel computes dQ instead.
    if constexpr (kDq) {
      float dq[kDqMT][kDqNT][4];
#pragma unroll
      for (int mt = 0; mt < kDqMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kDqNT; ++nt)
#pragma unroll
          for (int r = 0; r < 4; ++r) dq[mt][nt][r] = 0.f;
#pragma unroll
      for (int kc = 0; kc < kBlockN / 16; ++kc) {
        uint32_t da[kDqMT][4];
#pragma unroll
        for (int mt = 0; mt < kDqMT; ++mt) ldmatrix_x4(da[mt], adS + (mt * 16 * kPitchP + kc * 16) * 2);
#pragma unroll
        for (int np = 0; np < kDqNT / 2; ++np) {
          uint32_t kb[4];
          ldmatrix_x4_trans(kb, aKb + (kc * 16 * kPitch + np * 16) * 2);
#pragma unroll
          for (int mt = 0; mt < kDqMT; ++mt) {
            mma_16816<E>(dq[mt][2 * np], da[mt], kb[0], kb[1]);
            mma_16816<E>(dq[mt][2 * np + 1], da[mt], kb[2], kb[3]);
          }
        }
      }
      // dq_accum is [B, H, T rounded up to kBlockM, D]: every row of a tile exists, so the 16
      // reductions need no bounds test and address one base plus compile-time offsets. With
      // [B, T, H, D] and a test per row, each row rebuilt a 64-bit address in registers the
      // previous row's reductions were still reading (Nsight Compute: ~8% of the stall samples).
      const int64_t dq_row = (static_cast<int64_t>(block_of[0]) * p.heads + h) * p.dq_accum_rows + q0 + dq_row0 + g;
      float* dq_tile = p.dq_accum + dq_row * D + dq_col0 + 2 * t;
#pragma unroll
      for (int mt = 0; mt < kDqMT; ++mt)
#pragma unroll
        for (int half = 0; half < 2; ++half)
#pragma unroll
          for (int nt = 0; nt < kDqNT; ++nt)
            atomic_add2(dq_tile + (mt * 16 + 8 * half) * D + nt * 8, dq[mt][nt][2 * half], dq[mt][nt][2 * half + 1]);
    }
    head_i = next_head, m_i = next_m;
  }
  cp_async_wait<0>();  // the last step's zero-fill: no copy outlives the block

  // Epilogue: dK = scale·Σ dSᵀQ and dV, cast once; each quad writes 16 contiguous bytes.
  const int b_out = block_of[0], kvh_out = block_of[1], k0_out = block_of[2];
  E* gdk = static_cast<E*>(p.dk) + b_out * p.dk_batch_stride + kvh_out * p.dk_head_stride;
  E* gdv = static_cast<E*>(p.dv) + b_out * p.dv_batch_stride + kvh_out * p.dv_head_stride;
#pragma unroll
  for (int mt = 0; mt < kKvMT; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int key = k0_out + kv_row0 + mt * 16 + g + 8 * half;
      if (key >= S) continue;
#pragma unroll
      for (int nt = 0; nt < kKvNT; ++nt) {
        const int c = kv_col0 + nt * 8 + 2 * t;
        *reinterpret_cast<uint32_t*>(gdk + key * p.dk_row_stride + c) =
            pack2<E>(dk[mt][nt][2 * half] * p.scale, dk[mt][nt][2 * half + 1] * p.scale);
        *reinterpret_cast<uint32_t*>(gdv + key * p.dv_row_stride + c) =
            pack2<E>(dv[mt][nt][2 * half], dv[mt][nt][2 * half + 1]);
      }
    }
#endif
}

}  // namespace sluice::flash
