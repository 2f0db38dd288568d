#include "data/permutation.h"

namespace sluice {

uint64_t mix64(uint64_t a, uint64_t b) {
  uint64_t z = a + 0x9e3779b97f4a7c15ULL * (b + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

RandomPermutation::RandomPermutation(uint64_t n, uint64_t seed) : n_(n), seed_(seed) {
  while ((uint64_t{1} << (2 * half_bits_)) < n_) ++half_bits_;
  mask_ = (uint64_t{1} << half_bits_) - 1;
}

uint64_t RandomPermutation::round(uint64_t x, int r) const { return mix64(seed_ + static_cast<uint64_t>(r), x) & mask_; }

uint64_t RandomPermutation::operator()(uint64_t i) const {
  uint64_t x = i;
  do {  // cycle walking: re-encrypt until the value falls inside [0, n)
    uint64_t left = x >> half_bits_, right = x & mask_;
    for (int r = 0; r < 4; ++r) {
      const uint64_t next = left ^ round(right, r);
      left = right;
      right = next;
    }
    x = (left << half_bits_) | right;
  } while (x >= n_);
  return x;
}

}  // namespace sluice
