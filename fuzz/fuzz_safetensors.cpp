// The safetensors header reader (src/train/safetensors_header.*) that read_safetensors uses
// before it allocates and reads any tensor. The input is a whole .safetensors file.
// Properties: only InputError escapes; an accepted file's tensors lie inside the file, hold
// exactly numel x element size bytes, do not overlap, and their bytes can be read.
#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "fuzz_util.h"
#include "sluice/errors.h"
#include "train/safetensors_header.h"

using namespace sluice;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view file = fuzz::as_text(data, size);
  SafetensorsHeader h;
  try {
    h = parse_safetensors(file, "fuzz.safetensors");
  } catch (const InputError&) {
    return 0;
  }
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  unsigned sum = 0;
  for (const auto& t : h.tensors) {
    fuzz::check(t.begin <= t.end && h.data_offset() + t.end <= size, "tensor " + t.name + " outside the file");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      fuzz::check(d >= 0, "negative dimension");
      numel *= static_cast<uint64_t>(d);
    }
    fuzz::check(numel * static_cast<uint64_t>(t.element_bytes) == t.end - t.begin, "size mismatch accepted");
    fuzz::check(safetensors_dtype_bytes(t.dtype) == t.element_bytes, "dtype size");
    for (uint64_t i = t.begin; i < t.end; ++i) sum += data[h.data_offset() + i];
    ranges.emplace_back(t.begin, t.end);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) fuzz::check(ranges[i].first >= ranges[i - 1].second, "overlap accepted");
  (void)sum;
  return 0;
}
