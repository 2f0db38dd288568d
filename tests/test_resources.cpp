// Running out of resources (issue 24): the pre-flight memory estimate against measured
// allocations, its refusal of a step that cannot fit, a real out-of-memory failure in a step,
// and a full disk (a file-size limit) while writing a checkpoint or a metrics record.
#include <ATen/ATen.h>
#include <c10/util/Logging.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "counting_allocator.h"
#include "process_util.h"
#include "sluice/config.h"
#include "sluice/model.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/memory_estimate.h"
#include "train/safetensors.h"

namespace sluice {
namespace {

namespace fs = std::filesystem;
using testing::CountingCPUAllocator;
using testing::read_file;
using testing::TempDir;
using testing::write_file;

Config step_config() {
  Config c;
  c.model.vocab_size = 512;
  c.model.d_model = 128;
  c.model.n_layers = 3;
  c.model.n_heads = 4;
  c.model.n_kv_heads = 2;
  c.model.ffn_hidden = 352;
  c.data.seq_len = 128;
  c.train.micro_batch = 4;
  return c;
}

// Parameters, gradients and the activations + logits of one forward and backward at their
// highest, measured with LibTorch's CPU allocator counted (fp32).
int64_t measured_step_bytes(const Config& c) {
  at::manual_seed(0);
  CausalLM model(c.model);
  model->set_loss_chunk_tokens(c.train.loss_chunk_tokens);
  model->set_activation_checkpointing(c.train.activation_checkpointing);
  const at::Tensor tokens = at::randint(c.model.vocab_size, {c.train.micro_batch, c.data.seq_len}, at::kLong);
  const at::Tensor targets = at::randint(c.model.vocab_size, {c.train.micro_batch, c.data.seq_len}, at::kLong);
  CountingCPUAllocator counter;
  const int64_t before = counter.live();
  counter.reset_peak();
  model->loss(tokens, targets).backward();
  return counter.peak() - before;
}

TEST(MemoryEstimate, ParametersAreTheBuiltModelsAndExpertParallelismSplitsTheExperts) {
  Config dense = step_config();
  Config g1 = dense;
  g1.model.attention.gate.position = "G1";
  g1.model.qk_norm = true;
  Config moe = dense;
  moe.model.arch = "moe";
  moe.model.moe.n_experts = 4;
  moe.model.moe.shared_experts = 1;
  for (const Config* c : {&dense, &g1, &moe}) {
    const int64_t built = count_parameters(*CausalLM(c->model));
    const MemoryEstimate e = estimate_step_memory(*c, {});
    EXPECT_EQ(e.bytes_of("parameters"), 4 * built);
    EXPECT_EQ(e.bytes_of("gradients"), 4 * built);
    EXPECT_EQ(e.bytes_of("optimizer state"), 8 * built);
  }
  StepMemoryLayout ep;
  ep.world_size = 2;
  ep.expert_parallel = 2;
  const int64_t experts = 3 /* layers */ * 4 /* experts */ * 3 * 128 * 352;
  EXPECT_EQ(estimate_step_memory(moe, ep).bytes_of("parameters"),
            4 * (count_parameters(*CausalLM(moe.model)) - experts / 2));
}

TEST(MemoryEstimate, ShardingCheckpointingAndChunksLowerIt) {
  const Config c = step_config();
  StepMemoryLayout two;
  two.world_size = 2;
  Config zero = c;
  zero.parallel.zero = 1;
  EXPECT_EQ(estimate_step_memory(zero, two).bytes_of("optimizer state"),
            estimate_step_memory(c, {}).bytes_of("optimizer state") / 2);
  EXPECT_GT(estimate_step_memory(c, two).bytes_of("gradient buckets"), 0);  // data parallelism's copies
  auto activations = [&](const char* mode) {
    Config m = c;
    m.train.activation_checkpointing = mode;
    return estimate_step_memory(m, {}).bytes_of("activations");
  };
  EXPECT_LT(activations("full"), activations("selective"));
  EXPECT_LT(activations("selective"), activations("none"));
  Config chunked = c;
  chunked.train.loss_chunk_tokens = 64;
  EXPECT_EQ(estimate_step_memory(chunked, {}).bytes_of("logits") * 8, estimate_step_memory(c, {}).bytes_of("logits"));
  StepMemoryLayout bf16;
  bf16.bf16 = true;
  EXPECT_EQ(estimate_step_memory(c, bf16).bytes_of("activations") * 2, estimate_step_memory(c, {}).bytes_of("activations"));
  Config twice = c;
  twice.train.micro_batch = 8;
  EXPECT_EQ(estimate_step_memory(twice, {}).bytes_of("activations"), 2 * activations("none"));
}

// The estimate's activations + logits + gradients against the measured peak of a step, across
// the settings that change them. Measured when written: 0.97-1.09 for dense settings, 1.21 for
// MoE; the bar is 25% each (the estimate ignores small
// tensors such as norms' statistics, and the peak's exact moment).
TEST(MemoryEstimate, TracksTheMeasuredPeakOfAStep) {
  std::vector<std::pair<std::string, Config>> cases;
  cases.emplace_back("none", step_config());
  Config c = step_config();
  c.train.activation_checkpointing = "full";
  cases.emplace_back("full", c);
  c = step_config();
  c.train.activation_checkpointing = "selective";
  cases.emplace_back("selective", c);
  c = step_config();
  c.train.loss_chunk_tokens = 128;
  cases.emplace_back("chunked", c);
  c = step_config();
  c.model.attention.gate.position = "G1";
  c.model.qk_norm = true;
  cases.emplace_back("g1+qk_norm", c);
  c = step_config();
  c.model.attention.backend = "math";
  cases.emplace_back("math", c);
  c = step_config();
  c.model.arch = "moe";
  c.model.moe.n_experts = 4;
  cases.emplace_back("moe", c);
  for (const auto& [name, cfg] : cases) {
    const MemoryEstimate e = estimate_step_memory(cfg, {});
    const int64_t estimated = e.bytes_of("activations") + e.bytes_of("logits") + e.bytes_of("recomputed block") +
                              e.bytes_of("gradients");
    const int64_t measured = measured_step_bytes(cfg);
    const double ratio = static_cast<double>(estimated) / static_cast<double>(measured);
    std::cout << name << ": estimated " << estimated << " bytes, measured " << measured << " (ratio " << ratio << ")\n";
    EXPECT_GT(ratio, 0.75) << name << ": estimated " << estimated << " bytes, measured " << measured;
    EXPECT_LT(ratio, 1.25) << name << ": estimated " << estimated << " bytes, measured " << measured;
  }
}

// libsentencepiece and libc10 both define a global FLAGS_minloglevel (an absl::Flag<int> and an
// int). When libc10's wins, sentencepiece's static constructor overwrites the c10 statics after
// it, among them this flag, and an allocation failure then aborts the process instead of
// throwing (cmake/SluiceDeps.cmake links sentencepiece first). This binary links both, like
// `sluice`.
TEST(OutOfMemory, CpuAllocationFailuresThrowInsteadOfAborting) {
  EXPECT_FALSE(FLAGS_caffe2_use_fatal_for_enforce);
  EXPECT_THROW(at::empty({int64_t{1} << 62}, at::kByte), c10::Error);  // 4 EiB: the allocator refuses
}

// --- the `sluice` binary: pre-flight refusal, out of memory in a step, a full disk ---------

class Resources : public ::testing::Test {
 protected:
  TempDir dir;
  std::string corpus = write_file(dir.file("corpus.txt"), testing::make_corpus(60000));
  std::string config_file = write_file(dir.file("c.yaml"), "model:\n  d_model: 32\n  n_layers: 2\n  n_heads: 2\n"
                                                          "  n_kv_heads: 1\n  ffn_hidden: 64\n"
                                                          "data:\n  seq_len: 24\n  tokenizer: byte\n"
                                                          "train:\n  micro_batch: 4\n  steps: 4\n"
                                                          "  log_every: 1\n  eval_every: 0\n"
                                                          "  threads: 1\n  device: cpu\n"
                                                          "schedule:\n  warmup_steps: 1\n"
                                                          "log:\n  level: warn\n  file: false\n");

