// Child processes for the tests that run the `sluice` binary: spawned with stdout and stderr
// into a log file, waited for with a bound (a hung child is killed and fails the test).
#pragma once
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "dist/child_process.h"
#include "test_util.h"

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
  return sluice::environment_with(extra, [drop_launcher](const std::string& name) {
    return drop_launcher &&
           (launcher.count(name) || name.rfind("SLURM_", 0) == 0 || name.rfind("TORCHELASTIC_", 0) == 0);
  });
}

inline Child spawn_process(const std::string& program, const std::vector<std::string>& args, const std::string& log,
                           std::vector<std::string> env) {
  std::vector<std::string> all = {program};
  all.insert(all.end(), args.begin(), args.end());
  Child c;
  c.log = log;
  try {
    c.pid = spawn_logged(std::move(all), std::move(env), log, /*append=*/false);
  } catch (const std::exception& e) {
    ADD_FAILURE() << e.what();
  }
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
