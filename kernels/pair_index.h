// Which rotary pairs a thread of the pair-map kernels (pair_map.cuh) owns, shared with a CPU
// test (tests/test_pair_index.cpp) that checks every pair of a tensor is owned exactly once.
// x is contiguous [B, T, H, 2·half]; row = (b·T + t)·H + h; pair j of a row is (x[j], x[j + half])
// with rotation (cos, sin)[t][j]. Thread i owns kVec consecutive pairs of one row.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define SLUICE_PAIR_HD __host__ __device__ __forceinline__
#else
#define SLUICE_PAIR_HD inline
#endif

namespace sluice::kernels {

struct PairChunk {
  int64_t lo, hi;  // element offsets of x[j] and x[j + half] (kVec consecutive from each)
  int64_t table;   // offset of (cos, sin)[t][j] in the fp32 [T, half] tables
};

// Thread i's chunk; i < n_pairs / kVec (half % kVec == 0).
SLUICE_PAIR_HD PairChunk pair_chunk(int64_t i, int kVec, int64_t T, int64_t H, int64_t half) {
  const int64_t chunks_per_row = half / kVec;
  const int64_t row = i / chunks_per_row;
  const int64_t j = (i - row * chunks_per_row) * kVec;
  const int64_t t = (row / H) % T;
  const int64_t lo = row * 2 * half + j;
  return {lo, lo + half, t * half + j};
}

}  // namespace sluice::kernels
