// Error kinds and the exit codes they map to (documented in README.md).
#pragma once
#include <stdexcept>
#include <string>

namespace sluice {

enum ExitCode : int {
  kExitOk = 0,        // success (also: stopped cleanly on SIGTERM/SIGINT after a checkpoint)
  kExitInternal = 1,  // a bug, a CUDA/LibTorch failure, non-finite loss with on_nonfinite=abort,
                      // out of memory in a step or of disk space for a checkpoint (ResourceError)
  kExitBadInput = 2,  // bad config, arguments or data files; nothing was started
  kExitPeerLost = 3,  // distributed run: another rank died, hung or a collective timed out
};

// Bad input from the user: a config, an argument or a data file. Maps to exit code 2.
// The message names the file / key / argument and what was expected.
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A distributed run cannot go on: a collective failed or timed out, most often because
// another rank died or stalled. Maps to exit code 3; the message names this rank and what
// it waited for.
class DistributedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The machine ran out of a resource during a run: memory in a step, disk space for a
// checkpoint or a metrics record. Exit code 1 (like kExitInternal: the input was fine); the
// message names the phase or the file, what drives the demand, and the last checkpoint.
class ResourceError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace sluice
