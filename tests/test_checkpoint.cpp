// Checkpoints: safetensors, exact resume, kill and signal safety, corruption, non-finite steps.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <functional>
#include <map>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "sluice/config.h"
#include "sluice/errors.h"
#include "sluice/trainer.h"
#include "process_util.h"
#include "shell_command.h"
#include "test_util.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/safetensors.h"

extern char** environ;

namespace sluice {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using testing::read_file;
using testing::write_file;

// --- safetensors ------------------------------------------------------------------------

// An independent minimal reader: 8-byte little-endian length, JSON header, raw data.
TEST(Safetensors, IndependentReaderSeesWhatWasWritten) {
  TempDir dir;
  const at::Tensor a = at::arange(12, at::kFloat).view({3, 4}), b = at::tensor({7, -1}, at::kLong);
  const at::Tensor c = at::randn({5}).to(at::kBFloat16);
  write_safetensors(dir.file("x.safetensors"), {{"model.a", a}, {"b", b}, {"c", c}}, {{"format", "pt"}});

  const std::string bytes = read_file(dir.file("x.safetensors"));
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  ASSERT_LT(n, bytes.size());
  EXPECT_EQ((8 + n) % 8, 0u) << "data is 8-byte aligned";
  const auto h = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(h["__metadata__"]["format"], "pt");
  EXPECT_EQ(h["model.a"]["dtype"], "F32");
  EXPECT_EQ(h["model.a"]["shape"], nlohmann::json({3, 4}));
  EXPECT_EQ(h["b"]["dtype"], "I64");
  EXPECT_EQ(h["c"]["dtype"], "BF16");
  const uint64_t data = 8 + n;
  const auto off = h["model.a"]["data_offsets"];
  ASSERT_EQ(off[1].get<uint64_t>() - off[0].get<uint64_t>(), 48u);
  float v[12];
  std::memcpy(v, bytes.data() + data + off[0].get<uint64_t>(), 48);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(v[i], static_cast<float>(i));
  int64_t bv[2];
  std::memcpy(bv, bytes.data() + data + h["b"]["data_offsets"][0].get<uint64_t>(), 16);
  EXPECT_EQ(bv[0], 7);
  EXPECT_EQ(bv[1], -1);
  EXPECT_EQ(bytes.size(), data + h["c"]["data_offsets"][1].get<uint64_t>());

  const SafetensorsFile back = read_safetensors(dir.file("x.safetensors"));
  EXPECT_TRUE(at::equal(back.tensors.at("model.a"), a));
  EXPECT_TRUE(at::equal(back.tensors.at("c"), c));
}

TEST(Safetensors, ShardsWithAHuggingFaceIndex) {
  TempDir dir;
  NamedTensors ts;
  for (int i = 0; i < 5; ++i) ts.emplace_back("w" + std::to_string(i), at::full({256}, static_cast<float>(i)));
  const auto files = write_safetensors_sharded(dir.path(), "model", ts, /*max_shard_bytes=*/2100);
  ASSERT_EQ(files.size(), 4u);  // 1 KiB tensors, two per 2100-byte shard: 3 shards + index
  EXPECT_EQ(files[0], "model-00001-of-00003.safetensors");
  const auto index = nlohmann::json::parse(read_file(dir.file("model.safetensors.index.json")));
  EXPECT_EQ(index["metadata"]["total_size"], 5 * 1024);
  EXPECT_EQ(index["weight_map"]["w4"], "model-00003-of-00003.safetensors");
  const SafetensorsFile back = read_safetensors_sharded(dir.path(), "model");
  for (int i = 0; i < 5; ++i) EXPECT_EQ(back.tensors.at("w" + std::to_string(i))[0].item<float>(), i);

  // An index that cannot be read names itself (a directory used to read as empty, then as bad JSON).
  TempDir other;
  const std::string index_path = other.file("model.safetensors.index.json");
  fs::create_directory(index_path);
  try {
    read_safetensors_sharded(other.path(), "model");
    ADD_FAILURE() << "an unreadable index was accepted";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), "checkpoint file '" + index_path + "' cannot be read");
  }
}

