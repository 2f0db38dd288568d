#include "train/tensorboard_writer.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "sluice/errors.h"
#include "sluice/fs.h"

namespace sluice {
namespace fs = std::filesystem;
namespace {

constexpr const char* kFilePrefix = "events.out.tfevents.";

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void add_scalars(const std::string& prefix, const nlohmann::json& value, const nlohmann::json* layers,
                 std::vector<tb::Scalar>& out) {
  if (value.is_number()) {
    out.push_back({prefix, value.get<float>()});
  } else if (value.is_array()) {
    const bool per_layer = layers != nullptr && layers->size() == value.size();
    for (size_t i = 0; i < value.size(); ++i) {
      const std::string name = per_layer ? fmt::format("{}/layer_{}", prefix, (*layers)[i].dump()) : fmt::format("{}/{}", prefix, i);
      add_scalars(name, value[i], nullptr, out);
    }
  } else if (value.is_object()) {
    for (const auto& [key, v] : value.items()) add_scalars(prefix + "/" + key, v, nullptr, out);
  }
}

std::vector<std::string> event_files(const fs::path& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file(ec) && name.rfind(kFilePrefix, 0) == 0) files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());  // TensorBoard reads a directory's files in this order
  return files;
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

}  // namespace

std::vector<tb::Scalar> tensorboard_scalars(const nlohmann::json& record) {
  std::vector<tb::Scalar> out;
  if (!record.is_object()) return out;
  const auto layers = record.find("moe_layer");
  const nlohmann::json* layer_ids = layers != record.end() && layers->is_array() ? &*layers : nullptr;
  for (const auto& [key, value] : record.items()) {
    if (key == "step" || key == "moe_layer" || value.is_boolean()) continue;
    add_scalars(key, value, layer_ids, out);
  }
  return out;
}

std::vector<tb::Scalar> eval_tensorboard_scalars(const nlohmann::json& result) {
  std::vector<tb::Scalar> out;
  if (!result.is_object()) return out;
  const std::string kind = result.value("kind", "");
  std::string suffix;
  const auto settings = result.find("settings");
  if (settings != result.end() && settings->is_object() && settings->contains("overrides") &&
      (*settings)["overrides"].is_array() && !(*settings)["overrides"].empty()) {
    for (const auto& o : (*settings)["overrides"]) suffix += (suffix.empty() ? "" : ",") + (o.is_string() ? o.get<std::string>() : o.dump());
    suffix = "[" + suffix + "]";
  }
  auto number = [](const nlohmann::json& j, const char* key, float& v) {
    if (!j.is_object() || !j.contains(key) || !j[key].is_number()) return false;
    v = j[key].get<float>();
    return true;
  };
  float v = 0;
  const nlohmann::json empty = nlohmann::json::array();
  const nlohmann::json& results = result.contains("results") && result["results"].is_array() ? result["results"] : empty;
  if (kind == "eval_ppl") {
    for (const auto& r : results) {
      if (!r.is_object() || !r.contains("seq_len")) continue;
      std::string len = "len_" + r["seq_len"].dump();
      if (r.contains("stride") && r["stride"].is_number()) len += "_stride_" + r["stride"].dump();
      if (number(r, "ppl", v)) out.push_back({"eval_ppl" + suffix + "/" + len, v});
      if (number(r, "nll", v)) out.push_back({"eval_nll" + suffix + "/" + len, v});
    }
  } else if (kind == "eval_passkey") {
    for (const auto& r : results)
      if (r.is_object() && r.contains("length") && number(r, "accuracy", v))
        out.push_back({"eval_passkey" + suffix + "/len_" + r["length"].dump(), v});
  } else if (kind == "stats_attention") {
    const std::string p = "stats" + suffix + "/";
    auto per_layer = [&](const char* section) -> const nlohmann::json& {
      const auto s = result.find(section);
      if (s == result.end() || !s->is_object() || !s->contains("per_layer") || !(*s)["per_layer"].is_array()) return empty;
      return (*s)["per_layer"];
    };
    if (result.contains("sink")) {
      if (number(result["sink"], "mean", v)) out.push_back({p + "sink/mean", v});
      if (number(result["sink"], "share_heads_over_half", v)) out.push_back({p + "sink/share_heads_over_half", v});
    }
    const nlohmann::json& sink = per_layer("sink");
    for (size_t i = 0; i < sink.size(); ++i)
      if (sink[i].is_number()) out.push_back({fmt::format("{}sink/layer_{}", p, i), sink[i].get<float>()});
    const nlohmann::json& gates = per_layer("gates");
    for (size_t i = 0; i < gates.size(); ++i)
      if (number(gates[i], "mean", v)) out.push_back({fmt::format("{}gate_mean/layer_{}", p, i), v});
    const nlohmann::json& sparsity = per_layer("sparsity");
    for (size_t i = 0; i < sparsity.size(); ++i)
      for (const char* when : {"before", "after"})
        if (sparsity[i].is_object() && number(sparsity[i].value(when, nlohmann::json()), "lt_1e-2", v))
          out.push_back({fmt::format("{}sparsity_{}_lt_1e-2/layer_{}", p, when, i), v});
    const nlohmann::json& acts = per_layer("activations");
    for (size_t i = 0; i < acts.size(); ++i)
      for (const char* key : {"residual_max", "attn_max", "ffn_max"})
        if (number(acts[i], key, v)) out.push_back({fmt::format("{}{}/layer_{}", p, key, i), v});
  }
  return out;
}

