// Stopgap data source until token shards land: one text file, byte tokens, windows of
// seq_len + 1 tokens sampled at random offsets (train) or at fixed offsets (validation).
#pragma once
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <string>

namespace sluice {

struct Batch {
  at::Tensor inputs;   // [B, T] int64
  at::Tensor targets;  // [B, T] int64, inputs shifted by one
};

class TokenSequence {
 public:
  TokenSequence() = default;
  explicit TokenSequence(at::Tensor tokens) : tokens_(std::move(tokens)) {}
  // Reads `path` as bytes. Throws InputError naming `key` and the file when unreadable.
  static TokenSequence from_text_file(const std::string& path, const std::string& key);
  int64_t size() const { return tokens_.defined() ? tokens_.numel() : 0; }
  TokenSequence slice(int64_t begin, int64_t end) const { return TokenSequence(tokens_.slice(0, begin, end)); }
  const at::Tensor& tokens() const { return tokens_; }
  // Windows starting at `starts` [B] -> inputs/targets [B, seq_len].
  Batch windows(const at::Tensor& starts, int64_t seq_len) const;

 private:
  at::Tensor tokens_;  // [N] int64
};

// Uniformly random windows; the generator makes the order a function of the seed alone.
class RandomWindows {
 public:
  RandomWindows(TokenSequence seq, int64_t seq_len, uint64_t seed);
  Batch next(int64_t batch);

 private:
  TokenSequence seq_;
  int64_t seq_len_;
  at::Generator gen_;
};

// A fixed set of `count` windows spread evenly over the sequence (same every evaluation).
std::vector<Batch> evenly_spaced_batches(const TokenSequence& seq, int64_t seq_len, int64_t batch, int64_t count);

}  // namespace sluice
