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
#include "shell_command.h"
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

  // What hf_check.py compares for one run: its export and the file of Sluice's outputs, both named
  // after the run.
  struct HfCase {
    std::string run;
    std::vector<int64_t> sluice_generated;
    std::string export_dir() const { return run + "-hf"; }
    std::string expected() const { return run + "-expected.safetensors"; }
  };

  // Exports `run` and writes Sluice's logits on a fixed batch and its greedy tokens beside it.
  HfCase export_for_check(const std::string& run, const std::vector<std::string>& export_args = {}) const {
    HfCase c{run, {}};
    std::vector<std::string> args = {"export", "hf", "--ckpt", run, "--out", c.export_dir()};
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
    c.sluice_generated.assign(g.tokens.begin(), g.tokens.end());
    write_safetensors(c.expected(), {{"tokens", tokens},
                                   {"logits", logits},
                                   {"prompt", prompt},
                                   {"generated", at::tensor(c.sluice_generated, at::kLong)}});
    return c;
  }

  // hf_check.py's verdict on each case, in order, from one start of transformers (null for all
  // when the script itself fails; {"error"} for a case it could not load or run).
  std::vector<nlohmann::json> hf_check(const std::vector<HfCase>& cases) const {
    const std::string result = cases.at(0).export_dir() + "-check.json";
    std::vector<std::string> args = {std::string(SLUICE_SOURCE_DIR) + "/tests/hf_check.py"};
    for (const HfCase& c : cases) args.insert(args.end(), {c.export_dir(), c.expected()});
    const std::string cmd = redirected(python_command(args), result, result + ".err");
    std::vector<nlohmann::json> out(cases.size());
    if (std::system(cmd.c_str()) != 0) {
      ADD_FAILURE() << "hf_check.py failed:\n" << testing::read_file(result + ".err");
      return out;
    }
    const nlohmann::json j = nlohmann::json::parse(testing::read_file(result));
    EXPECT_EQ(j.size(), cases.size()) << j.dump();
    for (size_t i = 0; i < cases.size() && i < j.size(); ++i) {
      out[i] = j[i];
      out[i]["sluice_generated"] = cases[i].sluice_generated;
    }
    return out;
  }

  nlohmann::json export_and_check(const std::string& run, const std::vector<std::string>& export_args = {}) const {
    return hf_check({export_for_check(run, export_args)}).at(0);
  }

  static void expect_equal_outputs(const nlohmann::json& j, const std::string& architecture) {
    ASSERT_FALSE(j.is_null());
    ASSERT_FALSE(j.contains("error")) << j["error"].get<std::string>();
    EXPECT_EQ(j["architecture"], architecture);
    EXPECT_LE(j["max_abs_logits"].get<double>(), 1e-5) << j.dump();
    std::cout << "[hf_check] " << j["architecture"].get<std::string>() << ": max |logits - Sluice's| "
              << j["max_abs_logits"].get<double>() << "\n";
    EXPECT_EQ(j["generated"], j["sluice_generated"]) << "transformers' greedy tokens differ from Sluice's: " << j.dump();
  }
};

}  // namespace sluice::testing
