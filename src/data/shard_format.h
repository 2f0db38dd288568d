// Token shard files (`sluice data prepare`), version 1, little-endian:
//   [0, 64)    header (ShardHeader)
//   [64, ...)  token_count tokens of token_bytes each (uint16 when the vocabulary fits, else uint32)
//   then       zero padding to a multiple of 8 bytes
//   then       doc_count uint64: the token offset where each document starts (ascending, first 0)
// Every document ends with the tokenizer's EOS. payload_checksum is FNV-1a 64 over the
// token bytes (padding included) followed by the document index.
#pragma once
#include <cstdint>
#include <cstring>

namespace sluice {

constexpr char kShardMagic[8] = {'S', 'L', 'U', 'I', 'C', 'E', 'T', 'K'};
constexpr uint32_t kShardVersion = 1;

struct ShardHeader {
  char magic[8];
  uint32_t version;
  uint32_t token_bytes;  // 2 or 4
  uint64_t token_count;
  uint64_t doc_count;
  uint64_t tokenizer_hash;
  uint64_t payload_checksum;
  uint64_t vocab_size;
  uint64_t reserved;
};
static_assert(sizeof(ShardHeader) == 64, "shard header must be 64 bytes");

inline uint64_t shard_index_offset(const ShardHeader& h) {
  return sizeof(ShardHeader) + (h.token_count * h.token_bytes + 7) / 8 * 8;
}
inline uint64_t shard_file_size(const ShardHeader& h) { return shard_index_offset(h) + h.doc_count * sizeof(uint64_t); }

}  // namespace sluice
