// The launch environment (torchrun's and Slurm's variables) and Slurm's host lists: plain C++.
#include <gtest/gtest.h>

#include <map>

#include "dist/launch_env.h"
#include "sluice/errors.h"

namespace sluice::dist {
namespace {

LaunchEnv read(const std::map<std::string, std::string>& vars) {
  return read_launch_env([&](const char* name) -> const char* {
    const auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

std::string error_of(const std::map<std::string, std::string>& vars) {
  try {
    read(vars);
  } catch (const InputError& e) {
    return e.what();
  }
  return "no error";
}

TEST(SlurmNodelist, ExpandsRangesListsAndPadding) {
  using V = std::vector<std::string>;
  EXPECT_EQ(expand_slurm_nodelist("gpu01"), V{"gpu01"});
  EXPECT_EQ(expand_slurm_nodelist("gpu[01-04,07]"), (V{"gpu01", "gpu02", "gpu03", "gpu04", "gpu07"}));
  EXPECT_EQ(expand_slurm_nodelist("a[8-10],b3,c[001-002]"), (V{"a8", "a9", "a10", "b3", "c001", "c002"}));
  EXPECT_EQ(expand_slurm_nodelist("rack[1-2]-n[1,3]"), (V{"rack1-n1", "rack1-n3", "rack2-n1", "rack2-n3"}));
  EXPECT_EQ(expand_slurm_nodelist("node-[9-11]"), (V{"node-9", "node-10", "node-11"}));
}

TEST(SlurmNodelist, MalformedListsNameTheVariable) {
  for (const char* bad : {"gpu[01-04", "gpu01]", "gpu[04-01]", "gpu[a-b]", "gpu[1,,2]", "a,,b", ""}) {
    try {
      expand_slurm_nodelist(bad);
      ADD_FAILURE() << bad;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("SLURM_JOB_NODELIST"), std::string::npos) << e.what();
    }
  }
}

TEST(SlurmTasksPerNode, RepeatCounts) {
  EXPECT_EQ(slurm_tasks_on_node("4", 0), 4);
  EXPECT_EQ(slurm_tasks_on_node("2(x3),1", 0), 2);
  EXPECT_EQ(slurm_tasks_on_node("2(x3),1", 2), 2);
  EXPECT_EQ(slurm_tasks_on_node("2(x3),1", 3), 1);
  EXPECT_EQ(slurm_tasks_on_node("2(x3),1", 4), 0);
  EXPECT_THROW(slurm_tasks_on_node("x(2)", 0), InputError);
}

TEST(LaunchEnv, NoLauncherIsOneProcess) {
  const LaunchEnv e = read({});
  EXPECT_FALSE(e.launched());
  EXPECT_EQ(e.world_size, 1);
  EXPECT_EQ(e.rank, 0);
}

TEST(LaunchEnv, TorchrunVariables) {
  const LaunchEnv e = read({{"RANK", "5"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "4"},
                            {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "29400"}, {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                            // Slurm's variables are ignored when torchrun's are there (torchrun inside srun)
                            {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}});
  EXPECT_EQ(e.launcher, "torchrun");
  EXPECT_EQ(e.rank, 5);
  EXPECT_EQ(e.world_size, 8);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_world_size, 4);
  EXPECT_EQ(e.master_addr, "node7");
  EXPECT_EQ(e.master_port, 29400);
  EXPECT_TRUE(e.agent_store);
}

TEST(LaunchEnv, SlurmVariables) {
  const LaunchEnv e = read({{"SLURM_PROCID", "6"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "2"},
                            {"SLURM_NODEID", "1"}, {"SLURM_TASKS_PER_NODE", "4(x2)"},
                            {"SLURM_JOB_NODELIST", "gpu[03-04]"}, {"SLURM_JOB_ID", "123456"}});
  EXPECT_EQ(e.launcher, "slurm");
  EXPECT_EQ(e.rank, 6);
  EXPECT_EQ(e.world_size, 8);
  EXPECT_EQ(e.local_rank, 2);
  EXPECT_EQ(e.local_world_size, 4);
  EXPECT_EQ(e.master_addr, "gpu03");
  EXPECT_EQ(e.master_port, 20000 + 123456 % 20000);  // one port per job
  EXPECT_FALSE(e.agent_store);
  // MASTER_ADDR / MASTER_PORT, when the job script sets them, win
  const LaunchEnv f = read({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_JOB_NODELIST", "gpu[03-04]"},
                            {"MASTER_ADDR", "10.0.0.9"}, {"MASTER_PORT", "1234"}});
  EXPECT_EQ(f.master_addr, "10.0.0.9");
  EXPECT_EQ(f.master_port, 1234);
}

TEST(LaunchEnv, BadValuesNameTheVariable) {
  EXPECT_NE(error_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}})
                .find("RANK: expected an integer in [0, 1], got '2'"),
            std::string::npos);
  EXPECT_NE(error_of({{"RANK", "0"}, {"WORLD_SIZE", "two"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}})
                .find("WORLD_SIZE: expected an integer"),
            std::string::npos);
  EXPECT_NE(error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}}).find("MASTER_ADDR is not set"), std::string::npos);
  EXPECT_NE(error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}})
                .find("MASTER_PORT: expected an integer in [1, 65535]"),
            std::string::npos);
  EXPECT_NE(error_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}}).find("SLURM_JOB_NODELIST is not set"),
            std::string::npos);
  EXPECT_NE(error_of({{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "2"}, {"SLURM_JOB_NODELIST", "a"}})
                .find("SLURM_PROCID: expected an integer in [0, 1]"),
            std::string::npos);
}

}  // namespace
}  // namespace sluice::dist
