// FlashAttention-2-style forward (Dao 2023, Algorithm 1) on mma.sync tensor cores.
//
// 1-D grid of ceil(T / kBlockM) query tiles x B·H groups in p.order (tile_order.h): tile rank 0
// is the last query tile, the heaviest (causal work grows with the tile index). A block owns
// kBlockM query rows of one (batch, head); warp w owns rows w·kWarpM.. and keeps, in
// registers, S = Q·Kᵀ for the current key tile, the running row max m and sum l, and the fp32
// output accumulator O. Per key tile (walked from the last visible one down, so the masked
// diagonal tile comes first):
//   wait K; barrier; start loading V          (cp.async, overlaps Q·Kᵀ)
//   S = Q·Kᵀ; mask; m_new = max(m, rowmax S); if m_new exceeds m by more than the slack
//   (kRescaleSlack): O, l *= exp2(m - m_new), m = m_new; P = exp2(S - m)
//   wait V; barrier; start loading the next K (overlaps P·V)
//   O += P·V with P rounded to the input type straight from the score registers.
// Scores stay in raw units; exp2 takes (s - m)·scale·log2(e) as one FMA.
// ALiBi adds (slope/scale)·(key - qpos) to the raw scores. Per row, only the key-dependent part
// relative to the warp's first query position q_ref matters to the softmax (the row's own
// -(slope/scale)·(qpos - q_ref) shifts all its scores alike), so the loop adds
// (slope/scale)·(key - q_ref) with one FMA per score and the epilogue adds the row part to L.
// Where the probability mass is, near the diagonal, key - q_ref stays small, so fp32 keeps it.
//
// No N×N matrix in global memory: only O (scaled by 1/l) and the per-row log-sum-exp
// L = (m·scale·log2 e + log2 l)·ln 2 are written. Deterministic: no atomics.
#pragma once
#include <cmath>

#include "flash/gate.cuh"
#include "flash/key_range.h"
#include "flash/mma.cuh"
#include "flash/params.h"
#include "flash/traits.h"
#include "flash/utils.cuh"

