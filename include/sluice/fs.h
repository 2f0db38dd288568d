// Filesystem helpers. remove_tree must not go through std::filesystem::remove_all: libtorch.so
// exports its own (different) copy of the std::filesystem symbols, which wins symbol
// lookup in every binary linking LibTorch, and its remove_all crashes there (calls a null
// function). See DEVELOPERS.md.
#pragma once
#include <ftw.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>

namespace sluice {

// rm -rf `path`; returns false if something could not be removed. Missing path: true.
inline bool remove_tree(const std::string& path) {
  if (access(path.c_str(), F_OK) != 0) return true;
  auto remove_entry = [](const char* p, const struct stat*, int, struct FTW*) -> int { return std::remove(p); };
  return nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0;
}

// Writes all `n` bytes to `fd` (retrying short writes and EINTR); throws naming `path`.
inline void write_all(int fd, const void* data, size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error("writing " + path + ": " + std::strerror(errno));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace sluice
