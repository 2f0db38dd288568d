// Who this process is in a distributed job, read from the launcher's environment:
// torchrun (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT; also
// what `sluice launch` sets), else Slurm (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, the
// first host of SLURM_JOB_NODELIST), else a single process. Plain C++, no LibTorch.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace sluice::dist {

struct LaunchEnv {
  std::string launcher = "none";  // "torchrun" (its variables, also set by `sluice launch`), "slurm", "none"
  int64_t rank = 0, world_size = 1;
  int64_t local_rank = 0, local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // torchrun's elastic agent already hosts the TCPStore on MASTER_PORT
  // (TORCHELASTIC_USE_AGENT_STORE=True): every rank connects to it as a client.
  bool agent_store = false;
  bool launched() const { return launcher != "none"; }
  std::string describe() const;  // "rank 1 of 4 (local 1 of 2), master gpu01:29500, from slurm"
};

using Getenv = std::function<const char*(const char*)>;

// Throws InputError naming the variable when one is malformed or a set is incomplete
// (RANK without WORLD_SIZE, a rank outside [0, world), ...).
LaunchEnv read_launch_env(const Getenv& getenv);
LaunchEnv read_launch_env();  // the process environment

// Slurm's compressed host list: "gpu[01-04,07],cpu3" -> gpu01 gpu02 gpu03 gpu04 gpu07 cpu3
// (zero padding kept). Throws InputError naming SLURM_JOB_NODELIST when malformed.
std::vector<std::string> expand_slurm_nodelist(const std::string& list);
// SLURM_TASKS_PER_NODE's "2(x3),1": tasks on node `node` (SLURM_NODEID); 0 when out of range.
int64_t slurm_tasks_on_node(const std::string& tasks_per_node, int64_t node);

}  // namespace sluice::dist