  struct Result {
    int status = -1;
    std::string log;
    bool exited(int code) const { return WIFEXITED(status) && WEXITSTATUS(status) == code; }
  };
  // `sluice train` on the config with `sets`, under `prefix` (e.g. prlimit) and extra environment.
  Result train(const std::string& run, std::vector<std::string> sets, const std::vector<std::string>& prefix = {},
               const std::vector<std::string>& env = {}, int64_t stop_after = 0) const {
    std::vector<std::string> args = prefix;
    args.insert(args.end(), {SLUICE_BIN, "train", config_file, "--run-dir", dir.file(run), "--set",
                             "data.train=" + corpus});
    if (stop_after > 0) args.insert(args.end(), {"--stop-after", std::to_string(stop_after)});
    for (const auto& s : sets) args.insert(args.end(), {"--set", s});
    const std::string program = args.front();
    args.erase(args.begin());
    const std::string log = dir.file(run + ".log");
    testing::Child c = testing::spawn_process(program, args, log, testing::environment_with(env, true));
    Result r;
    r.status = c.wait_status(120);
    r.log = read_file(log);
    return r;
  }
  std::string checkpoints(const std::string& run) const { return dir.file(run + "/checkpoints"); }
  static std::vector<std::string> entries(const std::string& path) {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(path, ec)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
};

TEST_F(Resources, PreflightRefusesAStepThatCannotFitWithTheBreakdownAndWhatToChange) {
  // ~10B parameters: 150+ GiB of weights, gradients and AdamW state on any CI machine.
  const Result r = train("huge", {"model.d_model=8192", "model.n_layers=64", "model.n_heads=64", "model.n_kv_heads=8",
                                  "model.ffn_hidden=0"});
  EXPECT_TRUE(r.exited(2)) << r.log;
  for (const char* words : {"train.memory_check: a training step needs about", "is available", "parameters",
                            "gradients", "optimizer state", "activations", "logits", "train.micro_batch: 1",
                            "train.activation_checkpointing: full", "parallel.zero: 1 on 8 ranks",
                            "Parameters, gradients and optimizer state alone need"})
    EXPECT_NE(r.log.find(words), std::string::npos) << words << "\n" << r.log;
  EXPECT_FALSE(fs::exists(dir.file("huge"))) << "a refused run must not create its run directory";
}

TEST_F(Resources, OutOfMemoryInAStepNamesThePhaseTheKeysAndTheIntactCheckpoint) {
  // 512 windows of 24 tokens per micro-batch: the forward needs ~100 MB more than the process
  // maps when its first step starts, above the 24 MiB the test hook leaves it.
  const std::vector<std::string> big = {"train.micro_batch=512", "train.memory_check=off", "data.val_fraction=0"};
  std::vector<std::string> first = big;
  first.push_back("train.steps=2");
  const Result ok = train("oom", first);
  ASSERT_TRUE(ok.exited(0)) << ok.log;
  const Result r = train("oom", big, {}, {"SLUICE_TEST_ADDRESS_SPACE_HEADROOM_MB=24"});
  EXPECT_TRUE(r.exited(1)) << r.log;
  EXPECT_NE(r.log.find("error: out of memory in the "), std::string::npos) << r.log;
  EXPECT_NE(r.log.find(" pass of step 3 ("), std::string::npos) << r.log;  // the forward or the backward pass
  for (const char* words : {"train.micro_batch (512)", "data.seq_len (24)", "train.activation_checkpointing (none)",
                            "train.loss_chunk_tokens (0)", "model.d_model 32", "step-00000002, is intact"})
    EXPECT_NE(r.log.find(words), std::string::npos) << words << "\n" << r.log;
  EXPECT_EQ(entries(checkpoints("oom")), (std::vector<std::string>{"latest", "step-00000002"}));
  EXPECT_EQ(read_checkpoint_info(*latest_checkpoint(dir.file("oom"))).state.step, 2);
  // and it resumes from there once memory allows
  const Result again = train("oom", big);
  EXPECT_TRUE(again.exited(0)) << again.log;
  EXPECT_EQ(read_checkpoint_info(*latest_checkpoint(dir.file("oom"))).state.step, 4);
}

// RLIMIT_FSIZE stands in for a full disk: writes past it fail with EFBIG (sluice ignores SIGXFSZ).
TEST_F(Resources, AFullDiskDuringACheckpointNamesTheFileKeepsThePreviousOneAndTheResumeMatches) {
  ASSERT_TRUE(train("straight", {"checkpoint.every=2"}).exited(0));
  ASSERT_TRUE(train("full", {"checkpoint.every=2"}, {}, {}, /*stop_after=*/2).exited(0));
  const auto model_bytes = static_cast<int64_t>(fs::file_size(checkpoints("full") + "/step-00000002/model.safetensors"));
  const Result r = train("full", {"checkpoint.every=2"}, {"/usr/bin/prlimit", "--fsize=" + std::to_string(model_bytes / 2)});
  EXPECT_TRUE(r.exited(1)) << r.log;
  for (const char* words : {"error: cannot write the checkpoint of step 4", ".tmp-step-00000004/model.safetensors",
                            "File too large", "The previous checkpoint, ", "step-00000002, is intact"})
    EXPECT_NE(r.log.find(words), std::string::npos) << words << "\n" << r.log;
  EXPECT_EQ(entries(checkpoints("full")), (std::vector<std::string>{"latest", "step-00000002"}));  // no partial one
  // Resumed with space again, the run ends as the uninterrupted one did: the kept checkpoint is whole.
  ASSERT_TRUE(train("full", {"checkpoint.every=2"}).exited(0));
  EXPECT_TRUE(read_file(checkpoints("full") + "/step-00000004/model.safetensors") ==
              read_file(checkpoints("straight") + "/step-00000004/model.safetensors"));
  auto losses = [&](const std::string& run) {
    std::vector<std::pair<int64_t, double>> out;
    std::ifstream in(dir.file(run + "/metrics.jsonl"));
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line);
      out.emplace_back(j["step"].get<int64_t>(), j["loss"].get<double>());
    }
    return out;
  };
  EXPECT_EQ(losses("full"), losses("straight"));
  EXPECT_EQ(losses("full").size(), 4u);
}

TEST_F(Resources, AFullDiskDuringAMetricsRecordNamesTheFileAndLeavesOnlyWholeRecords) {
  ASSERT_TRUE(train("metrics", {"train.steps=20", "checkpoint.every=10"}).exited(0));
  const std::string metrics = dir.file("metrics/metrics.jsonl");
  const auto size = static_cast<int64_t>(fs::file_size(metrics));
  ASSERT_GT(size, static_cast<int64_t>(fs::file_size(dir.file("metrics/config.yaml"))));  // so config.yaml still fits
  const Result r = train("metrics", {"train.steps=30", "checkpoint.every=10"},
                         {"/usr/bin/prlimit", "--fsize=" + std::to_string(size + 40)});
  EXPECT_TRUE(r.exited(1)) << r.log;
  EXPECT_NE(r.log.find("error: cannot write a metrics record (step 21) to " + metrics), std::string::npos) << r.log;
  EXPECT_NE(r.log.find("File too large"), std::string::npos) << r.log;
  std::ifstream in(metrics);
  int records = 0;
  for (std::string line; std::getline(in, line); ++records)
    EXPECT_FALSE(nlohmann::json::parse(line, nullptr, false).is_discarded()) << "a partial record: " << line;
  EXPECT_EQ(records, 20);
  EXPECT_EQ(read_checkpoint_info(*latest_checkpoint(dir.file("metrics"))).state.step, 20);
  const Result again = train("metrics", {"train.steps=30", "checkpoint.every=10"});
  EXPECT_TRUE(again.exited(0)) << again.log;
}

}  // namespace
}  // namespace sluice
