// The flash kernels' per-row key interval (kernels/flash/key_range.h) hides exactly the keys the
// causal, end-of-keys, window and document conditions hide, for every position, key, window and
// document start around the edges (queries past the end of the keys included: padding rows).
#include "flash/key_range.h"

#include <gtest/gtest.h>

#include <string>

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

// visible_key_tiles is exactly the span of key tiles holding a key some row of the query tile
// sees (rows below T; nondecreasing document starts, the first row's passed), over lengths,
// decoding (T < S), windows, documents and the query and key tile sizes the kernels use.
TEST(KeyRange, KeyTilesSpanExactlyTheKeysTheTileSees) {
  int checked = 0;
  for (int rows : {64, 128})  // query tile
    for (int block : {64, 128})  // key tile
      for (int S : {1, 17, 64, 65, 200, 300})
        for (int T : {1, 5, S / 2 + 1, S})
          for (int window : {0, 1, 37, 200})
            for (int doc_len : {0, 1, 7, 100}) {  // documents of doc_len positions (0: one document)
              auto doc_lo = [&](int q) { return doc_len > 0 ? (S - T + q) / doc_len * doc_len : 0; };
              for (int q0 = 0; q0 < T; q0 += rows) {
                int lo = S, hi = -1;  // the keys some row sees
                for (int q = q0; q < q0 + rows && q < T; ++q) {
                  const KeyRange r = visible_keys(S - T + q, S, window, doc_lo(q));
                  if (r.lo <= r.hi) lo = lo < r.lo ? lo : r.lo, hi = hi > r.hi ? hi : r.hi;
                }
                ASSERT_LE(lo, hi) << "every valid row sees its own key";
                const TileSpan t = doc_len > 0 ? visible_key_tiles<true>(q0, rows, T, S, window, doc_lo(q0), block)
                                               : visible_key_tiles<false>(q0, rows, T, S, window, 0, block);
                const std::string where = "rows " + std::to_string(rows) + " block " + std::to_string(block) + " S " +
                                          std::to_string(S) + " T " + std::to_string(T) + " window " +
                                          std::to_string(window) + " doc_len " + std::to_string(doc_len) + " q0 " +
                                          std::to_string(q0);
                ASSERT_EQ(t.begin, lo / block) << where;
                ASSERT_EQ(t.end, hi / block + 1) << where;
                ++checked;
              }
            }
  EXPECT_GT(checked, 1000);
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
