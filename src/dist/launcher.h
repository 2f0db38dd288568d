// `sluice launch`: starts the ranks of a one-node job as child processes with torchrun's
// variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT),
// forwards SIGINT/SIGTERM to all of them, and when one fails stops the others (SIGTERM,
// then SIGKILL after a grace period) and returns the first failure's exit code. Plain POSIX.
#pragma once
#include <iosfwd>
#include <string>
#include <vector>

namespace sluice::dist {

struct LaunchOptions {
  int nproc = 1;
  int port = 0;                   // 0: a free port chosen here
  std::string executable;         // the program every rank runs
  std::vector<std::string> args;  // its arguments
  double grace_s = 30.0;          // after a failure: seconds between SIGTERM and SIGKILL for the rest
};

// Runs the ranks to the end; returns 0 when all exited 0, else the first failure's code
// (128 + N for a rank killed by signal N), after `err` names the rank.
int launch_local(const LaunchOptions& opts, std::ostream& err);

// A TCP port that was free on 127.0.0.1 a moment ago.
int free_port();

}  // namespace sluice::dist
