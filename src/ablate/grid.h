// An ablation grid (`sluice ablate GRID.yaml`, docs/ablate.md): a base config, variants that
// differ from it (overrides or another config file), axes crossed with them (seeds, any key),
// and the evaluations to run on every finished run. Expanded into one RunSpec per run.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace sluice::ablate {

struct Variant {
  std::string name;
  std::string file;                   // empty: the grid's base
  std::vector<std::string> overrides; // "key=value", after the grid's `set`
};

// An axis crossed with the variants: `key` takes each of `values` (YAML scalars as text).
struct Axis {
  std::string key;
  std::vector<std::string> values;
};

struct PplEval {
  bool enabled = false;
  std::vector<int64_t> seq_len;
  int64_t stride = 0;  // 0: non-overlapping windows
  std::string data;    // empty: the run's data.train
  std::vector<std::string> overrides;  // --set for the evaluation (e.g. RoPE scaling)
};

struct PasskeyEval {
  bool enabled = false;
  std::vector<int64_t> lengths;
  int64_t trials = 0;  // 0: the command's default
  std::string format;    // landmark | compact; empty: the command's default (landmark)
  std::string haystack;  // a text file; empty: the protocol's repeated filler
  std::vector<std::string> overrides;
};

struct StatsEval {
  bool enabled = false;
  std::string data;  // empty: the run's data.train
  int64_t sequences = 0;
};

struct Grid {
  std::string path;  // the grid file
  std::string base;  // base config file
  std::vector<std::string> overrides;  // `set`: for every run
  std::vector<Variant> variants;
  std::vector<int64_t> seeds;  // empty: the config's train.seed, one run per variant
  std::vector<Axis> axes;
  PplEval ppl;
  PasskeyEval passkey;
  StatsEval stats;
};

struct RunSpec {
  std::string name;     // <variant>[-<axis>=<value>...]-s<seed>: the run directory's name
  std::string variant;
  int64_t seed = -1;    // -1: the config's
  std::map<std::string, std::string> axis_values;
  std::string config_file;
  std::vector<std::string> overrides;  // everything after the file: grid set, variant set, axes, seed
};

// Parses GRID.yaml; throws InputError naming the file and key. Relative paths (base, variant
// files) are taken from the current directory, like `sluice train`'s arguments.
Grid load_grid(const std::string& path);
Grid parse_grid(const std::string& yaml_text, const std::string& path);

// Variants x axes x seeds, in that order.
std::vector<RunSpec> expand(const Grid& grid);

// Loads and validates every run's resolved config before anything runs; throws InputError
// naming the run and the key.
void validate_runs(const std::vector<RunSpec>& runs);

// `key: old -> new` for every resolved key where the run differs from the base config with the
// grid's `set` (what --dry-run prints per run).
std::vector<std::string> differences_from_base(const Grid& grid, const RunSpec& run);

}  // namespace sluice::ablate