std::string write_eval_event(const std::string& run_dir, int64_t step, const std::vector<tb::Scalar>& scalars) {
  const fs::path dir = fs::path(run_dir) / "tb" / "eval";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw ResourceError(fmt::format("cannot create the TensorBoard directory {}: {}", dir.string(), ec.message()));
  // one file per evaluation: evaluations of a run may run side by side (sluice ablate --jobs)
  static int written = 0;
  const std::string path = (dir / fmt::format("{}{}.{}.{}.{}", kFilePrefix, static_cast<int64_t>(now_seconds()),
                                              host_name(), ::getpid(), written++))
                               .string();
  tb::Event version;
  version.wall_time = now_seconds();
  version.file_version = "brain.Event:2";
  tb::Event event;
  event.wall_time = version.wall_time;
  event.step = step;
  event.scalars = scalars;
  try {
    write_file_synced(path, tb::frame_record(tb::encode_event(version)) + tb::frame_record(tb::encode_event(event)));
  } catch (const std::exception& e) {
    std::remove(path.c_str());
    throw ResourceError(fmt::format("cannot write the TensorBoard event file {}: {}", path, e.what()));
  }
  return path;
}

size_t truncate_event_file(const std::string& path, int64_t last_step) {
  const std::optional<std::string> read = read_whole_file(path);
  // Unread, its records past `last_step` would stay and show twice after the resume.
  if (!read) throw ResourceError(fmt::format("cannot read the TensorBoard event file {} to cut it back to step {}", path, last_step));
  const std::string& bytes = *read;
  const tb::RecordScan scan = tb::scan_records(bytes);
  size_t keep = 0, kept = 0;
  for (const std::string& payload : scan.payloads) {
    const std::optional<tb::Event> event = tb::decode_event(payload);
    if (!event || event->step > last_step) break;
    keep += 16 + payload.size();
    ++kept;
  }
  if (keep < bytes.size()) {
    std::error_code ec;
    fs::resize_file(path, keep, ec);
    if (ec) throw ResourceError(fmt::format("cannot cut the TensorBoard event file {} back to step {}: {}", path, last_step, ec.message()));
  }
  return scan.payloads.size() - kept;
}

TensorBoardWriter::TensorBoardWriter(const std::string& run_dir, int64_t last_step) {
  const fs::path dir = fs::path(run_dir) / "tb";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw ResourceError(fmt::format("cannot create the TensorBoard directory {}: {}", dir.string(), ec.message()));
  const std::vector<std::string> existing = event_files(dir);
  for (const std::string& f : existing) truncate_event_file(f, last_step);
  const bool fresh = existing.empty();
  path_ = fresh ? (dir / fmt::format("{}{}.{}", kFilePrefix, static_cast<int64_t>(now_seconds()), host_name())).string()
                : existing.back();
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) throw ResourceError("cannot open the TensorBoard event file " + path_ + ": " + std::strerror(errno));
  if (!fresh) return;
  tb::Event version;
  version.wall_time = now_seconds();
  version.file_version = "brain.Event:2";
  append(version);
  if (last_step <= 0) return;
  std::ifstream in(fs::path(run_dir) / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json rec = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (rec.is_object() && rec.value("step", int64_t{0}) <= last_step) write(rec);
  }
}

TensorBoardWriter::~TensorBoardWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void TensorBoardWriter::write(const nlohmann::json& record) {
  tb::Event event;
  event.wall_time = now_seconds();
  event.step = record.value("step", int64_t{0});
  event.scalars = tensorboard_scalars(record);
  append(event);
}

void TensorBoardWriter::append(const tb::Event& event) {
  const std::string framed = tb::frame_record(tb::encode_event(event));
  const off_t before = ::lseek(fd_, 0, SEEK_END);
  try {
    write_all(fd_, framed.data(), framed.size(), path_);
  } catch (const std::exception& e) {
    if (before >= 0 && ::ftruncate(fd_, before) != 0) {
      // the partial record stays; truncate_event_file and TensorBoard's reader stop at it
    }
    throw ResourceError(fmt::format("cannot write a TensorBoard event (step {}) to {}: {}; the events before it are "
                                    "intact (metrics.jsonl is the primary record)",
                                    event.step, path_, e.what()));
  }
}

}  // namespace sluice
