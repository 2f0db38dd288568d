// The pair-map kernels' ownership (kernels/pair_index.h), on the CPU: for shapes with one and
// many rows, heads and positions, and 1 or 8 pairs per thread, the threads' chunks cover every
// (x[j], x[j + half]) pair of a [B, T, H, 2·half] tensor exactly once, each with the rotation
// row of its own position t and column j.
#include <gtest/gtest.h>

#include <vector>

#include "pair_index.h"

namespace sluice::kernels {
namespace {

TEST(PairIndex, ChunksCoverEveryPairOnceWithItsOwnRotation) {
  struct Shape {
    int64_t B, T, H, half;
  };
  for (const Shape& s : {Shape{1, 1, 1, 8}, Shape{2, 9, 3, 32}, Shape{3, 5, 2, 64}, Shape{1, 7, 5, 8}, Shape{2, 3, 4, 1},
                         Shape{2, 4, 3, 5}}) {
    for (const int vec : {1, 8}) {
      if (s.half % vec != 0) continue;
      const int64_t D = 2 * s.half, n = s.B * s.T * s.H * D;
      std::vector<int> owned(static_cast<size_t>(n), 0);
      const int64_t chunks = n / 2 / vec;
      for (int64_t i = 0; i < chunks; ++i) {
        const PairChunk c = pair_chunk(i, vec, s.T, s.H, s.half);
        for (int v = 0; v < vec; ++v) {
          const int64_t lo = c.lo + v, hi = c.hi + v;
          ASSERT_LT(hi, n);
          ++owned[static_cast<size_t>(lo)], ++owned[static_cast<size_t>(hi)];
          // lo is element j of its row, hi element j + half of the same row
          const int64_t row = lo / D, j = lo % D;
          EXPECT_LT(j, s.half);
          EXPECT_EQ(hi, row * D + j + s.half);
          const int64_t t = (row / s.H) % s.T;  // row = (b·T + t)·H + h
          EXPECT_EQ(c.table + v, t * s.half + j);
        }
      }
      for (int64_t e = 0; e < n; ++e) ASSERT_EQ(owned[static_cast<size_t>(e)], 1) << "element " << e << " vec " << vec;
    }
  }
}

}  // namespace
}  // namespace sluice::kernels
