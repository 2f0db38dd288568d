// A child process with its stdout and stderr in a log file: what `sluice ablate` starts for each
// training and evaluation, and what the tests start to run the `sluice` binary. (Ranks are
// started by launcher.cpp instead: they need their own process group and parent-death signal.)
#pragma once
#include <fcntl.h>
#include <spawn.h>
#include <sys/types.h>

#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

extern char** environ;

namespace sluice {

// This process's environment without the variables `drop(name)` selects, then `extra`
// ("NAME=value" each).
inline std::vector<std::string> environment_with(const std::vector<std::string>& extra,
                                                 const std::function<bool(const std::string& name)>& drop = {}) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string v = *e;
    if (drop && drop(v.substr(0, v.find('=')))) continue;
    env.push_back(v);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

// Starts argv[0] (a path) with arguments argv[1..] and environment `env`, stdout and stderr both
// into `log` (appended to, or truncated first). Returns its pid; throws std::runtime_error naming
// the program when it cannot be started.
inline pid_t spawn_logged(std::vector<std::string> argv, std::vector<std::string> env, const std::string& log,
                          bool append) {
  std::vector<char*> args, envp;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(rc));
  return pid;
}

}  // namespace sluice
