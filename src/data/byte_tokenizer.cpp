#include "data/byte_tokenizer.h"

#include <stdexcept>

#include "data/hash.h"

namespace sluice {

uint64_t ByteTokenizer::hash() const {
  static const std::string id = "sluice-byte-tokenizer-v1";
  return fnv1a64(id.data(), id.size());
}

void ByteTokenizer::encode(std::string_view text, std::vector<int32_t>& out) const {
  out.reserve(out.size() + text.size());
  for (char c : text) out.push_back(static_cast<unsigned char>(c));
}

std::string ByteTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string s;
  s.reserve(ids.size());
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) throw std::out_of_range("byte tokenizer: id " + std::to_string(id));
    if (id < 256) s.push_back(static_cast<char>(id));
  }
  return s;
}

}  // namespace sluice