TEST(AdamW, FoundInfSkipsTheUpdateAndTheStepCount) {
  at::Tensor w = at::ones({3}).requires_grad_(true);
  AdamW opt({{"w", w}}, OptimConfig{});
  w.mutable_grad() = at::ones({3});
  opt.step(0.1, at::ones({}));  // found_inf = 1
  EXPECT_TRUE(at::equal(w.detach(), at::ones({3})));
  EXPECT_EQ(opt.groups()[0].params[0].step.item<float>(), 0.0f);
  w.mutable_grad() = at::ones({3});
  opt.step(0.1, at::zeros({}));
  EXPECT_LT(w[0].item<float>(), 1.0f);
  EXPECT_EQ(opt.groups()[0].params[0].step.item<float>(), 1.0f);
}

// --- training runs ---------------------------------------------------------------------

class Ckpt : public ::testing::Test {
 protected:
  TempDir dir;
  std::string corpus = write_file(dir.file("corpus.txt"), testing::make_corpus(40000));
  std::string config_file = write_file(dir.file("c.yaml"), "model:\n  d_model: 32\n  n_layers: 2\n  n_heads: 2\n"
                                                          "  n_kv_heads: 1\n  ffn_hidden: 64\n"
                                                          "data:\n  seq_len: 24\n  prefetch: 2\n"
                                                          "train:\n  micro_batch: 4\n  grad_accum: 2\n  steps: 14\n"
                                                          "  log_every: 3\n  eval_every: 5\n  eval_batches: 2\n"
                                                          "  threads: 1\n  device: cpu\n"
                                                          "schedule:\n  warmup_steps: 3\n"
                                                          "log:\n  level: warn\n");
  LoadedConfig config(std::vector<std::string> extra = {}) const {
    extra.insert(extra.begin(), "data.train=" + corpus);
    return load_config(config_file, extra);
  }
  TrainSummary run(const std::string& name, std::vector<std::string> extra = {}, int64_t stop_after = 0) const {
    TrainOptions o;
    o.run_dir = dir.file(name);
    o.stop_after = stop_after;
    return train(config(extra), o);
  }
  static std::vector<nlohmann::json> metrics(const std::string& run) {
    std::vector<nlohmann::json> out;
    std::ifstream in(run + "/metrics.jsonl");
    for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
    return out;
  }
};

TEST_F(Ckpt, ResumeReproducesTheStraightRunBitwise) {
  run("straight");
  const TrainSummary first = run("resumed", {}, /*stop_after=*/7);  // mid log interval, mid eval interval
  EXPECT_TRUE(first.stopped_by_signal);
  EXPECT_EQ(first.steps, 7);
  const TrainSummary second = run("resumed");
  EXPECT_EQ(second.resumed_from_step, 7);
  EXPECT_EQ(second.steps, 14);

  const auto a = metrics(dir.file("straight")), b = metrics(dir.file("resumed"));
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["step"], b[i]["step"]);
    for (const char* k : {"loss", "grad_norm", "lr", "val_loss"}) {
      ASSERT_EQ(a[i].contains(k), b[i].contains(k)) << k;
      if (a[i].contains(k)) EXPECT_EQ(a[i][k].get<double>(), b[i][k].get<double>()) << k << " at step " << a[i]["step"];
    }
  }
  // final weights and optimizer state are identical files' contents
  const SafetensorsFile wa = read_safetensors(dir.file("straight/checkpoints/step-00000014/model.safetensors"));
  const SafetensorsFile wb = read_safetensors(dir.file("resumed/checkpoints/step-00000014/model.safetensors"));
  ASSERT_EQ(wa.tensors.size(), wb.tensors.size());
  for (const auto& [name, t] : wa.tensors) EXPECT_TRUE(at::equal(t, wb.tensors.at(name))) << name;
  EXPECT_EQ(read_file(dir.file("straight/checkpoints/step-00000014/optimizer.safetensors")),
            read_file(dir.file("resumed/checkpoints/step-00000014/optimizer.safetensors")));
}

