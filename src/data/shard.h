// Writing and memory-mapped reading of token shards (format: shard_format.h).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/hash.h"
#include "data/shard_format.h"

namespace sluice {

// Streams tokens into PATH.tmp; finish() writes the document index and header, fsyncs and
// renames to PATH, so a shard file either is complete or does not exist.
class ShardWriter {
 public:
  ShardWriter(std::string path, uint32_t token_bytes, uint64_t tokenizer_hash, uint64_t vocab_size);
  ~ShardWriter();  // removes the temporary file unless finish() ran
  void begin_document();
  void append(const int32_t* ids, size_t n);
  void finish();
  uint64_t tokens() const { return header_.token_count; }
  uint64_t documents() const { return doc_starts_.size(); }
  uint64_t checksum() const { return header_.payload_checksum; }
  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  ShardHeader header_{};
  Fnv1a64 hash_;
  std::vector<uint64_t> doc_starts_;
  std::vector<char> buf_;
  bool finished_ = false;
  void flush_buffer();
};

// Validates a whole shard held in memory (`data`: `size` bytes, 8-byte aligned) as ShardReader
// does on open, and returns its header; throws the same InputErrors, naming `path`.
ShardHeader validate_shard(const unsigned char* data, size_t size, const std::string& path,
                           uint64_t expected_tokenizer_hash, bool verify_checksum);

// A read-only memory-mapped shard, validated on open.
class ShardReader {
 public:
  // Throws InputError naming the file and the problem: missing, truncated, bad magic or
  // version, inconsistent index, tokenizer hash different from `expected_tokenizer_hash`
  // (when non-zero), or (with verify_checksum) a payload checksum mismatch.
  ShardReader(const std::string& path, uint64_t expected_tokenizer_hash, bool verify_checksum);
  ~ShardReader();
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;

  const ShardHeader& header() const { return header_; }
  uint64_t tokens() const { return header_.token_count; }
  uint32_t token_bytes() const { return header_.token_bytes; }
  const void* token_data() const { return base_ + sizeof(ShardHeader); }
  const uint64_t* doc_starts() const { return doc_starts_; }
  uint64_t documents() const { return header_.doc_count; }
  int32_t token(uint64_t i) const;  // bounds unchecked
  // Copies tokens [begin, begin + n) as int64 into `out`.
  void copy_tokens(uint64_t begin, uint64_t n, int64_t* out) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const unsigned char* base_ = nullptr;
  size_t size_ = 0;
  ShardHeader header_{};
  const uint64_t* doc_starts_ = nullptr;
};

}  // namespace sluice
