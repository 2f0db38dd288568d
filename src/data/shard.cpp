#include "data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "sluice/errors.h"
#include "sluice/fs.h"

namespace sluice {

namespace {

constexpr size_t kBufferBytes = 1 << 20;

}  // namespace

ShardWriter::ShardWriter(std::string path, uint32_t token_bytes, uint64_t tokenizer_hash, uint64_t vocab_size)
    : path_(std::move(path)), tmp_(path_ + ".tmp") {
  std::memcpy(header_.magic, kShardMagic, sizeof kShardMagic);
  header_.version = kShardVersion;
  header_.token_bytes = token_bytes;
  header_.tokenizer_hash = tokenizer_hash;
  header_.vocab_size = vocab_size;
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd_ < 0) throw std::runtime_error("cannot create " + tmp_ + ": " + std::strerror(errno));
  const ShardHeader placeholder{};
  write_all(fd_, &placeholder, sizeof placeholder, tmp_);
  buf_.reserve(kBufferBytes);
}

ShardWriter::~ShardWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!finished_) ::unlink(tmp_.c_str());
}

void ShardWriter::begin_document() { doc_starts_.push_back(header_.token_count); }

void ShardWriter::append(const int32_t* ids, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (header_.token_bytes == 2) {
      const auto v = static_cast<uint16_t>(ids[i]);
      buf_.insert(buf_.end(), reinterpret_cast<const char*>(&v), reinterpret_cast<const char*>(&v) + 2);
    } else {
      const auto v = static_cast<uint32_t>(ids[i]);
      buf_.insert(buf_.end(), reinterpret_cast<const char*>(&v), reinterpret_cast<const char*>(&v) + 4);
    }
    if (buf_.size() >= kBufferBytes) flush_buffer();
  }
  header_.token_count += n;
}

void ShardWriter::flush_buffer() {
  hash_.update(buf_.data(), buf_.size());
  write_all(fd_, buf_.data(), buf_.size(), tmp_);
  buf_.clear();
}

void ShardWriter::finish() {
  header_.doc_count = doc_starts_.size();
  const uint64_t token_region = header_.token_count * header_.token_bytes;
  buf_.resize(buf_.size() + ((token_region + 7) / 8 * 8 - token_region), '\0');  // align the index
  flush_buffer();
  hash_.update(doc_starts_.data(), doc_starts_.size() * sizeof(uint64_t));
  write_all(fd_, doc_starts_.data(), doc_starts_.size() * sizeof(uint64_t), tmp_);
  header_.payload_checksum = hash_.value();
  if (::pwrite(fd_, &header_, sizeof header_, 0) != static_cast<ssize_t>(sizeof header_))
    throw std::runtime_error("writing header of " + tmp_ + ": " + std::strerror(errno));
  if (::fsync(fd_) != 0) throw std::runtime_error("fsync " + tmp_ + ": " + std::strerror(errno));
  ::close(fd_);
  fd_ = -1;
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
    throw std::runtime_error("renaming " + tmp_ + ": " + std::strerror(errno));
  finished_ = true;
}

ShardHeader validate_shard(const unsigned char* data, size_t size, const std::string& path,
                           uint64_t expected_tokenizer_hash, bool verify_checksum) {
  auto fail = [&](const std::string& what) -> void { throw InputError("shard '" + path + "': " + what); };
  if (size < sizeof(ShardHeader)) fail("truncated: " + std::to_string(size) + " bytes, smaller than the 64-byte header");
  ShardHeader header{};
  std::memcpy(&header, data, sizeof header);
  if (std::memcmp(header.magic, kShardMagic, sizeof kShardMagic) != 0) fail("not a sluice token shard (bad magic)");
  if (header.version != kShardVersion) {
    fail("format version " + std::to_string(header.version) + ", this sluice reads version " +
         std::to_string(kShardVersion) + "; prepare the data again with this version");
  }
  if (header.token_bytes != 2 && header.token_bytes != 4)
    fail("corrupt header: token size " + std::to_string(header.token_bytes) + " bytes (expected 2 or 4)");
  if (header.token_bytes == 2 && header.vocab_size > 65536) fail("corrupt header: uint16 tokens for a vocabulary above 65536");
  const uint64_t expect = shard_file_size(header);
  if (header.token_count > size || header.doc_count > size || expect != size) {
    fail("truncated or corrupt: header describes " + std::to_string(expect) + " bytes, file has " + std::to_string(size));
  }
  if (expected_tokenizer_hash != 0 && header.tokenizer_hash != expected_tokenizer_hash) {
    fail("written with tokenizer " + hex64(header.tokenizer_hash) + ", but this run's tokenizer is " +
         hex64(expected_tokenizer_hash) + "; prepare the data with the run's tokenizer or set data.tokenizer to the one used");
  }
  const auto* doc_starts = reinterpret_cast<const uint64_t*>(data + shard_index_offset(header));
  for (uint64_t d = 0; d < header.doc_count; ++d) {
    const bool ok = d == 0 ? doc_starts[0] == 0 : doc_starts[d] > doc_starts[d - 1];
    if (!ok || doc_starts[d] >= header.token_count) fail("corrupt document index at entry " + std::to_string(d));
  }
  if (verify_checksum) {
    const uint64_t sum = fnv1a64(data + sizeof(ShardHeader), size - sizeof(ShardHeader));
    if (sum != header.payload_checksum) fail("checksum mismatch: the token data is corrupt");
  }
  return header;
}

ShardReader::ShardReader(const std::string& path, uint64_t expected_tokenizer_hash, bool verify_checksum)
    : path_(path) {
  auto fail = [&](const std::string& what) -> void { throw InputError("shard '" + path_ + "': " + what); };
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail(std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  ::fstat(fd, &st);
  size_ = static_cast<size_t>(st.st_size);
  if (size_ < sizeof(ShardHeader)) {
    ::close(fd);
    fail("truncated: " + std::to_string(size_) + " bytes, smaller than the 64-byte header");
  }
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) fail(std::string("mmap failed: ") + std::strerror(errno));
  base_ = static_cast<const unsigned char*>(p);
  try {
    header_ = validate_shard(base_, size_, path_, expected_tokenizer_hash, verify_checksum);
    doc_starts_ = reinterpret_cast<const uint64_t*>(base_ + shard_index_offset(header_));
  } catch (...) {
    ::munmap(const_cast<unsigned char*>(base_), size_);
    base_ = nullptr;
    throw;
  }
}

ShardReader::~ShardReader() {
  if (base_) ::munmap(const_cast<unsigned char*>(base_), size_);
}

int32_t ShardReader::token(uint64_t i) const {
  const unsigned char* p = base_ + sizeof(ShardHeader) + i * header_.token_bytes;
  if (header_.token_bytes == 2) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
  }
  uint32_t v;
  std::memcpy(&v, p, 4);
  return static_cast<int32_t>(v);
}

void ShardReader::copy_tokens(uint64_t begin, uint64_t n, int64_t* out) const {
  const unsigned char* p = base_ + sizeof(ShardHeader) + begin * header_.token_bytes;
  if (header_.token_bytes == 2) {
    const auto* t = reinterpret_cast<const uint16_t*>(p);
    for (uint64_t i = 0; i < n; ++i) out[i] = t[i];
  } else {
    const auto* t = reinterpret_cast<const uint32_t*>(p);
    for (uint64_t i = 0; i < n; ++i) out[i] = t[i];
  }
}

}  // namespace sluice
