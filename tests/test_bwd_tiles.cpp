// Which backward tile of kernels/flash/bwd_tiles.h a device runs: the largest whose shared
// memory it grants one block, or the one SLUICE_FLASH_BWD_TILE names, with specific errors.
// The opt-in limits are the CUDA programming guide's (cudaDevAttrMaxSharedMemoryPerBlockOptin).
#include "flash/bwd_tiles.h"

#include <gtest/gtest.h>

#include <string>

namespace sluice::flash {
namespace {

constexpr int kH100 = 227 * 1024;  // sm_90 (H100, H200)
constexpr int kA100 = 163 * 1024;  // sm_80
constexpr int kSm86 = 99 * 1024;   // sm_86, sm_89 (A10, A6000, L40S, RTX 30xx/40xx)

int choose(int head_dim, int smem, const std::string& requested = "") {
  std::string error;
  const int tile = choose_bwd_tile(head_dim, smem, requested, &error);
  EXPECT_EQ(tile < 0, !error.empty()) << error;
  return tile;
}

std::string error_of(int head_dim, int smem, const std::string& requested) {
  std::string error;
  EXPECT_EQ(choose_bwd_tile(head_dim, smem, requested, &error), -1);
  return error;
}

TEST(BwdTiles, EachDeviceClassGetsTheLargestTileThatFits) {
  // Head dim 128: 64x128 needs 170 KB, more than an A100 grants; 64x64 120 KB; 32x64 77 KB.
  EXPECT_EQ(bwd_tile_name(bwd_tile(128, choose(128, kH100))), "64x128");
  EXPECT_EQ(bwd_tile_name(bwd_tile(128, choose(128, kA100))), "64x64");
  EXPECT_EQ(bwd_tile_name(bwd_tile(128, choose(128, kSm86))), "32x64");
  // Head dim 64: 64x128 needs 106 KB.
  EXPECT_EQ(bwd_tile_name(bwd_tile(64, choose(64, kH100))), "64x128");
  EXPECT_EQ(bwd_tile_name(bwd_tile(64, choose(64, kA100))), "64x128");
  EXPECT_EQ(bwd_tile_name(bwd_tile(64, choose(64, kSm86))), "64x64");
}

TEST(BwdTiles, ListsRunLargestFirstAndFitTheirDevices) {
  for (int d : {64, 128}) {
    ASSERT_GE(bwd_tile_count(d), 2);
    for (int i = 1; i < bwd_tile_count(d); ++i)
      EXPECT_LT(bwd_smem_bytes(d, bwd_tile(d, i)), bwd_smem_bytes(d, bwd_tile(d, i - 1))) << d << " tile " << i;
    EXPECT_LE(bwd_smem_bytes(d, bwd_tile(d, bwd_tile_count(d) - 1)), kSm86) << "every sm_80+ device runs head dim " << d;
  }
  // The layout's size counted by hand for the H100 tile at head dim 128: K and V 128 rows, two
  // stages of Q and dO 64 rows, each row 136 elements of 2 bytes; P and dS 64 x 136.
  EXPECT_EQ(bwd_smem_bytes(128, BwdTile{64, 128}), 2 * 128 * 136 * 2 + 4 * 64 * 136 * 2 + 2 * 64 * 136 * 2);
  EXPECT_TRUE(bwd_query_tiles_divide(128));
  EXPECT_FALSE(bwd_query_tiles_divide(96));
}

TEST(BwdTiles, ARequestedTileRunsWhereItFits) {
  EXPECT_EQ(bwd_tile_name(bwd_tile(128, choose(128, kH100, "64x64"))), "64x64");
  EXPECT_EQ(bwd_tile_name(bwd_tile(128, choose(128, kH100, "32x64"))), "32x64");
  EXPECT_EQ(bwd_tile_name(bwd_tile(64, choose(64, kH100, "64x64"))), "64x64");
  EXPECT_EQ(choose(128, kA100, "64x64"), choose(128, kA100));
}

TEST(BwdTiles, RejectsUnknownAndOversizedRequestsAndTooSmallDevices) {
  const std::string unknown = error_of(64, kH100, "32x64");
  EXPECT_NE(unknown.find("SLUICE_FLASH_BWD_TILE must be one of 64x128, 64x64 (queries x keys) for the flash "
                         "attention backward at head dim 64, got '32x64'"),
            std::string::npos)
      << unknown;
  EXPECT_NE(error_of(128, kH100, "big").find("got 'big'"), std::string::npos);
  const std::string too_big = error_of(128, kA100, "64x128");
  EXPECT_NE(too_big.find("SLUICE_FLASH_BWD_TILE=64x128: the flash attention backward at head dim 128 needs 174080 "
                         "bytes of shared memory per block with that tile; the device grants 166912"),
            std::string::npos)
      << too_big;
  const std::string small = error_of(128, 48 * 1024, "");
  EXPECT_NE(small.find("needs at least"), std::string::npos) << small;
  EXPECT_NE(small.find("(tile 32x64); the device grants 49152"), std::string::npos) << small;
}

}  // namespace
}  // namespace sluice::flash
