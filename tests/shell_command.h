// Command lines for std::system in tests: every argument quoted for /bin/sh, so paths with
// spaces or quotes in them still reach the program whole.
#pragma once
#include <sys/wait.h>

#include <cstdlib>
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

// `cmd` with its stdout written to `out` and its stderr to `err` (to `out` too when `err` is empty).
inline std::string redirected(const std::string& cmd, const std::string& out, const std::string& err = "") {
  return cmd + " > " + shell_quote(out) + (err.empty() ? " 2>&1" : " 2> " + shell_quote(err));
}

#ifdef SLUICE_BIN
// Runs the built `sluice` with `args` (a shell fragment: several words, the caller quotes what
// needs it), stdout and stderr to `log`; its exit code, or -1 when it did not exit normally.
inline int run_sluice(const std::string& args, const std::string& log) {
  const int status = std::system(redirected(shell_quote(SLUICE_BIN) + " " + args, log).c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
#endif

#ifdef SLUICE_PYTHON
// The project's Python (the one CMake found torch with) given args: a script and its arguments,
// or "-c" and code.
inline std::string python_command(std::vector<std::string> args) {
  args.insert(args.begin(), SLUICE_PYTHON);
  return shell_command(args);
}
#endif

}  // namespace sluice::testing
