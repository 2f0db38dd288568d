// `sluice export hf` checked by transformers itself (tests/hf_check.py in .venv): a briefly
// trained tiny model of each architecture that maps to a stock class is exported, loaded with
// AutoModelForCausalLM in fp32, and its logits on a fixed batch equal Sluice's within 1e-5
// (max abs); greedy generation of 20 tokens with transformers' KV cache equals Sluice's
// (the decoding of `sluice generate` at temperature 0, without its EOS stop). Configs that
// no supported class computes are refused with their key, exit 2, nothing written.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli.h"
#include "eval/eval_model.h"
#include "eval/generate.h"
#include "sluice/config.h"
#include "sluice/trainer.h"
#include "test_util.h"
#include "train/safetensors.h"

namespace sluice {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

class HfExport : public ::testing::Test {
 protected:
  TempDir dir;
  std::string corpus = testing::write_file(dir.file("corpus.txt"), testing::make_corpus(30000));

  std::string train_run(const std::string& name, const std::vector<std::string>& extra) const {
    std::vector<std::string> sets = {"data.train=" + corpus, "model.d_model=32",  "model.n_layers=2",
                                     "model.n_heads=4",      "model.n_kv_heads=2", "model.ffn_hidden=64",
                                     "data.seq_len=32",      "train.micro_batch=4", "train.steps=12",
                                     "train.log_every=4",    "train.eval_every=0", "schedule.warmup_steps=2",
                                     "optim.lr=1e-2",        "train.threads=1",    "train.device=cpu",
                                     "log.level=warn",       "log.tensorboard=false"};
    sets.insert(sets.end(), extra.begin(), extra.end());
    TrainOptions opts;
    opts.run_dir = dir.file(name);
    train(load_config_text("{}", "test", sets), opts);
    return opts.run_dir;
  }

  static int sluice(const std::vector<std::string>& args, std::string* err = nullptr) {
    std::ostringstream out, e;
    const int code = cli::run(args, {out, e});
    if (err) *err = e.str();
    return code;
  }

  // Exports `run`, writes Sluice's logits and greedy tokens, and returns hf_check.py's verdict.
  nlohmann::json export_and_check(const std::string& run, const std::vector<std::string>& export_args = {}) const {
    const std::string out = run + "-hf";
    std::vector<std::string> args = {"export", "hf", "--ckpt", run, "--out", out};
    args.insert(args.end(), export_args.begin(), export_args.end());
    std::string err;
    EXPECT_EQ(sluice(args, &err), 0) << err;
    EvalModel m = load_eval_model(run, {});
    at::manual_seed(3);
    const at::Tensor tokens = at::randint(0, 259, {2, 80}, at::kLong);  // past data.seq_len: RoPE scaling acts
    at::Tensor logits;
    {
      at::NoGradGuard no_grad;
      logits = m.model->forward(tokens).contiguous();
    }
    const at::Tensor prompt = tokens[0].narrow(0, 0, 9).contiguous();
    GenerateOptions o;
    o.max_new_tokens = 20;
    o.sampling.temperature = 0;
    const std::vector<int64_t> p(prompt.data_ptr<int64_t>(), prompt.data_ptr<int64_t>() + prompt.numel());
    const GenerateResult g = generate(*m.model, std::vector<int32_t>(p.begin(), p.end()), o, m.device, false);
    std::vector<int64_t> generated(g.tokens.begin(), g.tokens.end());
    const std::string expected = run + "-expected.safetensors";
    write_safetensors(expected, {{"tokens", tokens},
                                 {"logits", logits},
                                 {"prompt", prompt},
                                 {"generated", at::tensor(generated, at::kLong)}});
    const std::string result = run + "-check.json";
    const std::string cmd = std::string("'") + SLUICE_PYTHON + "' '" + SLUICE_SOURCE_DIR + "/tests/hf_check.py' '" + out +
                            "' '" + expected + "' > '" + result + "' 2> '" + result + ".err'";
    if (std::system(cmd.c_str()) != 0) {
      ADD_FAILURE() << "hf_check.py failed:\n" << testing::read_file(result + ".err");
      return {};
    }
    nlohmann::json j = nlohmann::json::parse(testing::read_file(result));
    j["sluice_generated"] = generated;
    return j;
  }

