// Kernel traits: tile sizes, warps and the shared-memory layout of one instantiation
// (head dim, element type). One tiling serves sm_80 and sm_90 (mma.sync); Hopper-specific
// traits (wgmma/TMA) would slot in here without touching the host API.
//
// Shared-memory rows are padded (+8 half-precision or +4 fp32 elements): that keeps every row
// 16-byte aligned and shifts consecutive rows across banks.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace sluice::flash {

constexpr int align128(int bytes) { return (bytes + 127) / 128 * 128; }

// Forward (FlashAttention-2 tiling, as flash-attention picks for sm_80/sm_90 with mma.sync):
// a block owns kBlockM queries of one (batch, head) and walks the key tiles of kBlockN keys.
// Each of the 4 warps owns kBlockM/4 query rows end to end: scores, softmax and the output
// accumulator stay in registers, so only the K/V loads need the block to synchronise.
// Head dim 64 takes wider key tiles (its registers allow 128 score columns per row).
template <int kHeadDim_, typename Element_>
struct FwdTraits {
  using Element = Element_;  // __nv_bfloat16 or __half
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = 128;
  static constexpr int kBlockN = 64;
  static constexpr int kNWarps = 4;
  static constexpr int kNThreads = kNWarps * 32;
  static constexpr int kWarpM = kBlockM / kNWarps;  // query rows per warp
  static constexpr int kMTiles = kWarpM / 16;       // m16 tiles per warp
  static_assert(kWarpM % 16 == 0 && kHeadDim % 16 == 0 && kBlockN % 16 == 0, "mma tiles are 16x8x16");

  // Rows padded by 16 bytes: ldmatrix's eight row addresses then hit distinct bank groups.
  static constexpr int kPitch = kHeadDim + 8;  // Element
  static constexpr int kSmemQ = 0;             // also the output staging tile in the epilogue
  static constexpr int kSmemK = kSmemQ + align128(kBlockM * kPitch * 2);
  static constexpr int kSmemV = kSmemK + align128(kBlockN * kPitch * 2);
  static constexpr int kSmemBytes = kSmemV + align128(kBlockN * kPitch * 2);
};

// Backward: a block owns kBlockN keys of one (batch, kv head) and walks, for each query head
// of the GQA group, the query tiles of kBlockM rows that can see those keys. dK and dV stay in
// fp32 WMMA accumulators for the whole walk (warp w owns key rows 16w..16w+15); dQ of each
// query tile is added to a global fp32 buffer with atomicAdd.
template <int kHeadDim_, typename Element_>
struct BwdTraits {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = 64;
  static constexpr int kBlockN = 64;
  static constexpr int kNWarps = 4;
  static constexpr int kNThreads = kNWarps * 32;
  static_assert(kBlockM == 16 * kNWarps && kBlockN == 16 * kNWarps,
                "warp w owns query rows 16w.. for S/dP/dQ and key rows 16w.. for dK/dV");
  static_assert(kHeadDim % 16 == 0, "WMMA tiles are 16x16x16");

  static constexpr int kPitchQKV = kHeadDim + 8;  // Element: Q, dO, K, V
  static constexpr int kPitchS = kBlockN + 4;     // fp32: S, dP
  static constexpr int kPitchP = kBlockN + 8;     // Element: P, dS
  static constexpr int kPitchAcc = kHeadDim + 4;  // fp32 scratch: dQ tile, then dK/dV for the epilogue

  static constexpr int kSmemQ = 0;
  static constexpr int kSmemdO = kSmemQ + align128(kBlockM * kPitchQKV * 2);
  static constexpr int kSmemK = kSmemdO + align128(kBlockM * kPitchQKV * 2);
  static constexpr int kSmemV = kSmemK + align128(kBlockN * kPitchQKV * 2);
  // S and dP are dead once P and dS are written (after a block barrier), so the fp32 scratch
  // for the dQ tile (and the final dK/dV) reuses their space.
  static constexpr int kSmemS = kSmemV + align128(kBlockN * kPitchQKV * 2);
  static constexpr int kSmemdP = kSmemS + align128(kBlockM * kPitchS * 4);
  static constexpr int kSmemAcc = kSmemS;
  static constexpr int kScoreBytes = align128(kBlockM * kPitchS * 4) * 2;
  static constexpr int kAccBytes = align128(kBlockM * kPitchAcc * 4);
  static_assert(kBlockM == kBlockN, "the epilogue's dK/dV scratch reuses the dQ scratch layout");
  static constexpr int kSmemP = kSmemS + (kScoreBytes > kAccBytes ? kScoreBytes : kAccBytes);
  static constexpr int kSmemdS = kSmemP + align128(kBlockM * kPitchP * 2);
  static constexpr int kSmemL = kSmemdS + align128(kBlockM * kPitchP * 2);  // fp32 [kBlockM]: lse·log2(e)
  static constexpr int kSmemDsum = kSmemL + align128(kBlockM * 4);           // fp32 [kBlockM]: D_i
  static constexpr int kSmemBytes = kSmemDsum + align128(kBlockM * 4);
};

}  // namespace sluice::flash