namespace sluice::flash {

// Lazy rescaling (FlashAttention-4's): each row's probabilities are taken against a reference max
// that is raised only when a key tile's max exceeds it by more than this many powers of two, so
// P <= 2^kRescaleSlack, and l and O grow by at most that factor (fp32 holds it; P's rounding to
// bf16/fp16 is relative, so no less exact). O/l and L are exact for any reference. A warp
// whose rows all keep their reference skips the rescale of O (kMT·D/2 multiplies per thread,
// 128 at head dim 128): with random scores nearly every tile after the first, where skipping
// only when no row's max grew at all skipped 10% of the head-dim-128 tiles at 2k keys (that
// variant measured slower than rescaling always: docs/performance.md). 0 raises m on any
// increase, i.e. that variant.
#ifndef SLUICE_FWD_RESCALE_SLACK
#define SLUICE_FWD_RESCALE_SLACK 8
#endif
constexpr float kRescaleSlack = SLUICE_FWD_RESCALE_SLACK;

// kDocs: documents packed in rows (params.h doc_start); kGated: the G1 output gate in the
// epilogue (params.h gate); kAlibi: the ALiBi bias (params.h alibi_slopes). Template flags, so
// the plain kernel pays nothing.
template <typename Traits, bool kDocs, bool kGated, bool kAlibi>
__global__ void __launch_bounds__(Traits::kNThreads, Traits::kMinBlocksPerSm) flash_fwd_kernel(const FwdParams p) {
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
  constexpr int kMT = Traits::kMTiles;
  constexpr int kNT = kBlockN / 8;  // n8 score tiles per row block
  constexpr int kDT = D / 8;        // n8 output tiles

  SLUICE_FLASH_DYNAMIC_SMEM(smem);
  E* sQ = reinterpret_cast<E*>(smem + Traits::kSmemQ);
  E* sK = reinterpret_cast<E*>(smem + Traits::kSmemK);
  E* sV = reinterpret_cast<E*>(smem + Traits::kSmemV);

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int g = lane / 4;  // fragment row (and row + 8)
  const int t = lane % 4;  // fragment column pair
  const TileSlot slot = tile_slot(p.order, blockIdx.x);
  const int m_block = p.order.tiles - 1 - slot.tile_rank;
  const int h = slot.group % p.heads;
  const int b = slot.group / p.heads;
  const int kvh = h / (p.heads / p.kv_heads);
  // The gate copy and the epilogue re-read b and h from shared memory (written here, read after
  // the key loop's first barrier): decoded from blockIdx.x (a division) the compiler would hold
  // them, or the output and gate pointers, in registers through the loop, where the former
  // blockIdx.y/z could be re-read for free. Likewise the block's first query for the elementwise
  // gate's copy: its row bounds, hoisted out of the loop, held registers at head dim 128.
  __shared__ int s_block[3];
  if (tid == 0) s_block[0] = b, s_block[1] = h, s_block[2] = m_block * kBlockM;
  const volatile int* block_of = s_block;
  const int T = p.seqlen_q, S = p.seqlen_k;
  const int q0 = m_block * kBlockM;
  const int offset = S - T;  // queries are the last T of the S positions

  const E* gq = static_cast<const E*>(p.q) + b * p.q_batch_stride + h * p.q_head_stride;
  const E* gk = static_cast<const E*>(p.k) + b * p.k_batch_stride + kvh * p.k_head_stride;
  const E* gv = static_cast<const E*>(p.v) + b * p.v_batch_stride + kvh * p.v_head_stride;

  // Keys any row of this tile can see: from the first row's window start to the last valid
  // row's own position.
  const int q_last = min(q0 + kBlockM, T) - 1;
  const int key_end = min(S, offset + q_last + 1);
  int key_begin = p.window > 0 ? max(0, offset + q0 - p.window + 1) : 0;
  const int* doc_start = kDocs ? p.doc_start + b * p.doc_batch_stride : nullptr;
  if constexpr (kDocs) key_begin = max(key_begin, doc_start[q0]);  // rows' starts never decrease
  const int n_begin = key_begin / kBlockN;
  const int n_end = (key_end + kBlockN - 1) / kBlockN;

  cp_async_rows<kBlockM, D, kPitch, kNThreads>(sQ, gq, p.q_row_stride, q0, T, tid);
  cp_async_rows<kBlockN, D, kPitch, kNThreads>(sK, gk, p.k_row_stride, (n_end - 1) * kBlockN, S, tid);
  // kGated, headwise: one logit per row, which a plain store brings in before the first
  // barrier. Elementwise logits come later, into the warp's own rows of sQ (load_gate_rows).
  E* sG = reinterpret_cast<E*>(smem + Traits::kSmemGate);
  const E* gg = kGated ? static_cast<const E*>(p.gate) + b * p.gate_batch_stride + h * p.gate_head_stride : nullptr;
  if constexpr (kGated) {
    if (p.gate_headwise) {
      for (int r = tid; r < kBlockM; r += kNThreads)
        sG[r] = q0 + r < T ? gg[static_cast<int64_t>(q0 + r) * p.gate_row_stride] : from_float<E>(0.f);
    }
  }
  cp_async_commit();

  float acc_o[kMT][kDT][4];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc_o[mt][dt][r] = 0.f;
  // Row statistics of rows g and g+8 of each m-tile: index 2·mt + (r >= 2). l is this
  // thread's partial sum (its columns only); the quad reduces it once at the end.
  float row_max[2 * kMT], row_sum[2 * kMT];
#pragma unroll
  for (int i = 0; i < 2 * kMT; ++i) row_max[i] = -INFINITY, row_sum[i] = 0.f;

  const int warp_row0 = q0 + warp * kWarpM;  // first query index of this warp
  // kAlibi: this head's slope in raw score units (the scores are q·k before the scale).
  const float alibi = kAlibi ? __fdividef(p.alibi_slopes[h], p.scale) : 0.f;
  // kDocs: the first key each of this thread's rows may see (0 for padding rows).
  int row_lo[2 * kMT];
  int thread_lo = 0;
#pragma unroll
  for (int i = 0; i < 2 * kMT; ++i) {
    const int qi = warp_row0 + (i / 2) * 16 + g + (i % 2) * 8;
    row_lo[i] = kDocs && qi < T ? doc_start[qi] : 0;
    thread_lo = max(thread_lo, row_lo[i]);
  }
  // ldmatrix lane addressing (see mma.cuh): A tiles row-major, B tiles of Kᵀ and V.
  // Byte addresses in the shared window; E is 2 bytes.
  const uint32_t aQ = smem_addr(sQ + (warp * kWarpM + lane % 16) * kPitch + (lane / 16) * 8);
  const uint32_t aK = smem_addr(sK + (lane % 8 + (lane / 16) * 8) * kPitch + ((lane / 8) % 2) * 8);
  const uint32_t aV = smem_addr(sV + (lane % 8 + ((lane / 8) % 2) * 8) * kPitch + (lane / 16) * 8);

  // kGated, elementwise: the warp's [kWarpM, D] logits, copied over its own rows of sQ once
  // every warp is past its last Q·Kᵀ (no other warp reads those rows), where the other tiles
  // start the next K copy. The copy then overlaps the last tile's P·V, and the gate costs no
  // shared memory of its own: prefetching it with Q took 34 KB more per block (less L1 beside
  // it) and delayed the first tile. Issued earlier, right after the last Q·Kᵀ, it needed
  // either a branch that split every iteration's schedule or the last tile peeled off the
  // loop, whose second copy of the tile's code left ptxas short of registers at head dim 128
  // (15 local-memory accesses per iteration against the plain loop's 1; sass_report --loops).
  const bool elementwise_gate = kGated && !p.gate_headwise;
  auto load_gate_rows = [&] {
    __syncwarp();
    const E* gate =
        static_cast<const E*>(p.gate) + block_of[0] * p.gate_batch_stride + block_of[1] * p.gate_head_stride;
    cp_async_rows<kWarpM, D, kPitch, 32>(sQ + warp * kWarpM * kPitch, gate, p.gate_row_stride,
                                         block_of[2] + warp * kWarpM, p.seqlen_q, lane);
    cp_async_commit();
  };

  for (int n_block = n_end - 1; n_block >= n_begin; --n_block) {
    const int k0 = n_block * kBlockN;
    cp_async_wait<0>();
    __syncthreads();  // K (and Q) landed; every warp is done with the previous V
    cp_async_rows<kBlockN, D, kPitch, kNThreads>(sV, gv, p.v_row_stride, k0, S, tid);
    cp_async_commit();

    float s[kMT][kNT][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int r = 0; r < 4; ++r) s[mt][nt][r] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t qa[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) ldmatrix_x4(qa[mt], aQ + (mt * 16 * kPitch + kk * 16) * 2);
#pragma unroll
      for (int np = 0; np < kNT / 2; ++np) {
        uint32_t kb[4];
        ldmatrix_x4(kb, aK + (np * 16 * kPitch + kk * 16) * 2);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_16816<E>(s[mt][2 * np], qa[mt], kb[0], kb[1]);
          mma_16816<E>(s[mt][2 * np + 1], qa[mt], kb[2], kb[3]);
        }
      }
    }

