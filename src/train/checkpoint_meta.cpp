#include "train/checkpoint_meta.h"

#include <fmt/format.h>

#include <limits>
#include <nlohmann/json.hpp>

#include "sluice/errors.h"

namespace sluice {

namespace {

nlohmann::json parse(std::string_view text, const std::string& path) {
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const std::exception& e) {
    throw InputError("checkpoint file '" + path + "' is not valid JSON: " + e.what());
  }
}

// Typed access that never converts out of range (nlohmann's get<> casts silently, and a
// double beyond int64 would be undefined behaviour).
struct Fields {
  const std::string& path;
  [[noreturn]] void bad(const std::string& key, const std::string& what) const {
    throw InputError("checkpoint file '" + path + "': " + key + ": " + what);
  }
  const nlohmann::json& at(const nlohmann::json& obj, const char* key, const std::string& where) const {
    if (!obj.is_object()) bad(where.empty() ? "(top level)" : where, "expected an object");
    const auto it = obj.find(key);
    if (it == obj.end()) bad(where.empty() ? key : where + "." + key, "missing");
    return *it;
  }
  int64_t i64(const nlohmann::json& v, const std::string& key, int64_t lo = 0) const {
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      bad(key, "out of range");
    if (!v.is_number_integer()) bad(key, "expected an integer, got " + v.dump());
    const int64_t x = v.get<int64_t>();
    if (x < lo) bad(key, fmt::format("expected an integer >= {}, got {}", lo, x));
    return x;
  }
  uint64_t u64(const nlohmann::json& v, const std::string& key) const {
    if (!v.is_number_unsigned()) bad(key, "expected a non-negative integer, got " + v.dump());
    return v.get<uint64_t>();
  }
  double f64(const nlohmann::json& v, const std::string& key) const {
    if (!v.is_number()) bad(key, "expected a number, got " + v.dump());
    return v.get<double>();
  }
};

}  // namespace

TrainingState parse_training_state(std::string_view json, const std::string& path) {
  const nlohmann::json j = parse(json, path);
  const Fields f{path};
  TrainingState s;
  s.step = f.i64(f.at(j, "step", ""), "step");
  s.tokens = f.i64(f.at(j, "tokens", ""), "tokens");
  const auto& loader = f.at(j, "loader", "");
  s.next_batch = f.u64(f.at(loader, "next_batch", "loader"), "loader.next_batch");
  if (loader.contains("global_micro_batch"))  // absent: written before distributed training
    s.global_micro_batch = f.u64(loader.at("global_micro_batch"), "loader.global_micro_batch");
  const auto& interval = f.at(j, "interval", "");
  s.interval_loss_sum = f.f64(f.at(interval, "loss_sum", "interval"), "interval.loss_sum");
  s.interval_finite = f.i64(f.at(interval, "finite_steps", "interval"), "interval.finite_steps");
  s.interval_steps = f.i64(f.at(interval, "steps", "interval"), "interval.steps");
  if (interval.contains("rank_loss_sums")) {
    const auto& a = interval.at("rank_loss_sums");
    if (!a.is_array()) f.bad("interval.rank_loss_sums", "expected a list of numbers");
    for (const auto& x : a) s.rank_loss_sums.push_back(f.f64(x, "interval.rank_loss_sums"));
  }
  if (interval.contains("rank_finite_steps")) {
    const auto& a = interval.at("rank_finite_steps");
    if (!a.is_array()) f.bad("interval.rank_finite_steps", "expected a list of integers");
    for (const auto& x : a) s.rank_finite_steps.push_back(f.i64(x, "interval.rank_finite_steps"));
  }
  if (s.rank_loss_sums.size() != s.rank_finite_steps.size())
    f.bad("interval", "rank_loss_sums and rank_finite_steps differ in length");
  if (j.contains("skipped_steps")) s.skipped_steps = f.i64(j.at("skipped_steps"), "skipped_steps");
  return s;
}

void check_checkpoint_meta(std::string_view json, const std::string& dir, const std::string& path) {
  const nlohmann::json meta = parse(json, path);
  auto str = [&](const char* key, const char* fallback) -> std::string {
    const auto it = meta.find(key);
    return it != meta.end() && it->is_string() ? it->get<std::string>() : fallback;
  };
  if (!meta.is_object() || str("format", "") != "sluice-checkpoint")
    throw InputError("checkpoint '" + dir + "': meta.json is not a sluice checkpoint's");
  const auto v = meta.find("format_version");
  const bool ok = v != meta.end() && v->is_number_integer() && *v == kCheckpointFormat;
  if (!ok) {
    const std::string version = v == meta.end() ? "0" : v->dump();
    throw InputError(fmt::format("checkpoint '{}': format version {} (written by sluice {}); this sluice {} reads "
                                 "version {}",
                                 dir, version, str("sluice_version", "?"), SLUICE_VERSION, kCheckpointFormat));
  }
}

}  // namespace sluice
