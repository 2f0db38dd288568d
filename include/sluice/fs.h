// Filesystem helpers that must not go through std::filesystem::remove_all: libtorch.so
// exports its own (different) copy of the std::filesystem symbols, which wins symbol
// lookup in every binary linking LibTorch, and its remove_all crashes there (calls a null
// function). See DEVELOPERS.md.
#pragma once
#include <ftw.h>
#include <unistd.h>

#include <cstdio>
#include <string>

namespace sluice {

// rm -rf `path`; returns false if something could not be removed. Missing path: true.
inline bool remove_tree(const std::string& path) {
  if (access(path.c_str(), F_OK) != 0) return true;
  auto remove_entry = [](const char* p, const struct stat*, int, struct FTW*) -> int { return std::remove(p); };
  return nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0;
}

}  // namespace sluice