    // Masking only where some (row, key) of the tile is hidden: past the end of the keys,
    // right of the diagonal, or left of the window.
    const int qpos_first = offset + warp_row0;
    const int qpos_last = offset + warp_row0 + kWarpM - 1;
    // Bitwise |: one branch below, not one per condition.
    bool need_mask = (k0 + kBlockN > S) | (k0 + kBlockN - 1 > qpos_first) |
                     ((p.window > 0) & (qpos_last - k0 >= p.window));
    if constexpr (kDocs) need_mask = need_mask || __any_sync(0xffffffffu, k0 < thread_lo);
    if (need_mask) {
      // Each row's visible keys as one interval (key_range.h): two compares per score.
      KeyRange rows[2 * kMT];
#pragma unroll
      for (int i = 0; i < 2 * kMT; ++i)
        rows[i] = visible_keys(qpos_first + (i / 2) * 16 + g + (i % 2) * 8, S, p.window, kDocs ? row_lo[i] : 0);
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
          for (int r = 0; r < 4; ++r)
            if (rows[2 * mt + r / 2].hides(k0 + nt * 8 + 2 * t + (r & 1))) s[mt][nt][r] = -INFINITY;
    }
    if constexpr (kAlibi) add_alibi(s, alibi, k0 + 2 * t - qpos_first);

