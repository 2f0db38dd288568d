#include "data/utf8.h"

namespace sluice {

uint64_t Utf8Validator::feed(std::string_view block) {
  for (size_t i = 0; i < block.size(); ++i, ++offset_) {
    const auto c = static_cast<unsigned char>(block[i]);
    if (need_ > 0) {
      if (c < lo_ || c > hi_) return seq_start_;
      lo_ = 0x80;
      hi_ = 0xBF;
      --need_;
      continue;
    }
    if (c < 0x80) continue;
    seq_start_ = offset_;
    if (c >= 0xC2 && c <= 0xDF) {
      need_ = 1;
    } else if (c == 0xE0) {
      need_ = 2, lo_ = 0xA0;  // no overlong 3-byte forms
    } else if (c == 0xED) {
      need_ = 2, hi_ = 0x9F;  // no UTF-16 surrogates
    } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
      need_ = 2;
    } else if (c == 0xF0) {
      need_ = 3, lo_ = 0x90;  // no overlong 4-byte forms
    } else if (c >= 0xF1 && c <= 0xF3) {
      need_ = 3;
    } else if (c == 0xF4) {
      need_ = 3, hi_ = 0x8F;  // nothing above U+10FFFF
    } else {
      return offset_;  // 0x80-0xC1 as a lead byte, or 0xF5-0xFF
    }
  }
  return npos;
}

uint64_t find_invalid_utf8(std::string_view text) {
  Utf8Validator v;
  const uint64_t bad = v.feed(text);
  return bad != Utf8Validator::npos ? bad : v.finish();
}

}  // namespace sluice
