// Expert parallelism, proven by equivalence: E ranks holding E slices of the experts (and
// E x D ranks with D replicas of each slice) against one process holding all of them with the
// same global batch: forward output, loss, every gradient and the global gradient norm
// (ep_worker), losses over 20 training steps and the final weights (`sluice train`), resumes,
// checkpoints that load on other expert-parallel sizes, and the bad starts (exit 2).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "dist_util.h"
#include "train/safetensors.h"

namespace sluice {
namespace {

namespace fs = std::filesystem;
using namespace sluice::testing;
using testing::read_file;
using testing::write_file;

class ExpertParallelJob : public DistJob {
 protected:
  // 4 experts of width 32, top-2, in both layers; `moe_extra` is added to model.moe.
  static std::string config_text(const std::string& moe_extra, const std::string& parallel_extra) {
    return "model:\n  d_model: 32\n  n_layers: 2\n  n_heads: 2\n  n_kv_heads: 1\n  ffn_hidden: 64\n"
           "  vocab_size: 320\n  arch: moe\n  moe:\n    n_experts: 4\n    ffn_hidden: 32\n    top_k: 2\n" + moe_extra +
           "data:\n  tokenizer: byte\n  seq_len: 16\n  val_fraction: 0.1\n"
           "train:\n  micro_batch: 2\n  steps: 20\n  log_every: 1\n  eval_every: 10\n"
           "  eval_batches: 2\n  threads: 1\n  device: cpu\n"
           "optim:\n  lr: 1.0e-3\n"
           "schedule:\n  warmup_steps: 2\n"
           "parallel:\n  timeout_s: 30\n" + parallel_extra +
           "log:\n  level: info\n";
  }
  std::string config(const std::string& name, const std::string& moe_extra, const std::string& parallel = "") {
    return write_file(dir.file(name + ".yaml"), config_text(moe_extra, parallel));
  }

