// Optimizer, schedules, clipping, and short end-to-end training runs on the CPU.
#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "data/prepare.h"
#include "sluice/config.h"
#include "sluice/tokenizer.h"
#include "sluice/errors.h"
#include "sluice/trainer.h"
#include "test_util.h"
#include "train/adamw.h"
#include "train/grad_clip.h"
#include "train/schedule.h"
#include "train/train_step.h"

namespace sluice {
namespace {

using testing::TempDir;

TEST(AdamW, MatchesTextbookUpdateWithDecoupledDecay) {
  OptimConfig cfg;
  cfg.weight_decay = 0.1;
  cfg.beta1 = 0.8;
  cfg.beta2 = 0.9;
  cfg.eps = 1e-6;
  at::manual_seed(0);
  at::Tensor w = at::randn({5, 3}, at::kDouble).to(at::kFloat).requires_grad_(true);
  at::Tensor n = at::randn({3}).requires_grad_(true);  // a norm weight: no decay
  AdamW opt({{"layer.q_proj.weight", w}, {"layer.input_layernorm.weight", n}}, cfg);

  // reference in fp64
  std::vector<at::Tensor> p = {w.detach().to(at::kDouble), n.detach().to(at::kDouble)};
  std::vector<at::Tensor> m = {at::zeros_like(p[0]), at::zeros_like(p[1])}, v = m;
  v = {at::zeros_like(p[0]), at::zeros_like(p[1])};
  const double lrs[] = {1e-2, 5e-3, 2e-2};
  for (int t = 1; t <= 3; ++t) {
    const at::Tensor gw = at::randn({5, 3}), gn = at::randn({3});
    w.mutable_grad() = gw.clone();
    n.mutable_grad() = gn.clone();
    opt.step(lrs[t - 1]);
    opt.zero_grad();
    const at::Tensor g[] = {gw.to(at::kDouble), gn.to(at::kDouble)};
    for (int i = 0; i < 2; ++i) {
      const double wd = i == 0 ? cfg.weight_decay : 0.0;
      p[i] = p[i] * (1 - lrs[t - 1] * wd);
      m[i] = cfg.beta1 * m[i] + (1 - cfg.beta1) * g[i];
      v[i] = cfg.beta2 * v[i] + (1 - cfg.beta2) * g[i] * g[i];
      const double bc1 = 1 - std::pow(cfg.beta1, t), bc2 = 1 - std::pow(cfg.beta2, t);
      p[i] = p[i] - lrs[t - 1] * (m[i] / bc1) / (at::sqrt(v[i] / bc2) + cfg.eps);
    }
  }
  EXPECT_LE((w.detach().to(at::kDouble) - p[0]).abs().max().item<double>(), 1e-6);
  EXPECT_LE((n.detach().to(at::kDouble) - p[1]).abs().max().item<double>(), 1e-6);
  EXPECT_FALSE(w.grad().defined());
}

TEST(AdamW, DecayGroups) {
  const std::vector<std::string> all = {"norm", "bias", "embedding"};
  EXPECT_TRUE(excluded_from_decay("model.layers.0.input_layernorm.weight", all));
  EXPECT_TRUE(excluded_from_decay("model.norm.weight", all));
  EXPECT_TRUE(excluded_from_decay("model.layers.0.self_attn.q_norm.weight", all));
  EXPECT_TRUE(excluded_from_decay("model.embed_tokens.weight", all));
  EXPECT_TRUE(excluded_from_decay("model.layers.0.self_attn.g_proj.bias", all));
  EXPECT_FALSE(excluded_from_decay("model.layers.0.self_attn.q_proj.weight", all));
  EXPECT_FALSE(excluded_from_decay("lm_head.weight", all));
  EXPECT_FALSE(excluded_from_decay("model.embed_tokens.weight", {"norm"}));
  EXPECT_FALSE(excluded_from_decay("model.norm.weight", {}));
}

TEST(Schedule, WarmupCosineLinearConstantWsd) {
  ScheduleConfig s;
  s.warmup_steps = 10;
  s.min_lr_ratio = 0.1;
  const double peak = 1.0;
  s.kind = "cosine";
  EXPECT_DOUBLE_EQ(learning_rate(s, peak, 1, 110), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate(s, peak, 10, 110), 1.0);
  EXPECT_NEAR(learning_rate(s, peak, 60, 110), 0.55, 1e-12);  // half-way: (1 + 0.1) / 2
  EXPECT_NEAR(learning_rate(s, peak, 110, 110), 0.1, 1e-12);
  s.kind = "linear";
  EXPECT_NEAR(learning_rate(s, peak, 60, 110), 0.55, 1e-12);
  EXPECT_NEAR(learning_rate(s, peak, 35, 110), 1.0 - 0.9 * 0.25, 1e-12);
  s.kind = "constant";
  EXPECT_DOUBLE_EQ(learning_rate(s, peak, 100, 110), 1.0);
  s.kind = "wsd";
  s.decay_fraction = 0.2;  // last 20 of 100 steps decay
  EXPECT_DOUBLE_EQ(learning_rate(s, peak, 80, 100), 1.0);
  EXPECT_NEAR(learning_rate(s, peak, 90, 100), 0.55, 1e-12);
  EXPECT_NEAR(learning_rate(s, peak, 100, 100), 0.1, 1e-12);
  s.warmup_steps = 0;
  s.kind = "cosine";
  EXPECT_DOUBLE_EQ(learning_rate(s, peak, 0, 100), 1.0);
}

TEST(GradClip, ReturnsNormAndClips) {
  at::Tensor a = at::zeros({2}).requires_grad_(true), b = at::zeros({1}).requires_grad_(true);
  a.mutable_grad() = at::tensor({3.0f, 0.0f});
  b.mutable_grad() = at::tensor({4.0f});
  const at::Tensor norm = clip_grad_norm({a, b}, 1.0);
  EXPECT_NEAR(norm.item<double>(), 5.0, 1e-6);
  EXPECT_NEAR(a.grad()[0].item<double>(), 3.0 / 5.0, 1e-5);
  EXPECT_NEAR(b.grad()[0].item<double>(), 4.0 / 5.0, 1e-5);
  // below the threshold nothing changes
  EXPECT_NEAR(clip_grad_norm({a, b}, 10.0).item<double>(), 1.0, 1e-5);
  EXPECT_NEAR(b.grad()[0].item<double>(), 4.0 / 5.0, 1e-5);
}

class TrainRun : public ::testing::Test {
 protected:
  TempDir dir;
  std::string corpus = testing::write_file(dir.file("corpus.txt"), testing::make_corpus(60000));

