// Kernel traits: tile sizes, warps and the shared-memory layout of one instantiation
// (head dim, element type). One tiling serves sm_80 and sm_90 (mma.sync); Hopper-specific
// traits (wgmma/TMA) would slot in here without touching the host API.
//
// Shared-memory rows are padded (+8 half-precision or +4 fp32 elements): that keeps every row
// 16-byte aligned and shifts consecutive rows across banks.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "flash/bwd_tiles.h"

// Tile-size overrides for tuning sweeps only (scripts/flash_tile_sweep.sh passes them through
// CMAKE_CUDA_FLAGS); the defaults below are the sweep's winners on the H100.
#ifndef SLUICE_FWD_BLOCKM
#define SLUICE_FWD_BLOCKM (kHeadDim == 64 ? 64 : 128)
#endif
#ifndef SLUICE_FWD_BLOCKN
#define SLUICE_FWD_BLOCKN 64
#endif
#ifndef SLUICE_FWD_WARPS
#define SLUICE_FWD_WARPS 4
#endif
// Blocks per SM the forward is compiled for (__launch_bounds__ caps registers at
// 65536 / (blocks x threads)); 0 leaves ptxas free, up to 255. Default: FwdTraits.
#ifndef SLUICE_FWD_MIN_BLOCKS
#define SLUICE_FWD_MIN_BLOCKS (kBlockM == 64 && kBlockN == 64 && kNWarps == 4 ? 4 : 0)
#endif
namespace sluice::flash {

// Forward (FlashAttention-2 tiling, as flash-attention picks for sm_80/sm_90 with mma.sync):
// a block owns kBlockM queries of one (batch, head) and walks the key tiles of kBlockN keys.
// Each of the 4 warps owns kBlockM/4 query rows end to end: scores, softmax and the output
// accumulator stay in registers, so only the K/V loads need the block to synchronise.
// H100 sweep (docs/performance.md): head dim 128 is fastest at 128x64 (32 rows per warp, 2
// blocks per SM), head dim 64 at 64x64 (16 rows per warp, more blocks in flight).
template <int kHeadDim_, typename Element_>
struct FwdTraits {
  using Element = Element_;  // __nv_bfloat16 or __half
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = SLUICE_FWD_BLOCKM;
  static constexpr int kBlockN = SLUICE_FWD_BLOCKN;
  static constexpr int kNWarps = SLUICE_FWD_WARPS;
  static constexpr int kNThreads = kNWarps * 32;
  // The 64x64 tile (head dim 64) runs 4 blocks per SM only at <= 128 registers. Left free,
  // ptxas gave the plain kernel 128 but the gated, ALiBi and document ones 134-147, i.e. 3
  // blocks per SM (registers go out per warp in steps of 256): a quarter fewer warps in flight
  // for the gated forward. Capped, every variant fits in 128 (at most 72 bytes of spills,
  // none in the plain and gated key loops, which also lose ~130 instructions of predicate
  // shuffling: scripts/sass_report.sh --loops).
  static constexpr int kMinBlocksPerSm = SLUICE_FWD_MIN_BLOCKS;
  static constexpr int kWarpM = kBlockM / kNWarps;  // query rows per warp
  static constexpr int kMTiles = kWarpM / 16;       // m16 tiles per warp
  static_assert(kWarpM % 16 == 0 && kHeadDim % 16 == 0 && kBlockN % 16 == 0, "mma tiles are 16x8x16");

  // Rows padded by 16 bytes: ldmatrix's eight row addresses then hit distinct bank groups.
  static constexpr int kPitch = kHeadDim + 8;  // Element
  static constexpr int kSmemQ = 0;             // also the output staging tile in the epilogue
  static constexpr int kSmemK = kSmemQ + align128(kBlockM * kPitch * 2);
  static constexpr int kSmemV = kSmemK + align128(kBlockN * kPitch * 2);
  static constexpr int kSmemBytes = kSmemV + align128(kBlockN * kPitch * 2);
  // kGated: headwise G1 logits, one per row (elementwise ones reuse sQ, flash_fwd_kernel.cuh).
  static constexpr int kSmemGate = kSmemBytes;
  static constexpr int kSmemBytesGated = kSmemGate + align128(kBlockM * 2);
};

// Backward (FlashAttention-2 tiling): a block owns kBlockN keys of one (batch, kv head) and
// walks, for each query head of the GQA group, the query tiles of kBlockM rows that can see
// those keys. 8 warps split each product differently (warps along M x along N):
//   S = Q·Kᵀ, dP = dO·Vᵀ   [kBlockM x kBlockN]  2 x 4
//   dV += Pᵀ·dO, dK += dSᵀ·Q [kBlockN x D]      4 x 2  (fp32 registers for the whole walk)
//   dQ = dS·K               [kBlockM x D]       2 x 4  (added to a global fp32 buffer)
// P and dS go through shared memory: the dV/dK products read them transposed.
// kTile_: the index into bwd_tiles.h's list of tile sizes for the head dim (0, the largest, on
// the H100; smaller ones where shared memory is scarcer).
template <int kHeadDim_, typename Element_, int kTile_ = 0>
struct BwdTraits {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = bwd_tile(kHeadDim, kTile_).block_m;
  static constexpr int kBlockN = bwd_tile(kHeadDim, kTile_).block_n;
  static constexpr int kNWarps = 8;
  static constexpr int kNThreads = kNWarps * 32;
  // Per-warp tiles of the three products (m16 tiles x n8 tiles).
  static constexpr int kSdpMT = kBlockM / 2 / 16, kSdpNT = kBlockN / 4 / 8;
  static constexpr int kKvMT = kBlockN / 4 / 16, kKvNT = kHeadDim / 2 / 8;
  static constexpr int kDqMT = kBlockM / 2 / 16, kDqNT = kHeadDim / 4 / 8;
  static_assert(kSdpNT % 2 == 0 && kKvNT % 2 == 0 && kDqNT % 2 == 0 && kKvMT >= 1 && kSdpMT >= 1 && kDqMT >= 1,
                "B operands are loaded as pairs of n8 tiles");

