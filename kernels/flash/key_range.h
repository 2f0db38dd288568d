// The keys one query row may see, as one interval: the kernels test each score of a masked
// tile against its row's [lo, hi] (two integer compares) instead of re-deriving the causal,
// end-of-keys, window and document conditions per score.
//
// Plain C++ (no CUDA headers) so tests/test_key_range.cpp checks it on the CPU against the
// conditions it replaces.
#pragma once
#include <algorithm>

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

// Key tiles [begin, end) of block_n keys that the query tile of rows q0 .. q0 + rows - 1 (those
// below T; queries are the last T of the S positions) can see: from its first row's window or
// document start (first_doc_lo; rows' starts never decrease) to its last valid row's own
// position. Both end tiles hold a visible key. The deterministic dQ kernel walks these; the
// forward computes the same inline (routed through here, ptxas allocated the head-dim-64
// gated+ALiBi forward differently, 0 -> 92 bytes of spill loads, so the measured code stays).
struct TileSpan {
  int begin, end;
};
template <bool kDocs>
SLUICE_KEY_RANGE_HD TileSpan visible_key_tiles(int q0, int rows, int T, int S, int window, int first_doc_lo,
                                               int block_n) {
  const int offset = S - T;
  const int q_last = std::min(q0 + rows, T) - 1;
  const int key_end = std::min(S, offset + q_last + 1);
  int key_begin = window > 0 ? std::max(0, offset + q0 - window + 1) : 0;
  if (kDocs) key_begin = std::max(key_begin, first_doc_lo);
  return {key_begin / block_n, (key_end + block_n - 1) / block_n};
}

}  // namespace sluice::flash
