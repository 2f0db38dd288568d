// SIGTERM / SIGINT (what Slurm and Ctrl-C send): the first asks the trainer to finish the
// current step, write a checkpoint and exit 0; a second SIGINT exits at once (code 130).
#pragma once

namespace sluice {

class StopSignal {
 public:
  StopSignal();   // installs the handlers
  ~StopSignal();  // restores the previous ones
  StopSignal(const StopSignal&) = delete;
  StopSignal& operator=(const StopSignal&) = delete;
  bool requested() const;
  int signal() const;  // the signal received, 0 if none
};

}  // namespace sluice
