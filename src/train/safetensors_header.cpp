#include "train/safetensors_header.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "sluice/errors.h"

namespace sluice {

namespace {

struct Dtype {
  const char* name;
  int64_t bytes;
};
const Dtype kDtypes[] = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},
                         {"I32", 4}, {"I16", 2}, {"I8", 1},  {"U8", 1},   {"BOOL", 1}};

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw InputError("checkpoint file '" + path + "': " + what);
}

}  // namespace

int64_t safetensors_dtype_bytes(std::string_view dtype) {
  for (const auto& d : kDtypes)
    if (dtype == d.name) return d.bytes;
  return 0;
}

uint64_t safetensors_json_length(std::string_view prefix, uint64_t file_size, const std::string& path) {
  if (file_size < 8 || prefix.size() < 8) fail(path, "truncated: " + std::to_string(file_size) + " bytes");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(prefix[i])) << (8 * i);
  if (n > file_size - 8 || n > kSafetensorsMaxHeaderBytes)
    fail(path, fmt::format("bad header length {} (file has {} bytes)", n, file_size));
  return n;
}

SafetensorsHeader parse_safetensors_header(std::string_view json, uint64_t file_size, const std::string& path) {
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(json.begin(), json.end());
  } catch (const std::exception& e) {
    fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail(path, "header is not a JSON object");
  SafetensorsHeader out;
  out.json_bytes = json.size();
  if (file_size < 8 + out.json_bytes) fail(path, fmt::format("bad header length {} (file has {} bytes)", json.size(), file_size));
  const uint64_t data_size = file_size - 8 - out.json_bytes;

  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& item : header.items()) {
    const std::string& name = item.key();
    const nlohmann::json& v = item.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(path, "__metadata__ is not an object of strings");
      for (const auto& [k, s] : v.items()) {
        if (!s.is_string()) fail(path, "__metadata__ '" + k + "' is not a string");
        out.metadata[k] = s.get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& what) { fail(path, "tensor '" + name + "': " + what); };
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      bad("entry lacks dtype, shape or data_offsets");
    const auto& dtype = v.at("dtype");
    SafetensorsEntry t;
    t.name = name;
    t.dtype = dtype.is_string() ? dtype.get<std::string>() : "";
    t.element_bytes = safetensors_dtype_bytes(t.dtype);
    if (t.element_bytes == 0) bad("unknown dtype " + dtype.dump());
    const auto& shape = v.at("shape");
    if (!shape.is_array()) bad("bad shape " + shape.dump());
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& s : shape) {
      if (!s.is_number_integer() || (s.is_number_unsigned() ? s.get<uint64_t>() > uint64_t(INT64_MAX) : s.get<int64_t>() < 0))
        bad("bad shape " + shape.dump());
      t.shape.push_back(s.get<int64_t>());
      overflow = overflow || __builtin_mul_overflow(numel, static_cast<uint64_t>(t.shape.back()), &numel);
    }
    uint64_t expected = 0;
    overflow = overflow || __builtin_mul_overflow(numel, static_cast<uint64_t>(t.element_bytes), &expected) ||
               expected > uint64_t(INT64_MAX);
    const auto& off = v.at("data_offsets");
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      bad("bad data_offsets " + off.dump());
    t.begin = off[0].get<uint64_t>();
    t.end = off[1].get<uint64_t>();
    if (t.begin > t.end || t.end > data_size)
      bad(fmt::format("data [{}, {}) lies outside the {} data bytes (truncated file?)", t.begin, t.end, data_size));
    if (overflow) bad(fmt::format("shape {} of {} is too large", shape.dump(), t.dtype));
    if (t.end - t.begin != expected)
      bad(fmt::format("{} bytes of data for shape {} of {} ({} expected)", t.end - t.begin, shape.dump(), t.dtype,
                      expected));
    ranges.emplace_back(t.begin, t.end);
    out.tensors.push_back(std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) fail(path, "tensor data ranges overlap");
  return out;
}

SafetensorsHeader parse_safetensors(std::string_view file, const std::string& path) {
  const uint64_t n = safetensors_json_length(file.substr(0, 8), file.size(), path);
  return parse_safetensors_header(file.substr(8, n), file.size(), path);
}

SafetensorsIndex parse_safetensors_index(std::string_view json, const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json.begin(), json.end());
  } catch (const std::exception& e) {
    fail(path, std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object() || !j.contains("weight_map") || !j.at("weight_map").is_object())
    fail(path, "has no \"weight_map\" object (tensor name -> file)");
  SafetensorsIndex out;
  std::set<std::string> files;
  for (const auto& [name, file] : j.at("weight_map").items()) {
    if (!file.is_string()) fail(path, "weight_map entry '" + name + "' is not a file name");
    const std::string f = file.get<std::string>();
    if (f.empty() || f == "." || f == ".." || f.find('/') != std::string::npos || f.find('\0') != std::string::npos)
      fail(path, "weight_map entry '" + name + "' names '" + f + "', not a file beside the index");
    out.weight_map.emplace_back(name, f);
    files.insert(f);
  }
  out.files.assign(files.begin(), files.end());
  return out;
}

}  // namespace sluice
