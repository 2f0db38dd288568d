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
#include <optional>
#include <nlohmann/json.hpp>

#include "sluice/errors.h"
#include "sluice/fs.h"
#include "train/safetensors_header.h"

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
  if (::close(fd) != 0) throw std::runtime_error("closing " + path + ": " + std::strerror(errno));
}

SafetensorsFile read_safetensors(const std::string& path) {
  auto fail = [&](const std::string& what) { throw InputError("checkpoint file '" + path + "': " + what); };
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot be read (missing?)");
  in.seekg(0, std::ios::end);
  const auto size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  std::string prefix(std::min<uint64_t>(size, 8), '\0');
  in.read(prefix.data(), static_cast<std::streamsize>(prefix.size()));
  const uint64_t n = safetensors_json_length(prefix, size, path);
  std::string text(n, '\0');
  in.read(text.data(), static_cast<std::streamsize>(n));
  if (!in) fail("could not read its header");
  const SafetensorsHeader header = parse_safetensors_header(text, size, path);  // validates everything

  SafetensorsFile out;
  out.metadata = header.metadata;
  for (const SafetensorsEntry& e : header.tensors) {
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(by_name(e.dtype)->type));
    in.seekg(static_cast<std::streamoff>(header.data_offset() + e.begin));
    in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(e.end - e.begin));
    if (!in) fail("tensor '" + e.name + "': could not read its data");
    out.tensors.emplace(e.name, std::move(t));
  }
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
  write_file_synced(index_path, index.dump(2) + "\n");
  files.push_back(stem + ".safetensors.index.json");
  return files;
}

SafetensorsFile read_safetensors_sharded(const std::string& dir, const std::string& stem) {
  const fs::path single = fs::path(dir) / (stem + ".safetensors");
  const fs::path index = fs::path(dir) / (stem + ".safetensors.index.json");
  if (!fs::exists(index)) return read_safetensors(single.string());
  const std::optional<std::string> text = read_whole_file(index.string());
  if (!text) throw InputError("checkpoint file '" + index.string() + "' cannot be read");
  const SafetensorsIndex map = parse_safetensors_index(*text, index.string());
  SafetensorsFile out;
  for (const auto& f : map.files) {
    SafetensorsFile part = read_safetensors((fs::path(dir) / f).string());
    for (auto& kv : part.tensors) out.tensors.insert(std::move(kv));
    out.metadata.insert(part.metadata.begin(), part.metadata.end());
  }
  for (const auto& [name, file] : map.weight_map) {
    if (!out.tensors.count(name))
      throw InputError("checkpoint file '" + (fs::path(dir) / file).string() + "': tensor '" + name +
                       "' listed in " + index.filename().string() + " is missing");
  }
  return out;
}

}  // namespace sluice
