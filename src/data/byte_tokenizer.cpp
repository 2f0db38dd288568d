#include "data/byte_tokenizer.h"

#include <stdexcept>

namespace sluice {

std::vector<int64_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int64_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out(ids.size(), '\0');
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= kVocabSize) throw std::out_of_range("byte token id out of range: " + std::to_string(ids[i]));
    out[i] = static_cast<char>(ids[i]);
  }
  return out;
}

}  // namespace sluice
