// The safetensors header (format: safetensors.h) and the sharded index
// (<stem>.safetensors.index.json), parsed and fully validated without LibTorch, so that the
// readers can be fuzzed and sanitized on their own (fuzz/, docs/fuzzing.md). Every problem is
// an InputError "checkpoint file 'PATH': ..." naming the tensor where there is one.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice {

// Largest header accepted (the JSON part), as HuggingFace's reader does.
constexpr uint64_t kSafetensorsMaxHeaderBytes = uint64_t{100} << 20;

struct SafetensorsEntry {
  std::string name;
  std::string dtype;         // "F32", "BF16", ... (one of safetensors_dtype_bytes's)
  int64_t element_bytes = 0;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range relative to the start of the data
};

struct SafetensorsHeader {
  uint64_t json_bytes = 0;  // N: the data starts at 8 + N
  std::vector<SafetensorsEntry> tensors;  // in name order
  std::map<std::string, std::string> metadata;
  uint64_t data_offset() const { return 8 + json_bytes; }
};

// Bytes per element of a safetensors dtype name, 0 when unknown (F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL).
int64_t safetensors_dtype_bytes(std::string_view dtype);

// N from the first 8 bytes of a file of `file_size` bytes (`prefix` holds min(8, file_size)
// bytes): refuses files under 8 bytes and N beyond the file or kSafetensorsMaxHeaderBytes.
uint64_t safetensors_json_length(std::string_view prefix, uint64_t file_size, const std::string& path);

// Validates the N bytes of header JSON of a file of `file_size` bytes: a JSON object; each
// tensor an object with a known dtype, a shape of non-negative integers, data_offsets
// [begin, end] inside the data with end - begin = numel x element size (no overflow); ranges
// not overlapping; __metadata__ an object of strings.
SafetensorsHeader parse_safetensors_header(std::string_view json, uint64_t file_size, const std::string& path);

// Both steps on a whole file in memory.
SafetensorsHeader parse_safetensors(std::string_view file, const std::string& path);

// <stem>.safetensors.index.json: {"metadata": {...}, "weight_map": {tensor: file}}. Files
// must be plain names inside the directory (no '/', not "." or ".."). `path` names the
// index in messages.
struct SafetensorsIndex {
  std::vector<std::pair<std::string, std::string>> weight_map;  // tensor -> file, in tensor order
  std::vector<std::string> files;                               // distinct files, sorted
};
SafetensorsIndex parse_safetensors_index(std::string_view json, const std::string& path);

}  // namespace sluice
