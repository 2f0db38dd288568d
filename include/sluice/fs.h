// Filesystem helpers. remove_tree must not go through std::filesystem::remove_all: libtorch.so
// exports its own (different) copy of the std::filesystem symbols, which wins symbol
// lookup in every binary linking LibTorch, and its remove_all crashes there (calls a null
// function). See DEVELOPERS.md.
#pragma once
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>

namespace sluice {

// rm -rf `path`; returns false if something could not be removed. Missing path: true.
inline bool remove_tree(const std::string& path) {
  if (access(path.c_str(), F_OK) != 0) return true;
  auto remove_entry = [](const char* p, const struct stat*, int, struct FTW*) -> int { return std::remove(p); };
  return nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0;
}

// The whole of `path`, or nullopt when it cannot be opened or read (a directory included), so
// that each caller names the file and what it was for in its own error.
inline std::optional<std::string> read_whole_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string out;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0) out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r == 0) break;
    if (r < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      return std::nullopt;
    }
    out.append(buf, static_cast<size_t>(r));
  }
  ::close(fd);
  return out;
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

// Writes `text` to `path` (created or truncated) and fsyncs it; every failure, a full disk or a
// file-size limit included (also when it shows only at fsync or close), throws naming `path`.
inline void write_file_synced(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + path + ": " + std::strerror(errno));
  try {
    write_all(fd, text.data(), text.size(), path);
    if (::fsync(fd) != 0) throw std::runtime_error("fsync " + path + ": " + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) throw std::runtime_error("closing " + path + ": " + std::strerror(errno));
}

}  // namespace sluice