  // The worker on `world` ranks (0: one process without a launcher); waits for all of them.
  std::string run_worker(int world, const std::string& cfg, const std::string& name, int global_batch,
                         const std::vector<std::string>& extra = {}) {
    const std::string out = dir.file("worker-" + name);
    fs::create_directories(out);
    std::vector<std::string> args = {cfg, out, std::to_string(global_batch)};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<Proc> procs;
    if (world == 0) {
      procs.push_back(spawn(EP_WORKER_BIN, args, log_path(name)));
    } else {
      const int port = dist::free_port();
      for (int r = 0; r < world; ++r) {
        procs.push_back(spawn(EP_WORKER_BIN, args, log_path(name + "-rank" + std::to_string(r)),
                              {"RANK=" + std::to_string(r), "WORLD_SIZE=" + std::to_string(world),
                               "LOCAL_RANK=" + std::to_string(r), "LOCAL_WORLD_SIZE=" + std::to_string(world),
                               "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + std::to_string(port)}));
      }
    }
    for (auto& p : procs) EXPECT_TRUE(p.exited_with(0, 120)) << read_file(p.log);
    return out;
  }
};

double rel_diff(const at::Tensor& a, const at::Tensor& b) {
  const double norm = a.norm().item<double>();
  return (a - b).norm().item<double>() / (norm > 0 ? norm : 1.0);
}

// Rank r of `world` (expert-parallel groups of `ep`) against one process: its logits are the
// process's rows r, r + world, ..., its dense gradients the process's, its expert gradients the
// process's slice of experts [(r mod ep)·E/ep, ...); the losses average to the process's.
void expect_equal_to_one_process(const std::string& one_dir, const std::string& ep_dir, int world, int ep,
                                 int64_t n_experts) {
  const SafetensorsFile one = read_safetensors(one_dir + "/rank-0.safetensors");
  const at::Tensor& logits = one.tensors.at("logits");
  const int64_t m = logits.size(0) / world, per = n_experts / ep;
  std::map<std::string, double> loss_sums;
  size_t grads = 0;
  for (int r = 0; r < world; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    const SafetensorsFile mine = read_safetensors(ep_dir + "/rank-" + std::to_string(r) + ".safetensors");
    const at::Tensor rows = at::arange(r, logits.size(0), world, at::kLong);
    ASSERT_EQ(rows.numel(), m);
    EXPECT_LE(rel_diff(logits.index_select(0, rows), mine.tensors.at("logits")), 1e-6);
    EXPECT_NEAR(mine.tensors.at("grad_norm").item<double>(), one.tensors.at("grad_norm").item<double>(),
                1e-6 * one.tensors.at("grad_norm").item<double>());
    for (const auto& [name, t] : mine.tensors) {
      if (name.rfind("loss", 0) == 0) loss_sums[name] += t.item<double>();
      if (name.rfind("grad.", 0) != 0) continue;
      at::Tensor expected = one.tensors.at(name);
      if (name.find(".mlp.experts.") != std::string::npos) {
        ASSERT_EQ(t.size(0), per) << name;
        expected = expected.narrow(0, (r % ep) * per, per);
      }
      ASSERT_EQ(t.sizes(), expected.sizes()) << name;
      EXPECT_LE(rel_diff(expected, t), 1e-5) << name;
      ++grads;
    }
  }
  EXPECT_GT(grads, 0u);
  for (const auto& [name, sum] : loss_sums) {
    const double want = one.tensors.at(name).item<double>();
    EXPECT_NEAR(sum / world, want, 1e-6 * std::abs(want)) << name;
  }
}

struct MoeCase {
  const char* name;
  std::string moe;  // model.moe additions
  bool four_ranks;  // also EP 2 x DP 2 (capacity is counted per expert-parallel group: not with replicas)
};

const std::vector<MoeCase>& moe_cases() {
  static const std::vector<MoeCase> cases = {
      {"softmax top-k, global-batch aux loss, z-loss",
       "    aux_loss_coef: 0.01\n    aux_loss_scope: global_batch\n    z_loss_coef: 0.001\n", true},
      {"sigmoid + aux-loss-free bias", "    scoring: sigmoid\n    bias_update_rate: 0.01\n", true},
      {"shared experts with a gate", "    shared_experts: 1\n    shared_expert_gate: true\n    aux_loss_coef: 0.01\n",
       true},
      {"capacity dropping", "    capacity_factor: 0.6\n    aux_loss_coef: 0.01\n", false},
  };
  return cases;
}

TEST_F(ExpertParallelJob, ForwardLossAndEveryGradientEqualOneProcess) {
  int i = 0;
  for (const MoeCase& c : moe_cases()) {
    SCOPED_TRACE(c.name);
    const std::string name = "c" + std::to_string(i++);
    const std::string one = run_worker(0, config(name + "-one", c.moe), name + "-one", 4);
    const std::string ep2 = run_worker(2, config(name + "-ep2", c.moe, "  expert_parallel: 2\n"), name + "-ep2", 4);
    expect_equal_to_one_process(one, ep2, 2, 2, 4);
    if (c.four_ranks) {
      const std::string ep2dp2 =
          run_worker(4, config(name + "-ep2dp2", c.moe, "  expert_parallel: 2\n"), name + "-ep2dp2", 4);
      expect_equal_to_one_process(one, ep2dp2, 4, 2, 4);
    }
  }
  // The check can fail: without the experts' 1/E scaling or their replica averaging the
  // expert gradients are off by 2x; a mis-ordered exchange sends rows to the wrong experts.
  // Sanity of the comparison itself: one process against a different global batch differs.
  const std::string a = run_worker(0, config("sanity", moe_cases()[0].moe), "sanity-a", 4);
  const std::string b = run_worker(0, config("sanity", moe_cases()[0].moe), "sanity-b", 2);
  const SafetensorsFile fa = read_safetensors(a + "/rank-0.safetensors"), fb = read_safetensors(b + "/rank-0.safetensors");
  EXPECT_GT(rel_diff(fa.tensors.at("grad.model.layers.0.mlp.experts.gate_proj"),
                     fb.tensors.at("grad.model.layers.0.mlp.experts.gate_proj")),
            1e-3);
}

TEST_F(ExpertParallelJob, RanksThatReceiveNoTokensOrAllOfThem) {
  // Layer 0 never routes to rank 1's experts; layer 1 routes every token to rank 1.
  const std::string moe = "    bias_update_rate: 0.01\n    aux_loss_coef: 0.01\n";
  const std::string one = run_worker(0, config("forced-one", moe), "forced-one", 4, {"--force-routing"});
  const std::string ep2 =
      run_worker(2, config("forced-ep2", moe, "  expert_parallel: 2\n"), "forced-ep2", 4, {"--force-routing"});
  expect_equal_to_one_process(one, ep2, 2, 2, 4);
  // rank 1's layer-0 experts saw no token: their gradient is zero, and defined
  const SafetensorsFile r1 = read_safetensors(ep2 + "/rank-1.safetensors");
  EXPECT_EQ(r1.tensors.at("grad.model.layers.0.mlp.experts.gate_proj").abs().max().item<double>(), 0.0);
  EXPECT_GT(r1.tensors.at("grad.model.layers.1.mlp.experts.gate_proj").abs().max().item<double>(), 0.0);
  const SafetensorsFile r0 = read_safetensors(ep2 + "/rank-0.safetensors");
  EXPECT_EQ(r0.tensors.at("grad.model.layers.1.mlp.experts.gate_proj").abs().max().item<double>(), 0.0);
}

TEST_F(ExpertParallelJob, TrainingEqualsOneProcessOverTwentySteps) {
  struct Run {
    const MoeCase* c;
    int world;
    std::string extra;  // --set overrides of the parallel run
  };
  const auto& cases = moe_cases();
  const std::vector<Run> runs = {
      {&cases[0], 2, ""},
      {&cases[0], 4, "parallel.check_every=5"},
      {&cases[1], 2, "parallel.zero=1"},
      {&cases[2], 4, "parallel.zero=1"},
      {&cases[3], 2, ""},
  };
  int i = 0;
  for (const Run& r : runs) {
    SCOPED_TRACE(std::string(r.c->name) + ", " + std::to_string(r.world) + " ranks " + r.extra);
    const std::string cfg = config("train" + std::to_string(i), r.c->moe);
    const std::string a = dir.file("one-" + std::to_string(i)), b = dir.file("ep-" + std::to_string(i));
    ++i;
    Proc p1 = single(cfg, a, {"train.micro_batch=4"});
    std::vector<std::string> sets = {"train.micro_batch=" + std::to_string(4 / r.world), "parallel.expert_parallel=2"};
    if (!r.extra.empty()) sets.push_back(r.extra);
    Proc pn = launch(r.world, cfg, b, sets);
    expect_ok(p1);
    expect_ok(pn);
    expect_same_metrics(a, b, 1e-6);
    expect_same_weights(final_checkpoint(a), final_checkpoint(b), 1e-6);
    const auto ma = metrics(a), mb = metrics(b);
    EXPECT_EQ(ma.back()["moe_load_max"], mb.back()["moe_load_max"]);
    EXPECT_EQ(ma.back()["moe_dropped"], mb.back()["moe_dropped"]);
    EXPECT_NE(read_file(b + "/train.log").find("expert parallel: " + std::to_string(r.world / 2) + " group(s) of 2"),
              std::string::npos);
  }
}

TEST_F(ExpertParallelJob, ResumeAndCheckpointsAcrossExpertParallelSizes) {
  const std::string cfg = config("resume", moe_cases()[2].moe);
  const std::vector<std::string> ep2 = {"train.micro_batch=2", "parallel.expert_parallel=2"};
  const std::string straight = dir.file("straight"), stopped = dir.file("stopped"), moved = dir.file("moved");
  Proc s = launch(2, cfg, straight, ep2);
  std::vector<std::string> first = ep2;
  first.push_back("--stop-after=10");
  Proc p = launch(2, cfg, stopped, first);
  expect_ok(s);
  expect_ok(p);
  fs::copy(stopped, moved, fs::copy_options::recursive);
  // the same expert-parallel size: bitwise the straight run
  Proc q = launch(2, cfg, stopped, ep2);
  // one process holding every expert goes on from the EP 2 checkpoint
  Proc one = single(cfg, moved, {"train.micro_batch=4"});
  expect_ok(q);
  expect_ok(one);
  expect_same_metrics(straight, stopped, 0.0);
  expect_same_weights(final_checkpoint(straight), final_checkpoint(stopped), 0.0);
  expect_same_metrics(straight, moved, 1e-6, 10);
  expect_same_weights(final_checkpoint(straight), final_checkpoint(moved), 1e-6);
  // the checkpoint holds each expert once, whole, under the single-process names
  const SafetensorsFile w = read_safetensors_sharded(final_checkpoint(straight), "model");
  EXPECT_EQ(w.tensors.at("model.layers.1.mlp.experts.down_proj").size(0), 4);
  const SafetensorsFile o = read_safetensors(final_checkpoint(straight) + "/optimizer.safetensors");
  EXPECT_EQ(o.tensors.at("exp_avg.model.layers.1.mlp.experts.down_proj").size(0), 4);

  // and loads on EP 2 and in one process with the same loss on a batch
  const std::string ckpt = final_checkpoint(straight);
  const std::string l1 = run_worker(0, cfg, "init-one", 4, {"--init", ckpt});
  const std::string l2 = run_worker(2, config("init-ep2", moe_cases()[2].moe, "  expert_parallel: 2\n"), "init-ep2", 4,
                                    {"--init", ckpt});
  expect_equal_to_one_process(l1, l2, 2, 2, 4);
}

TEST_F(ExpertParallelJob, BadStartsExitTwoBeforeTraining) {
  const std::string cfg = config("bad", "");
  // n_experts not divisible: a config error, with or without a launcher
  Proc p = single(cfg, dir.file("bad1"), {"parallel.expert_parallel=3"});
  EXPECT_TRUE(p.exited_with(2)) << read_file(p.log);
  EXPECT_NE(read_file(p.log).find("parallel.expert_parallel: (3) must divide model.moe.n_experts (4)"),
            std::string::npos)
      << read_file(p.log);
  // the world size not divisible
  Proc l = launch(2, cfg, dir.file("bad2"), {"parallel.expert_parallel=4"});
  EXPECT_TRUE(l.exited_with(2)) << read_file(l.log);
  EXPECT_NE(read_file(l.log).find("parallel.expert_parallel: 4 ranks per expert-parallel group, but the launcher "
                                  "started 2"),
            std::string::npos)
      << read_file(l.log);
  // a dense model
  const std::string dense = write_file(dir.file("dense.yaml"), "model:\n  d_model: 32\n  n_layers: 1\n  n_heads: 2\n"
                                                              "data:\n  tokenizer: byte\n  seq_len: 16\n"
                                                              "train:\n  device: cpu\n"
                                                              "parallel:\n  expert_parallel: 2\n");
  Proc d = single(dense, dir.file("bad3"));
  EXPECT_TRUE(d.exited_with(2)) << read_file(d.log);
  EXPECT_NE(read_file(d.log).find("but model.arch is not moe"), std::string::npos) << read_file(d.log);
  for (const char* run : {"bad1", "bad2", "bad3"}) EXPECT_FALSE(fs::exists(dir.file(run))) << run;
}

}  // namespace
}  // namespace sluice
