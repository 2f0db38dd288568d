// Which work tile of which (batch, head) group each block of the flash kernels' 1-D grid takes.
//
// The GPU starts blocks roughly in index order, so the order decides two things: which blocks
// run last (causal tiles differ up to T / tile-fold in work, and a heavy tile started last
// stretches the whole launch), and how many groups' K/V (forward) or Q/dO (backward) are read
// at once (what L2 must hold). The groups are cut into sections of groups_per_section
// consecutive groups, run one after the other. Inside a section the blocks go tile-rank-major:
// the heaviest tile of every group of the section, then the next heaviest, ... so the section
// ends on its lightest tiles (longest-processing-time first; FlashAttention-3's scheduler pairs
// the same idea with an L2-sized swizzle). groups_per_section = 1 is the plain order: one
// group's tiles heaviest first, then the next group's.
//
// Plain C++ (no CUDA headers) so tests/test_tile_order.cpp checks the mapping on the CPU.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define SLUICE_FLASH_HD __host__ __device__ __forceinline__
#else
#define SLUICE_FLASH_HD inline
#endif

namespace sluice::flash {

struct TileOrder {
  int tiles = 1;               // work tiles per group
  int groups = 1;              // (batch, head) groups: B·H forward, B·KV backward
  int groups_per_section = 1;  // 1: plain order
};

struct TileSlot {
  int tile_rank;  // 0: the group's heaviest tile
  int group;
};

// A bijection from [0, tiles·groups) onto tile ranks x groups.
SLUICE_FLASH_HD TileSlot tile_slot(const TileOrder& o, int block) {
  const int section_blocks = o.groups_per_section * o.tiles;
  const int section = block / section_blocks;
  const int first_group = section * o.groups_per_section;
  const int in_section = block - section * section_blocks;
  const int left = o.groups - first_group;
  const int n = left < o.groups_per_section ? left : o.groups_per_section;  // the last section may be short
  return {in_section / n, first_group + in_section % n};
}

// The sections for a launch of `resident_blocks` blocks in flight at once (SMs x blocks per SM)
// whose groups each read about `group_bytes` from global memory. A section takes at least as
// many groups as the plain order has in flight (about the same L2 footprint) and at least as
// many as fit in l2_budget_bytes, rounded up to a divisor of the group count: a short last
// section starts its heaviest tiles late, which scripts/tile_order_model.py shows costing more
// than the sectioning gains (2x16/4x8192x128 forward: 5 of 32 groups per section 1.16 x the
// ideal makespan, 8 per section 1.003).
inline TileOrder plan_tile_order(int tiles, int groups, int64_t group_bytes, int resident_blocks,
                                 int64_t l2_budget_bytes) {
  TileOrder o;
  o.tiles = tiles < 1 ? 1 : tiles;
  o.groups = groups < 1 ? 1 : groups;
  const int64_t in_flight = (static_cast<int64_t>(resident_blocks) + o.tiles - 1) / o.tiles;  // about, plain order
  const int64_t fit = group_bytes > 0 ? l2_budget_bytes / group_bytes : o.groups;
  const int64_t target = in_flight > fit ? in_flight : fit;
  int per_section = o.groups;
  for (int d = 1; d <= o.groups; ++d)
    if (o.groups % d == 0 && d >= target) {
      per_section = d;
      break;
    }
  o.groups_per_section = per_section;
  return o;
}

}  // namespace sluice::flash
