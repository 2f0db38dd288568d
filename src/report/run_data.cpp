#include "report/run_data.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <nlohmann/json.hpp>

#include "sluice/errors.h"

namespace sluice::report {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Tolerant accessors: anything missing, null or of the wrong type reads as NaN / "" / empty.
double num(const json& j, const char* key) {
  if (!j.is_object()) return NAN;
  const auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return NAN;
  return it->get<double>();
}

const json& field(const json& j, const char* key) {
  static const json null_json;
  if (!j.is_object()) return null_json;
  const auto it = j.find(key);
  return it == j.end() ? null_json : *it;
}

std::string text(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_null()) return "";
  return j.dump();
}

std::vector<double> numbers(const json& j) {
  std::vector<double> out;
  if (!j.is_array()) return out;
  for (const json& v : j) out.push_back(v.is_number() ? v.get<double>() : NAN);
  return out;
}

// A scalar deep inside the YAML document, "" when any step is missing.
std::string yaml_scalar(const YAML::Node& root, std::initializer_list<const char*> path) {
  YAML::Node node = root;
  for (const char* key : path) {
    if (!node.IsMap()) return "";
    const YAML::Node& current = node;  // const operator[]: a lookup that never inserts
    const YAML::Node next = current[key];
    if (!next.IsDefined()) return "";  // a missing key gives an invalid node, which reset() rejects
    node.reset(next);                  // reset, not operator= (which assigns through the reference)
  }
  return node.IsScalar() ? node.Scalar() : "";
}

bool read_json(const fs::path& path, json& out, std::string& error) {
  std::ifstream in(path);
  if (!in) {
    error = "cannot open";
    return false;
  }
  try {
    out = json::parse(in);
  } catch (const std::exception& e) {
    error = e.what();
    return false;
  }
  return true;
}

void read_summary(const fs::path& path, RunData& run) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    run.warnings.push_back(path.string() + ": missing (run unfinished?); summary values taken from metrics.jsonl");
    return;
  }
  json s;
  std::string error;
  if (!read_json(path, s, error) || !s.is_object()) {
    run.warnings.push_back(path.string() + ": not a JSON object, ignored" + (error.empty() ? "" : " (" + error + ")"));
    return;
  }
  run.has_summary = true;
  run.params = num(s, "params");
  run.steps = num(s, "steps");
  run.final_loss = num(s, "final_loss");
  run.final_val_loss = num(s, "final_val_loss");
  run.tokens_per_s = num(s, "tokens_per_s");
  run.device = text(field(s, "device"));
}

void read_config(const fs::path& path, RunData& run) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    run.warnings.push_back(path.string() + ": missing");
    return;
  }
  try {
    const YAML::Node root = YAML::LoadFile(path.string());
    run.has_config = true;
    run.arch = yaml_scalar(root, {"model", "arch"});
    run.position = yaml_scalar(root, {"model", "position"});
    run.rope_scaling = yaml_scalar(root, {"model", "rope", "scaling"});
    run.gate_position = yaml_scalar(root, {"model", "attention", "gate", "position"});
    run.coca_mode = yaml_scalar(root, {"model", "attention", "coca", "mode"});
  } catch (const std::exception& e) {
    run.warnings.push_back(path.string() + ": cannot parse, ignored (" + e.what() + ")");
  }
}

void add_point(Series& s, double x, const json& record, const char* key) {
  const auto it = record.find(key);
  if (it == record.end()) return;
  s.x.push_back(x);
  s.y.push_back(it->is_number() ? it->get<double>() : NAN);  // NaN is written as null
}

void read_metrics(const fs::path& path, RunData& run) {
  std::ifstream in(path);
  if (!in) throw InputError("RUN_DIR: cannot read " + path.string());
  std::string line;
  int64_t line_no = 0, bad = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json r = json::parse(line, nullptr, /*allow_exceptions=*/false);
    const double step = num(r, "step");
    if (!r.is_object() || !std::isfinite(step)) {
      if (bad++ == 0) run.warnings.push_back(path.string() + ":" + std::to_string(line_no) + ": not a metrics record, skipped");
      continue;
    }
    add_point(run.loss, step, r, "loss");
    add_point(run.val_loss, step, r, "val_loss");
    add_point(run.lr, step, r, "lr");
    add_point(run.tokens_per_s_curve, step, r, "tokens_per_s");
  }
  if (bad > 1) run.warnings.push_back(path.string() + ": " + std::to_string(bad) + " lines skipped in all");
}

// Values summary.json lacks (unfinished run) come from the last metrics records.
void fill_from_metrics(RunData& run) {
  auto last_finite = [](const Series& s) {
    for (size_t i = s.y.size(); i-- > 0;) {
      if (std::isfinite(s.y[i])) return s.y[i];
    }
    return static_cast<double>(NAN);
  };
  if (!std::isfinite(run.final_loss)) run.final_loss = last_finite(run.loss);
  if (!std::isfinite(run.final_val_loss)) run.final_val_loss = last_finite(run.val_loss);
  if (!std::isfinite(run.steps) && !run.loss.empty()) run.steps = run.loss.x.back();
}

