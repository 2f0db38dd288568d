#pragma once
#include <cstdint>

namespace sluice {

// A pseudo-random bijection of [0, n) from a seed in O(1) memory (a 4-round Feistel network
// on the smallest even-bit domain >= n, with cycle walking), so shuffling billions of
// windows needs no index array and any position is computed directly.
class RandomPermutation {
 public:
  RandomPermutation(uint64_t n, uint64_t seed);
  uint64_t operator()(uint64_t i) const;
  uint64_t size() const { return n_; }

 private:
  uint64_t n_, seed_;
  int half_bits_ = 1;
  uint64_t mask_ = 1;
  uint64_t round(uint64_t x, int r) const;
};

// Mixes two 64-bit values into one (splitmix64 finaliser); used to derive per-epoch seeds.
uint64_t mix64(uint64_t a, uint64_t b);

}  // namespace sluice
