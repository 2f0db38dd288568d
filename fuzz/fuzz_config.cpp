// The `sluice config validate CONFIG.yaml [--set KEY=VALUE ...]` path: load_config_text with
// overrides. Input: leading lines "--set KEY=VALUE" are the overrides, the rest is the YAML
// file. Properties: only InputError escapes; a config that loads is printed by to_yaml (what
// `config show` prints and every run directory's config.yaml holds) and loads back to the
// same values. Paths are not checked (check_paths=false), so nothing is read from disk.
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "sluice/config.h"
#include "sluice/errors.h"

using namespace sluice;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in = fuzz::as_text(data, size);
  std::vector<std::string> overrides;
  while (in.substr(0, 6) == "--set ") {
    const size_t nl = in.find('\n');
    overrides.emplace_back(in.substr(6, nl == std::string_view::npos ? std::string_view::npos : nl - 6));
    in = nl == std::string_view::npos ? std::string_view() : in.substr(nl + 1);
  }
  LoadedConfig lc;
  try {
    lc = load_config_text(std::string(in), "fuzz.yaml", overrides, /*check_paths=*/false);
  } catch (const InputError&) {
    return 0;
  }
  const std::string yaml = to_yaml(lc.config);
  LoadedConfig back;
  try {
    back = load_config_text(yaml, "resolved.yaml", {}, /*check_paths=*/false);
  } catch (const InputError& e) {
    fuzz::die(std::string("to_yaml's output does not load: ") + e.what() + "\n" + yaml);
  }
  const auto a = config_values(lc.config), b = config_values(back.config);
  for (const auto& [key, value] : a)
    fuzz::check(b.at(key) == value, "round trip changed " + key + ": " + value + " -> " + b.at(key));
  return 0;
}