  static constexpr int kPitch = kHeadDim + 8;   // Element: Q, dO, K, V
  static constexpr int kPitchP = kBlockN + 8;   // Element: P, dS
  static constexpr int kQTileBytes = align128(kBlockM * kPitch * 2);
  static constexpr int kSmemK = 0;
  static constexpr int kSmemV = kSmemK + align128(kBlockN * kPitch * 2);
  static constexpr int kSmemQ = kSmemV + align128(kBlockN * kPitch * 2);  // 2 stages
  static constexpr int kSmemdO = kSmemQ + 2 * kQTileBytes;                // 2 stages
  static constexpr int kSmemP = kSmemdO + 2 * kQTileBytes;
  static constexpr int kSmemdS = kSmemP + align128(kBlockM * kPitchP * 2);
  static constexpr int kSmemBytes = kSmemdS + align128(kBlockM * kPitchP * 2);
  static_assert(kSmemBytes == bwd_smem_bytes(kHeadDim, BwdTile{kBlockM, kBlockN}),
                "bwd_tiles.h chooses tiles by this layout's size");
  // Blocks per SM the kernel is compiled for (__launch_bounds__; 0 leaves ptxas free, up to 255
  // registers). Tiles whose shared memory lets two blocks share an A100's SM (164 KB, 1 KB
  // reserved per block; an H100's too) are capped at 128 registers so that two do: 32x64 at
  // head dim 128 and 64x64 at 64, which left free took 158-174 registers (one block, 8 warps
  // per SM) and capped spill nothing (ptxas, sm_80 and sm_90a; +0-4% key-loop instructions).
  // The larger tiles need far more than 128.
  static constexpr int kMinBlocksPerSm = 2 * (kSmemBytes + 1024) <= 164 * 1024 ? 2 : 0;
};

// Deterministic dQ (flash_bwd_dq_kernel.cuh), the backward's optional third kernel: a block owns
// kBlockM queries of one (batch, head) and walks their key tiles like the forward, so each dQ row
// is summed in registers in one fixed order (no atomics). 4 warps of 16 rows; per key tile the
// warp recomputes S and dP [16 x kBlockN] and adds dS·K to its fp32 dQ [16 x D]. K is
// double-buffered (the next tile's load overlaps the whole step), V single (reloaded once the
// dP product is done): 87 KB at head dim 128, within every sm_80+ device's opt-in limit.
template <int kHeadDim_, typename Element_>
struct BwdDqTraits {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = 64;
  static constexpr int kBlockN = 64;
  static constexpr int kNWarps = 4;
  static constexpr int kNThreads = kNWarps * 32;
  static constexpr int kWarpM = kBlockM / kNWarps;
  static_assert(kWarpM == 16 && kHeadDim % 16 == 0 && kBlockN % 16 == 0, "one m16 tile per warp");

  static constexpr int kPitch = kHeadDim + 8;  // Element
  static constexpr int kTileBytes = align128(kBlockM * kPitch * 2);
  static_assert(kBlockM == kBlockN, "Q, dO, K and V tiles share one size");
  static constexpr int kSmemQ = 0;
  static constexpr int kSmemdO = kSmemQ + kTileBytes;
  static constexpr int kSmemK = kSmemdO + kTileBytes;  // 2 stages
  static constexpr int kSmemV = kSmemK + 2 * kTileBytes;
  static constexpr int kSmemBytes = kSmemV + kTileBytes;
};

}  // namespace sluice::flash
