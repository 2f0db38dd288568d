#include "data/token_corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/cached_encoder.h"
#include "data/hash.h"
#include "data/shard.h"
#include "data/utf8.h"
#include "sluice/errors.h"
#include "sluice/fs.h"

namespace sluice {

namespace fs = std::filesystem;

namespace {

class ShardSegment final : public TokenSegment {
 public:
  explicit ShardSegment(std::unique_ptr<ShardReader> r) : r_(std::move(r)) {}
  uint64_t size() const override { return r_->tokens(); }
  void copy(uint64_t begin, uint64_t n, int64_t* out) const override { r_->copy_tokens(begin, n, out); }
  const uint64_t* doc_starts() const override { return r_->doc_starts(); }
  uint64_t documents() const override { return r_->documents(); }

 private:
  std::unique_ptr<ShardReader> r_;
};

// Tokens in memory; a view [offset, offset + n) of a shared array so splits copy nothing.
class MemorySegment final : public TokenSegment {
 public:
  MemorySegment(std::shared_ptr<const std::vector<int32_t>> tokens, uint64_t offset, uint64_t n,
                std::vector<uint64_t> doc_starts)
      : tokens_(std::move(tokens)), offset_(offset), n_(n), starts_(std::move(doc_starts)) {
    if (starts_.empty() || starts_.front() != 0) starts_.insert(starts_.begin(), 0);  // a split mid-document
  }
  uint64_t size() const override { return n_; }
  void copy(uint64_t begin, uint64_t n, int64_t* out) const override {
    const int32_t* p = tokens_->data() + offset_ + begin;
    std::copy(p, p + n, out);
  }
  const uint64_t* doc_starts() const override { return starts_.data(); }
  uint64_t documents() const override { return starts_.size(); }
  std::shared_ptr<const std::vector<int32_t>> tokens_;
  uint64_t offset_, n_;
  std::vector<uint64_t> starts_;
};

std::string read_text_file(const std::string& path, const std::string& key) {
  std::optional<std::string> read = read_whole_file(path);
  if (!read) throw InputError(key + ": cannot read '" + path + "'");
  std::string text = std::move(*read);
  if (const uint64_t bad = find_invalid_utf8(text); bad != Utf8Validator::npos) {
    throw InputError(key + ": '" + path + "' is not valid UTF-8: invalid byte sequence at byte offset " +
                     std::to_string(bad));
  }
  return text;
}

}  // namespace

bool TokenCorpus::is_prepared_dataset(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(fs::path(path) / "manifest.json", ec);
}

TokenCorpus TokenCorpus::from_documents(const std::vector<std::vector<int32_t>>& docs, int32_t eos) {
  auto tokens = std::make_shared<std::vector<int32_t>>();
  std::vector<uint64_t> starts;
  for (const auto& d : docs) {
    starts.push_back(tokens->size());
    tokens->insert(tokens->end(), d.begin(), d.end());
    tokens->push_back(eos);
  }
  TokenCorpus c;
  const uint64_t n = tokens->size();
  c.segments_.push_back(std::make_shared<MemorySegment>(std::move(tokens), 0, n, std::move(starts)));
  return c;
}

TokenCorpus TokenCorpus::open(const std::string& path, const std::string& split, const Tokenizer& tok,
                              const std::string& key, bool verify_checksums) {
  if (!is_prepared_dataset(path)) {
    std::vector<int32_t> ids;
    CachedEncoder(tok).encode(read_text_file(path, key), ids);
    return from_documents({ids}, tok.specials().eos >= 0 ? tok.specials().eos : 0);
  }
  const fs::path manifest_path = fs::path(path) / "manifest.json";
  nlohmann::json m;
  try {
    std::ifstream in(manifest_path);
    m = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw InputError(key + ": cannot parse '" + manifest_path.string() + "': " + e.what());
  }
  if (m.value("format", "") != "sluice-token-shards")
    throw InputError(key + ": '" + manifest_path.string() + "' is not a sluice dataset manifest");
  const std::string want_hash = hex64(tok.hash());
  const std::string have_hash = m["tokenizer"].value("hash", "");
  if (have_hash != want_hash) {
    throw InputError(key + ": dataset '" + path + "' was prepared with tokenizer " + have_hash + " (" +
                     m["tokenizer"].value("spec", "?") + ") but data.tokenizer is " + want_hash +
                     "; use the same tokenizer or prepare the data again");
  }
  TokenCorpus c;
  for (const auto& s : m["shards"]) {
    if (s.value("split", "") != split) continue;
    const std::string file = (fs::path(path) / s.value("file", "")).string();
    auto reader = std::make_unique<ShardReader>(file, tok.hash(), verify_checksums);
    if (reader->tokens() != s.value("tokens", uint64_t{0})) {
      throw InputError(key + ": shard '" + file + "' holds " + std::to_string(reader->tokens()) +
                       " tokens but manifest.json lists " + std::to_string(s.value("tokens", uint64_t{0})));
    }
    c.segments_.push_back(std::make_shared<ShardSegment>(std::move(reader)));
  }
  return c;
}

uint64_t TokenCorpus::tokens() const {
  uint64_t n = 0;
  for (const auto& s : segments_) n += s->size();
  return n;
}

std::pair<TokenCorpus, TokenCorpus> TokenCorpus::split_tail(double fraction) const {
  // Only in-memory corpora are split this way (a prepared dataset has its own val split).
  TokenCorpus head, tail;
  for (const auto& seg : segments_) {
    const auto* mem = dynamic_cast<const MemorySegment*>(seg.get());
    if (!mem) {
      head.segments_.push_back(seg);
      continue;
    }
    const auto n_tail = static_cast<uint64_t>(fraction * static_cast<double>(mem->n_));
    const uint64_t n_head = mem->n_ - n_tail;
    std::vector<uint64_t> hs, ts;
    for (uint64_t d = 0; d < mem->starts_.size(); ++d) {
      const uint64_t st = mem->starts_[d];
      if (st < n_head) hs.push_back(st); else ts.push_back(st - n_head);
    }
    head.segments_.push_back(std::make_shared<MemorySegment>(mem->tokens_, mem->offset_, n_head, hs));
    if (n_tail > 0) tail.segments_.push_back(std::make_shared<MemorySegment>(mem->tokens_, mem->offset_ + n_head, n_tail, ts));
  }
  return {head, tail};
}

}  // namespace sluice