    // Online softmax against each row's reference max m (see kRescaleSlack): raised to the
    // tile's max only when that exceeds it by more than the slack; a warp whose rows all keep
    // theirs skips the rescale of O (kMT·D/2 multiplies per thread). The rescale comes before
    // the exponentials so that the four factors are dead before those need registers.
    float alpha[2 * kMT];
    bool rescale = false;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int i = 2 * mt + half;
        float mx = row_max[i];
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * half], s[mt][nt][2 * half + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        // A row's first visible key raises m from -inf (alpha = 0; its O and l are still 0, so
        // no rescale is needed); a row with none so far keeps -inf (-inf - -inf is NaN, not >).
        const bool raise = (mx - row_max[i]) * p.scale_log2 > kRescaleSlack;
        rescale |= raise && row_max[i] != -INFINITY;
        alpha[i] = raise ? fast_exp2((row_max[i] - mx) * p.scale_log2) : 1.f;
        if (raise) row_max[i] = mx;
        row_sum[i] *= alpha[i];
      }
    if (__any_sync(0xffffffffu, rescale)) {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
          for (int r = 0; r < 4; ++r) acc_o[mt][dt][r] *= alpha[2 * mt + r / 2];
    }
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int i = 2 * mt + half;
        // Scaling by 0 for a row at -inf keeps exp2(-inf - m) = 0 rather than NaN.
        const float m_scaled = row_max[i] == -INFINITY ? 0.f : row_max[i] * p.scale_log2;
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
          const float e0 = fast_exp2(fmaf(s[mt][nt][2 * half], p.scale_log2, -m_scaled));
          const float e1 = fast_exp2(fmaf(s[mt][nt][2 * half + 1], p.scale_log2, -m_scaled));
          s[mt][nt][2 * half] = e0, s[mt][nt][2 * half + 1] = e1;
          sum += e0 + e1;
        }
        row_sum[i] += sum;
      }

    cp_async_wait<0>();
    __syncthreads();  // V landed; every warp is done with this K
    // The next tile's K. The plain and document kernels copy without a branch (on the last
    // tile the copy only zero-fills the free K buffer, reading no global memory): ptxas then gives
    // the plain head-dim-128 loop 25 fewer instructions and no local access (sm_90a), and the
    // head-dim-64 document kernels no spills. With the gate or ALiBi it spilled more (4-11 local
    // accesses per iteration instead of 0-2), so those keep the branch.
    constexpr bool kBranchFreeK = !kGated && !kAlibi;
    const bool more = n_block > n_begin;
    if (kBranchFreeK || more) {
      cp_async_rows<kBlockN, D, kPitch, kNThreads>(sK, gk, p.k_row_stride, k0 - kBlockN, more ? S : 0, tid);
      cp_async_commit();
    } else if (elementwise_gate) {
      load_gate_rows();  // the last tile: K and this warp's rows of Q are done with
    }

    // O += P·V: two adjacent score tiles are one A fragment over 16 keys.
