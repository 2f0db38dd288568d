#include "data/window_loader.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "data/permutation.h"
#include "sluice/errors.h"

namespace sluice {

WindowLoader::WindowLoader(std::shared_ptr<const TokenCorpus> corpus, LoaderOptions opts, const std::string& key)
    : corpus_(std::move(corpus)), opts_(opts) {
  window_starts_.push_back(0);
  const auto L = static_cast<uint64_t>(opts_.seq_len);
  for (size_t s = 0; s < corpus_->segments(); ++s) {
    const uint64_t n = corpus_->segment(s).size();
    window_starts_.push_back(window_starts_.back() + (n > L ? (n - 1) / L : 0));
  }
  if (batches_per_epoch() == 0) {
    throw InputError(key + ": " + std::to_string(corpus_->tokens()) + " tokens make " + std::to_string(windows()) +
                     " windows of data.seq_len " + std::to_string(opts_.seq_len) + "; one batch of " +
                     std::to_string(opts_.batch) + " on each of " + std::to_string(opts_.world) +
                     " rank(s) needs more data or a smaller seq_len / micro_batch");
  }
}

uint64_t WindowLoader::window_of(uint64_t epoch, uint64_t j) const {
  const uint64_t pos = static_cast<uint64_t>(opts_.rank) + static_cast<uint64_t>(opts_.world) * j;
  if (!opts_.shuffle) return pos;
  return RandomPermutation(windows(), mix64(opts_.seed, epoch))(pos);
}

uint64_t WindowLoader::convert_index(uint64_t index, uint64_t from_global_batch) const {
  if (from_global_batch == global_batch()) return index;
  const uint64_t from_per_epoch = windows() / from_global_batch;
  if (from_per_epoch == 0) throw InputError("data position: a global batch of " + std::to_string(from_global_batch) +
                                            " windows does not fit this corpus");
  const uint64_t epoch = index / from_per_epoch, consumed = index % from_per_epoch * from_global_batch;
  if (consumed % global_batch() != 0) {
    throw InputError("--resume: the checkpoint stopped " + std::to_string(consumed) + " windows into epoch " +
                     std::to_string(epoch) + ", which is not a multiple of this run's " + std::to_string(global_batch()) +
                     " windows per micro-batch (train.micro_batch x world size); choose sizes whose product divides it");
  }
  return epoch * batches_per_epoch() + consumed / global_batch();
}

Batch WindowLoader::batch(uint64_t index) const {
  const uint64_t epoch = index / batches_per_epoch(), b = index % batches_per_epoch();
  std::vector<uint64_t> w(static_cast<size_t>(opts_.batch));
  for (uint64_t i = 0; i < w.size(); ++i) w[i] = window_of(epoch, b * static_cast<uint64_t>(opts_.batch) + i);
  return gather(w);
}

std::vector<Batch> WindowLoader::evenly_spaced(int64_t count) const {
  const uint64_t n = std::min<uint64_t>(static_cast<uint64_t>(count) * opts_.batch, windows());
  const uint64_t batches = n / static_cast<uint64_t>(opts_.batch);
  std::vector<Batch> out;
  for (uint64_t b = 0; b < batches; ++b) {
    std::vector<uint64_t> w;
    for (uint64_t i = 0; i < static_cast<uint64_t>(opts_.batch); ++i) {
      const uint64_t k = b * opts_.batch + i;
      w.push_back(batches * opts_.batch > 1 ? k * (windows() - 1) / (batches * opts_.batch - 1) : 0);
    }
    out.push_back(gather(w));
  }
  return out;
}

Batch WindowLoader::gather(const std::vector<uint64_t>& windows) const {
  const int64_t B = static_cast<int64_t>(windows.size()), L = opts_.seq_len;
  at::Tensor buf = at::empty({B, L + 1}, at::kLong);
  at::Tensor seg = opts_.segments ? at::empty({B, L}, at::kLong) : at::Tensor();
  int64_t* p = buf.data_ptr<int64_t>();
  for (int64_t i = 0; i < B; ++i) {
    const uint64_t g = windows[static_cast<size_t>(i)];
    const size_t s = static_cast<size_t>(std::upper_bound(window_starts_.begin(), window_starts_.end(), g) -
                                         window_starts_.begin() - 1);
    const TokenSegment& segment = corpus_->segment(s);
    const uint64_t begin = (g - window_starts_[s]) * static_cast<uint64_t>(L);
    segment.copy(begin, static_cast<uint64_t>(L + 1), p + i * (L + 1));
    if (opts_.segments) {
      // Input t gets the document of its target, token begin + t + 1 (see Batch::segments),
      // counted from the window's first such document.
      const uint64_t* starts = segment.doc_starts();
      const uint64_t* end = starts + segment.documents();
      const auto first = std::upper_bound(starts, end, begin + 1) - starts;
      int64_t* sp = seg.data_ptr<int64_t>() + i * L;
      for (int64_t t = 0; t < L; ++t)
        sp[t] = (std::upper_bound(starts, end, begin + static_cast<uint64_t>(t) + 1) - starts) - first;
    }
  }
  return {buf.narrow(1, 0, L).contiguous(), buf.narrow(1, 1, L).contiguous(), seg};
}

}  // namespace sluice
