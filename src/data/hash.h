// FNV-1a, 64-bit: identifies tokenizers, shards and source files. Not cryptographic; it
// detects mismatched tokenizers, truncated or corrupted files and changed sources.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace sluice {

class Fnv1a64 {
 public:
  void update(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    uint64_t h = h_;
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
    h_ = h;
  }
  uint64_t value() const { return h_; }

 private:
  uint64_t h_ = 0xcbf29ce484222325ULL;
};

inline uint64_t fnv1a64(const void* data, size_t n) {
  Fnv1a64 h;
  h.update(data, n);
  return h.value();
}

inline std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace sluice
