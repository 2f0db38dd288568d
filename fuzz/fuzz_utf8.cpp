// The UTF-8 validator (src/data/utf8.*) that `data prepare` and text corpora run on every
// input byte. Properties: find_invalid_utf8 equals an independent decoder (RFC 3629: code
// point ranges, no overlongs, no surrogates, <= U+10FFFF), and feeding the same bytes in
// blocks of any size (from the first input byte) gives the same offset.
#include <cstdint>
#include <string>

#include "data/utf8.h"
#include "fuzz_util.h"

using namespace sluice;

namespace {

// Offset of the first byte of the first invalid (or cut-short) sequence, or npos.
uint64_t reference(const uint8_t* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    const uint8_t c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp, min;
    if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07, min = 0x10000;
    else return i;  // a continuation byte or 0xF8-0xFF as a lead byte
    for (int k = 1; k < len; ++k) {
      if (i + k >= n || (s[i + k] & 0xC0) != 0x80) return i;
      cp = cp << 6 | (s[i + k] & 0x3F);
    }
    if (cp < min || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return i;
    i += len;
  }
  return Utf8Validator::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text = fuzz::as_text(data, size);
  const uint64_t whole = find_invalid_utf8(text);
  const uint64_t ref = reference(data, size);
  fuzz::check(whole == ref, "find_invalid_utf8 " + std::to_string(whole) + " != reference " + std::to_string(ref));
  const size_t block = size ? data[0] % 13 + 1 : 1;
  Utf8Validator v;
  uint64_t bad = Utf8Validator::npos;
  for (size_t at = 0; at < size && bad == Utf8Validator::npos; at += block) bad = v.feed(text.substr(at, block));
  if (bad == Utf8Validator::npos) bad = v.finish();
  fuzz::check(bad == whole, "blocks of " + std::to_string(block) + " give " + std::to_string(bad) + ", whole input " +
                                std::to_string(whole));
  return 0;
}
