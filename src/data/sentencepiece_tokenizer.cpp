#include "data/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include <filesystem>
#include <stdexcept>

#include "data/byte_tokenizer.h"
#include "data/hash.h"
#include "sluice/errors.h"

namespace sluice {

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_path, const std::string& key)
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  const auto status = sp_->Load(model_path);
  if (!status.ok()) {
    throw InputError(key + ": cannot load SentencePiece model '" + model_path + "': " + status.ToString());
  }
  const std::string proto = sp_->serialized_model_proto();
  hash_ = fnv1a64(proto.data(), proto.size());
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

int64_t SentencePieceTokenizer::vocab_size() const { return sp_->GetPieceSize(); }

SpecialTokens SentencePieceTokenizer::specials() const {
  return {sp_->bos_id(), sp_->eos_id(), sp_->pad_id(), sp_->unk_id()};
}

void SentencePieceTokenizer::encode(std::string_view text, std::vector<int32_t>& out) const {
  std::vector<int> ids;
  const auto status = sp_->Encode(text, &ids);
  if (!status.ok()) throw std::runtime_error("SentencePiece encode failed: " + status.ToString());
  out.insert(out.end(), ids.begin(), ids.end());
}

std::string SentencePieceTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  const auto status = sp_->Decode(std::vector<int>(ids.begin(), ids.end()), &text);
  if (!status.ok()) throw std::runtime_error("SentencePiece decode failed: " + status.ToString());
  return text;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec, const std::string& key) {
  namespace fs = std::filesystem;
  if (spec == "byte") return std::make_unique<ByteTokenizer>();
  std::error_code ec;
  fs::path path(spec);
  if (fs::is_directory(path, ec)) path /= "tokenizer.model";
  if (!fs::is_regular_file(path, ec)) {
    throw InputError(key + ": '" + spec + "' is neither 'byte' nor a SentencePiece model (" + path.string() +
                     " does not exist); train one with `sluice data train-tokenizer`");
  }
  return std::make_unique<SentencePieceTokenizer>(path.string(), key);
}

}  // namespace sluice
