// Loading: YAML file -> Config, then --set overrides, then validation. Every problem is
// collected with its location so one run of `sluice config validate` reports them all.
#include <algorithm>
#include <filesystem>
#include <optional>
#include <set>
#include <sstream>

#include "config/check.h"
#include "config/schema.h"
#include "sluice/errors.h"
#include "sluice/fs.h"
#include "sluice/tokenizer.h"

namespace sluice {

std::string SourceLocation::str() const {
  if (line <= 0) return file;
  return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}

namespace {

using config_detail::Field;
using config_detail::find_field;
using config_detail::is_section;

struct Diagnostic {
  SourceLocation where;
  std::string path;
  std::string message;
};

SourceLocation at(const std::string& file, const YAML::Node& n) {
  const YAML::Mark m = n.Mark();
  return {file, m.line >= 0 ? m.line + 1 : 0, m.column >= 0 ? m.column + 1 : 0};
}

std::string describe(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null: return "nothing";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Scalar: return "'" + n.Scalar() + "'";
    default: return "an undefined value";
  }
}

std::string unknown_key_message(const std::string& path) {
  std::string msg = "unknown key";
  const std::string near = config_detail::closest_key(path);
  if (!near.empty()) msg += " (did you mean '" + near + "'?)";
  return msg;
}

class Loader {
 public:
  explicit Loader(LoadedConfig& out) : out_(out) {}
  std::vector<Diagnostic> problems;

  void walk(const YAML::Node& node, const std::string& prefix, const std::string& file) {
    std::set<std::string> seen;
    for (const auto& kv : node) {
      const YAML::Node& key = kv.first;
      const YAML::Node& value = kv.second;
      if (!key.IsScalar()) {
        problems.push_back({at(file, key), prefix.empty() ? "(top level)" : prefix, "keys must be plain names"});
        continue;
      }
      const std::string path = prefix.empty() ? key.Scalar() : prefix + "." + key.Scalar();
      if (!seen.insert(key.Scalar()).second) {
        problems.push_back({at(file, key), path, "duplicate key (already set above in the same mapping)"});
        continue;
      }
      if (const Field* f = find_field(path)) {
        set(*f, value, at(file, value.IsNull() ? key : value));
      } else if (is_section(path)) {
        if (value.IsNull()) continue;  // "model:" with nothing under it: all defaults
        if (!value.IsMap()) {
          problems.push_back({at(file, value), path, "is a section: expected a mapping of keys, got " + describe(value)});
          continue;
        }
        walk(value, path, file);
      } else {
        problems.push_back({at(file, key), path, unknown_key_message(path)});
      }
    }
  }

  void set(const Field& f, const YAML::Node& value, const SourceLocation& where) {
    const std::string expected = f.assign(out_.config, value);
    if (!expected.empty()) {
      problems.push_back({where, f.path, "expected " + expected + " (" + f.type_name() + "), got " + describe(value)});
      return;
    }
    out_.origin[f.path] = where;
  }

  void override_(const std::string& assignment) {
    const SourceLocation where{"--set " + assignment, 0, 0};
    const auto eq = assignment.find('=');
    if (eq == std::string::npos || eq == 0) {
      problems.push_back({where, assignment, "expected KEY=VALUE with a dotted key, e.g. --set train.steps=100"});
      return;
    }
    const std::string path = assignment.substr(0, eq);
    const std::string text = assignment.substr(eq + 1);
    const Field* f = find_field(path);
    if (!f) {
      if (is_section(path)) {
        problems.push_back({where, path, "is a section; set one of its keys, e.g. --set " +
                                             config_detail::closest_key(path + ".x") + "=..."});
      } else {
        problems.push_back({where, path, unknown_key_message(path)});
      }
      return;
    }
    YAML::Node value;
    try {
      value = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      problems.push_back({where, path, "value is not valid YAML: " + e.msg});
      return;
    }
    set(*f, value, where);
  }

 private:
  LoadedConfig& out_;
};

SourceLocation location_of(const LoadedConfig& lc, const std::string& path) {
  const auto it = lc.origin.find(path);
  if (it != lc.origin.end()) return it->second;
  return {lc.source_file, 0, 0};
}

[[noreturn]] void fail(const std::vector<Diagnostic>& problems) {
  std::ostringstream os;
  os << (problems.size() == 1 ? "invalid configuration:" : "invalid configuration (" +
                                                               std::to_string(problems.size()) + " problems):");
  for (const auto& p : problems) os << "\n  " << p.where.str() << ": " << p.path << ": " << p.message;
  throw InputError(os.str());
}

// Fills values whose default depends on other inputs. Runs after validation.
void resolve(Config& c) {
  if (c.model.vocab_size == 0) {
    const int64_t v = load_tokenizer(c.data.tokenizer)->vocab_size();
    c.model.vocab_size = (v + 63) / 64 * 64;
  }
}

void make_paths_absolute(Config& c) {
  for (std::string* p : {&c.data.train, &c.data.val}) {
    if (!p->empty()) *p = std::filesystem::absolute(*p).lexically_normal().string();
  }
  if (c.data.tokenizer != "byte")
    c.data.tokenizer = std::filesystem::absolute(c.data.tokenizer).lexically_normal().string();
}

LoadedConfig load_from_node(const YAML::Node& root, const std::string& name, const std::vector<std::string>& overrides,
                            bool check_paths) {
  LoadedConfig lc;
  lc.source_file = name;
  Loader loader(lc);
  if (root.IsMap()) {
    loader.walk(root, "", name);
  } else if (!root.IsNull()) {
    loader.problems.push_back({at(name, root), "(top level)",
                               "expected a mapping of sections (run, model, data, ...), got " + describe(root)});
  }
  for (const auto& o : overrides) loader.override_(o);
  if (!loader.problems.empty()) fail(loader.problems);  // types must be right before ranges make sense

  std::vector<Diagnostic> problems;
  for (const auto& f : config_detail::schema()) {
    const std::string msg = f.check(lc.config);
    if (!msg.empty()) problems.push_back({location_of(lc, f.path), f.path, msg});
  }
  if (!problems.empty()) fail(problems);
  for (const auto& p : config_detail::check_consistency(lc.config, check_paths))
    problems.push_back({location_of(lc, p.path), p.path, p.message});
  if (!problems.empty()) fail(problems);
  if (check_paths || lc.config.model.vocab_size > 0) resolve(lc.config);
  make_paths_absolute(lc.config);
  return lc;
}

}  // namespace

LoadedConfig load_config_text(const std::string& yaml_text, const std::string& name,
                              const std::vector<std::string>& overrides, bool check_paths) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    SourceLocation where{name, e.mark.line + 1, e.mark.column + 1};
    throw InputError("invalid configuration:\n  " + where.str() + ": malformed YAML: " + e.msg);
  }
  return load_from_node(root, name, overrides, check_paths);
}

LoadedConfig load_config(const std::string& path, const std::vector<std::string>& overrides, bool check_paths) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw InputError("config file '" + path + "' does not exist");
  if (std::filesystem::is_directory(path, ec)) throw InputError("config file '" + path + "' is a directory");
  const std::optional<std::string> text = read_whole_file(path);
  if (!text) throw InputError("cannot read config file '" + path + "'");
  return load_config_text(*text, path, overrides, check_paths);
}

}  // namespace sluice
