// The sharded safetensors index (<stem>.safetensors.index.json, HuggingFace layout) that
// read_safetensors_sharded follows. Properties: only InputError escapes; every file it names
// is a plain name beside the index (no path leaves the checkpoint directory) and is listed once.
#include <algorithm>
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "sluice/errors.h"
#include "train/safetensors_header.h"

using namespace sluice;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  SafetensorsIndex idx;
  try {
    idx = parse_safetensors_index(fuzz::as_text(data, size), "fuzz.safetensors.index.json");
  } catch (const InputError&) {
    return 0;
  }
  for (const auto& f : idx.files)
    fuzz::check(!f.empty() && f != "." && f != ".." && f.find('/') == std::string::npos, "file outside the directory: " + f);
  fuzz::check(std::adjacent_find(idx.files.begin(), idx.files.end()) == idx.files.end(), "a file listed twice");
  for (const auto& [name, file] : idx.weight_map)
    fuzz::check(std::binary_search(idx.files.begin(), idx.files.end(), file), "weight_map file not in files");
  return 0;
}
