#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace sluice {

// Incremental UTF-8 validation (RFC 3629: no overlongs, no surrogates, <= U+10FFFF) of a
// stream that arrives in blocks; a sequence may straddle two blocks.
class Utf8Validator {
 public:
  static constexpr uint64_t npos = static_cast<uint64_t>(-1);
  // Offset from the start of the stream of the first byte of an invalid sequence, or npos.
  uint64_t feed(std::string_view block);
  // At end of input: npos, or the offset of a sequence cut short by the end.
  uint64_t finish() const { return need_ == 0 ? npos : seq_start_; }

 private:
  uint64_t offset_ = 0;     // stream offset of the next byte
  uint64_t seq_start_ = 0;  // stream offset of the current multi-byte sequence
  int need_ = 0;            // continuation bytes still expected
  unsigned char lo_ = 0x80, hi_ = 0xBF;  // allowed range of the next continuation byte
};

// Offset of the first invalid byte sequence in `text`, or Utf8Validator::npos.
uint64_t find_invalid_utf8(std::string_view text);

}  // namespace sluice
