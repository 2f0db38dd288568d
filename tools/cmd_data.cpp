// `sluice data train-tokenizer | prepare | inspect | passkey-corpus`
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>

#include "cli.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "eval/passkey_corpus.h"
#include "sluice/errors.h"
#include "sluice/fs.h"
#include "sluice/tokenizer.h"

namespace sluice::cli {

namespace {

namespace fs = std::filesystem;

void add_passkey_corpus(CLI::App& data, Io io) {
  struct Args {
    std::string haystack, tokenizer = "byte", out;
    PasskeyCorpusOptions o;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = data.add_subcommand(
      "passkey-corpus", "Training text for passkey retrieval: compact passkey prompts and their answers, with the "
                        "haystack's consecutive words (or the repeated filler) as filler (docs/eval.md).");
  cmd->add_option("--haystack", a->haystack,
                  "UTF-8 text whose words fill the samples, in order (default: the protocol's repeated "
                  "filler, the text `sluice eval passkey` uses without --haystack)");
  cmd->add_option("--tokens", a->o.tokens, "write samples until they hold this many tokens")->required();
  cmd->add_option("--min-length", a->o.min_tokens, "shortest sample (prompt + answer) in tokens");
  cmd->add_option("--max-length", a->o.max_tokens, "longest sample in tokens (at most the training seq_len)");
  cmd->add_option("--seed", a->o.seed, "seed of sample lengths, needle depths and passkeys");
  cmd->add_option("--tokenizer", a->tokenizer, "tokenizer the lengths are counted in: byte, a folder or a .model");
  cmd->add_option("--out", a->out, "output text file (written whole or not at all)")->required();
  cmd->callback([a, io] {
    const std::unique_ptr<Tokenizer> tok = load_tokenizer(a->tokenizer, "--tokenizer");
    const PasskeyFiller words =
        (a->haystack.empty() ? PasskeyFiller::repeated() : PasskeyFiller::from_file(a->haystack)).words();
    const std::string dir = fs::path(a->out).parent_path().string();
    if (!dir.empty() && !fs::is_directory(dir)) throw InputError("--out: folder '" + dir + "' does not exist");
    std::ostringstream text;  // a few MB: written whole, through a temporary file, or not at all
    const PasskeyCorpusSummary s = write_passkey_corpus(*tok, words, a->o, text);
    const std::string tmp = a->out + ".tmp";
    write_file_synced(tmp, text.str());
    if (std::rename(tmp.c_str(), a->out.c_str()) != 0) {
      std::remove(tmp.c_str());
      throw std::runtime_error("cannot rename " + tmp + " to " + a->out + ": " + std::strerror(errno));
    }
    io.out << fmt::format("passkey corpus: {} ({} samples, {} tokens, {} haystack words used, {} passed over)\n",
                          a->out, s.samples, s.tokens, s.filler_units, s.skipped_units);
  });
}

}  // namespace

void add_data_commands(CLI::App& app, Io io) {
  CLI::App* data = app.add_subcommand("data", "Tokenizers and token shards.");
  data->require_subcommand(1);

  auto tok = std::make_shared<TokenizerTrainingOptions>();
  CLI::App* train_tok = data->add_subcommand("train-tokenizer", "Train a SentencePiece tokenizer (byte fallback on).");
  train_tok->add_option("--input", tok->inputs, "text files or folders")->required();
  train_tok->add_option("--vocab-size", tok->vocab_size, "vocabulary size")->required();
  train_tok->add_option("--model-type", tok->model_type, "bpe or unigram")->check(CLI::IsMember({"bpe", "unigram"}));
  train_tok->add_option("--out", tok->out_dir, "output folder (tokenizer.model, tokenizer.json)")->required();
  train_tok->add_option("--threads", tok->threads, "training threads (0: all cores)");
  train_tok->add_option("--max-sentences", tok->max_sentences, "lines sampled for training");
  train_tok->callback([tok, io] {
    TokenizerTrainingOptions o = *tok;
    o.inputs = expand_inputs(o.inputs);
    train_tokenizer(o);
    io.out << "tokenizer: " << o.out_dir << "/tokenizer.model\n";
  });

  auto prep = std::make_shared<PrepareOptions>();
  auto quiet = std::make_shared<bool>(false);
  CLI::App* prepare = data->add_subcommand("prepare", "Tokenize text into binary shards with a manifest.json.");
  prepare->add_option("--tokenizer", prep->tokenizer, "tokenizer folder, .model file, or 'byte'")->required();
  prepare->add_option("--input", prep->inputs, "text files or folders")->required();
  prepare->add_option("--out", prep->out_dir, "output folder (must not exist or be empty)")->required();
  prepare->add_option("--val-fraction", prep->val_fraction, "every round(1/F)-th document goes to the val split");
  prepare->add_option("--workers", prep->workers, "tokenizer threads (0: all cores)");
  prepare->add_option("--documents", prep->documents, "files: one document per file; blank-lines: blocks between empty lines")
      ->check(CLI::IsMember({"files", "blank-lines"}));
  prepare->add_option("--shard-tokens", prep->shard_tokens, "start a new shard after this many tokens");
  prepare->add_flag("--quiet", *quiet, "no progress line");
  prepare->callback([prep, quiet, io] {
    PrepareOptions o = *prep;
    o.progress = !*quiet;
    const PrepareSummary s = prepare_shards(o);
    io.out << fmt::format(
        "dataset: {} ({} shards; train {} tokens in {} documents; val {} tokens in {} documents; {:.1f} MB in "
        "{:.1f}s = {:.2f} MB/s)\n",
        o.out_dir, s.shards, s.train_tokens, s.train_documents, s.val_tokens, s.val_documents, s.bytes / 1e6,
        s.seconds, s.bytes / 1e6 / std::max(s.seconds, 1e-9));
  });

  add_passkey_corpus(*data, io);

  auto dir = std::make_shared<std::string>();
  CLI::App* inspect = data->add_subcommand("inspect", "Check every shard of a dataset folder and summarise it.");
  inspect->add_option("DIR", *dir, "dataset folder")->required();
  inspect->callback([dir, io] {
    const std::string path = *dir + "/manifest.json";
    std::ifstream in(path);
    if (!in) throw InputError("DIR: '" + *dir + "' has no manifest.json");
    nlohmann::json m;
    try {
      m = nlohmann::json::parse(in);
    } catch (const std::exception& e) {
      throw InputError("DIR: cannot parse " + path + ": " + e.what());
    }
    for (const auto& s : m["shards"]) {
      const ShardReader r(*dir + "/" + s.value("file", ""), 0, /*verify_checksum=*/true);
      io.out << fmt::format("{:<20} {:>5} {:>12} tokens {:>9} documents  uint{}  ok\n", s.value("file", ""),
                            s.value("split", ""), r.tokens(), r.documents(), 8 * r.token_bytes());
    }
    io.out << fmt::format("tokenizer {} ({}, vocabulary {})\n", m["tokenizer"].value("hash", ""),
                          m["tokenizer"].value("spec", ""), m["tokenizer"].value("vocab_size", 0));
  });
}

}  // namespace sluice::cli
