#pragma once
#include "sluice/tokenizer.h"

namespace sluice {

// Ids 0..255 are the UTF-8 bytes; 256 BOS, 257 EOS, 258 PAD. Lossless for any bytes.
class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kBos = 256, kEos = 257, kPad = 258;
  using Tokenizer::encode;
  std::string kind() const override { return "byte"; }
  int64_t vocab_size() const override { return 259; }
  SpecialTokens specials() const override { return {kBos, kEos, kPad, -1}; }
  uint64_t hash() const override;
  void encode(std::string_view text, std::vector<int32_t>& out) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;  // specials are dropped
};

}  // namespace sluice
