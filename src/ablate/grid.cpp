#include "ablate/grid.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <optional>
#include <set>

#include "sluice/config.h"
#include "sluice/errors.h"
#include "sluice/fs.h"

namespace sluice::ablate {

namespace {

[[noreturn]] void fail(const std::string& path, const YAML::Node& node, const std::string& key, const std::string& what) {
  const YAML::Mark m = node.Mark();
  const std::string where = m.line >= 0 ? path + ":" + std::to_string(m.line + 1) : path;
  throw InputError(where + ": " + key + ": " + what);
}

void allow_only(const std::string& path, const YAML::Node& map, const std::string& context,
                const std::set<std::string>& keys) {
  for (const auto& kv : map) {
    const std::string k = kv.first.as<std::string>();
    if (keys.count(k)) continue;
    std::string list;
    for (const auto& a : keys) list += (list.empty() ? "" : ", ") + a;
    fail(path, kv.first, context.empty() ? k : context + "." + k, "unknown key; expected one of " + list);
  }
}

// A YAML value as `--set` takes it: scalars as written, lists and maps in flow style.
std::string value_text(const YAML::Node& v) {
  if (v.IsScalar()) return v.Scalar();
  YAML::Emitter e;
  e << YAML::Flow << v;
  return e.c_str();
}

std::vector<std::string> overrides_of(const std::string& path, const YAML::Node& set, const std::string& key) {
  std::vector<std::string> out;
  if (!set) return out;
  if (!set.IsMap()) fail(path, set, key, "expected a map of config keys to values, e.g. {train.steps: 600}");
  for (const auto& kv : set) {
    if (kv.second.IsNull()) fail(path, kv.first, key + "." + kv.first.as<std::string>(), "has no value");
    out.push_back(kv.first.as<std::string>() + "=" + value_text(kv.second));
  }
  return out;
}

std::vector<int64_t> int_list(const std::string& path, const YAML::Node& n, const std::string& key) {
  if (!n.IsSequence() && !n.IsScalar()) fail(path, n, key, "expected an integer or a list of integers");
  std::vector<YAML::Node> items;
  if (n.IsScalar()) {
    items.push_back(n);
  } else {
    for (const auto& x : n) items.push_back(x);
  }
  std::vector<int64_t> out;
  for (const auto& x : items) {
    try {
      out.push_back(x.as<int64_t>());
    } catch (const YAML::Exception&) {
      fail(path, x, key, "'" + value_text(x) + "' is not an integer");
    }
    if (out.back() < 0 || (out.back() == 0 && key != "seeds")) fail(path, x, key, "must be positive");
  }
  if (out.empty()) fail(path, n, key, "is empty");
  return out;
}

std::string name_checked(const std::string& path, const YAML::Node& n, const std::string& key) {
  const std::string name = n.as<std::string>();
  const bool ok = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
  if (!ok) fail(path, n, key, "'" + name + "' must be letters, digits, '_', '-' or '.' (it names a directory)");
  return name;
}

// "optim.lr" -> "lr": the axis's part of a run's name.
std::string short_key(const std::string& key) {
  const auto dot = key.rfind('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

}  // namespace

Grid load_grid(const std::string& path) {
  const std::optional<std::string> text = read_whole_file(path);
  if (!text) throw InputError("ablation grid '" + path + "' cannot be read (missing or a directory?)");
  return parse_grid(*text, path);
}

Grid parse_grid(const std::string& yaml_text, const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw InputError(path + ":" + std::to_string(e.mark.line + 1) + ": not valid YAML: " + e.msg);
  }
  if (!root.IsMap()) throw InputError(path + ": expected a map with base, variants, ... (docs/ablate.md)");
  allow_only(path, root, "", {"base", "set", "variants", "seeds", "axes", "evals"});
  Grid g;
  g.path = path;
  if (!root["base"] || !root["base"].IsScalar()) fail(path, root, "base", "is required: the config file every run starts from");
  g.base = root["base"].as<std::string>();
  g.overrides = overrides_of(path, root["set"], "set");

  const YAML::Node variants = root["variants"];
  if (!variants || !variants.IsSequence() || variants.size() == 0)
    fail(path, root, "variants", "is required: a list of {name: ..., set: {...}} or {name: ..., file: ...}");
  std::set<std::string> names;
  for (size_t i = 0; i < variants.size(); ++i) {
    const YAML::Node v = variants[i];
    const std::string key = "variants[" + std::to_string(i) + "]";
    if (!v.IsMap() || !v["name"]) fail(path, v, key, "expected a map with a name");
    allow_only(path, v, key, {"name", "file", "set"});
    Variant var;
    var.name = name_checked(path, v["name"], key + ".name");
    if (!names.insert(var.name).second) fail(path, v["name"], key + ".name", "'" + var.name + "' is used twice");
    if (v["file"]) var.file = v["file"].as<std::string>();
    var.overrides = overrides_of(path, v["set"], key + ".set");
    g.variants.push_back(std::move(var));
  }
  if (root["seeds"]) g.seeds = int_list(path, root["seeds"], "seeds");
  if (const YAML::Node axes = root["axes"]) {
    if (!axes.IsMap()) fail(path, axes, "axes", "expected a map of config keys to lists of values");
    for (const auto& kv : axes) {
      const std::string key = kv.first.as<std::string>();
      if (key == "train.seed") fail(path, kv.first, "axes.train.seed", "use `seeds:` for seeds");
      if (!kv.second.IsSequence() || kv.second.size() == 0) fail(path, kv.second, "axes." + key, "expected a non-empty list");
      Axis a;
      a.key = key;
      for (const auto& x : kv.second) a.values.push_back(value_text(x));
      g.axes.push_back(std::move(a));
    }
  }
  if (const YAML::Node evals = root["evals"]) {
    if (!evals.IsMap()) fail(path, evals, "evals", "expected a map with ppl, passkey and/or stats");
    allow_only(path, evals, "evals", {"ppl", "passkey", "stats"});
    if (const YAML::Node p = evals["ppl"]) {
      if (!p.IsMap() || !p["seq_len"]) fail(path, p, "evals.ppl", "expected {seq_len: [...], stride: S, data: FILE}");
      allow_only(path, p, "evals.ppl", {"seq_len", "stride", "data", "set"});
      g.ppl.enabled = true;
      g.ppl.seq_len = int_list(path, p["seq_len"], "evals.ppl.seq_len");
      if (p["stride"]) g.ppl.stride = int_list(path, p["stride"], "evals.ppl.stride").front();
      if (p["data"]) g.ppl.data = p["data"].as<std::string>();
      g.ppl.overrides = overrides_of(path, p["set"], "evals.ppl.set");
    }
    if (const YAML::Node p = evals["passkey"]) {
      if (!p.IsMap() || !p["lengths"]) fail(path, p, "evals.passkey", "expected {lengths: [...]}");
      allow_only(path, p, "evals.passkey", {"lengths", "trials", "format", "haystack", "set"});
      g.passkey.enabled = true;
      g.passkey.lengths = int_list(path, p["lengths"], "evals.passkey.lengths");
      if (p["trials"]) g.passkey.trials = int_list(path, p["trials"], "evals.passkey.trials").front();
      if (const YAML::Node f = p["format"]) {
        g.passkey.format = f.IsScalar() ? f.as<std::string>() : std::string();
        if (g.passkey.format != "landmark" && g.passkey.format != "compact")
          fail(path, f, "evals.passkey.format", "expected landmark or compact");
      }
      if (p["haystack"]) g.passkey.haystack = p["haystack"].as<std::string>();
      g.passkey.overrides = overrides_of(path, p["set"], "evals.passkey.set");
    }
    if (const YAML::Node p = evals["stats"]) {
      if (!p.IsNull() && !p.IsMap()) fail(path, p, "evals.stats", "expected a map ({} for the defaults)");
      if (p.IsMap()) {
        allow_only(path, p, "evals.stats", {"data", "sequences"});
        if (p["data"]) g.stats.data = p["data"].as<std::string>();
        if (p["sequences"]) g.stats.sequences = int_list(path, p["sequences"], "evals.stats.sequences").front();
      }
      g.stats.enabled = true;
    }
  }
  return g;
}

std::vector<RunSpec> expand(const Grid& grid) {
  // Axis combinations, the first axis varying slowest.
  std::vector<std::vector<std::pair<std::string, std::string>>> combos = {{}};
  for (const Axis& a : grid.axes) {
    std::vector<std::vector<std::pair<std::string, std::string>>> next;
    for (const auto& c : combos)
      for (const auto& v : a.values) {
        auto e = c;
        e.emplace_back(a.key, v);
        next.push_back(std::move(e));
      }
    combos = std::move(next);
  }
  const std::vector<int64_t> seeds = grid.seeds.empty() ? std::vector<int64_t>{-1} : grid.seeds;
  std::vector<RunSpec> runs;
  for (const Variant& v : grid.variants)
    for (const auto& combo : combos)
      for (int64_t seed : seeds) {
        RunSpec r;
        r.variant = v.name;
        r.seed = seed;
        r.config_file = v.file.empty() ? grid.base : v.file;
        r.overrides = grid.overrides;
        r.overrides.insert(r.overrides.end(), v.overrides.begin(), v.overrides.end());
        r.name = v.name;
        for (const auto& [key, value] : combo) {
          r.overrides.push_back(key + "=" + value);
          r.axis_values[key] = value;
          r.name += "-" + short_key(key) + "=" + value;
        }
        if (seed >= 0) {
          r.overrides.push_back("train.seed=" + std::to_string(seed));
          r.name += "-s" + std::to_string(seed);
        }
        runs.push_back(std::move(r));
      }
  std::set<std::string> names;
  for (const auto& r : runs)
    if (!names.insert(r.name).second) throw InputError(grid.path + ": two runs would both be named '" + r.name + "'");
  return runs;
}

void validate_runs(const std::vector<RunSpec>& runs) {
  for (const RunSpec& r : runs) {
    try {
      load_config(r.config_file, r.overrides);
    } catch (const InputError& e) {
      throw InputError("run '" + r.name + "' (variant " + r.variant + "): " + e.what());
    }
  }
}

std::vector<std::string> differences_from_base(const Grid& grid, const RunSpec& run) {
  const auto base = config_values(load_config(grid.base, grid.overrides).config);
  const auto mine = config_values(load_config(run.config_file, run.overrides).config);
  std::vector<std::string> out;
  for (const auto& [key, value] : mine) {
    const auto it = base.find(key);
    if (it == base.end() || it->second != value)
      out.push_back(key + ": " + (it == base.end() ? std::string("?") : it->second) + " -> " + value);
  }
  return out;
}

}  // namespace sluice::ablate
