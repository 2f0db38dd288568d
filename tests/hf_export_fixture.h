// The fixture of the `sluice export hf` tests (test_interop.cpp, test_interop_remote.cpp):
// trains a tiny model, exports it, computes Sluice's logits on a fixed batch and its greedy
// continuation of a prompt, and has transformers compare (tests/hf_check.py in .venv).
#pragma once
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <iostream>
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

namespace sluice::testing {

class HfExportTest : public ::testing::Test {
 protected:
  testing::TempDir dir;
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
    std::cout << "[hf_check] " << j["architecture"].get<std::string>() << ": max |logits - Sluice's| "
              << j["max_abs_logits"].get<double>() << "\n";
    EXPECT_EQ(j["generated"], j["sluice_generated"]) << "transformers' greedy tokens differ from Sluice's: " << j.dump();
  }
};

}  // namespace sluice::testing
