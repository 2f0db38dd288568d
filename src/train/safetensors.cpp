#include "train/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "sluice/errors.h"
#include "sluice/fs.h"

namespace sluice {

namespace fs = std::filesystem;

namespace {

struct DtypeInfo {
  const char* name;
  at::ScalarType type;
  int64_t bytes;
};

const DtypeInfo kDtypes[] = {
    {"F64", at::kDouble, 8}, {"F32", at::kFloat, 4}, {"F16", at::kHalf, 2},  {"BF16", at::kBFloat16, 2},
    {"I64", at::kLong, 8},   {"I32", at::kInt, 4},   {"I16", at::kShort, 2}, {"I8", at::kChar, 1},
    {"U8", at::kByte, 1},    {"BOOL", at::kBool, 1},
};

const DtypeInfo* by_type(at::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return &d;
  return nullptr;
}
const DtypeInfo* by_name(const std::string& n) {
  for (const auto& d : kDtypes)
    if (n == d.name) return &d;
  return nullptr;
}

int64_t nbytes(const at::Tensor& t) { return t.numel() * static_cast<int64_t>(t.element_size()); }

}  // namespace

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw std::runtime_error("cannot open " + path + " to fsync: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw std::runtime_error("fsync " + path + ": " + std::strerror(errno));
}

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> cpu;
  int64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const DtypeInfo* d = by_type(t.scalar_type());
    if (!d) throw std::runtime_error("safetensors: unsupported dtype for " + name);
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    header[name] = {{"dtype", d->name}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + nbytes(c)}}};
    offset += nbytes(c);
    cpu.push_back(std::move(c));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  const uint64_t n = text.size();

  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + path + ": " + std::strerror(errno));
  try {
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));  // little-endian
    write_all(fd, len, 8, path);
    write_all(fd, text.data(), text.size(), path);
    for (const auto& c : cpu) write_all(fd, c.data_ptr(), static_cast<size_t>(nbytes(c)), path);
    if (::fsync(fd) != 0) throw std::runtime_error("fsync " + path + ": " + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
}

SafetensorsFile read_safetensors(const std::string& path) {
  auto fail = [&](const std::string& what) { throw InputError("checkpoint file '" + path + "': " + what); };
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot be read (missing?)");
  in.seekg(0, std::ios::end);
  const auto size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  if (size < 8) fail("truncated: " + std::to_string(size) + " bytes");
  unsigned char len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(len[i]) << (8 * i);
  if (n > size - 8 || n > (uint64_t{100} << 20)) fail(fmt::format("bad header length {} (file has {} bytes)", n, size));
  std::string text(n, '\0');
  in.read(text.data(), static_cast<std::streamsize>(n));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    fail(std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail("header is not a JSON object");
  const uint64_t data_size = size - 8 - n;

  SafetensorsFile out;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      for (const auto& [k, s] : v.items())
        if (s.is_string()) out.metadata[k] = s.get<std::string>();
      continue;
    }
    auto bad = [&](const std::string& what) { fail("tensor '" + name + "': " + what); };
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      bad("entry lacks dtype, shape or data_offsets");
    const DtypeInfo* d = by_name(v["dtype"].is_string() ? v["dtype"].get<std::string>() : "");
    if (!d) bad("unknown dtype " + v["dtype"].dump());
    std::vector<int64_t> shape;
    int64_t numel = 1;
    for (const auto& s : v["shape"]) {
      if (!s.is_number_integer() || s.get<int64_t>() < 0) bad("bad shape " + v["shape"].dump());
      shape.push_back(s.get<int64_t>());
      numel *= shape.back();
    }
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      bad("bad data_offsets " + off.dump());
    const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (b > e || e > data_size) bad(fmt::format("data [{}, {}) lies outside the {} data bytes (truncated file?)", b, e, data_size));
    if (e - b != static_cast<uint64_t>(numel * d->bytes))
      bad(fmt::format("{} bytes of data for shape {} of {} ({} expected)", e - b, v["shape"].dump(), d->name, numel * d->bytes));
    ranges.emplace_back(b, e);
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(d->type));
    in.seekg(static_cast<std::streamoff>(8 + n + b));
    in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(e - b));
    if (!in) bad("could not read its data");
    out.tensors.emplace(name, std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) fail("tensor data ranges overlap");
  return out;
}

std::vector<std::string> write_safetensors_sharded(const std::string& dir, const std::string& stem,
                                                   const NamedTensors& tensors, int64_t max_shard_bytes,
                                                   const std::map<std::string, std::string>& metadata) {
  int64_t total = 0;
  for (const auto& nt : tensors) total += nbytes(nt.second);
  if (total <= max_shard_bytes) {
    write_safetensors((fs::path(dir) / (stem + ".safetensors")).string(), tensors, metadata);
    return {stem + ".safetensors"};
  }
  // Greedy in order: a shard closes when the next tensor would overflow it.
  std::vector<NamedTensors> shards(1);
  int64_t cur = 0;
  for (const auto& nt : tensors) {
    if (cur > 0 && cur + nbytes(nt.second) > max_shard_bytes) {
      shards.emplace_back();
      cur = 0;
    }
    shards.back().push_back(nt);
    cur += nbytes(nt.second);
  }
  std::vector<std::string> files;
  nlohmann::json map = nlohmann::json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string file = fmt::format("{}-{:05}-of-{:05}.safetensors", stem, i + 1, shards.size());
    write_safetensors((fs::path(dir) / file).string(), shards[i], metadata);
    for (const auto& nt : shards[i]) map[nt.first] = file;
    files.push_back(file);
  }
  const nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", map}};
  const std::string index_path = (fs::path(dir) / (stem + ".safetensors.index.json")).string();
  {
    std::ofstream(index_path) << index.dump(2) << "\n";
  }
  fsync_path(index_path);
  files.push_back(stem + ".safetensors.index.json");
  return files;
}

SafetensorsFile read_safetensors_sharded(const std::string& dir, const std::string& stem) {
  const fs::path single = fs::path(dir) / (stem + ".safetensors");
  const fs::path index = fs::path(dir) / (stem + ".safetensors.index.json");
  if (!fs::exists(index)) return read_safetensors(single.string());
  nlohmann::json j;
  try {
    std::ifstream in(index);
    j = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw InputError("checkpoint file '" + index.string() + "': not valid JSON: " + e.what());
  }
  SafetensorsFile out;
  std::map<std::string, bool> files;
  for (const auto& [name, file] : j["weight_map"].items()) files[file.get<std::string>()] = true;
  for (const auto& f : files) {
    SafetensorsFile part = read_safetensors((fs::path(dir) / f.first).string());
    for (auto& kv : part.tensors) out.tensors.insert(std::move(kv));
    out.metadata.insert(part.metadata.begin(), part.metadata.end());
  }
  for (const auto& [name, file] : j["weight_map"].items()) {
    if (!out.tensors.count(name))
      throw InputError("checkpoint file '" + (fs::path(dir) / file.get<std::string>()).string() + "': tensor '" + name +
                       "' listed in " + index.filename().string() + " is missing");
  }
  return out;
}

}  // namespace sluice
