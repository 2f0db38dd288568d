// Child processes for the tests that run the `sluice` binary: spawned with stdout and stderr
// into a log file, waited for with a bound (a hung child is killed and fails the test).
#pragma once
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

extern char** environ;

namespace sluice::testing {

struct Child {
  pid_t pid = -1;
  std::string log;
  int status = -1;
  // The wait status, after at most `seconds` (then SIGKILL, and the test fails).
  int wait_status(double seconds = 120) {
    if (status != -1) return status;
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < end) {
      if (waitpid(pid, &status, WNOHANG) == pid) return status;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "pid " << pid << " still running after " << seconds << "s; killed. Log:\n" << read_file(log);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return status;
  }
  bool exited_with(int code, double seconds = 120) {
    const int s = wait_status(seconds);
    return WIFEXITED(s) && WEXITSTATUS(s) == code;
  }
};

// This process's environment plus `extra`; without any launcher's variables (torchrun's,
// Slurm's, OMP_NUM_THREADS) when `drop_launcher` is set, so a test decides which ranks exist.
inline std::vector<std::string> environment_with(const std::vector<std::string>& extra, bool drop_launcher = false) {
  static const std::set<std::string> launcher = {"RANK",        "WORLD_SIZE",      "LOCAL_RANK",
                                                 "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                                                 "OMP_NUM_THREADS",  "GLOO_SOCKET_IFNAME"};
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string v = *e, name = v.substr(0, v.find('='));
    if (drop_launcher && (launcher.count(name) || name.rfind("SLURM_", 0) == 0 || name.rfind("TORCHELASTIC_", 0) == 0))
      continue;
    env.push_back(v);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

inline Child spawn_process(const std::string& program, const std::vector<std::string>& args, const std::string& log,
                           std::vector<std::string> env) {
  std::vector<std::string> all = {program};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv, envp;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  Child c;
  c.log = log;
  EXPECT_EQ(posix_spawn(&c.pid, program.c_str(), &fa, nullptr, argv.data(), envp.data()), 0);
  posix_spawn_file_actions_destroy(&fa);
  return c;
}

inline bool wait_for(const std::function<bool()>& cond, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

}  // namespace sluice::testing
