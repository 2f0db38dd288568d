// Data parallelism, proven by equivalence: W Gloo ranks on loopback against one process with
// the same global batch, resumes against straight runs, and every failure path (a killed or
// stalled rank, mismatched configs, wrong world size, no rendezvous) ending every rank with
// the documented exit code. Each test starts real `sluice` processes, each job on its own
// free port, each wait bounded.
#include <gtest/gtest.h>
#include <signal.h>

#include <ATen/ATen.h>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dist/launcher.h"
#include "sluice/config.h"
#include "sluice/model.h"
#include "dist_util.h"
#include "process_util.h"
#include "test_util.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/safetensors.h"

namespace sluice {
namespace {

namespace fs = std::filesystem;
using namespace sluice::testing;  // DistJob, spawn, metrics, expect_same_* (dist_util.h)
using Clock = std::chrono::steady_clock;
using testing::read_file;
using testing::write_file;
using testing::wait_for;

class Dist : public DistJob {
 protected:
  // The small model both configs share; `model_extra` is added to its model section.
  static std::string config_text(const std::string& model_extra) {
    return "model:\n  d_model: 32\n  n_layers: 2\n  n_heads: 2\n  n_kv_heads: 1\n  ffn_hidden: 64\n" + model_extra +
           "data:\n  tokenizer: byte\n  seq_len: 24\n  val_fraction: 0.1\n"
           "train:\n  micro_batch: 2\n  steps: 8\n  log_every: 1\n  eval_every: 4\n"
           "  eval_batches: 2\n  threads: 1\n  device: cpu\n"
           "optim:\n  lr: 3.0e-4\n"
           "schedule:\n  warmup_steps: 2\n"
           "parallel:\n  timeout_s: 20\n"
           "log:\n  level: info\n";
  }
  std::string dense = write_file(dir.file("dense.yaml"), config_text(""));
  std::string moe = write_file(dir.file("moe.yaml"),
                               config_text("  arch: moe\n  moe:\n    n_experts: 4\n    ffn_hidden: 32\n    top_k: 2\n"
                                           "    aux_loss_coef: 0.01\n    z_loss_coef: 0.001\n    shared_experts: 1\n"
                                           "    shared_expert_gate: true\n"));
};

// --- equivalence: W ranks = one process with the same global batch ---------------------------

TEST_F(Dist, TwoRanksEqualOneProcessWithAndWithoutAccumulation) {
  for (const int64_t accum : {1, 2}) {
    SCOPED_TRACE("grad_accum " + std::to_string(accum));
    const std::string a = dir.file("one-" + std::to_string(accum)), b = dir.file("two-" + std::to_string(accum));
    const std::string ga = "train.grad_accum=" + std::to_string(accum);
    Proc p1 = single(dense, a, {"train.micro_batch=4", ga});
    Proc p2 = launch(2, dense, b, {"train.micro_batch=2", ga});
    expect_ok(p1);
    expect_ok(p2);
    expect_same_metrics(a, b, 1e-6);
    expect_same_weights(final_checkpoint(a), final_checkpoint(b), 1e-6);
    if (accum == 1) {  // the check can fail: half the global batch (one rank's share alone) is far off
      const std::string half = dir.file("half");
      Proc ph = single(dense, half, {"train.micro_batch=2"});
      expect_ok(ph);
      const SafetensorsFile x = read_safetensors(final_checkpoint(a) + "/model.safetensors");
      const SafetensorsFile y = read_safetensors(final_checkpoint(half) + "/model.safetensors");
      const at::Tensor& w = x.tensors.at("model.layers.0.self_attn.q_proj.weight");
      EXPECT_GT((w - y.tensors.at("model.layers.0.self_attn.q_proj.weight")).norm().item<double>(), 1e-4 * w.norm().item<double>());
    }
    const auto s = nlohmann::json::parse(read_file(b + "/summary.json"));
    EXPECT_EQ(s["world_size"], 2);
    EXPECT_EQ(s["tokens"], 8 * 4 * accum * 24);  // global tokens
    EXPECT_TRUE(fs::exists(b + "/logs/rank-1.log"));
    EXPECT_NE(read_file(b + "/train.log").find("global batch: " + std::to_string(4 * accum) +
                                               " sequences = micro_batch 2 x grad_accum " + std::to_string(accum) +
                                               " x 2 rank(s)"),
              std::string::npos);
  }
}

TEST_F(Dist, ThreeRanksEqualOneProcess) {
  const std::string a = dir.file("one"), b = dir.file("three");
  Proc p1 = single(dense, a, {"train.micro_batch=6"});
  Proc p3 = launch(3, dense, b, {"train.micro_batch=2"});
  expect_ok(p1);
  expect_ok(p3);
  expect_same_metrics(a, b, 1e-6);
  expect_same_weights(final_checkpoint(a), final_checkpoint(b), 1e-6);
}

TEST_F(Dist, ZeroOneEqualsOneProcessOnTwoAndThreeRanks) {
  // Three ranks: bucket slices padded to a multiple of 3 and parameters split mid-tensor.
  for (const int world : {2, 3}) {
    SCOPED_TRACE("world " + std::to_string(world));
    const std::string a = dir.file("one-" + std::to_string(world)), b = dir.file("zero-" + std::to_string(world));
    Proc p1 = single(dense, a, {"train.micro_batch=" + std::to_string(2 * world)});
    Proc pz = launch(world, dense, b, {"train.micro_batch=2", "parallel.zero=1", "parallel.bucket_mb=0.02"});
    expect_ok(p1);
    expect_ok(pz);
    expect_same_metrics(a, b, 1e-6);
    expect_same_weights(final_checkpoint(a), final_checkpoint(b), 1e-6);
    // the optimizer state comes back whole, by parameter name: as one process's
    const SafetensorsFile oa = read_safetensors(final_checkpoint(a) + "/optimizer.safetensors");
    const SafetensorsFile ob = read_safetensors(final_checkpoint(b) + "/optimizer.safetensors");
    ASSERT_EQ(oa.tensors.size(), ob.tensors.size());
    for (const auto& [name, t] : oa.tensors) {
      ASSERT_TRUE(ob.tensors.count(name)) << name;
      ASSERT_EQ(t.sizes(), ob.tensors.at(name).sizes()) << name;
      EXPECT_LE((t - ob.tensors.at(name)).norm().item<double>(), 1e-5 * t.norm().item<double>() + 1e-12) << name;
    }
    EXPECT_NE(read_file(b + "/train.log").find("(ZeRO-1: sharded)"), std::string::npos);
  }
}

// Activation checkpointing's reentrant backward under the reducer: gradients arrive from
// nested backward passes, and the buckets (ZeRO-1's comm hook too) still reduce the same sums.
TEST_F(Dist, ActivationCheckpointingOnTwoRanksEqualsOneProcessWithout) {
  struct Case {
    const char* name;
    const std::string* config;
    std::vector<std::string> sets;
  };
  const std::vector<Case> cases = {
      {"dense, full, ZeRO-1", &dense, {"train.activation_checkpointing=full", "parallel.zero=1"}},
      {"moe, full (attention halves)", &moe, {"train.activation_checkpointing=full"}},
      {"dense, selective, accumulation", &dense, {"train.activation_checkpointing=selective", "train.grad_accum=2"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string a = dir.file(std::string("one-") + std::to_string(job)), b = dir.file("two-" + std::to_string(job));
    std::vector<std::string> one = {"train.micro_batch=4"}, two = c.sets;
    for (const auto& s : c.sets) {
      if (s.rfind("train.grad_accum", 0) == 0) one.push_back(s);
    }
    two.push_back("train.micro_batch=2");
    Proc p1 = single(*c.config, a, one);
    Proc p2 = launch(2, *c.config, b, two);
    expect_ok(p1);
    expect_ok(p2);
    expect_same_metrics(a, b, 1e-6);
    expect_same_weights(final_checkpoint(a), final_checkpoint(b), 1e-6);
  }
}

TEST_F(Dist, MoeTwoRanksEqualOneProcess) {
  struct Case {
    const char* name;
    std::vector<std::string> sets;
  };
  const std::vector<Case> cases = {
      {"softmax top-k, global-batch aux loss", {"model.moe.aux_loss_scope=global_batch"}},
      {"softmax top-k, micro-batch aux loss, accumulation", {"train.grad_accum=2"}},
      {"sigmoid + aux-loss-free bias",
       {"model.moe.scoring=sigmoid", "model.moe.bias_update_rate=0.01", "model.moe.aux_loss_coef=0.0"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string a = dir.file(std::string("one-") + std::to_string(job)), b = dir.file("two-" + std::to_string(job));
    std::vector<std::string> one = c.sets, two = c.sets;
    one.push_back("train.micro_batch=4");
    two.push_back("train.micro_batch=2");
    Proc p1 = single(moe, a, one);
    Proc p2 = launch(2, moe, b, two);
    expect_ok(p1);
    expect_ok(p2);
    expect_same_metrics(a, b, 1e-6);
    expect_same_weights(final_checkpoint(a), final_checkpoint(b), 1e-6);
    // routing statistics are the global batch's
    const auto ma = metrics(a), mb = metrics(b);
    EXPECT_EQ(ma.back()["moe_load_max"], mb.back()["moe_load_max"]);
    EXPECT_EQ(ma.back()["moe_load_min"], mb.back()["moe_load_min"]);
  }
}

// --- stopping and resuming -------------------------------------------------------------------

TEST_F(Dist, SigtermToOneRankStopsBothAndTheResumeEqualsTheStraightRun) {
  const std::vector<std::string> sets = {"train.steps=400", "train.eval_every=100", "checkpoint.every=0"};
  const std::string straight = dir.file("straight"), stopped = dir.file("stopped");
  std::vector<Proc> s = ranks(2, dense, straight, sets);
  expect_all_ok(s);
  std::vector<Proc> r = ranks(2, dense, stopped, sets);
  ASSERT_TRUE(wait_for([&] { return metrics(stopped).size() >= 5; }, 60)) << read_file(r[0].log);
  kill(r[1].pid, SIGTERM);  // as if the signal reached one node only
  expect_all_ok(r);
  const auto summary = nlohmann::json::parse(read_file(stopped + "/summary.json"));
  ASSERT_TRUE(summary["stopped_by_signal"].get<bool>()) << read_file(r[0].log);
  const int64_t at = summary["steps"].get<int64_t>();
  ASSERT_LT(at, 400);
  EXPECT_EQ(read_checkpoint_info(final_checkpoint(stopped)).state.step, at);
  EXPECT_NE(read_file(r[0].log).find("a signal to another rank"), std::string::npos) << read_file(r[0].log);
  std::vector<Proc> again = ranks(2, dense, stopped, sets);
  expect_all_ok(again);
  expect_same_metrics(straight, stopped, 0.0);  // bitwise
  expect_same_weights(final_checkpoint(straight), final_checkpoint(stopped), 0.0);
  EXPECT_EQ(read_file(final_checkpoint(straight) + "/optimizer.safetensors"),
            read_file(final_checkpoint(stopped) + "/optimizer.safetensors"));
}

TEST_F(Dist, ResumesOnOtherWorldSizesAndZeroSettingsContinueTheDataOrder) {
  // The global micro-batch stays 6 windows: 2 ranks x 3, 1 x 6, 3 x 2.
  const std::string straight = dir.file("straight");
  Proc s = launch(2, dense, straight, {"train.micro_batch=3"});
  expect_ok(s);
  const std::string stopped = dir.file("stopped");
  Proc first = launch(2, dense, stopped, {"train.micro_batch=3", "--stop-after=4"});
  expect_ok(first);
  ASSERT_EQ(read_checkpoint_info(final_checkpoint(stopped)).state.step, 4);
  struct Resume {
    std::string name;
    int world;
    std::vector<std::string> sets;
  };
  const std::vector<Resume> resumes = {{"one rank", 1, {"train.micro_batch=6"}},
                                       {"three ranks", 3, {"train.micro_batch=2"}},
                                       {"two ranks, zero 1", 2, {"train.micro_batch=3", "parallel.zero=1"}}};
  for (const Resume& r : resumes) {
    SCOPED_TRACE(r.name);
    const std::string run = dir.file("resumed-" + std::to_string(job));
    fs::copy(stopped, run, fs::copy_options::recursive);
    Proc p = r.world == 1 ? single(dense, run, r.sets) : launch(r.world, dense, run, r.sets);
    expect_ok(p);
    EXPECT_NE(read_file(run + "/train.log").find("resuming from"), std::string::npos);
    expect_same_metrics(straight, run, 1e-6, /*from_step=*/4);
    expect_same_weights(final_checkpoint(straight), final_checkpoint(run), 1e-6);
  }
  // A single process's checkpoint resumes on two ranks the same way.
  const std::string one = dir.file("one"), one_then_two = dir.file("one-then-two");
  Proc o = single(dense, one, {"train.micro_batch=6"});
  Proc o4 = single(dense, one_then_two, {"train.micro_batch=6", "--stop-after=4"});
  expect_ok(o);
  expect_ok(o4);
  Proc t = launch(2, dense, one_then_two, {"train.micro_batch=3"});
  expect_ok(t);
  expect_same_metrics(one, one_then_two, 1e-6, 4);
  expect_same_weights(final_checkpoint(one), final_checkpoint(one_then_two), 1e-6);
  // A position that falls inside the new global micro-batch is refused, naming the sizes.
  const std::string odd = dir.file("odd");
  fs::copy(stopped, odd, fs::copy_options::recursive);  // 4 steps x 6 windows = 24 consumed
  Proc bad = single(dense, odd, {"train.micro_batch=5"});
  EXPECT_TRUE(bad.exited_with(2)) << read_file(bad.log);
  EXPECT_NE(read_file(bad.log).find("not a multiple of this run's 5 windows"), std::string::npos) << read_file(bad.log);
}

// --- failures: every rank ends, within the timeout, naming what happened -------------------

TEST_F(Dist, KilledRankMakesTheOthersExitAndTheLastCheckpointLoads) {
  const std::string run = dir.file("killed");
  std::vector<Proc> r = ranks(2, dense, run, {"train.steps=100000", "checkpoint.every=3", "parallel.timeout_s=10",
                                              "train.eval_every=0"});
  ASSERT_TRUE(wait_for([&] { return metrics(run).size() >= 7; }, 60)) << read_file(r[0].log);
  const auto t0 = Clock::now();
  kill(r[1].pid, SIGKILL);
  const int status = r[0].wait_status(40);
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  r[1].wait_status();
  ASSERT_TRUE(WIFEXITED(status)) << read_file(r[0].log);
  EXPECT_EQ(WEXITSTATUS(status), 3) << read_file(r[0].log);
  EXPECT_LT(took, 10 + 10) << "rank 0 took " << took << "s to notice";
  EXPECT_NE(read_file(r[0].log).find("distributed error: rank 0: "), std::string::npos) << read_file(r[0].log);
  // the latest complete checkpoint loads
  const std::string latest = final_checkpoint(run);
  const CheckpointInfo info = read_checkpoint_info(latest);
  EXPECT_EQ(info.state.step % 3, 0);
  CausalLM model(info.config.model);
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& p : model->named_parameters()) named.emplace_back(p.key(), p.value());
  AdamW opt(named, info.config.optim);
  EXPECT_NO_THROW(load_checkpoint(latest, *model, &opt, true));
}

TEST_F(Dist, StalledRankMakesTheOthersExitWithinTheTimeout) {
  const std::string run = dir.file("stalled");
  std::vector<Proc> r = ranks(2, dense, run, {"train.steps=100000", "parallel.timeout_s=4", "train.eval_every=0"});
  ASSERT_TRUE(wait_for([&] { return metrics(run).size() >= 3; }, 60)) << read_file(r[0].log);
  const auto t0 = Clock::now();
  kill(r[1].pid, SIGSTOP);
  const int status = r[0].wait_status(40);
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  kill(r[1].pid, SIGKILL);
  r[1].wait_status();
  ASSERT_TRUE(WIFEXITED(status)) << read_file(r[0].log);
  EXPECT_EQ(WEXITSTATUS(status), 3) << read_file(r[0].log);
  EXPECT_LT(took, 4 + 10) << read_file(r[0].log);
  EXPECT_NE(read_file(r[0].log).find("distributed error: rank 0: "), std::string::npos) << read_file(r[0].log);
}

TEST_F(Dist, LauncherForwardsSigtermAndStopsTheOthersWhenARankDies) {
  // SIGTERM to the launcher: every rank stops at the same step with one checkpoint, exit 0.
  const std::string run = dir.file("term");
  Proc l = launch(2, dense, run, {"train.steps=100000", "train.eval_every=0"});
  ASSERT_TRUE(wait_for([&] { return metrics(run).size() >= 3; }, 60)) << read_file(l.log);
  kill(l.pid, SIGTERM);
  ASSERT_TRUE(l.exited_with(0)) << read_file(l.log);
  const auto summary = nlohmann::json::parse(read_file(run + "/summary.json"));
  EXPECT_TRUE(summary["stopped_by_signal"].get<bool>());
  EXPECT_EQ(read_checkpoint_info(final_checkpoint(run)).state.step, summary["steps"].get<int64_t>());

  // A rank killed under the launcher: the launcher stops the other and exits 128 + 9, naming it.
  const std::string run2 = dir.file("dies");
  Proc l2 = launch(2, dense, run2, {"train.steps=100000", "train.eval_every=0", "parallel.timeout_s=10"});
  ASSERT_TRUE(wait_for([&] { return metrics(run2).size() >= 3; }, 60)) << read_file(l2.log);
  std::string children = read_file("/proc/" + std::to_string(l2.pid) + "/task/" + std::to_string(l2.pid) + "/children");
  std::istringstream in(children);
  pid_t victim = -1;
  for (pid_t c; in >> c;) {
    std::string env = read_file("/proc/" + std::to_string(c) + "/environ");
    if (env.find(std::string("RANK=1") + '\0') != std::string::npos && env.find("LOCAL_RANK=1") != std::string::npos)
      victim = c;
  }
  ASSERT_GT(victim, 0) << children;
  kill(victim, SIGKILL);
  const int status = l2.wait_status(40);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGKILL) << read_file(l2.log);
  EXPECT_NE(read_file(l2.log).find("sluice launch: rank 1 was killed by signal 9"), std::string::npos)
      << read_file(l2.log);
}

TEST_F(Dist, CheckEveryNamesTheDivergingRank) {
  const std::string run = dir.file("diverged");
  Proc l = launch(2, dense, run, {"parallel.check_every=2", "train.eval_every=0"}, {"SLUICE_TEST_PERTURB_RANK=1"});
  EXPECT_TRUE(l.exited_with(1)) << read_file(l.log);
  EXPECT_NE(read_file(l.log).find("rank 1: 1 parameter(s) differ, first model.embed_tokens.weight"), std::string::npos)
      << read_file(l.log);
  // without the perturbation the check passes at every step
  Proc ok = launch(2, dense, dir.file("agreed"), {"parallel.check_every=1", "train.eval_every=0"});
  expect_ok(ok);
}

TEST_F(Dist, BadStartsExitTwoBeforeTraining) {
  // ranks started with different configs
  {
    const std::string run = dir.file("mismatch");
    const int port = dist::free_port();
    std::vector<Proc> r;
    for (int rank = 0; rank < 2; ++rank) {
      const std::vector<std::string> e = {"RANK=" + std::to_string(rank), "WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1",
                                          "MASTER_PORT=" + std::to_string(port)};
      r.push_back(spawn(SLUICE_BIN, train_args(dense, run, {rank == 1 ? "train.steps=9" : "train.steps=8"}),
                        log_path("mismatch"), e));
    }
    for (auto& p : r) {
      EXPECT_TRUE(p.exited_with(2)) << read_file(p.log);
      EXPECT_NE(read_file(p.log).find("rank 1: train.steps: 9 (rank 0: 8)"), std::string::npos) << read_file(p.log);
    }
    EXPECT_FALSE(fs::exists(run));
  }
  // the config expects another world size
  {
    Proc l = launch(2, dense, dir.file("world"), {"parallel.data_parallel=3"});
    EXPECT_TRUE(l.exited_with(2)) << read_file(l.log);
    EXPECT_NE(read_file(l.log).find("this config expects 3 ranks, but the launcher started 2"), std::string::npos)
        << read_file(l.log);
    Proc s = single(dense, dir.file("world1"), {"parallel.data_parallel=2"});
    EXPECT_TRUE(s.exited_with(2)) << read_file(s.log);
    EXPECT_NE(read_file(s.log).find("no launcher started this process"), std::string::npos) << read_file(s.log);
    EXPECT_FALSE(fs::exists(dir.file("world")));
  }
  // nobody hosts the rendezvous, and a rendezvous that misses a rank
  {
    const auto t0 = Clock::now();
    Proc lonely = spawn(SLUICE_BIN, train_args(dense, dir.file("lonely"), {"parallel.timeout_s=3"}), log_path("lonely"),
                        {"RANK=1", "WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1",
                         "MASTER_PORT=" + std::to_string(dist::free_port())});
    Proc host = spawn(SLUICE_BIN, train_args(dense, dir.file("host"), {"parallel.timeout_s=3"}), log_path("host"),
                      {"RANK=0", "WORLD_SIZE=3", "MASTER_ADDR=127.0.0.1",
                       "MASTER_PORT=" + std::to_string(dist::free_port())});
    EXPECT_TRUE(lonely.exited_with(2)) << read_file(lonely.log);
    EXPECT_TRUE(host.exited_with(2)) << read_file(host.log);
    EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 3 + 15);
    EXPECT_NE(read_file(lonely.log).find("rendezvous did not complete: rank 1 waited 3s to reach the rendezvous at 127.0.0.1:"),
              std::string::npos)
        << read_file(lonely.log);
    EXPECT_NE(read_file(host.log).find("rank 0 hosts the rendezvous at 127.0.0.1:"), std::string::npos)
        << read_file(host.log);
    EXPECT_NE(read_file(host.log).find("waited 3s for the other 2 rank(s)"), std::string::npos) << read_file(host.log);
  }
}

// --- cluster launchers: torchrun and Slurm's variables ------------------------------------------

TEST_F(Dist, TorchrunAndSlurmVariablesGiveTheSameRun) {
  const std::string launched = dir.file("launched");
  Proc l = launch(2, dense, launched);
  expect_ok(l);
  // Slurm: two tasks of one node, the host list compressed, MASTER_PORT set by the job script
  const std::string slurm = dir.file("slurm");
  const int port = dist::free_port();
  std::vector<Proc> tasks;
  for (int r = 0; r < 2; ++r) {
    tasks.push_back(spawn(SLUICE_BIN, train_args(dense, slurm, {}), log_path("slurm"),
                          {"SLURM_PROCID=" + std::to_string(r), "SLURM_NTASKS=2", "SLURM_LOCALID=" + std::to_string(r),
                           "SLURM_NODEID=0", "SLURM_TASKS_PER_NODE=2", "SLURM_JOB_NODELIST=127.0.0.[1-4]",
                           "SLURM_JOB_ID=77", "MASTER_PORT=" + std::to_string(port)}));
  }
  expect_all_ok(tasks);
  expect_same_metrics(launched, slurm, 0.0);
  expect_same_weights(final_checkpoint(launched), final_checkpoint(slurm), 0.0);
  EXPECT_NE(read_file(slurm + "/train.log").find("from Slurm's variables"), std::string::npos);
  // torchrun from the wheel, when the venv has it
  const std::string torchrun = std::string(SLUICE_SOURCE_DIR) + "/.venv/bin/torchrun";
  if (!fs::exists(torchrun)) GTEST_SKIP() << "no " << torchrun;
  const std::string tr = dir.file("torchrun");
  std::vector<std::string> args = {"--no-python", "--nproc-per-node=2", "--master-port=" + std::to_string(dist::free_port()),
                                   SLUICE_BIN};
  const auto t = train_args(dense, tr, {});
  args.insert(args.end(), t.begin(), t.end());
  Proc p = spawn(torchrun, args, log_path("torchrun"));
  expect_ok(p);
  expect_same_metrics(launched, tr, 0.0);
  expect_same_weights(final_checkpoint(launched), final_checkpoint(tr), 0.0);
}

TEST_F(Dist, ThreadsDefaultToTheCoresSharedByTheRanksOfANode) {
  const std::string run = dir.file("threads");
  Proc l = launch(2, dense, run, {"train.threads=0", "train.steps=2"});
  expect_ok(l);
  const int64_t cores = std::max(1u, std::thread::hardware_concurrency());
  const std::string expected = std::to_string(std::max<int64_t>(1, cores / 2)) + " threads";
  EXPECT_NE(read_file(run + "/train.log").find(expected), std::string::npos) << read_file(run + "/train.log");
  // OMP_NUM_THREADS (torchrun sets 1) wins over the default
  const std::string omp = dir.file("omp");
  Proc o = launch(2, dense, omp, {"train.threads=0", "train.steps=2"}, {"OMP_NUM_THREADS=1"});
  expect_ok(o);
  EXPECT_NE(read_file(omp + "/train.log").find(", 1 threads"), std::string::npos);
}

}  // namespace
}  // namespace sluice
