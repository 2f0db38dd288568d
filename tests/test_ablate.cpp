// `sluice ablate` (issue 22): grid parsing and expansion, validation before anything runs,
// results read back from run directories, and the real binary over a small grid: the same
// losses as `sluice train` with the same overrides, resumable, and the tables.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "ablate/grid.h"
#include "ablate/grid_report.h"
#include "ablate/results.h"
#include "data/prepare.h"
#include "shell_command.h"
#include "sluice/config.h"
#include "sluice/errors.h"
#include "sluice/model.h"
#include "sluice/tokenizer.h"
#include "test_util.h"

namespace sluice {
namespace {

namespace fs = std::filesystem;
using testing::read_file;
using testing::run_sluice;
using testing::TempDir;
using testing::write_file;

TEST(AblateGrid, VariantsAxesAndSeedsExpandInOrderWithTheirOverrides) {
  const ablate::Grid g = ablate::parse_grid(
      "base: base.yaml\n"
      "set: {data.train: t.txt, train.steps: 6}\n"
      "variants:\n"
      "  - {name: baseline}\n"
      "  - {name: g1, file: g1.yaml}\n"
      "  - {name: headwise, set: {model.attention.gate.position: G1, model.attention.window_pattern: [0, 64]}}\n"
      "axes: {optim.lr: [1e-3, 3e-3]}\n"
      "seeds: [1, 2]\n",
      "grid.yaml");
  const auto runs = ablate::expand(g);
  ASSERT_EQ(runs.size(), 3u * 2u * 2u);
  EXPECT_EQ(runs[0].name, "baseline-lr=1e-3-s1");
  EXPECT_EQ(runs[1].name, "baseline-lr=1e-3-s2");
  EXPECT_EQ(runs[2].name, "baseline-lr=3e-3-s1");
  EXPECT_EQ(runs[0].config_file, "base.yaml");
  EXPECT_EQ(runs[4].config_file, "g1.yaml");
  EXPECT_EQ(runs[4].variant, "g1");
  EXPECT_EQ(runs[0].overrides,
            (std::vector<std::string>{"data.train=t.txt", "train.steps=6", "optim.lr=1e-3", "train.seed=1"}));
  EXPECT_EQ(runs[11].overrides,
            (std::vector<std::string>{"data.train=t.txt", "train.steps=6", "model.attention.gate.position=G1",
                                      "model.attention.window_pattern=[0, 64]", "optim.lr=3e-3", "train.seed=2"}));
  EXPECT_EQ(runs[11].axis_values.at("optim.lr"), "3e-3");
  EXPECT_EQ(runs[11].seed, 2);
}

TEST(AblateGrid, BadGridsAreRefusedNamingTheKey) {
  auto error = [](const std::string& yaml) {
    try {
      ablate::expand(ablate::parse_grid(yaml, "g.yaml"));
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  EXPECT_NE(error("variants: [{name: a}]\n").find("g.yaml:1: base: is required"), std::string::npos);
  EXPECT_NE(error("base: b.yaml\n").find("variants: is required"), std::string::npos);
  EXPECT_NE(error("base: b.yaml\nvariants: [{name: a}, {name: a}]\n").find("variants[1].name: 'a' is used twice"),
            std::string::npos);
  EXPECT_NE(error("base: b.yaml\nvariants: [{name: 'a/b'}]\n").find("variants[0].name: 'a/b' must be"), std::string::npos);
  EXPECT_NE(error("base: b.yaml\nvariants: [{name: a, sett: {}}]\n").find("variants[0].sett: unknown key"),
            std::string::npos);
  EXPECT_NE(error("base: b.yaml\nvariants: [{name: a}]\nseeds: [1, x]\n").find("seeds: 'x' is not an integer"),
            std::string::npos);
  EXPECT_NE(error("base: b.yaml\nvariants: [{name: a}]\nevals: {ppl: {seq_len: [128, -1]}}\n")
                .find("evals.ppl.seq_len: must be positive"),
            std::string::npos);
  EXPECT_NE(error("base: b.yaml\nvariants: [{name: a}]\nevals: {perplexity: {}}\n").find("evals.perplexity: unknown key"),
            std::string::npos);
  EXPECT_NE(error("base: b.yaml\nvariants: [{name: a}]\naxes: {train.seed: [1]}\n").find("use `seeds:`"),
            std::string::npos);
  EXPECT_NE(error("base: b.yaml\nvariants: [{name: a}]\nevals: {passkey: {lengths: [128], format: short}}\n")
                .find("evals.passkey.format: expected landmark or compact"),
            std::string::npos);
  const ablate::Grid g = ablate::parse_grid(
      "base: b.yaml\nvariants: [{name: a}]\nevals: {passkey: {lengths: [128], format: compact, haystack: h.txt}}\n",
      "g.yaml");
  EXPECT_EQ(g.passkey.format, "compact");
  EXPECT_EQ(g.passkey.haystack, "h.txt");
}

TEST(AblateGrid, AnUnreadableGridFileIsAnInputErrorNamingIt) {
  TempDir dir;
  auto error = [](const std::string& path) {
    try {
      ablate::load_grid(path);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  for (const std::string& path : {dir.file("missing.yaml"), dir.path()})
    EXPECT_NE(error(path).find("ablation grid '" + path + "' cannot be read"), std::string::npos) << error(path);
  const std::string ok = testing::write_file(dir.file("g.yaml"), "base: b.yaml\nvariants: [{name: a}]\n");
  EXPECT_EQ(ablate::load_grid(ok).variants.size(), 1u);
}

TEST(AblateResults, LossSpikesAreRisesOverTheLowestSoFarAndNonFiniteLosses) {
  EXPECT_EQ(ablate::count_loss_spikes({5, 4, 3, 3.5, 3.61, 2}), 1);  // 3.61 > 1.2 x 3
  EXPECT_EQ(ablate::count_loss_spikes({5, 6.5, std::nan(""), 4}), 2);
  EXPECT_EQ(ablate::count_loss_spikes({}), 0);
}

TEST(AblateResults, ReadsTheRunsFilesAndTablesMeanAndStdOverSeeds) {
  TempDir dir;
  const std::string runs = dir.file("runs");
  auto make = [&](const std::string& name, double val, double ppl) {
    fs::create_directories(fs::path(runs) / name / "eval");
    write_file(runs + "/" + name + "/summary.json",
               nlohmann::json({{"steps", 6}, {"target_steps", 6}, {"stopped_by_signal", false}, {"final_loss", val + 0.1},
                               {"final_val_loss", val}, {"tokens", 960}, {"params", 1000}, {"tokens_per_s", 5.0},
                               {"skipped_steps", 0}})
                   .dump());
    // losses 4, 3, 3.7 (spike: > 1.2 x 3), 3.5
    write_file(runs + "/" + name + "/metrics.jsonl",
               "{\"step\":1,\"loss\":4}\n{\"step\":2,\"loss\":3}\n{\"step\":3,\"loss\":3.7}\n{\"step\":4,\"loss\":3.5}\n");
    write_file(runs + "/" + name + "/eval/ppl.json",
               nlohmann::json({{"kind", "eval_ppl"}, {"results", {{{"seq_len", 64}, {"ppl", ppl}}}}}).dump());
    write_file(runs + "/" + name + "/eval/stats.json",
               nlohmann::json({{"sink", {{"mean", 0.25}}},
                               {"gates", {{"per_layer", {{{"mean", 0.2}}, nullptr, {{"mean", 0.4}}}}}},
                               {"activations", {{"per_layer", {{{"residual_max", 3.0}}, {{"residual_max", 7.5}}}}}}})
                   .dump());
  };
  make("a-s1", 2.0, 10.0);
  make("a-s2", 3.0, 20.0);
  // a-s3 is still training (step 3 of 6): its partial loss and curve must stay out of the table.
  make("a-s3", 9.0, 90.0);
  write_file(runs + "/a-s3/summary.json",
             nlohmann::json({{"steps", 3}, {"target_steps", 6}, {"stopped_by_signal", true}, {"final_loss", 9.1},
                             {"final_val_loss", 9.0}})
                 .dump());
  std::vector<ablate::RunResult> results;
  for (const char* n : {"a-s1", "a-s2", "a-s3"}) {
    ablate::RunSpec spec;
    spec.name = n;
    spec.variant = "a";
    spec.seed = n[3] - '0';
    results.push_back(ablate::read_run_result(spec, runs));
  }
  const ablate::RunResult& r = results[1];
  EXPECT_TRUE(r.finished);
  EXPECT_FALSE(results[2].finished);
  EXPECT_EQ(r.final_val_loss, 3.0);
  EXPECT_EQ(r.ppl.at(64), 20.0);
  EXPECT_EQ(r.first_token_attention, 0.25);
  EXPECT_DOUBLE_EQ(*r.gate_mean, 0.3);  // the null layer skipped
  EXPECT_EQ(r.max_activation, 7.5);
  EXPECT_FALSE(r.gate_sparsity.has_value());
  // mean 2.5, sample std sqrt(0.5) = 0.71, over the two finished runs of three
  const std::string table = ablate::summary_table(results);
  EXPECT_NE(table.find("2 of 3"), std::string::npos) << table;
  EXPECT_NE(table.find("2.5 ± 0.71"), std::string::npos) << table;
  EXPECT_NE(table.find("15 ± 7.1"), std::string::npos) << table;
  EXPECT_NE(table.find("7.5 ± 0  1 ± 0"), std::string::npos) << table;  // max_act, spikes
  for (const char* partial : {"9.1", "90", "4.667", "4.767", "40 ±"}) EXPECT_EQ(table.find(partial), std::string::npos) << partial << "\n" << table;
  ablate::write_results(results, dir.path());
  const std::string csv = read_file(dir.file("results.csv"));
  EXPECT_EQ(csv.substr(0, csv.find('\n')),
            "variant,seed,params,tokens,final_loss,final_val_loss,ppl_64,first_token_attention,gate_mean,gate_sparsity,"
            "max_activation,loss_spikes,skipped_steps,tokens_per_s,finished");
  EXPECT_NE(csv.find("\na,2,1000,960,3.1,3,20,0.25,0.3,,7.5,1,0,5,1\n"), std::string::npos) << csv;
  EXPECT_NE(csv.find("\na,3,,,9.1,9,90,0.25,0.3,,7.5,1,,,0\n"), std::string::npos) << csv;  // per run, as read
  EXPECT_EQ(nlohmann::json::parse(read_file(dir.file("results.json"))).size(), 3u);
}

// The study grids under configs/studies/ stay valid against the config schema: each is parsed,
// expanded and every run's config validated, with its data paths (../shared/data, which unit
// tests must not read) pointed at a small temporary text.
TEST(AblateGrid, TheCommittedStudyGridsValidate) {
  TempDir dir;
  const std::string text = write_file(dir.file("text.txt"), testing::make_corpus(20000));
  const std::string root = SLUICE_SOURCE_DIR;
  int grids = 0;
  for (const auto& e : fs::directory_iterator(root + "/configs/studies")) {
    if (e.path().extension() != ".yaml") continue;
    std::string yaml = read_file(e.path().string());
    // The shared corpora, and the files made from them before a study (runs/data/), are not here.
    for (const char* prefix : {"../shared/data/", "runs/data/"}) {
      for (size_t at = yaml.find(prefix); at != std::string::npos; at = yaml.find(prefix, at)) {
        const size_t end = yaml.find_first_of(",} \n", at);
        yaml.replace(at, end - at, text);
      }
    }
    for (size_t at = yaml.find("configs/ablations/"); at != std::string::npos; at = yaml.find("configs/ablations/", at + root.size() + 20))
      yaml.insert(at, root + "/");
    SCOPED_TRACE(e.path().string());
    const auto runs = ablate::expand(ablate::parse_grid(yaml, e.path().string()));
    EXPECT_GE(runs.size(), 5u);  // the smallest has 5 runs
    EXPECT_NO_THROW(ablate::validate_runs(runs));
    ++grids;
  }
  EXPECT_EQ(grids, 5);
}

// The GPU-scale grids beside them (configs/studies/gpu/, docs in its README.md): they train on
// the folder configs/studies/gpu/prepare_data.sh makes, runs/data/gutenberg_bpe16k/ (tokenizer/,
// train/ and val/ dataset folders, eval/ texts), which is not here; the test makes a small one
// of the same layout and points the grids at it. Each grid keeps its CPU grid's variants and
// evaluations; every run validates, respects documents, trains in bf16 on CUDA and has at least
// 50M parameters, counted by model_stats (equal to the built model's count for every variant,
// test_attention_variants) with the grid's explicit model.vocab_size, also without the embedding.
TEST(AblateGrid, TheCommittedGpuStudyGridsValidate) {
  TempDir dir;
  const std::string data = dir.file("gutenberg_bpe16k");
  for (const char* d : {"/books/train", "/books/val", "/eval"}) fs::create_directories(data + d);
  write_file(data + "/books/train/book-000.txt", testing::make_corpus(12000));
  write_file(data + "/books/train/book-001.txt", testing::make_corpus(8000).substr(500));
  write_file(data + "/books/val/book-000.txt", testing::make_corpus(4000).substr(1000));
  for (const char* f : {"/eval/gutenberg_val.txt", "/eval/shelley_frankenstein.txt"})
    write_file(data + f, testing::make_corpus(6000).substr(2000));
  TokenizerTrainingOptions tok;
  tok.inputs = {data + "/books/train/book-000.txt", data + "/books/train/book-001.txt"};
  tok.vocab_size = 300;  // the corpus has 11 words: at most 326 pieces
  tok.out_dir = data + "/tokenizer";
  tok.threads = 1;
  train_tokenizer(tok);
  // prepare_data.sh's train/ and val/; prepare_passkey.sh's passkey_train/ and passkey_val/
  // (any text will do for validating the grids: they only need datasets of this tokenizer).
  for (const char* split : {"train", "val", "passkey_train", "passkey_val"}) {
    PrepareOptions p;
    p.tokenizer = tok.out_dir;
    p.inputs = {data + "/books/" + (std::string(split).rfind("passkey_", 0) == 0 ? "val" : split)};
    p.out_dir = data + "/" + split;
    p.workers = 1;
    p.progress = false;
    prepare_shards(p);
  }

  const std::string root = SLUICE_SOURCE_DIR;
  const std::string prepared = "runs/data/gutenberg_bpe16k/";
  int grids = 0;
  for (const auto& e : fs::directory_iterator(root + "/configs/studies/gpu")) {
    if (e.path().extension() != ".yaml") continue;
    SCOPED_TRACE(e.path().string());
    std::string yaml = read_file(e.path().string());
    for (size_t at = yaml.find(prepared); at != std::string::npos; at = yaml.find(prepared, at + data.size()))
      yaml.replace(at, prepared.size(), data + "/");
    for (size_t at = yaml.find("configs/ablations/"); at != std::string::npos; at = yaml.find("configs/ablations/", at + root.size() + 20))
      yaml.insert(at, root + "/");
    const ablate::Grid grid = ablate::parse_grid(yaml, e.path().string());
    const auto runs = ablate::expand(grid);
    for (const auto& r : runs)  // a GPU machine lacks ../shared: every data path is in the prepared folder
      for (const auto& o : r.overrides) EXPECT_EQ(o.find("../shared/"), std::string::npos) << o;

    // Beside its CPU grid: the same variants, axes and evaluations, at least as many seeds.
    const ablate::Grid cpu = ablate::load_grid(root + "/configs/studies/" + e.path().filename().string());
    ASSERT_EQ(grid.variants.size(), cpu.variants.size());
    for (size_t i = 0; i < cpu.variants.size(); ++i) EXPECT_EQ(grid.variants[i].name, cpu.variants[i].name);
    ASSERT_EQ(grid.axes.size(), cpu.axes.size());
    for (size_t i = 0; i < cpu.axes.size(); ++i) {
      EXPECT_EQ(grid.axes[i].key, cpu.axes[i].key);
      EXPECT_EQ(grid.axes[i].values.size(), cpu.axes[i].values.size());
    }
    EXPECT_GE(grid.seeds.size(), cpu.seeds.size());
    EXPECT_EQ(grid.ppl.enabled, cpu.ppl.enabled);
    EXPECT_EQ(grid.passkey.enabled, cpu.passkey.enabled);
    EXPECT_EQ(grid.stats.enabled, cpu.stats.enabled);
    EXPECT_EQ(grid.ppl.seq_len.size(), cpu.ppl.seq_len.size());
    EXPECT_GE(grid.passkey.lengths.size(), cpu.passkey.lengths.size());
    if (grid.ppl.enabled) EXPECT_TRUE(fs::is_regular_file(grid.ppl.data)) << grid.ppl.data;
    if (grid.stats.enabled) EXPECT_TRUE(fs::is_regular_file(grid.stats.data)) << grid.stats.data;

    EXPECT_NO_THROW(ablate::validate_runs(runs));
    for (const auto& r : runs) {
      const Config c = load_config(r.config_file, r.overrides).config;
      const ModelStats s = model_stats(c.model, c.data.seq_len);
      EXPECT_GE(s.params_total - s.params_embedding, 50'000'000) << r.name;
      EXPECT_TRUE(c.data.respect_documents) << r.name;
      EXPECT_EQ(c.train.device, "cuda") << r.name;
      EXPECT_EQ(c.train.precision, "bf16") << r.name;
      if (c.model.rope.scaling == "dynamic_ntk") EXPECT_EQ(c.model.rope.original_max_len, c.data.seq_len) << r.name;
      if (grid.ppl.enabled) EXPECT_EQ(grid.ppl.seq_len.front(), c.data.seq_len) << r.name;  // 1x first, as on the CPU
    }
    ++grids;
  }
  EXPECT_EQ(grids, 4);
}

// --- the real binary ------------------------------------------------------------------------

class Ablate : public ::testing::Test {
 protected:
  TempDir dir;
  std::string corpus = write_file(dir.file("t.txt"), testing::make_corpus(30000));
  std::string held_out = write_file(dir.file("held_out.txt"), testing::make_corpus(3000).substr(1000));
  std::string base = write_file(dir.file("base.yaml"), "model:\n  d_model: 32\n  n_layers: 2\n  n_heads: 2\n"
                                                      "  n_kv_heads: 1\n  ffn_hidden: 64\n"
                                                      "data:\n  seq_len: 24\n  tokenizer: byte\n"
                                                      "train:\n  micro_batch: 4\n  steps: 6\n  log_every: 3\n"
                                                      "  eval_every: 0\n  eval_batches: 2\n  device: cpu\n"
                                                      "schedule:\n  warmup_steps: 1\n"
                                                      "log:\n  level: warn\n");
  std::string grid = write_file(dir.file("grid.yaml"), "base: " + base + "\n" +
                                                           "set: {data.train: " + corpus + "}\n"
                                                           "variants:\n"
                                                           "  - {name: baseline}\n"
                                                           "  - {name: g1, set: {model.attention.gate.position: G1}}\n"
                                                           "seeds: [1, 2]\n"
                                                           "evals: {ppl: {seq_len: [24, 48], stride: 12, data: " + held_out +
                                                           "}, stats: {sequences: 2, data: " + held_out + "}, "
                                                           "passkey: {lengths: [64], trials: 2, format: compact, haystack: " + held_out + "}}\n");
  std::string out() const { return dir.file("out"); }
};

TEST_F(Ablate, RunsTheGridLikeSluiceTrainResumesAndWritesTheTables) {
  // One run alone first (--only, as a Slurm array task would), then the whole grid: that run is
  // skipped, not trained again.
  ASSERT_EQ(run_sluice("ablate " + grid + " --out " + out() + " --only 2", dir.file("only.log")), 0) << read_file(dir.file("only.log"));
  const std::string first_summary = read_file(out() + "/runs/g1-s1/summary.json");
  ASSERT_FALSE(fs::exists(out() + "/runs/baseline-s1"));
  ASSERT_EQ(run_sluice("ablate " + grid + " --out " + out() + " --jobs 2", dir.file("all.log")), 0) << read_file(dir.file("all.log"));
  const std::string log = read_file(dir.file("all.log"));
  EXPECT_NE(log.find("g1-s1: trained (skipped)"), std::string::npos) << log;
  EXPECT_EQ(read_file(out() + "/runs/g1-s1/summary.json"), first_summary);

  const auto results = nlohmann::json::parse(read_file(out() + "/results.json"));
  ASSERT_EQ(results.size(), 4u);
  for (const auto& r : results) {
    EXPECT_TRUE(r["finished"].get<bool>()) << r.dump();
    EXPECT_TRUE(r["ppl"].contains("24") && r["ppl"].contains("48")) << r.dump();
    EXPECT_TRUE(r["first_token_attention"].is_number()) << r.dump();
    EXPECT_TRUE(r["passkey"].contains("64")) << r.dump();
    const auto pk = nlohmann::json::parse(read_file(r["run_dir"].get<std::string>() + "/eval/passkey.json"));
    EXPECT_EQ(pk["format"], "compact");
    EXPECT_EQ(pk["haystack"], fs::absolute(held_out).string());
    EXPECT_EQ(r["gate_mean"].is_number(), r["variant"] == "g1") << r.dump();
    const auto summary = nlohmann::json::parse(read_file(r["run_dir"].get<std::string>() + "/summary.json"));
    EXPECT_EQ(r["final_val_loss"].get<double>(), summary["final_val_loss"].get<double>());
  }
  EXPECT_NE(log.find("± "), std::string::npos) << log;  // the table's mean ± std over the two seeds
  EXPECT_NE(read_file(out() + "/results.csv").find("\ng1,2,"), std::string::npos);
  // The page: every run, and the Grid section with one mean curve per variant.
  const std::string html = read_file(out() + "/report.html");
  EXPECT_NE(html.find("<section id=\"grid\">"), std::string::npos);
  for (const char* run : {"baseline-s1", "baseline-s2", "g1-s1", "g1-s2"}) EXPECT_NE(html.find(run), std::string::npos) << run;
  EXPECT_NE(html.find("data-series=\"baseline\""), std::string::npos);
  EXPECT_NE(html.find("data-series=\"g1\""), std::string::npos);

  // The grid's run is the run `sluice train` makes with the same overrides (threads as the grid
  // gave them: the cores split between 2 jobs).
  const int threads = std::max(1u, std::thread::hardware_concurrency() / 2);
  ASSERT_EQ(run_sluice("train " + base + " --run-dir " + dir.file("direct") + " --set data.train=" + corpus +
                           " --set model.attention.gate.position=G1 --set train.seed=2 --set train.threads=" +
                           std::to_string(threads),
                       dir.file("direct.log")),
            0)
      << read_file(dir.file("direct.log"));
  const auto direct = nlohmann::json::parse(read_file(dir.file("direct/summary.json")));
  const auto grid_run = nlohmann::json::parse(read_file(out() + "/runs/g1-s2/summary.json"));
  EXPECT_EQ(direct["final_val_loss"].get<double>(), grid_run["final_val_loss"].get<double>());
  EXPECT_EQ(direct["final_loss"].get<double>(), grid_run["final_loss"].get<double>());

  // A rerun of a finished grid trains and evaluates nothing.
  ASSERT_EQ(run_sluice("ablate " + grid + " --out " + out(), dir.file("again.log")), 0);
  const std::string again = read_file(dir.file("again.log"));
  EXPECT_EQ(again.find("evaluating"), std::string::npos) << again;
  EXPECT_EQ(again.find(": training"), std::string::npos) << again;
}

TEST_F(Ablate, DryRunAndBadVariantsStartNothing) {
  ASSERT_EQ(run_sluice("ablate " + grid + " --out " + out() + " --dry-run", dir.file("dry.log")), 0);
  const std::string dry = read_file(dir.file("dry.log"));
  EXPECT_NE(dry.find("4 run(s)"), std::string::npos) << dry;
  EXPECT_NE(dry.find("[3] g1-s2"), std::string::npos) << dry;
  EXPECT_NE(dry.find("model.attention.gate.position: none -> G1"), std::string::npos) << dry;
  EXPECT_NE(dry.find("train.seed: 1234 -> 2"), std::string::npos) << dry;
  EXPECT_FALSE(fs::exists(out()));

  const std::string bad = write_file(dir.file("bad.yaml"), read_file(grid) + "axes: {model.attention.gate.position: [G1, G9]}\n");
  EXPECT_EQ(run_sluice("ablate " + bad + " --out " + out(), dir.file("bad.log")), 2);
  const std::string err = read_file(dir.file("bad.log"));
  EXPECT_NE(err.find("run 'baseline-position=G9-s1' (variant baseline)"), std::string::npos) << err;
  EXPECT_NE(err.find("model.attention.gate.position"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(out()));

  // Perplexity on the training text itself is refused: held-out data must be named.
  std::string no_data = read_file(grid);
  no_data = no_data.substr(0, no_data.find("evals:")) + "evals: {ppl: {seq_len: [24]}}\n";
  EXPECT_EQ(run_sluice("ablate " + write_file(dir.file("nodata.yaml"), no_data) + " --out " + out(), dir.file("nodata.log")), 2);
  EXPECT_NE(read_file(dir.file("nodata.log")).find("evals.ppl.data: required for run 'baseline-s1'"), std::string::npos)
      << read_file(dir.file("nodata.log"));
  EXPECT_FALSE(fs::exists(out()));

  std::string no_haystack = read_file(grid);
  no_haystack.replace(no_haystack.rfind(held_out), held_out.size(), dir.file("none.txt"));
  EXPECT_EQ(run_sluice("ablate " + write_file(dir.file("nohay.yaml"), no_haystack) + " --out " + out(), dir.file("nohay.log")), 2);
  EXPECT_NE(read_file(dir.file("nohay.log")).find("evals.passkey.haystack: '" + dir.file("none.txt") + "' does not exist"),
            std::string::npos)
      << read_file(dir.file("nohay.log"));
  EXPECT_FALSE(fs::exists(out()));

  ASSERT_EQ(run_sluice("ablate " + grid + " --out " + out() + " --slurm", dir.file("slurm.log")), 0);
  const std::string sbatch = read_file(out() + "/ablate.sbatch");
  EXPECT_NE(sbatch.find("#SBATCH --array=0-3"), std::string::npos) << sbatch;
  EXPECT_NE(sbatch.find("--only \"$SLURM_ARRAY_TASK_ID\""), std::string::npos) << sbatch;
  EXPECT_FALSE(fs::exists(out() + "/runs/baseline-s1"));
}

}  // namespace
}  // namespace sluice