// RUN_DIR/tb/ read by TensorBoard's own reader (tensorboard.backend.event_processing): every
// number of every metrics record at its step, once, also when a resumed run re-logs the steps
// a killed run had logged after its last checkpoint.
TEST_F(Ckpt, TensorBoardsReaderSeesEveryScalarOnceAfterAResume) {
  run("tb", {"checkpoint.every=5"}, /*stop_after=*/12);
  // killed after logging step 12, before its checkpoint: the run resumes from step 10
  ASSERT_TRUE(remove_tree(dir.file("tb/checkpoints/step-00000012")));
  write_file(dir.file("tb/checkpoints/latest"), "step-00000010\n");
  EXPECT_EQ(run("tb").resumed_from_step, 10);

  const std::string out = dir.file("scalars.json");
  const std::string read_tb = std::string(SLUICE_SOURCE_DIR) + "/tests/read_tensorboard.py";
  const std::string cmd = testing::redirected(testing::python_command({read_tb, dir.file("tb/tb")}), out, out + ".err");
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_file(out + ".err");
  const nlohmann::json tb = nlohmann::json::parse(read_file(out));
  std::map<std::string, std::vector<std::pair<int64_t, float>>> want;
  for (const nlohmann::json& rec : metrics(dir.file("tb"))) {
    for (const auto& [key, v] : rec.items())
      if (key != "step" && v.is_number()) want[key].emplace_back(rec["step"].get<int64_t>(), v.get<float>());
  }
  ASSERT_GE(want["loss"].size(), 5u);
  EXPECT_EQ(want["val_loss"].size(), 3u);  // steps 5, 10, 14
  for (const char* k : {"loss", "lr", "grad_norm", "tokens_per_s", "val_loss"}) EXPECT_TRUE(want.count(k)) << k;
  EXPECT_EQ(tb.size(), want.size());
  for (const auto& [tag, points] : want) {
    ASSERT_TRUE(tb.contains(tag)) << tag;
    ASSERT_EQ(tb[tag].size(), points.size()) << tag << ": " << tb[tag].dump();
    for (size_t i = 0; i < points.size(); ++i) {
      EXPECT_EQ(tb[tag][i][0].get<int64_t>(), points[i].first) << tag;
      EXPECT_EQ(tb[tag][i][1].get<float>(), points[i].second) << tag << " at step " << points[i].first;
    }
  }
  // `sluice eval ppl` of the run's checkpoint: its results at the checkpoint's step in tb/eval/
  const std::string eval_cmd =
      testing::redirected(testing::shell_command({SLUICE_BIN, "eval", "ppl", "--ckpt", dir.file("tb"), "--data", corpus,
                                                  "--seq-len", "16,24", "--max-docs", "1", "--out", dir.file("ppl.json")}),
                          out + ".eval");
  ASSERT_EQ(std::system(eval_cmd.c_str()), 0) << read_file(out + ".eval");
  const std::string read_eval =
      testing::redirected(testing::python_command({read_tb, dir.file("tb/tb/eval")}), out, out + ".err");
  ASSERT_EQ(std::system(read_eval.c_str()), 0) << read_file(out + ".err");
  const nlohmann::json eval_tb = nlohmann::json::parse(read_file(out));
  const nlohmann::json ppl = nlohmann::json::parse(read_file(dir.file("ppl.json")));
  ASSERT_EQ(eval_tb.size(), 4u) << eval_tb.dump();  // eval_ppl and eval_nll at two lengths
  for (const auto& r : ppl["results"]) {
    const std::string len = "len_" + r["seq_len"].dump();
    ASSERT_TRUE(eval_tb.contains("eval_ppl/" + len)) << eval_tb.dump();
    EXPECT_EQ(eval_tb["eval_ppl/" + len][0][0].get<int64_t>(), 14);
    EXPECT_EQ(eval_tb["eval_ppl/" + len][0][1].get<float>(), r["ppl"].get<float>());
    EXPECT_EQ(eval_tb["eval_nll/" + len][0][1].get<float>(), r["nll"].get<float>());
  }
  // log.tensorboard: false writes no tb/
  run("off", {"log.tensorboard=false", "train.steps=3"});
  EXPECT_FALSE(fs::exists(dir.file("off/tb")));
}