  static void expect_equal_outputs(const nlohmann::json& j, const std::string& architecture) {
    ASSERT_FALSE(j.is_null());
    EXPECT_EQ(j["architecture"], architecture);
    EXPECT_LE(j["max_abs_logits"].get<double>(), 1e-5) << j.dump();
    EXPECT_EQ(j["generated"], j["sluice_generated"]) << "transformers' greedy tokens differ from Sluice's: " << j.dump();
  }
};

TEST_F(HfExport, BaselineLoadsAsLlamaWithEqualLogitsAndGreedyTokens) {
  const std::string run = train_run("llama", {});
  expect_equal_outputs(export_and_check(run), "LlamaForCausalLM");
  const nlohmann::json cfg = nlohmann::json::parse(testing::read_file(run + "-hf/config.json"));
  EXPECT_EQ(cfg["model_type"], "llama");
  EXPECT_EQ(cfg["tie_word_embeddings"], true);
  // the safetensors metadata transformers expects
  EXPECT_EQ(read_safetensors(run + "-hf/model.safetensors").metadata.at("format"), "pt");
}

TEST_F(HfExport, UntiedEmbeddingsAndMultiHeadKv) {
  const std::string run = train_run("untied", {"model.tie_embeddings=false", "model.n_kv_heads=4"});
  expect_equal_outputs(export_and_check(run), "LlamaForCausalLM");
}

TEST_F(HfExport, QkNormLoadsAsQwen3) {
  const std::string run = train_run("qwen3", {"model.qk_norm=true", "model.head_dim=16"});  // head_dim != d_model/n_heads
  expect_equal_outputs(export_and_check(run), "Qwen3ForCausalLM");
  EXPECT_EQ(nlohmann::json::parse(testing::read_file(run + "-hf/config.json"))["head_dim"], 16);
}

TEST_F(HfExport, RopeScalingsMapToTransformersRopeTypes) {
  for (const std::vector<std::string>& sets :
       {std::vector<std::string>{"model.rope.scaling=linear", "model.rope.factor=2"},
        {"model.rope.scaling=ntk", "model.rope.factor=4"},
        {"model.rope.scaling=dynamic_ntk", "model.rope.factor=2", "model.rope.original_max_len=32"},
        {"model.rope.scaling=yarn", "model.rope.factor=4", "model.rope.original_max_len=32"}}) {
    SCOPED_TRACE(sets[0]);
    const std::string run = train_run(sets[0].substr(sets[0].find('=') + 1), sets);
    expect_equal_outputs(export_and_check(run), "LlamaForCausalLM");
  }
}

TEST_F(HfExport, ShardedAndBf16Files) {
  const std::string run = train_run("sharded", {"model.qk_norm=true"});
  // shards of about 50 KiB: transformers follows model.safetensors.index.json
  expect_equal_outputs(export_and_check(run, {"--max-shard-mb", "0.05"}), "Qwen3ForCausalLM");
  EXPECT_TRUE(fs::exists(run + "-hf/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(run + "-hf/model.safetensors"));
  std::string err;
  const SafetensorsFile bf16 = [&] {
    EXPECT_EQ(sluice({"export", "hf", "--ckpt", run, "--out", run + "-bf16", "--dtype", "bf16"}, &err), 0) << err;
    return read_safetensors(run + "-bf16/model.safetensors");
  }();
  for (const auto& [name, t] : bf16.tensors) EXPECT_EQ(t.scalar_type(), at::kBFloat16) << name;
  EXPECT_EQ(nlohmann::json::parse(testing::read_file(run + "-bf16/config.json"))["dtype"], "bfloat16");
}

TEST_F(HfExport, VariantsNoStockClassComputesAreRefusedByKey) {
  const std::string base = train_run("base", {"train.steps=2"});
  struct Case {
    std::vector<std::string> sets;
    std::string key;
  };
  const std::vector<Case> cases = {
      {{"model.attention.gate.position=G2"}, "model.attention.gate.position"},
      {{"model.position=alibi"}, "model.position"},
      {{"model.position=none"}, "model.position"},
      {{"model.attention.window=8"}, "model.attention.window"},
      {{"model.attention.output_norm=true"}, "model.attention.output_norm"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> sets = c.sets;
    sets.push_back("train.steps=2");
    const std::string run = train_run("refused-" + std::to_string(&c - cases.data()), sets);
    std::string err;
    EXPECT_EQ(sluice({"export", "hf", "--ckpt", run, "--out", run + "-hf"}, &err), 2) << c.key;
    EXPECT_NE(err.find(c.key), std::string::npos) << err;
    EXPECT_FALSE(fs::exists(run + "-hf")) << "nothing is written";
    EXPECT_FALSE(fs::exists(run + "-hf.tmp-export"));
  }
  // --out must be new
  fs::create_directories(base + "-full");
  testing::write_file(base + "-full/x", "x");
  std::string err;
  EXPECT_EQ(sluice({"export", "hf", "--ckpt", base, "--out", base + "-full"}, &err), 2);
  EXPECT_NE(err.find("--out"), std::string::npos) << err;
  EXPECT_EQ(sluice({"export", "hf", "--ckpt", dir.file("missing"), "--out", dir.file("m-hf")}, &err), 2);
}

}  // namespace
}  // namespace sluice