  LoadedConfig config(std::vector<std::string> extra = {}) const {
    std::vector<std::string> sets = {"data.train=" + corpus, "model.d_model=32", "model.n_layers=2",
                                     "model.n_heads=2",      "model.n_kv_heads=1", "model.ffn_hidden=64",
                                     "data.seq_len=32",      "train.micro_batch=8", "train.steps=30",
                                     "train.log_every=1",    "train.eval_every=10", "train.eval_batches=2",
                                     "schedule.warmup_steps=5", "optim.lr=3e-3", "train.threads=1",
                                     "train.device=cpu",     "log.level=warn"};
    sets.insert(sets.end(), extra.begin(), extra.end());
    return load_config_text("{}", "test", sets);
  }
  TrainSummary run(const LoadedConfig& cfg, const std::string& name) const {
    TrainOptions opts;
    opts.run_dir = dir.file(name);
    return train(cfg, opts);
  }
};

TEST_F(TrainRun, LossFallsAndRunDirIsComplete) {
  const TrainSummary s = run(config(), "run");
  ASSERT_EQ(s.logged_losses.size(), 30u);
  const double first = s.logged_losses.front(), last = s.logged_losses.back();
  EXPECT_NEAR(first, std::log(320.0), 0.3);  // near uniform over the 320 rows (259 byte tokens, padded)
  EXPECT_LT(last, first - 1.5) << "30 steps on repetitive text should cut the loss clearly";
  EXPECT_TRUE(std::isfinite(s.final_val_loss));

  for (const char* f : {"config.yaml", "metrics.jsonl", "summary.json", "train.log"})
    EXPECT_TRUE(std::filesystem::exists(dir.file(std::string("run/") + f))) << f;
  // the written config reproduces the run's config
  const LoadedConfig again = load_config(dir.file("run/config.yaml"), {});
  EXPECT_EQ(to_yaml(again.config), to_yaml(config().config));

  std::ifstream in(dir.file("run/metrics.jsonl"));
  int records = 0, with_val = 0;
  for (std::string line; std::getline(in, line); ++records) {
    const auto j = nlohmann::json::parse(line);
    for (const char* k : {"step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s"}) EXPECT_TRUE(j.contains(k)) << k;
    EXPECT_FALSE(j.contains("mfu"));  // no MFU on the CPU
    with_val += j.contains("val_loss");
  }
  EXPECT_EQ(records, 30);
  EXPECT_EQ(with_val, 3);  // steps 10, 20, 30
}

TEST_F(TrainRun, SameSeedSameLossCurveBitwise) {
  const TrainSummary a = run(config(), "a");
  const TrainSummary b = run(config(), "b");
  ASSERT_EQ(a.logged_losses.size(), b.logged_losses.size());
  for (size_t i = 0; i < a.logged_losses.size(); ++i) EXPECT_EQ(a.logged_losses[i], b.logged_losses[i]) << i;
  EXPECT_EQ(a.final_val_loss, b.final_val_loss);
  const TrainSummary c = run(config({"train.seed=7"}), "c");
  EXPECT_NE(a.logged_losses.back(), c.logged_losses.back());
}

// train.deterministic turns PyTorch's deterministic algorithms on for the run only (restored
// after) and says so in train.log; on the CPU, whose path is deterministic anyway, the loss
// curve is bitwise the default's.
TEST_F(TrainRun, DeterministicAlgorithmsForTheRunOnly) {
  ASSERT_FALSE(at::globalContext().deterministicAlgorithms());
  const TrainSummary plain = run(config(), "plain");
  const TrainSummary det = run(config({"train.deterministic=true", "log.level=info"}), "det");
  EXPECT_FALSE(at::globalContext().deterministicAlgorithms()) << "the setting must not outlive the run";
  ASSERT_EQ(plain.logged_losses.size(), det.logged_losses.size());
  for (size_t i = 0; i < plain.logged_losses.size(); ++i) EXPECT_EQ(plain.logged_losses[i], det.logged_losses[i]) << i;
  EXPECT_EQ(plain.final_val_loss, det.final_val_loss);
  const std::string log_text = testing::read_file(dir.file("det/train.log"));
  EXPECT_NE(log_text.find("train.deterministic: PyTorch's deterministic algorithms on"), std::string::npos) << log_text;
  EXPECT_EQ(testing::read_file(dir.file("plain/train.log")).find("train.deterministic"), std::string::npos);
}

// train.activation_checkpointing recomputes in backward what none keeps: on the CPU, full's loss
// curve and validation loss are bitwise none's, selective's equal up to fp32 summation order.
TEST_F(TrainRun, ActivationCheckpointingKeepsTheLossCurveBitwise) {
  const std::vector<std::string> shorter = {"train.steps=10", "model.attention.gate.position=G1"};
  const TrainSummary plain = run(config(shorter), "none");
  for (const std::string mode : {"selective", "full"}) {
    std::vector<std::string> sets = shorter;
    sets.push_back("train.activation_checkpointing=" + mode);
    const TrainSummary s = run(config(sets), mode);
    ASSERT_EQ(s.logged_losses.size(), plain.logged_losses.size()) << mode;
    if (mode == "full") {
      for (size_t i = 0; i < s.logged_losses.size(); ++i) EXPECT_EQ(s.logged_losses[i], plain.logged_losses[i]) << i;
      EXPECT_EQ(s.final_val_loss, plain.final_val_loss);
    } else {  // the norms' input gradients are summed in another order
      for (size_t i = 0; i < s.logged_losses.size(); ++i) {
        EXPECT_NEAR(s.logged_losses[i], plain.logged_losses[i], 1e-5 * plain.logged_losses[i]) << i;
      }
      EXPECT_NEAR(s.final_val_loss, plain.final_val_loss, 1e-5 * plain.final_val_loss);
    }
  }
  EXPECT_THROW(config({"train.activation_checkpointing=blocks"}), InputError);
}

TEST(TrainStep, GradAccumulationEqualsOneLargeBatch) {
  ModelConfig m;
  m.vocab_size = 64;
  m.d_model = 16;
  m.n_layers = 1;
  m.n_heads = 2;
  m.n_kv_heads = 2;
  m.ffn_hidden = 32;
  const at::Tensor x = at::randint(64, {8, 12}, at::kLong), y = at::randint(64, {8, 12}, at::kLong);
  std::vector<at::Tensor> after;
  std::vector<double> norms;
  // Adam's first step is ~lr·sign(g): for gradients near eps it would amplify the rounding
  // differences of a different summation order, so eps is large enough to keep the update a
  // smooth function of g (|Δupdate| <= lr·|Δg|/eps ~ 1e-2·1e-8/1e-3).
  OptimConfig oc;
  oc.eps = 1e-3;
  for (int split : {1, 2, 4}) {
    at::manual_seed(0);
    CausalLM model(m);
    std::vector<std::pair<std::string, at::Tensor>> named;
    for (const auto& p : model->named_parameters()) named.emplace_back(p.key(), p.value());
    AdamW opt(named, oc);
    TrainStep step(model, opt, /*grad_clip=*/0.5, at::kCPU, /*bf16=*/false);
    std::vector<Batch> micro;
    for (int i = 0; i < split; ++i) micro.push_back({x.chunk(split)[i], y.chunk(split)[i]});
    const auto r = step.run(micro, 1e-2);
    after.push_back(model->named_parameters()["model.layers.0.mlp.up_proj.weight"].detach().clone());
    norms.push_back(r.grad_norm.item<double>());
    if (split > 1) {
      EXPECT_LE((after.back() - after.front()).abs().max().item<double>(), 1e-6) << split;
      EXPECT_NEAR(norms.back(), norms.front(), 1e-5 * norms.front()) << split;
    }
    EXPECT_GT(norms.back(), 0.0);
  }
}

// A training step never reads a device value on the host (Tensor::item, i.e.
// aten::_local_scalar_dense): the loss, gradient norm and skip flag stay device tensors until
// the logging interval. Counted with a RecordFunction callback on this thread, which also runs
// CPU autograd and the optimizer. ATen's CPU `_fused_adamw_` reads each step count with item()
// inside its kernel (its CUDA kernel does not); reads inside it are not Sluice's and not counted.
std::atomic<int> scalar_reads{0}, inside_fused_adamw{0};
std::unique_ptr<at::ObserverContext> on_op_start(const at::RecordFunction& fn) {
  const std::string_view name(fn.name());
  if (name == "aten::_fused_adamw_") ++inside_fused_adamw;
  if (name == "aten::_local_scalar_dense" && inside_fused_adamw == 0) ++scalar_reads;
  return nullptr;
}
void on_op_end(const at::RecordFunction& fn, at::ObserverContext*) {
  if (std::string_view(fn.name()) == "aten::_fused_adamw_") --inside_fused_adamw;
}

TEST(TrainStep, ReadsNoScalarOnTheHost) {
  for (const bool moe : {false, true}) {
    SCOPED_TRACE(moe ? "moe" : "dense");
    ModelConfig m;
    m.vocab_size = 64;
    m.d_model = 16;
    m.n_layers = 2;
    m.n_heads = 2;
    m.n_kv_heads = 2;
    m.ffn_hidden = 32;
    if (moe) {
      m.arch = "moe";
      m.moe.n_experts = 4;
      m.moe.top_k = 2;
      m.moe.ffn_hidden = 16;
      m.moe.aux_loss_coef = 0.01;
      m.moe.aux_loss_scope = "global_batch";
      m.moe.bias_update_rate = 0.01;
      m.moe.capacity_factor = 1.0;
    }
    at::manual_seed(0);
    CausalLM model(m);
    std::vector<std::pair<std::string, at::Tensor>> named;
    for (const auto& p : model->named_parameters()) named.emplace_back(p.key(), p.value());
    AdamW opt(named, OptimConfig{});
    TrainStep step(model, opt, /*grad_clip=*/0.5, at::kCPU, /*bf16=*/false);
    const std::vector<Batch> micro = {{at::randint(64, {2, 12}, at::kLong), at::randint(64, {2, 12}, at::kLong)},
                                      {at::randint(64, {2, 12}, at::kLong), at::randint(64, {2, 12}, at::kLong)}};
    step.run(micro, 1e-3);  // first-step allocations outside the count
    const auto handle = at::addThreadLocalCallback(at::RecordFunctionCallback(on_op_start, on_op_end));
    scalar_reads = 0;
    for (int i = 0; i < 2; ++i) step.run(micro, 1e-3);
    const int in_steps = scalar_reads.load();
    (void)at::ones({1}).item<float>();  // the counter sees a read when there is one
    const int with_one = scalar_reads.load();
    at::removeCallback(handle);
    EXPECT_EQ(in_steps, 0);
    EXPECT_EQ(with_one, 1);
  }
}

TEST_F(TrainRun, ExistingRunDirIsRefusedBeforeAnythingChanges) {
  run(config({"train.steps=2", "schedule.warmup_steps=1"}), "once");
  const std::string before = testing::read_file(dir.file("once/metrics.jsonl"));
  EXPECT_THROW(run(config({"train.steps=2", "schedule.warmup_steps=1"}), "once"), InputError);
  EXPECT_EQ(testing::read_file(dir.file("once/metrics.jsonl")), before);
}

TEST_F(TrainRun, TooLittleDataIsBadInputAndCreatesNothing) {
  const std::string tiny = testing::write_file(dir.file("tiny.txt"), "short text");
  EXPECT_THROW(run(config({"data.train=" + tiny}), "never"), InputError);
  EXPECT_FALSE(std::filesystem::exists(dir.file("never")));
}

TEST_F(TrainRun, TrainsFromPreparedShardsAndChecksTheTokenizer) {
  PrepareOptions p;
  p.tokenizer = "byte";
  std::vector<std::string> docs;
  for (int i = 0; i < 20; ++i) docs.push_back(testing::write_file(dir.file("doc" + std::to_string(i) + ".txt"), testing::make_corpus(3000)));
  p.inputs = docs;
  p.out_dir = dir.file("ds");
  p.val_fraction = 0.1;
  p.progress = false;
  prepare_shards(p);
  const TrainSummary s = run(config({"data.train=" + dir.file("ds"), "train.steps=15"}), "shards");
  EXPECT_LT(s.logged_losses.back(), s.logged_losses.front() - 0.5);
  EXPECT_TRUE(std::isfinite(s.final_val_loss));  // from the dataset's val split
  std::ifstream in(dir.file("shards/metrics.jsonl"));
  std::string line;
  std::getline(in, line);
  EXPECT_TRUE(nlohmann::json::parse(line).contains("data_wait_ms"));

  // a dataset prepared with another tokenizer is refused before the run directory exists
  TokenizerTrainingOptions t;
  t.inputs = docs;
  t.vocab_size = 300;
  t.out_dir = dir.file("tok");
  t.threads = 1;
  train_tokenizer(t);
  try {
    run(config({"data.train=" + dir.file("ds"), "data.tokenizer=" + dir.file("tok")}), "mismatch");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("prepared with tokenizer"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir.file("mismatch")));
}

}  // namespace
}  // namespace sluice
