// Faster encoding for bulk tokenization: text is cut where no token can span (before a space
// that follows a non-space), and each such word-like segment's ids are memoised. For
// SentencePiece models without a dummy prefix and without whitespace folding (ours), pieces
// never contain '▁' except at their start, so BPE merges and unigram segmentations never
// cross those cuts and the result equals encoding the whole text (tested). Other
// tokenizers are passed through unchanged. One instance per thread.
#pragma once
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "sluice/tokenizer.h"

namespace sluice {

class CachedEncoder {
 public:
  explicit CachedEncoder(const Tokenizer& tok);
  void encode(std::string_view text, std::vector<int32_t>& out);
  bool segmenting() const { return segmenting_; }

 private:
  const Tokenizer& tok_;
  bool segmenting_ = false;
  std::unordered_map<std::string, std::vector<int32_t>> cache_;
  std::vector<int32_t> scratch_;
  void encode_segment(std::string_view seg, std::vector<int32_t>& out);
};

// Whether cutting before "space after non-space" leaves `tok`'s encoding unchanged: true for
// tokenizers that neither add a dummy prefix nor fold whitespace (probed, not assumed).
bool whitespace_segmentable(const Tokenizer& tok);

}  // namespace sluice