TEST_F(Ckpt, LayoutKeepLastAndHuggingFaceNames) {
  run("r", {"checkpoint.every=4", "checkpoint.keep_last=2"});
  const fs::path root = dir.file("r/checkpoints");
  EXPECT_EQ(testing::read_file((root / "latest").string()), "step-00000014\n");
  EXPECT_FALSE(fs::exists(root / "step-00000004"));
  EXPECT_FALSE(fs::exists(root / "step-00000008"));
  EXPECT_TRUE(fs::exists(root / "step-00000012/meta.json"));
  for (const char* f : {"model.safetensors", "optimizer.safetensors", "rng.safetensors", "trainer_state.json",
                        "config.yaml", "meta.json"})
    EXPECT_TRUE(fs::exists(root / "step-00000014" / f)) << f;
  const auto meta = nlohmann::json::parse(read_file((root / "step-00000014/meta.json").string()));
  EXPECT_EQ(meta["format_version"], kCheckpointFormat);
  EXPECT_TRUE(meta.contains("torch_version"));
  const SafetensorsFile w = read_safetensors((root / "step-00000014/model.safetensors").string());
  for (const char* name : {"model.embed_tokens.weight", "model.layers.1.self_attn.q_proj.weight",
                           "model.layers.0.mlp.down_proj.weight", "model.norm.weight"})
    EXPECT_TRUE(w.tensors.count(name)) << name;
  const auto st = nlohmann::json::parse(read_file((root / "step-00000014/trainer_state.json").string()));
  EXPECT_EQ(st["step"], 14);
  EXPECT_EQ(st["loader"]["next_batch"], 28);  // 14 steps x 2 micro-batches
}

TEST_F(Ckpt, IncompatibleConfigIsRefusedListingKeysHarmlessChangesAllowed) {
  run("r", {}, 5);
  try {
    run("r", {"model.d_model=48", "model.n_layers=3"});
    FAIL();
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("model.d_model: 32 -> 48"), std::string::npos) << msg;
    EXPECT_NE(msg.find("model.n_layers: 2 -> 3"), std::string::npos) << msg;
  }
  const TrainSummary s = run("r", {"train.log_every=2", "train.steps=16"});  // harmless: allowed
  EXPECT_EQ(s.resumed_from_step, 5);
  EXPECT_EQ(s.steps, 16);
  EXPECT_THROW(run("r", {"train.steps=16"}), InputError);  // already at 16
  TrainOptions never;
  never.run_dir = dir.file("r");
  never.resume = "never";
  EXPECT_THROW(train(config({"train.steps=20"}), never), InputError);
}

// --- corruption: every case is an InputError naming the file (and tensor) ----------------

class Corruption : public Ckpt {
 protected:
  std::string ck;
  void SetUp() override {
    run("r", {"train.steps=3", "schedule.warmup_steps=1", "train.eval_every=0"});
    ck = dir.file("r/checkpoints/step-00000003");
  }
  std::string load_error() {
    try {
      const CheckpointInfo info = read_checkpoint_info(resolve_checkpoint(ck));
      CausalLM model(info.config.model);
      std::vector<std::pair<std::string, at::Tensor>> named;
      for (const auto& p : model->named_parameters()) named.emplace_back(p.key(), p.value());
      AdamW opt(named, info.config.optim);
      load_checkpoint(ck, *model, &opt, true);
    } catch (const InputError& e) {
      return e.what();
    }
    return "no error";
  }
  void rewrite_model(const std::function<void(NamedTensors&)>& edit) {
    const SafetensorsFile f = read_safetensors(ck + "/model.safetensors");
    NamedTensors ts(f.tensors.begin(), f.tensors.end());
    edit(ts);
    write_safetensors(ck + "/model.safetensors", ts);
  }
};

