// `sluice data train-tokenizer`: SentencePiece training with settings that make every UTF-8
// text round-trip: byte fallback (unknown characters become byte pieces), identity
// normalisation, no dummy prefix and no whitespace folding.
#include <fmt/format.h>
#include <sentencepiece_trainer.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "data/hash.h"
#include "sluice/errors.h"
#include "sluice/fs.h"
#include "sluice/log.h"
#include "sluice/tokenizer.h"

namespace sluice {

namespace fs = std::filesystem;

void train_tokenizer(const TokenizerTrainingOptions& opts) {
  if (opts.inputs.empty()) throw InputError("--input: at least one text file is required");
  for (const auto& in : opts.inputs) {
    std::error_code ec;
    if (!fs::is_regular_file(in, ec)) throw InputError("--input: '" + in + "' is not a readable file");
  }
  if (opts.model_type != "bpe" && opts.model_type != "unigram")
    throw InputError("--model-type: expected bpe or unigram, got '" + opts.model_type + "'");
  if (opts.vocab_size < 300) throw InputError("--vocab-size: expected at least 300 (256 byte pieces + specials + text)");
  const fs::path out(opts.out_dir);
  if (fs::exists(out / "tokenizer.model")) {
    throw InputError("--out: '" + opts.out_dir + "' already holds a tokenizer.model; choose a new directory");
  }

  std::string inputs;
  for (const auto& in : opts.inputs) inputs += (inputs.empty() ? "" : ",") + in;
  const int threads = opts.threads > 0 ? opts.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const bool created = !fs::exists(out);
  fs::create_directories(out);
  const std::string prefix = (out / ".tokenizer-tmp").string();
  const std::unordered_map<std::string, std::string> args = {
      {"input", inputs},
      {"model_prefix", prefix},
      {"vocab_size", std::to_string(opts.vocab_size)},
      {"model_type", opts.model_type},
      {"byte_fallback", "true"},
      {"normalization_rule_name", "identity"},
      {"add_dummy_prefix", "false"},
      {"remove_extra_whitespaces", "false"},
      {"split_digits", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"character_coverage", "0.9995"},
      {"input_sentence_size", std::to_string(opts.max_sentences)},
      {"shuffle_input_sentence", "true"},
      {"num_threads", std::to_string(threads)},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "3"},
      {"minloglevel", "1"},
  };
  log::info(fmt::format("training a {} SentencePiece tokenizer, vocabulary {}, on {} file(s) with {} threads",
                        opts.model_type, opts.vocab_size, opts.inputs.size(), threads));
  const auto t0 = std::chrono::steady_clock::now();
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (!status.ok()) {
    if (created) remove_tree(out.string());
    else fs::remove(prefix + ".model"), fs::remove(prefix + ".vocab");
    throw InputError("tokenizer training failed: " + status.ToString() +
                     (status.ToString().find("Vocabulary size") != std::string::npos
                          ? " (the text is too small for --vocab-size; lower it)"
                          : ""));
  }
  fs::rename(prefix + ".model", out / "tokenizer.model");
  fs::rename(prefix + ".vocab", out / "tokenizer.vocab");

  const auto tok = load_tokenizer((out / "tokenizer.model").string(), "--out");
  const SpecialTokens sp = tok->specials();
  nlohmann::json j = {{"type", "sentencepiece"},
                      {"model_type", opts.model_type},
                      {"vocab_size", tok->vocab_size()},
                      {"bos_id", sp.bos},
                      {"eos_id", sp.eos},
                      {"pad_id", sp.pad},
                      {"unk_id", sp.unk},
                      {"hash", hex64(tok->hash())},
                      {"byte_fallback", true},
                      {"normalization", "identity"},
                      {"inputs", opts.inputs}};
  std::ofstream(out / "tokenizer.json") << j.dump(2) << "\n";
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log::info(fmt::format("wrote {} and tokenizer.json in {:.1f}s", (out / "tokenizer.model").string(), secs));
}

}  // namespace sluice
