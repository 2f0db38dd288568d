// The `sluice` command line: in-process for messages, through the real binary for exit codes.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "cli.h"
#include "shell_command.h"
#include "test_util.h"

namespace sluice {
namespace {

using testing::run_sluice;
using testing::TempDir;
using testing::write_file;

struct Result {
  int code;
  std::string out, err;
};

Result cli(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  const int code = cli::run(args, {out, err});
  return {code, out.str(), err.str()};
}

class Cli : public ::testing::Test {
 protected:
  TempDir dir;
  std::string corpus = write_file(dir.file("corpus.txt"), testing::make_corpus(20000));
  std::string good = write_file(dir.file("good.yaml"),
                                "model:\n  d_model: 16\n  n_layers: 1\n  n_heads: 2\n  n_kv_heads: 1\n"
                                "data:\n  train: " + corpus + "\n  seq_len: 16\n"
                                "train:\n  steps: 3\n  micro_batch: 2\n  log_every: 1\n  eval_every: 0\n"
                                "schedule:\n  warmup_steps: 1\nlog:\n  level: warn\n");
  std::string bad = write_file(dir.file("bad.yaml"), "model:\n  d_model: sixteen\n");
};

TEST_F(Cli, HelpAndVersion) {
  Result r = cli({"--help"});
  EXPECT_EQ(r.code, 0);
  for (const char* s : {"train", "config", "Exit codes"}) EXPECT_NE(r.out.find(s), std::string::npos) << s;
  r = cli({"train", "--help"});
  EXPECT_EQ(r.code, 0);
  for (const char* s : {"CONFIG", "--set", "--run-dir"}) EXPECT_NE(r.out.find(s), std::string::npos) << s;
  r = cli({"config", "show", "--help"});
  EXPECT_EQ(r.code, 0);
  r = cli({"--version"});
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("sluice " SLUICE_VERSION), std::string::npos);
}

TEST_F(Cli, UsageErrorsExitTwo) {
  EXPECT_EQ(cli({}).code, 2);                          // no subcommand
  EXPECT_EQ(cli({"frobnicate"}).code, 2);              // unknown subcommand
  EXPECT_EQ(cli({"train"}).code, 2);                   // missing CONFIG
  EXPECT_EQ(cli({"train", good, "--bogus"}).code, 2);  // unknown option
  const Result r = cli({"config", "validate"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("CONFIG is required"), std::string::npos) << r.err;
}

TEST_F(Cli, ValidateAndShow) {
  Result r = cli({"config", "validate", good});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("ok"), std::string::npos);
  r = cli({"config", "validate", bad});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find(bad + ":2:12: model.d_model: expected an integer"), std::string::npos) << r.err;
  r = cli({"config", "validate", good, "--set", "model.n_kv_heads=3"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("model.n_kv_heads"), std::string::npos) << r.err;
  r = cli({"config", "show", good, "--set", "train.steps=7"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("steps: 7"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("backend: sdpa"), std::string::npos) << "defaults are filled in";
  r = cli({"config", "validate", dir.file("missing.yaml")});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("does not exist"), std::string::npos);
}

TEST_F(Cli, BadConfigNeverCreatesARunDir) {
  const std::string run_dir = dir.file("run");
  EXPECT_EQ(cli({"train", bad, "--run-dir", run_dir}).code, 2);
  EXPECT_EQ(cli({"train", good, "--run-dir", run_dir, "--set", "data.seq_len=100000"}).code, 2);  // data too short
  EXPECT_FALSE(std::filesystem::exists(run_dir));
}

TEST_F(Cli, RealBinaryExitCodesAndRunFiles) {
  const std::string log = dir.file("log.txt");
  EXPECT_EQ(run_sluice("config validate " + bad, log), 2);
  EXPECT_NE(testing::read_file(log).find("expected an integer"), std::string::npos);
  EXPECT_EQ(run_sluice("--version", log), 0);
  EXPECT_EQ(run_sluice("train " + good + " --set train.nope=1", log), 2);
  EXPECT_NE(testing::read_file(log).find("train.nope: unknown key"), std::string::npos);

  const std::string run_dir = dir.file("run");
  ASSERT_EQ(run_sluice("train " + good + " --run-dir " + run_dir, log), 0) << testing::read_file(log);
  EXPECT_NE(testing::read_file(log).find("results: " + run_dir), std::string::npos);
  for (const char* f : {"config.yaml", "metrics.jsonl", "summary.json"})
    EXPECT_TRUE(std::filesystem::exists(run_dir + "/" + f)) << f;
  // running into the same directory again is refused
  EXPECT_EQ(run_sluice("train " + good + " --run-dir " + run_dir, log), 2);
}

// The tests' command lines reach /bin/sh: arguments and log paths with spaces and quotes arrive whole.
TEST_F(Cli, ShellCommandsQuoteEveryArgument) {
  const std::string odd = dir.file("it's a dir");
  std::filesystem::create_directory(odd);
  const std::string out = odd + "/out 1.txt", err = odd + "/err's.txt";
  const std::string cmd = testing::shell_command({"sh", "-c", "printf '%s|' \"$@\"; echo oops >&2", "sh", "a b", "it's", "",
                                                  "$HOME", "*"});
  ASSERT_EQ(std::system(testing::redirected(cmd, out, err).c_str()), 0);
  EXPECT_EQ(testing::read_file(out), "a b|it's||$HOME|*|");
  EXPECT_EQ(testing::read_file(err), "oops\n");
  ASSERT_EQ(std::system(testing::redirected(cmd, out).c_str()), 0);
  EXPECT_EQ(testing::read_file(out), "a b|it's||$HOME|*|oops\n");
  EXPECT_EQ(run_sluice("--version", odd + "/v.log"), 0);
  EXPECT_NE(testing::read_file(odd + "/v.log").find("sluice"), std::string::npos);
  EXPECT_EQ(run_sluice("no-such-command", odd + "/v.log"), 2);
}

TEST_F(Cli, DataCommands) {
  const std::string tok = dir.file("tok"), ds = dir.file("ds");
  Result r = cli({"data", "train-tokenizer", "--input", corpus, "--vocab-size", "300", "--out", tok, "--threads", "1"});
  ASSERT_EQ(r.code, 0) << r.err;
  r = cli({"data", "prepare", "--tokenizer", tok, "--input", corpus, corpus, "--out", ds, "--val-fraction", "0.5",
           "--quiet"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("train"), std::string::npos);
  r = cli({"data", "inspect", ds});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("ok"), std::string::npos);
  // bad input: exit 2, a message naming the argument, nothing written
  r = cli({"data", "prepare", "--tokenizer", tok, "--input", dir.file("missing.txt"), "--out", dir.file("ds2")});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--input"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir.file("ds2")));
  r = cli({"data", "prepare", "--tokenizer", tok, "--input", corpus, "--out", ds});
  EXPECT_EQ(r.code, 2);  // not empty
  r = cli({"data", "train-tokenizer", "--input", corpus, "--vocab-size", "300", "--out", tok});
  EXPECT_EQ(r.code, 2);  // exists
  r = cli({"data", "inspect", dir.path()});
  EXPECT_EQ(r.code, 2);
  // training on the dataset with its tokenizer works end to end
  r = cli({"train", good, "--set", "data.train=" + ds, "--set", "data.tokenizer=" + tok, "--run-dir", dir.file("run")});
  EXPECT_EQ(r.code, 0) << r.err;
}

}  // namespace
}  // namespace sluice