TEST_F(Corruption, HeaderLengthBeyondFile) {
  std::fstream f(ck + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
  f.write("\xff\xff\xff\xff\x00\x00\x00\x00", 8);
  f.close();
  EXPECT_NE(load_error().find("model.safetensors': bad header length"), std::string::npos);
}
TEST_F(Corruption, HeaderNotJson) {
  std::fstream f(ck + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(8);
  f.write("#", 1);
  f.close();
  EXPECT_NE(load_error().find("header is not valid JSON"), std::string::npos);
}
TEST_F(Corruption, TruncatedData) {
  fs::resize_file(ck + "/model.safetensors", fs::file_size(ck + "/model.safetensors") - 5);
  const std::string msg = load_error();
  EXPECT_NE(msg.find("outside the"), std::string::npos) << msg;
}
TEST_F(Corruption, MissingTensor) {
  rewrite_model([](NamedTensors& ts) {
    ts.erase(std::remove_if(ts.begin(), ts.end(), [](auto& t) { return t.first == "model.norm.weight"; }), ts.end());
  });
  EXPECT_NE(load_error().find("tensor 'model.norm.weight' is missing"), std::string::npos);
}
TEST_F(Corruption, WrongShape) {
  rewrite_model([](NamedTensors& ts) {
    for (auto& t : ts)
      if (t.first == "model.norm.weight") t.second = at::ones({31});
  });
  EXPECT_NE(load_error().find("'model.norm.weight' has shape [31], the model expects [32]"), std::string::npos);
}
TEST_F(Corruption, WrongDtype) {
  rewrite_model([](NamedTensors& ts) {
    for (auto& t : ts)
      if (t.first == "model.norm.weight") t.second = t.second.to(at::kHalf);
  });
  EXPECT_NE(load_error().find("'model.norm.weight' has dtype Half"), std::string::npos);
}
TEST_F(Corruption, UnexpectedTensor) {
  rewrite_model([](NamedTensors& ts) { ts.emplace_back("model.extra.weight", at::ones({2})); });
  EXPECT_NE(load_error().find("unexpected tensor 'model.extra.weight'"), std::string::npos);
}
TEST_F(Corruption, NewerFormatVersion) {
  auto meta = nlohmann::json::parse(read_file(ck + "/meta.json"));
  meta["format_version"] = 99;
  write_file(ck + "/meta.json", meta.dump());
  EXPECT_NE(load_error().find("format version 99"), std::string::npos);
}
TEST_F(Corruption, MissingMeta) {
  fs::remove(ck + "/meta.json");
  EXPECT_NE(load_error().find("neither a checkpoint"), std::string::npos);
}
TEST_F(Corruption, OptimizerStateMissing) {
  const SafetensorsFile f = read_safetensors(ck + "/optimizer.safetensors");
  NamedTensors ts;
  for (const auto& kv : f.tensors)
    if (kv.first != "exp_avg.model.norm.weight") ts.push_back(kv);
  write_safetensors(ck + "/optimizer.safetensors", ts);
  const std::string msg = load_error();
  EXPECT_NE(msg.find("optimizer.safetensors': tensor 'exp_avg.model.norm.weight' is missing"), std::string::npos) << msg;
}
TEST_F(Corruption, TrainerStateNotJson) {
  write_file(ck + "/trainer_state.json", "{");
  EXPECT_NE(load_error().find("trainer_state.json' is not valid JSON"), std::string::npos);
}

// --- processes: SIGKILL during a checkpoint write, SIGTERM, double SIGINT ------------------

using testing::Child;
using testing::wait_for;

Child spawn(const std::vector<std::string>& args, const std::string& log, const std::vector<std::string>& env_extra) {
  return testing::spawn_process(SLUICE_BIN, args, log, testing::environment_with(env_extra));
}

TEST_F(Ckpt, SigkillWhileWritingACheckpointLeavesThePreviousOneLoadable) {
  const std::string run_dir = dir.file("killed"), log = dir.file("kill.log");
  const std::vector<std::string> args = {"train", config_file, "--run-dir", run_dir, "--set", "data.train=" + corpus,
                                         "--set", "train.steps=30", "--set", "checkpoint.every=5",
                                         "--set", "train.eval_every=0"};
  Child c = spawn(args, log, {"SLUICE_TEST_CHECKPOINT_DELAY_MS=150"});
  const fs::path root = fs::path(run_dir) / "checkpoints";
  ASSERT_TRUE(wait_for([&] { return fs::exists(root / ".tmp-step-00000010" / "model.safetensors"); }, 60))
      << read_file(log);
  kill(c.pid, SIGKILL);
  const int status = c.wait_status();
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(latest_checkpoint(run_dir), (root / "step-00000005").string());
  // resume: the half-written step-10 is ignored (and cleaned up), training finishes
  Child again = spawn(args, log, {});
  const int st = again.wait_status();
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << read_file(log);
  const auto summary = nlohmann::json::parse(read_file(run_dir + "/summary.json"));
  EXPECT_EQ(summary["resumed_from_step"], 5);
  EXPECT_EQ(summary["steps"], 30);
  EXPECT_FALSE(fs::exists(root / ".tmp-step-00000010"));
}

TEST_F(Ckpt, SigtermFinishesTheStepWritesACheckpointAndExitsZero) {
  const std::string run_dir = dir.file("term"), log = dir.file("term.log");
  Child c = spawn({"train", config_file, "--run-dir", run_dir, "--set", "data.train=" + corpus, "--set",
                   "train.steps=100000", "--set", "train.log_every=1", "--set", "train.eval_every=0"},
                  log, {});
  ASSERT_TRUE(wait_for([&] { return metrics(run_dir).size() >= 3; }, 60)) << read_file(log);
  kill(c.pid, SIGTERM);
  const int status = c.wait_status();
  ASSERT_TRUE(WIFEXITED(status)) << read_file(log);
  EXPECT_EQ(WEXITSTATUS(status), 0) << read_file(log);
  const auto summary = nlohmann::json::parse(read_file(run_dir + "/summary.json"));
  EXPECT_TRUE(summary["stopped_by_signal"].get<bool>());
  const auto latest = latest_checkpoint(run_dir);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(read_checkpoint_info(*latest).state.step, summary["steps"].get<int64_t>());
  EXPECT_NE(read_file(log).find("stopped (signal 15)"), std::string::npos) << read_file(log);
}

TEST_F(Ckpt, SecondSigintExitsAtOnce) {
  const std::string run_dir = dir.file("int"), log = dir.file("int.log");
  Child c = spawn({"train", config_file, "--run-dir", run_dir, "--set", "data.train=" + corpus, "--set",
                   "train.steps=100000", "--set", "train.log_every=1", "--set", "train.eval_every=0"},
                  log, {"SLUICE_TEST_CHECKPOINT_DELAY_MS=2000"});  // the stop checkpoint takes seconds
  ASSERT_TRUE(wait_for([&] { return metrics(run_dir).size() >= 2; }, 60)) << read_file(log);
  kill(c.pid, SIGINT);
  ASSERT_TRUE(wait_for([&] { return fs::exists(fs::path(run_dir) / "checkpoints"); }, 30)) << read_file(log);
  kill(c.pid, SIGINT);
  const int status = c.wait_status();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130) << read_file(log);
  EXPECT_FALSE(latest_checkpoint(run_dir).has_value());  // the interrupted write never became a checkpoint
}

TEST_F(Ckpt, NonFiniteGradientsAbortOrSkip) {
  // lr 1e30 blows the weights up after the first update, so later gradients are inf/NaN.
  const std::vector<std::string> blowup = {"optim.lr=1e30", "train.grad_clip=0", "train.eval_every=0",
                                           "train.log_every=1", "schedule.warmup_steps=0", "checkpoint.every=1"};
  try {
    run("abort", blowup);
    FAIL() << "expected an abort";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(dynamic_cast<const InputError*>(&e), nullptr);  // an internal error: exit code 1
    EXPECT_NE(std::string(e.what()).find("non-finite gradients"), std::string::npos) << e.what();
  }
  const auto diag = nlohmann::json::parse(read_file(dir.file("abort/nonfinite.json")));
  const int64_t bad_step = diag["step"];
  // checkpoints exist only for steps before the bad one, and they hold finite weights
  const auto latest = latest_checkpoint(dir.file("abort"));
  ASSERT_TRUE(latest.has_value());
  EXPECT_LT(read_checkpoint_info(*latest).state.step, bad_step);

  auto skip = blowup;
  skip.push_back("train.on_nonfinite=skip");
  skip.push_back("train.steps=6");
  const TrainSummary s = run("skip", skip);
  EXPECT_EQ(s.steps, 6);
  const auto m = metrics(dir.file("skip"));
  EXPECT_GT(m.back()["skipped_steps"].get<int64_t>(), 0);
}

}  // namespace
}  // namespace sluice
