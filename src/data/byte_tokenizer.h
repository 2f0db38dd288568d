#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sluice {

// UTF-8 bytes as tokens 0..255. Lossless for any byte string.
class ByteTokenizer {
 public:
  static constexpr int64_t kVocabSize = 256;
  std::vector<int64_t> encode(std::string_view text) const;
  std::string decode(const std::vector<int64_t>& ids) const;
};

}  // namespace sluice
