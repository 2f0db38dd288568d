// Shared by the fuzz targets: a failed property aborts with a message (libFuzzer then saves
// the input as crash-*). Readers may throw InputError on bad input, nothing else: any other
// exception escapes LLVMFuzzerTestOneInput and is reported as a crash too.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace sluice::fuzz {

[[noreturn]] inline void die(const std::string& what) {
  std::fprintf(stderr, "fuzz property failed: %s\n", what.c_str());
  std::abort();
}
inline void check(bool ok, const std::string& what) {
  if (!ok) die(what);
}
inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace sluice::fuzz
