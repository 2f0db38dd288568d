#include "data/cached_encoder.h"

namespace sluice {

namespace {
constexpr size_t kMaxCachedSegment = 48;   // longer segments are rare; encode them directly
constexpr size_t kMaxCacheEntries = 1 << 18;
}  // namespace

bool whitespace_segmentable(const Tokenizer& tok) {
  if (tok.kind() != "sentencepiece") return false;
  // A dummy prefix shows as an extra piece/space when a segment is encoded on its own;
  // whitespace folding shows as a lossy round trip.
  const std::string probe = "a  b\n c";
  std::vector<int32_t> whole = tok.encode(probe), cut = tok.encode("a");
  const std::vector<int32_t> rest = tok.encode("  b\n"), last = tok.encode(" c");
  cut.insert(cut.end(), rest.begin(), rest.end());
  cut.insert(cut.end(), last.begin(), last.end());
  return tok.decode(whole) == probe && tok.decode(tok.encode("x")) == "x" && cut == whole;
}

CachedEncoder::CachedEncoder(const Tokenizer& tok) : tok_(tok), segmenting_(whitespace_segmentable(tok)) {}

void CachedEncoder::encode_segment(std::string_view seg, std::vector<int32_t>& out) {
  if (seg.size() > kMaxCachedSegment) {
    tok_.encode(seg, out);
    return;
  }
  auto it = cache_.find(std::string(seg));
  if (it == cache_.end()) {
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();  // bounded memory
    scratch_.clear();
    tok_.encode(seg, scratch_);
    it = cache_.emplace(std::string(seg), scratch_).first;
  }
  out.insert(out.end(), it->second.begin(), it->second.end());
}

void CachedEncoder::encode(std::string_view text, std::vector<int32_t>& out) {
  if (!segmenting_) {
    tok_.encode(text, out);
    return;
  }
  size_t start = 0;
  for (size_t i = 1; i < text.size(); ++i) {
    if (text[i] == ' ' && text[i - 1] != ' ') {
      encode_segment(text.substr(start, i - start), out);
      start = i;
    }
  }
  if (start < text.size()) encode_segment(text.substr(start), out);
}

}  // namespace sluice
