#pragma once
#include <memory>

#include "sluice/tokenizer.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace sluice {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // Throws InputError naming `key` and the file when the model cannot be loaded.
  SentencePieceTokenizer(const std::string& model_path, const std::string& key);
  ~SentencePieceTokenizer() override;
  using Tokenizer::encode;
  std::string kind() const override { return "sentencepiece"; }
  int64_t vocab_size() const override;
  SpecialTokens specials() const override;
  uint64_t hash() const override { return hash_; }
  void encode(std::string_view text, std::vector<int32_t>& out) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  uint64_t hash_ = 0;
};

}  // namespace sluice
