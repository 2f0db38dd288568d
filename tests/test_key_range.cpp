// The flash kernels' per-row key interval (kernels/flash/key_range.h) hides exactly the keys the
// causal, end-of-keys, window and document conditions hide, for every position, key, window and
// document start around the edges (queries past the end of the keys included: padding rows).
#include "flash/key_range.h"

#include <gtest/gtest.h>

namespace sluice::flash {
namespace {

bool hidden_by_conditions(int qpos, int key, int S, int window, int doc_lo) {
  return key >= S || key > qpos || (window > 0 && qpos - key >= window) || key < doc_lo;
}

TEST(KeyRange, HidesExactlyWhatTheMaskConditionsHide) {
  int checked = 0;
  for (int S : {1, 2, 17, 64, 129})
    for (int qpos = 0; qpos < S + 3; ++qpos)
      for (int window : {0, 1, 2, 37, 200})
        for (int doc_lo : {0, 1, qpos / 2, qpos, qpos + 1}) {
          const KeyRange r = visible_keys(qpos, S, window, doc_lo);
          for (int key = 0; key < S + 3; ++key, ++checked)
            ASSERT_EQ(r.hides(key), hidden_by_conditions(qpos, key, S, window, doc_lo))
                << "qpos " << qpos << " key " << key << " S " << S << " window " << window << " doc_lo " << doc_lo;
        }
  EXPECT_GT(checked, 100000);
}

TEST(KeyRange, RowsSeeTheirOwnWindow) {
  const KeyRange r = visible_keys(100, 1000, 37, 0);
  EXPECT_EQ(r.lo, 64);
  EXPECT_EQ(r.hi, 100);
  const KeyRange doc = visible_keys(100, 1000, 37, 90);
  EXPECT_EQ(doc.lo, 90);
  const KeyRange past_end = visible_keys(1005, 1000, 0, 0);  // a padding row
  EXPECT_EQ(past_end.hi, 999);
}

}  // namespace
}  // namespace sluice::flash