PplCurve read_ppl(const json& j) {
  PplCurve c;
  c.rope_scaling = text(field(field(j, "settings"), "rope_scaling"));
  for (const json& r : field(j, "results")) {
    c.points.push_back({num(r, "seq_len"), num(r, "stride"), num(r, "tokens"), num(r, "documents"), num(r, "nll"),
                        num(r, "ppl")});
  }
  return c;
}

PasskeyEval read_passkey(const json& j) {
  PasskeyEval p;
  p.trials = num(j, "trials");
  p.seed = num(j, "seed");
  for (const json& r : field(j, "results")) {
    PasskeyEval::Length len{num(r, "length"), num(r, "accuracy"), num(r, "trials"), {}};
    for (const json& b : field(r, "by_depth")) {
      len.by_depth.push_back({num(b, "depth_lo"), num(b, "depth_hi"), num(b, "accuracy"), num(b, "trials")});
    }
    p.results.push_back(std::move(len));
  }
  return p;
}

AttentionStats read_attention(const json& j) {
  AttentionStats a;
  a.sequences = num(j, "sequences");
  a.seq_len = num(j, "seq_len");
  const json& sink = field(j, "sink");
  a.query0_excluded = field(sink, "query0_excluded").is_boolean() && field(sink, "query0_excluded").get<bool>();
  a.sink_per_layer = numbers(field(sink, "per_layer"));
  a.sink_mean = num(sink, "mean");
  a.share_heads_over_half = num(sink, "share_heads_over_half");
  for (const json& g : field(field(j, "gates"), "per_layer")) {
    AttentionStats::Gate gate{num(g, "mean"), num(g, "std"), num(g, "min"), num(g, "max"), {}, {}};
    gate.edges = numbers(field(field(g, "histogram"), "edges"));
    gate.counts = numbers(field(field(g, "histogram"), "counts"));
    a.gates.push_back(std::move(gate));
  }
  for (const json& s : field(field(j, "sparsity"), "per_layer")) {
    const json& before = field(s, "before");
    const json& after = field(s, "after");
    a.sparsity.push_back({num(before, "lt_1e-2"), num(before, "lt_1e-3"), num(after, "lt_1e-2"), num(after, "lt_1e-3")});
  }
  for (const json& l : field(field(j, "activations"), "per_layer")) {
    a.activations.push_back({num(l, "residual_max"), num(l, "residual_mean"), num(l, "attn_max"), num(l, "attn_mean"),
                             num(l, "ffn_max"), num(l, "ffn_mean")});
  }
  return a;
}

void read_eval(const fs::path& eval_dir, RunData& run) {
  std::error_code ec;
  if (!fs::is_directory(eval_dir, ec)) return;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(eval_dir, ec)) {
    if (e.path().extension() == ".json" && e.is_regular_file(ec)) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  for (const fs::path& path : files) {
    json j;
    std::string error;
    if (!read_json(path, j, error)) {
      run.warnings.push_back(path.string() + ": cannot parse, ignored (" + error + ")");
      continue;
    }
    const std::string kind = text(field(j, "kind"));
    const std::string name = path.filename().string();
    if (kind == "eval_ppl") {
      run.ppl.push_back(read_ppl(j));
      run.ppl.back().file = name;
    } else if (kind == "eval_passkey") {
      run.passkey.push_back(read_passkey(j));
      run.passkey.back().file = name;
    } else if (kind == "stats_attention") {
      run.attention.push_back(read_attention(j));
      run.attention.back().file = name;
    } else {
      run.warnings.push_back(path.string() + ": unknown kind '" + kind + "', ignored");
    }
  }
}

}  // namespace

RunData load_run(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw InputError("RUN_DIR: '" + dir + "' is not a directory");
  const fs::path root(dir);
  const fs::path metrics = root / "metrics.jsonl";
  if (!fs::is_regular_file(metrics, ec)) {
    throw InputError("RUN_DIR: '" + dir + "' has no metrics.jsonl (not a run directory?)");
  }
  RunData run;
  run.dir = dir;
  run.name = fs::path(dir).lexically_normal().filename().string();
  if (run.name.empty()) run.name = fs::path(dir).lexically_normal().parent_path().filename().string();
  if (run.name.empty()) run.name = dir;
  read_metrics(metrics, run);
  read_summary(root / "summary.json", run);
  read_config(root / "config.yaml", run);
  fill_from_metrics(run);
  read_eval(root / "eval", run);
  return run;
}

}  // namespace sluice::report
