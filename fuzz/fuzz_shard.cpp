// The token shard reader (src/data/shard.*): header, document index, checksum. The input is a
// whole shard file. validate_shard runs on an 8-byte-aligned copy (as mmap gives), with and
// without the checksum; ShardReader (open, fstat, mmap) on the same bytes through a memfd, so
// nothing is written to disk. Properties: only InputError escapes; both agree; an accepted
// shard's tokens and document starts can all be read (ASan checks the bounds).
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "data/shard.h"
#include "fuzz_util.h"
#include "sluice/errors.h"

using namespace sluice;

namespace {

std::string memfd_path(const uint8_t* data, size_t size, int& fd) {
  fd = ::memfd_create("shard", 0);
  if (fd < 0) fuzz::die("memfd_create failed");
  for (size_t done = 0; done < size;) {
    const ssize_t w = ::write(fd, data + done, size - done);
    if (w <= 0) fuzz::die("memfd write failed");
    done += static_cast<size_t>(w);
  }
  return "/proc/self/fd/" + std::to_string(fd);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint64_t> aligned((size + 7) / 8);
  if (size) std::memcpy(aligned.data(), data, size);
  const auto* bytes = reinterpret_cast<const unsigned char*>(aligned.data());
  bool valid = false, checksum_ok = false;
  ShardHeader h{};
  try {
    h = validate_shard(bytes, size, "fuzz.bin", 0, /*verify_checksum=*/false);
    valid = true;
    validate_shard(bytes, size, "fuzz.bin", h.tokenizer_hash, /*verify_checksum=*/true);
    checksum_ok = true;
  } catch (const InputError&) {
  }
  if (valid) {
    fuzz::check(shard_file_size(h) == size, "accepted a shard whose size disagrees with its header");
    const auto* starts = reinterpret_cast<const uint64_t*>(bytes + shard_index_offset(h));
    uint64_t sum = 0;
    for (uint64_t d = 0; d < h.doc_count; ++d) sum += starts[d];
    (void)sum;
  }
  if (size < (1u << 16)) {  // the reader proper, through a memfd (bounded: a syscall per page)
    int fd = -1;
    const std::string path = memfd_path(data, size, fd);
    bool opened = false;
    try {
      ShardReader r(path, 0, /*verify_checksum=*/true);
      opened = true;
      fuzz::check(r.tokens() == h.token_count && r.documents() == h.doc_count, "ShardReader disagrees with validate_shard");
      std::vector<int64_t> out(r.tokens());
      r.copy_tokens(0, r.tokens(), out.data());
      for (uint64_t i = 0; i < r.tokens(); ++i) fuzz::check(out[i] == r.token(i), "copy_tokens disagrees with token()");
    } catch (const InputError&) {
    }
    ::close(fd);
    fuzz::check(opened == checksum_ok, "ShardReader and validate_shard disagree on acceptance");
  }
  return 0;
}
