// The flash kernels' block order (kernels/flash/tile_order.h): every (tile, group) pair is
// taken by exactly one block, the plain order is the kernels' former 3-D grid order, sections
// run heaviest tiles first, and the planner sizes sections as documented.
#include "flash/tile_order.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <utility>
#include <vector>

namespace sluice::flash {
namespace {

std::vector<TileSlot> all_slots(const TileOrder& o) {
  std::vector<TileSlot> slots;
  for (int block = 0; block < o.tiles * o.groups; ++block) slots.push_back(tile_slot(o, block));
  return slots;
}

TEST(TileOrder, EveryTileOfEveryGroupIsTakenOnce) {
  for (int tiles : {1, 2, 7, 16, 64})
    for (int groups : {1, 3, 8, 13, 128})
      for (int per_section = 1; per_section <= groups; per_section += (per_section < 4 ? 1 : 5)) {
        const TileOrder o{tiles, groups, per_section};
        std::set<std::pair<int, int>> seen;
        for (const TileSlot& s : all_slots(o)) {
          ASSERT_GE(s.tile_rank, 0);
          ASSERT_LT(s.tile_rank, tiles);
          ASSERT_GE(s.group, 0);
          ASSERT_LT(s.group, groups);
          seen.insert({s.tile_rank, s.group});
        }
        EXPECT_EQ(seen.size(), static_cast<size_t>(tiles) * groups)
            << tiles << " tiles, " << groups << " groups, " << per_section << " per section";
      }
}

// One group per section: block = group·tiles + rank, i.e. the former grid (tile fastest, then
// head, then batch) that the kernels decoded from blockIdx.x/y/z.
TEST(TileOrder, OneGroupPerSectionIsThePlainOrder) {
  const TileOrder o{5, 6, 1};
  const std::vector<TileSlot> slots = all_slots(o);
  for (int block = 0; block < 30; ++block) {
    EXPECT_EQ(slots[block].tile_rank, block % 5);
    EXPECT_EQ(slots[block].group, block / 5);
  }
}

// Within a section every group's rank r comes before any group's rank r + 1 (heaviest first),
// the section's groups are consecutive, and sections follow each other. 13 groups in sections
// of 4 leave a short last section of 1.
TEST(TileOrder, SectionsRunHeaviestTilesFirst) {
  const TileOrder o{6, 13, 4};
  const std::vector<TileSlot> slots = all_slots(o);
  int block = 0;
  for (int first = 0; first < 13; first += 4) {
    const int n = std::min(4, 13 - first);
    for (int rank = 0; rank < 6; ++rank)
      for (int i = 0; i < n; ++i, ++block) {
        EXPECT_EQ(slots[block].tile_rank, rank) << "block " << block;
        EXPECT_EQ(slots[block].group, first + i) << "block " << block;
      }
  }
  EXPECT_EQ(block, 78);
}

TEST(TileOrder, PlanKeepsThePlainOrdersGroupsInFlightAndFillsTheBudget) {
  constexpr int64_t MB = 1 << 20;
  // 264 blocks in flight over 16 tiles: the plain order spans about ceil(264/16) = 17 groups at
  // once; 1.5 MB per group fits 10 in 16 MB. At least 17, a divisor of 128: 32 per section.
  TileOrder o = plan_tile_order(16, 128, 3 * MB / 2, 264, 16 * MB);
  EXPECT_EQ(o.tiles, 16);
  EXPECT_EQ(o.groups, 128);
  EXPECT_EQ(o.groups_per_section, 32);
  // Small groups: the budget allows more than are in flight (64 fit: 64 per section).
  EXPECT_EQ(plan_tile_order(16, 128, MB / 4, 264, 16 * MB).groups_per_section, 64);
  // Everything fits: one section of all groups.
  EXPECT_EQ(plan_tile_order(64, 8, MB, 132, 16 * MB).groups_per_section, 8);
  // 16 MB groups (the 8k backward): the in-flight floor ceil(132/64) = 3, rounded up to 4 | 8.
  EXPECT_EQ(plan_tile_order(64, 8, 16 * MB, 132, 16 * MB).groups_per_section, 4);
  // A prime group count has no divisor between: one section.
  EXPECT_EQ(plan_tile_order(64, 13, 16 * MB, 132, 16 * MB).groups_per_section, 13);
  // Degenerate shapes stay a valid order.
  o = plan_tile_order(0, 0, 0, 0, 16 * MB);
  EXPECT_EQ(o.tiles, 1);
  EXPECT_EQ(o.groups, 1);
  EXPECT_EQ(o.groups_per_section, 1);
  EXPECT_EQ(plan_tile_order(1, 1, 64 * MB, 1, 16 * MB).groups_per_section, 1);
}

}  // namespace
}  // namespace sluice::flash
