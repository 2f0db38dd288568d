// The safetensors format (huggingface/safetensors): an 8-byte little-endian header length N,
// N bytes of JSON {"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]},
// "__metadata__": {string: string}}, then the raw little-endian tensor data, offsets relative
// to its start. Written here (no packaged C++ library fits), read back with full validation.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace sluice {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Writes `tensors` (any device; copied to the CPU, contiguous) to `path` and fsyncs it.
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});

struct SafetensorsFile {
  std::map<std::string, at::Tensor> tensors;  // CPU tensors owning their data
  std::map<std::string, std::string> metadata;
};

// Reads and validates `path`: header length, JSON, dtypes, shapes against byte ranges,
// ranges inside the file and not overlapping. Throws InputError naming the file and tensor.
SafetensorsFile read_safetensors(const std::string& path);

// Writes `tensors` as one file `dir/<stem>.safetensors`, or, when they exceed `max_shard_bytes`,
// as `dir/<stem>-0000i-of-0000n.safetensors` plus `dir/<stem>.safetensors.index.json`
// ({"metadata": {"total_size": N}, "weight_map": {name: file}}, the HuggingFace layout).
// Returns the files written (relative names).
std::vector<std::string> write_safetensors_sharded(const std::string& dir, const std::string& stem,
                                                   const NamedTensors& tensors, int64_t max_shard_bytes,
                                                   const std::map<std::string, std::string>& metadata = {});
// Reads either layout back.
SafetensorsFile read_safetensors_sharded(const std::string& dir, const std::string& stem);

// fsync a file or a directory (so a rename inside it is durable).
void fsync_path(const std::string& path);

}  // namespace sluice
