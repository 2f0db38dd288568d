// The keys one query row may see, as one interval: the kernels test each score of a masked
// tile against its row's [lo, hi] (two integer compares) instead of re-deriving the causal,
// end-of-keys, window and document conditions per score.
//
// Plain C++ (no CUDA headers) so tests/test_key_range.cpp checks it on the CPU against the
// conditions it replaces.
#pragma once

#if defined(__CUDACC__)
#define SLUICE_KEY_RANGE_HD __host__ __device__ __forceinline__
#else
#define SLUICE_KEY_RANGE_HD inline
#endif

namespace sluice::flash {

struct KeyRange {
  int lo, hi;  // visible keys: lo <= key <= hi (empty when lo > hi)
  SLUICE_KEY_RANGE_HD bool hides(int key) const { return (key < lo) | (key > hi); }
};

// Query position qpos (0-based among the S key positions) sees key j when j <= qpos (causal),
// j < S, qpos - j < window (window > 0; 0: none) and j >= doc_lo (the first position of its
// document; 0 without documents).
SLUICE_KEY_RANGE_HD KeyRange visible_keys(int qpos, int S, int window, int doc_lo) {
  const int hi = qpos < S - 1 ? qpos : S - 1;
  int lo = window > 0 ? qpos - window + 1 : 0;
  if (doc_lo > lo) lo = doc_lo;
  return {lo, hi};
}

}  // namespace sluice::flash
