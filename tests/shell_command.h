// Command lines for std::system in tests: every argument quoted for /bin/sh, so paths with
// spaces or quotes in them still reach the program whole.
#pragma once
#include <string>
#include <vector>

namespace sluice::testing {

inline std::string shell_quote(const std::string& arg) {
  std::string quoted = "'";
  for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

inline std::string shell_command(const std::vector<std::string>& argv) {
  std::string cmd;
  for (const std::string& arg : argv) cmd += (cmd.empty() ? "" : " ") + shell_quote(arg);
  return cmd;
}

#ifdef SLUICE_PYTHON
// The project's Python (the one CMake found torch with) given args: a script and its arguments,
// or "-c" and code.
inline std::string python_command(std::vector<std::string> args) {
  args.insert(args.begin(), SLUICE_PYTHON);
  return shell_command(args);
}
#endif

}  // namespace sluice::testing