#pragma unroll
    for (int kc = 0; kc < kBlockN / 16; ++kc) {
      uint32_t pa[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        pa[mt][0] = pack2<E>(s[mt][2 * kc][0], s[mt][2 * kc][1]);
        pa[mt][1] = pack2<E>(s[mt][2 * kc][2], s[mt][2 * kc][3]);
        pa[mt][2] = pack2<E>(s[mt][2 * kc + 1][0], s[mt][2 * kc + 1][1]);
        pa[mt][3] = pack2<E>(s[mt][2 * kc + 1][2], s[mt][2 * kc + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t vb[4];
        ldmatrix_x4_trans(vb, aV + (kc * 16 * kPitch + dp * 16) * 2);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_16816<E>(acc_o[mt][2 * dp], pa[mt], vb[0], vb[1]);
          mma_16816<E>(acc_o[mt][2 * dp + 1], pa[mt], vb[2], vb[3]);
        }
      }
    }
  }

  // Epilogue. Every valid row sees at least its own key, so l > 0 there; padding rows
  // (index >= T) are not written.
  if (n_end <= n_begin) __syncthreads();  // s_block (cannot happen: every tile has a valid row)
  const int b_out = block_of[0], h_out = block_of[1];
  E* go = static_cast<E*>(p.o) + b_out * p.o_batch_stride + h_out * p.o_head_stride;
  float inv_l[2 * kMT];
#pragma unroll
  for (int i = 0; i < 2 * kMT; ++i) {
    float l = row_sum[i];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv_l[i] = l > 0.f ? 1.f / l : 0.f;
    const int qi = warp_row0 + (i / 2) * 16 + g + (i % 2) * 8;
    if (t == 0 && qi < T) {
      float lse = l > 0.f ? (row_max[i] * p.scale_log2 + log2f(l)) * 0.69314718055994531f : -INFINITY;
      // kAlibi: the row's own bias part, -slope·(qpos - q_ref) (see the header).
      if constexpr (kAlibi) lse -= p.alibi_slopes[h_out] * static_cast<float>(qi - warp_row0);
      p.lse[(static_cast<int64_t>(b_out) * p.heads + h_out) * T + qi] = lse;
    }
  }
  // Stage this warp's rows in its own rows of sQ (no other warp reads them), then store 16
  // bytes per lane along the rows. kGated (G1): each element is scaled by σ(g) before its one
  // rounding (gate.cuh); an elementwise logit sits exactly where its output element is staged,
  // so each lane reads its logits and overwrites them in place.
  E* sOw = sQ + warp * kWarpM * kPitch;
  if (elementwise_gate) {
    if (n_end <= n_begin) load_gate_rows();  // no key tile ran (cannot happen for valid rows)
    cp_async_wait<0>();
    __syncwarp();  // every lane's part of the warp's logits landed
  }
  constexpr int kChunks = D / 8;
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int i = 2 * mt + half;
      const int r = warp * kWarpM + mt * 16 + g + 8 * half;  // row within the block
      float row_scale = inv_l[i];
      if constexpr (kGated) {
        if (p.gate_headwise) row_scale *= sigmoid(to_float(sG[r]));
      }
#pragma unroll
      for (int dt = 0; dt < kDT; ++dt) {
        const int c = dt * 8 + 2 * t;
        float y0 = acc_o[mt][dt][2 * half] * row_scale;
        float y1 = acc_o[mt][dt][2 * half + 1] * row_scale;
        if constexpr (kGated) {
          if (!p.gate_headwise) {
            const float2 logit =
                unpack2<E>(*reinterpret_cast<const uint32_t*>(sOw + (mt * 16 + g + 8 * half) * kPitch + c));
            y0 *= sigmoid(logit.x), y1 *= sigmoid(logit.y);
          }
        }
        *reinterpret_cast<uint32_t*>(sOw + (mt * 16 + g + 8 * half) * kPitch + c) = pack2<E>(y0, y1);
      }
    }
  __syncwarp();
#pragma unroll
  for (int i = lane; i < kWarpM * kChunks; i += 32) {
    const int r = i / kChunks;
    const int c = (i % kChunks) * 8;
    const int qi = warp_row0 + r;
    if (qi < T)
      *reinterpret_cast<uint4*>(go + static_cast<int64_t>(qi) * p.o_row_stride + c) =
          *reinterpret_cast<const uint4*>(sOw + r * kPitch + c);
  }
  cp_async_wait<0>();  // the last tile's zero-fill of sK: no copy outlives the block
#endif
}

}  // namespace sluice::flash
