// Each flash kernel's 1-D grid before ordering: work tiles per (batch, head) group, groups, and
// the bytes a group reads from global memory (what the sectioned order fits into L2,
// tile_order.h). One definition for the GPU launchers (launch.cuh) and the CPU emulation
// (sim_launch.cpp). 2-byte elements.
#pragma once
#include <cstdint>

#include "flash/params.h"

namespace sluice::flash {

struct TileGrid {
  int tiles, groups;
  int64_t group_bytes;
};

// Forward: query tiles of each (batch, head); Q once, and K and V of its kv head, shared by
// heads / kv_heads groups.
template <typename Traits>
TileGrid fwd_grid(const FwdParams& p) {
  return {(p.seqlen_q + Traits::kBlockM - 1) / Traits::kBlockM, p.batch * p.heads,
          2ll * Traits::kHeadDim * (p.seqlen_q + 2ll * p.seqlen_k * p.kv_heads / p.heads)};
}

// Backward key-tile kernel: key tiles of each (batch, kv head); Q and dO of every query head of
// the kv head.
template <typename Traits>
TileGrid bwd_grid(const BwdParams& p) {
  return {(p.seqlen_k + Traits::kBlockN - 1) / Traits::kBlockN, p.batch * p.kv_heads,
          4ll * Traits::kHeadDim * p.seqlen_q * (p.heads / p.kv_heads)};
}

// Deterministic dQ kernel: query tiles of each (batch, head); Q and dO once, and K and V of its
// kv head, shared by heads / kv_heads groups.
template <typename Traits>
TileGrid bwd_dq_grid(const BwdParams& p) {
  return {(p.seqlen_q + Traits::kBlockM - 1) / Traits::kBlockM, p.batch * p.heads,
          4ll * Traits::kHeadDim * (p.seqlen_q + 1ll * p.seqlen_k * p.kv_heads / p.heads)};
}

}  // namespace sluice::flash
