// Tokenizers: UTF-8 bytes (tests, tiny runs) or SentencePiece models (trained by
// `sluice data train-tokenizer`, or existing ones such as Llama-2's tokenizer.model).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sluice {

struct SpecialTokens {
  int32_t bos = -1, eos = -1, pad = -1, unk = -1;  // -1: the tokenizer has none
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string kind() const = 0;  // "byte" | "sentencepiece"
  virtual int64_t vocab_size() const = 0;
  virtual SpecialTokens specials() const = 0;
  // Identity of the vocabulary: shards record it and refuse a different tokenizer.
  virtual uint64_t hash() const = 0;
  // Appends the ids of `text` (no BOS/EOS added). Thread-safe.
  virtual void encode(std::string_view text, std::vector<int32_t>& out) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  std::vector<int32_t> encode(std::string_view text) const {
    std::vector<int32_t> ids;
    encode(text, ids);
    return ids;
  }
};

// "byte"; a directory holding tokenizer.model; or a SentencePiece .model file.
// Throws InputError naming `key` (the config key or argument) when it cannot be loaded.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec, const std::string& key = "data.tokenizer");

struct TokenizerTrainingOptions {
  std::vector<std::string> inputs;  // text files
  int64_t vocab_size = 32000;
  std::string model_type = "bpe";  // bpe | unigram
  std::string out_dir;
  int threads = 0;                  // 0: all cores
  int64_t max_sentences = 2000000;  // sampled lines used for training
};

// Trains a SentencePiece model with byte fallback and no normalisation (so any UTF-8 text
// round-trips), writes OUT/tokenizer.model and OUT/tokenizer.json (vocab size, special ids).
void train_tokenizer(const TokenizerTrainingOptions& opts);

}  // namespace sluice
