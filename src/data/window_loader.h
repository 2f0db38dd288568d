// Packs a token corpus into (input, target) windows of seq_len and serves them as batches.
// Window w of a segment covers tokens [w·L, w·L + L + 1) (inputs and the next-token
// targets). Batch k is a pure function of (corpus, seed, rank, world, k): epoch
// e = k / batches_per_epoch shuffles all windows with a permutation seeded by (seed, e);
// rank r of world w takes every w-th position of that order, so ranks never overlap. The
// loader's whole state is therefore the index of the next batch.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "data/batch.h"
#include "data/token_corpus.h"

namespace sluice {

struct LoaderOptions {
  int64_t seq_len = 256;
  int64_t batch = 8;
  uint64_t seed = 0;
  int64_t rank = 0, world = 1;
  bool shuffle = true;
  bool segments = false;  // fill Batch::segments (document of each position's target, per window)
};

class WindowLoader {
 public:
  // Throws InputError naming `key` when the corpus is too small for one batch.
  WindowLoader(std::shared_ptr<const TokenCorpus> corpus, LoaderOptions opts, const std::string& key);
  uint64_t windows() const { return window_starts_.back(); }  // in the whole corpus
  uint64_t windows_per_rank() const { return windows() / static_cast<uint64_t>(opts_.world); }
  uint64_t batches_per_epoch() const { return windows_per_rank() / static_cast<uint64_t>(opts_.batch); }
  // Windows all ranks together take per batch index (batch x world): the loader's position
  // in windows is index x global_batch(), whatever the split over ranks.
  uint64_t global_batch() const { return static_cast<uint64_t>(opts_.batch * opts_.world); }
  // This loader's batch index for the position that `index` was in a loader over the same
  // corpus and seed with global batch `from_global_batch` (another world size or micro-batch):
  // the same epoch and the same windows consumed in it, so the data order goes on unchanged.
  // Throws InputError when that position falls inside one of this loader's batches.
  uint64_t convert_index(uint64_t index, uint64_t from_global_batch) const;
  // Global window index of the j-th window of this rank in epoch `epoch`.
  uint64_t window_of(uint64_t epoch, uint64_t j) const;
  Batch batch(uint64_t index) const;  // thread-safe
  // `count` windows spread evenly over the corpus in order (validation: same every time).
  std::vector<Batch> evenly_spaced(int64_t count) const;
  const LoaderOptions& options() const { return opts_; }

 private:
  std::shared_ptr<const TokenCorpus> corpus_;
  LoaderOptions opts_;
  std::vector<uint64_t> window_starts_;  // prefix sums of windows per segment
  Batch gather(const std::vector<uint64_t>& windows) const;
};

}  // namespace sluice
