// The config schema: one Field per leaf key, bound to its member of sluice::Config.
#pragma once
#include <yaml-cpp/yaml.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "sluice/config.h"

namespace sluice::config_detail {

enum class Kind { Int, Float, Bool, String, StringList, IntList };

struct Field {
  std::string path;
  Kind kind = Kind::Int;
  std::string doc;
  std::vector<std::string> choices;  // String / StringList: allowed values (empty: any)
  std::optional<double> min, max;    // Int / Float / IntList (each element) bounds
  bool min_exclusive = false;
  bool is_path = false;  // String naming a file that must exist (when non-empty)

  // Stores `node` into the config; returns "" or what was expected ("an integer").
  std::function<std::string(Config&, const YAML::Node&)> assign;
  // The current value as a YAML node.
  std::function<YAML::Node(const Config&)> emit;
  // Numeric value for range checks (Int / Float).
  std::function<double(const Config&)> number;
  // Numeric values for range checks of every element (IntList).
  std::function<std::vector<double>(const Config&)> numbers;
  // String values for choice checks (String: one, StringList: all).
  std::function<std::vector<std::string>(const Config&)> strings;

  std::string type_name() const;                // "integer >= 1", "one of: a, b"
  std::string check(const Config& c) const;     // "" or "expected ..., got ..."
};

const std::vector<Field>& schema();
const Field* find_field(const std::string& path);
// True when `path` is a section or sub-section ("model", "model.rope").
bool is_section(const std::string& path);
std::vector<std::string> section_names();

// Shortest decimal text that reads back as the same double.
std::string format_double(double v);

}  // namespace sluice::config_detail
