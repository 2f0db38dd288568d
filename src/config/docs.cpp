// Rendering the schema: the resolved config as YAML and the key reference as Markdown.
#include <sstream>

#include "config/schema.h"

namespace sluice {

using config_detail::schema;

std::vector<std::string> config_keys() {
  std::vector<std::string> keys;
  for (const auto& f : schema()) keys.push_back(f.path);
  return keys;
}

std::map<std::string, std::string> config_values(const Config& config) {
  std::map<std::string, std::string> out;
  for (const auto& f : schema()) {
    YAML::Emitter e;
    e << YAML::Flow << f.emit(config);
    out[f.path] = e.c_str();
  }
  return out;
}

std::string to_yaml(const Config& config) {
  YAML::Node root(YAML::NodeType::Map);
  for (const auto& f : schema()) {
    // Walk/create the nested maps along the dotted path, then set the leaf.
    std::vector<std::string> parts;
    std::stringstream ss(f.path);
    for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
    YAML::Node node = root;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      if (!node[parts[i]]) node[parts[i]] = YAML::Node(YAML::NodeType::Map);
      YAML::Node next = node[parts[i]];
      node.reset(next);  // rebind; operator= would overwrite the node it refers to
    }
    node[parts.back()] = f.emit(config);
  }
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

std::string config_reference_markdown() {
  std::ostringstream md;
  md << "# Configuration reference\n\n"
     << "Generated from the schema (`sluice config docs`); a test keeps this file in sync.\n"
     << "Every key can be set in the YAML file or with `--set dotted.key=value` (parsed as YAML and\n"
     << "type-checked like the file). Unknown keys, wrong types and out-of-range values are errors\n"
     << "(exit code 2), reported with file, line and key path. Relative paths are resolved against\n"
     << "the working directory and written as absolute paths to `RUN_DIR/config.yaml`.\n";
  std::string section;
  for (const auto& f : schema()) {
    const std::string s = f.path.substr(0, f.path.find('.'));
    if (s != section) {
      section = s;
      md << "\n## `" << s << "`\n\n| key | type | default | meaning |\n|---|---|---|---|\n";
    }
    YAML::Emitter e;
    e << YAML::Flow << f.emit(Config{});
    std::string def = e.c_str();
    if (def.empty() || def == "\"\"" || def == "''") def = "(empty)";
    md << "| `" << f.path << "` | " << f.type_name() << " | `" << def << "` | " << f.doc << " |\n";
  }
  return md.str();
}

}  // namespace sluice
