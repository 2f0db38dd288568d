// Shared by the multi-process tests (test_dist, test_expert_parallel): real `sluice` jobs
// started here, each on its own free port, each wait bounded, and the comparisons that prove
// N ranks equal one process (metrics and checkpoint weights within a relative tolerance).
#pragma once
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dist/launcher.h"
#include "process_util.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/safetensors.h"

namespace sluice::testing {

// --- processes ---------------------------------------------------------------------------

using Proc = Child;

// `program` with this process's environment minus any launcher's variables, plus `env_extra`.
inline Proc spawn(const std::string& program, const std::vector<std::string>& args, const std::string& log,
                  const std::vector<std::string>& env_extra = {}) {
  return spawn_process(program, args, log, environment_with(env_extra, /*drop_launcher=*/true));
}

inline std::vector<nlohmann::json> metrics(const std::string& run) {
  std::vector<nlohmann::json> out;
  std::ifstream in(run + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

inline std::string final_checkpoint(const std::string& run) { return latest_checkpoint(run).value_or(run + "/none"); }

// --- the job ----------------------------------------------------------------------------

class DistJob : public ::testing::Test {
 protected:
  TempDir dir;
  std::string corpus = write_file(dir.file("corpus.txt"), make_corpus(60000));
  int job = 0;

  std::vector<std::string> train_args(const std::string& config, const std::string& run,
                                      const std::vector<std::string>& sets) const {
    std::vector<std::string> a = {"train", config, "--run-dir", run, "--set", "data.train=" + corpus};
    for (const auto& s : sets) {
      if (s.rfind("--", 0) != 0) a.push_back("--set");  // "--stop-after=4" and the like go as they are
      a.push_back(s);
    }
    return a;
  }
  std::string log_path(const std::string& name) { return dir.file(name + "-" + std::to_string(job++) + ".log"); }

  // One process, no launcher.
  Proc single(const std::string& config, const std::string& run, const std::vector<std::string>& sets = {}) {
    return spawn(SLUICE_BIN, train_args(config, run, sets), log_path("single"));
  }
  // W ranks through `sluice launch`.
  Proc launch(int world, const std::string& config, const std::string& run, const std::vector<std::string>& sets = {},
              const std::vector<std::string>& env = {}) {
    std::vector<std::string> a = {"launch", "--nproc", std::to_string(world), "--"};
    const auto t = train_args(config, run, sets);
    a.insert(a.end(), t.begin(), t.end());
    return spawn(SLUICE_BIN, a, log_path("launch"), env);
  }
  // W ranks started here with torchrun's variables, so the test holds every rank's pid.
  std::vector<Proc> ranks(int world, const std::string& config, const std::string& run,
                          const std::vector<std::string>& sets = {}, const std::vector<std::string>& env = {},
                          int port = 0) {
    if (port == 0) port = dist::free_port();
    std::vector<Proc> out;
    for (int r = 0; r < world; ++r) {
      std::vector<std::string> e = {"RANK=" + std::to_string(r), "WORLD_SIZE=" + std::to_string(world),
                                    "LOCAL_RANK=" + std::to_string(r), "LOCAL_WORLD_SIZE=" + std::to_string(world),
                                    "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + std::to_string(port)};
      e.insert(e.end(), env.begin(), env.end());
      out.push_back(spawn(SLUICE_BIN, train_args(config, run, sets), log_path("rank" + std::to_string(r)), e));
    }
    return out;
  }
  static void expect_ok(Proc& p) { EXPECT_TRUE(p.exited_with(0)) << read_file(p.log); }
  static void expect_all_ok(std::vector<Proc>& ps) {
    for (auto& p : ps) expect_ok(p);
  }
};

// Every logged loss, validation loss and gradient norm within `rel` (relative), same steps.
inline void expect_same_metrics(const std::string& a_run, const std::string& b_run, double rel, int64_t from_step = 0) {
  const auto a = metrics(a_run), b = metrics(b_run);
  std::map<int64_t, nlohmann::json> by_step;
  for (const auto& r : b) by_step[r["step"].get<int64_t>()] = r;
  size_t compared = 0;
  for (const auto& r : a) {
    const int64_t step = r["step"].get<int64_t>();
    if (step <= from_step) continue;
    ASSERT_TRUE(by_step.count(step)) << b_run << " has no record of step " << step;
    for (const char* k : {"loss", "val_loss", "grad_norm", "aux_loss", "z_loss"}) {
      ASSERT_EQ(r.contains(k), by_step[step].contains(k)) << k << " at step " << step;
      if (!r.contains(k)) continue;
      const double x = r[k].get<double>(), y = by_step[step][k].get<double>();
      if (rel == 0) {
        EXPECT_EQ(x, y) << k << " at step " << step;
      } else {
        EXPECT_LE(std::abs(x - y), rel * std::abs(x)) << k << " at step " << step << ": " << x << " vs " << y;
      }
      ++compared;
    }
  }
  EXPECT_GT(compared, 0u);
}

// The two checkpoints' weights: bitwise with rel 0; else the whole parameter vector within
// `rel` (relative L2 norm of the difference) and each tensor within 10·rel, so a tensor that
// missed its gradient averaging (differences of 1e-3 and more) still stands out while small
// tensors (o_proj starts at init_std/sqrt(2·n_layers)) keep rounding noise of a few 1e-6.
inline void expect_same_weights(const std::string& a_ckpt, const std::string& b_ckpt, double rel) {
  const SafetensorsFile a = read_safetensors_sharded(a_ckpt, "model"), b = read_safetensors_sharded(b_ckpt, "model");
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  double diff_sq = 0, norm_sq = 0;
  for (const auto& [name, t] : a.tensors) {
    ASSERT_TRUE(b.tensors.count(name)) << name;
    const at::Tensor& u = b.tensors.at(name);
    if (rel == 0) {
      EXPECT_TRUE(at::equal(t, u)) << name;
      continue;
    }
    const double diff = (t - u).norm().item<double>(), norm = t.norm().item<double>();
    EXPECT_LE(diff, 10 * rel * norm) << name << ": relative difference " << diff / norm;
    diff_sq += diff * diff;
    norm_sq += norm * norm;
  }
  if (rel > 0) EXPECT_LE(std::sqrt(diff_sq), rel * std::sqrt(norm_sq)) << "relative difference " << std::sqrt(diff_sq / norm_sq);
}

}  // namespace sluice::testing
