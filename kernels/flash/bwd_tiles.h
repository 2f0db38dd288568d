// The backward kernel's tiles (kBlockM queries x kBlockN keys) per head dim, and which one a
// device runs. Shared memory decides: the head-dim-128 tile that is fastest on the H100 needs
// 170 KB per block, more than an A100 grants one block (163 KB) or an sm_86/sm_89 GPU (99 KB);
// at head dim 64 it needs 106 KB. The host API (flash_api.cu) runs the first tile of the list,
// largest first, whose shared memory fits the device's opt-in limit
// (cudaDevAttrMaxSharedMemoryPerBlockOptin), or the one SLUICE_FLASH_BWD_TILE names ("64x64"):
// that is how tests and benchmarks run the smaller tiles on an H100.
//
// Plain C++ (no CUDA headers) so tests/test_bwd_tiles.cpp checks the choice on the CPU.
#pragma once
#include <initializer_list>
#include <string>

// Tile 0's sizes, overridable for tuning sweeps only (scripts/flash_tile_sweep.sh passes them
// through CMAKE_CUDA_FLAGS); the defaults are the H100 sweep's winners.
#ifndef SLUICE_BWD_BLOCKN
#define SLUICE_BWD_BLOCKN 128
#endif
// The query tile at head dim 64 (head dim 128 keeps 64: 128 rows would need 278 KB of shared
// memory). flash-attention 2 uses 128 there; a sweep decides.
#ifndef SLUICE_BWD_BLOCKM_HD64
#define SLUICE_BWD_BLOCKM_HD64 64
#endif

namespace sluice::flash {

constexpr int align128(int bytes) { return (bytes + 127) / 128 * 128; }

struct BwdTile {
  int block_m;  // queries
  int block_n;  // keys
};

// Largest first: tile 0 for the H100/H200 (227 KB), then the largest that fit the A100 and
// sm_86/sm_89. Every size keeps the kernel's warp tiling whole (BwdTraits' static_assert).
constexpr BwdTile kBwdTilesHd128[] = {{64, SLUICE_BWD_BLOCKN}, {64, 64}, {32, 64}};
constexpr BwdTile kBwdTilesHd64[] = {{SLUICE_BWD_BLOCKM_HD64, SLUICE_BWD_BLOCKN}, {64, 64}};

constexpr int bwd_tile_count(int head_dim) {
  return head_dim == 64 ? static_cast<int>(sizeof(kBwdTilesHd64) / sizeof(BwdTile))
                        : static_cast<int>(sizeof(kBwdTilesHd128) / sizeof(BwdTile));
}
constexpr BwdTile bwd_tile(int head_dim, int index) {
  return head_dim == 64 ? kBwdTilesHd64[index] : kBwdTilesHd128[index];
}

// Shared memory of one backward block, 2-byte elements, rows padded by 8 (BwdTraits' layout):
// K and V, two stages each of Q and dO, then P and dS.
constexpr int bwd_smem_bytes(int head_dim, BwdTile t) {
  return 2 * align128(t.block_n * (head_dim + 8) * 2) + 4 * align128(t.block_m * (head_dim + 8) * 2) +
         2 * align128(t.block_m * (t.block_n + 8) * 2);
}

// Whether every tile's query count divides `rows` (dq_accum pads its rows to such a multiple).
constexpr bool bwd_query_tiles_divide(int rows) {
  for (int d : {64, 128})
    for (int i = 0; i < bwd_tile_count(d); ++i)
      if (rows % bwd_tile(d, i).block_m != 0) return false;
  return true;
}

inline std::string bwd_tile_name(BwdTile t) { return std::to_string(t.block_m) + "x" + std::to_string(t.block_n); }

// The index of the tile to run at `head_dim` (64 or 128) on a device granting one block
// `max_smem_bytes`: `requested` ("MxN", empty for none) if it is one of the head dim's tiles
// and fits, else the first tile that fits. -1 with *error set when the request is not a tile
// of the list, does not fit, or no tile fits.
inline int choose_bwd_tile(int head_dim, int max_smem_bytes, const std::string& requested, std::string* error) {
  const int n = bwd_tile_count(head_dim);
  std::string names;
  for (int i = 0; i < n; ++i) names += (i ? ", " : "") + bwd_tile_name(bwd_tile(head_dim, i));
  const std::string where = "flash attention backward at head dim " + std::to_string(head_dim);
  if (!requested.empty()) {
    for (int i = 0; i < n; ++i) {
      if (requested != bwd_tile_name(bwd_tile(head_dim, i))) continue;
      const int need = bwd_smem_bytes(head_dim, bwd_tile(head_dim, i));
      if (need <= max_smem_bytes) return i;
      *error = "SLUICE_FLASH_BWD_TILE=" + requested + ": the " + where + " needs " + std::to_string(need) +
               " bytes of shared memory per block with that tile; the device grants " +
               std::to_string(max_smem_bytes);
      return -1;
    }
    *error = "SLUICE_FLASH_BWD_TILE must be one of " + names + " (queries x keys) for the " + where + ", got '" +
             requested + "'";
    return -1;
  }
  for (int i = 0; i < n; ++i)
    if (bwd_smem_bytes(head_dim, bwd_tile(head_dim, i)) <= max_smem_bytes) return i;
  *error = "the " + where + " needs at least " + std::to_string(bwd_smem_bytes(head_dim, bwd_tile(head_dim, n - 1))) +
           " bytes of shared memory per block (tile " + bwd_tile_name(bwd_tile(head_dim, n - 1)) +
           "); the device grants " + std::to_string(max_smem_bytes);
  return -1;
}

}  // namespace sluice::flash
