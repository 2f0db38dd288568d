// Token streams the loader reads: memory-mapped shards of a prepared dataset (one split),
// or a text file tokenized in memory (small files, tests). Each segment is a contiguous
// token array with its document starts; windows never cross segments.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sluice/tokenizer.h"

namespace sluice {

class ShardReader;

class TokenSegment {
 public:
  virtual ~TokenSegment() = default;
  virtual uint64_t size() const = 0;
  virtual void copy(uint64_t begin, uint64_t n, int64_t* out) const = 0;
  virtual const uint64_t* doc_starts() const = 0;  // ascending, first 0
  virtual uint64_t documents() const = 0;
};

class TokenCorpus {
 public:
  // `path` is a prepared dataset folder (manifest.json; reads split `split`) or a text file
  // (tokenized whole; `split` is ignored). Shard headers are checked against `tok`, and
  // every problem is an InputError naming `key`.
  static TokenCorpus open(const std::string& path, const std::string& split, const Tokenizer& tok,
                          const std::string& key, bool verify_checksums = true);
  // An in-memory corpus of one document per entry (tests, text files); EOS after each.
  static TokenCorpus from_documents(const std::vector<std::vector<int32_t>>& docs, int32_t eos);

  uint64_t tokens() const;
  size_t segments() const { return segments_.size(); }
  const TokenSegment& segment(size_t i) const { return *segments_[i]; }
  // The trailing `fraction` of the tokens as a corpus of its own, and this corpus without it
  // (train/validation split of a single text file).
  std::pair<TokenCorpus, TokenCorpus> split_tail(double fraction) const;
  static bool is_prepared_dataset(const std::string& path);

 private:
  std::vector<std::shared_ptr<const TokenSegment>> segments_;
};

}  // namespace sluice
