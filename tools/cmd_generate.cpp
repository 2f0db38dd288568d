// `sluice generate` and `sluice eval passkey`: the commands that decode from a checkpoint.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>

#include "cli.h"
#include "eval/eval_model.h"
#include "eval/generate.h"
#include "eval/passkey.h"
#include "sluice/errors.h"

namespace sluice::cli {

namespace fs = std::filesystem;

namespace {

void add_generate(CLI::App& app, Io io) {
  struct Args {
    std::string ckpt, prompt;
    int64_t max_new_tokens = 128, top_k = 0;
    double temperature = 1.0, top_p = 1.0;
    uint64_t seed = 0;
    bool no_cache = false;
    std::vector<std::string> sets;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("generate", "Continue a prompt with a checkpoint (KV cache; greedy at temperature 0).");
  cmd->add_option("--ckpt", a->ckpt, "checkpoint directory, or a run directory (its latest checkpoint)")->required();
  cmd->add_option("--prompt", a->prompt, "text to continue")->required();
  cmd->add_option("--max-new-tokens", a->max_new_tokens, "stop after this many tokens (or at EOS)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--temperature", a->temperature, "softmax temperature; 0 = greedy")->check(CLI::Range(0.0, 1e6));
  cmd->add_option("--top-k", a->top_k, "sample among the k most likely tokens (0 = all)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", a->top_p, "nucleus sampling: the most likely tokens up to mass p (1 = all)")
      ->check(CLI::Range(1e-9, 1.0));
  cmd->add_option("--seed", a->seed, "sampling seed: the same seed gives the same text");
  cmd->add_flag("--no-cache", a->no_cache, "recompute the whole sequence for every token (slow; for checking)");
  cmd->add_option("--set", a->sets, "override a key of the checkpoint's config, e.g. model.rope.scaling=dynamic_ntk")
      ->allow_extra_args(false);
  cmd->callback([a, io] {
    EvalModel m = load_eval_model(a->ckpt, a->sets);
    const std::vector<int32_t> prompt = m.tokenizer->encode(a->prompt);
    if (prompt.empty()) throw InputError("--prompt: the prompt encodes to no tokens");
    GenerateOptions o;
    o.max_new_tokens = a->max_new_tokens;
    o.sampling = {a->temperature, a->top_k, a->top_p};
    o.seed = a->seed;
    o.use_cache = !a->no_cache;
    const GenerateResult r = generate(m, prompt, o);
    io.out << m.tokenizer->decode(r.tokens) << "\n";
    const double total = r.prefill_seconds + r.decode_seconds;
    io.err << fmt::format("prompt {} tokens, prefill {:.3f} s; generated {} tokens{} in {:.3f} s: {:.1f} tokens/s "
                          "({:.1f} tokens/s after the prompt; {}, {})\n",
                          prompt.size(), r.prefill_seconds, r.tokens.size(), r.stopped_at_eos ? " (stopped at EOS)" : "",
                          total, total > 0 ? static_cast<double>(r.tokens.size()) / total : 0.0,
                          r.decode_seconds > 0 && r.tokens.size() > 1
                              ? static_cast<double>(r.tokens.size() - 1) / r.decode_seconds
                              : 0.0,
                          o.use_cache ? "KV cache" : "no cache", m.bf16 ? "bf16" : "fp32");
  });
}

void add_passkey(CLI::App& eval, Io io) {
  struct Args {
    std::string ckpt, lengths, haystack, out, format = "landmark";
    int64_t trials = 20, depth_buckets = 5;
    uint64_t seed = 0;
    std::vector<std::string> sets;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = eval.add_subcommand("passkey", "Passkey retrieval accuracy per context length and needle depth.");
  cmd->add_option("--ckpt", a->ckpt, "checkpoint directory, or a run directory (its latest checkpoint)")->required();
  cmd->add_option("--lengths", a->lengths, "prompt lengths in tokens, e.g. 256,512,1024")->required();
  cmd->add_option("--trials", a->trials, "trials per length")->check(CLI::PositiveNumber);
  cmd->add_option("--seed", a->seed, "seed of depths and passkeys");
  cmd->add_option("--haystack", a->haystack, "text file whose consecutive text replaces the repeated filler");
  cmd->add_option("--format", a->format,
                  "landmark: the Landmark/CoCA prompt; compact: no task line, a short needle, filler cut into "
                  "words (fits 128 tokens; what `sluice data passkey-corpus` trains on)");
  cmd->add_option("--depth-buckets", a->depth_buckets, "depth buckets [0,1/n), ... for the per-depth accuracy")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--out", a->out, "result JSON")->required();
  cmd->add_option("--set", a->sets, "override a key of the checkpoint's config, e.g. model.rope.scaling=yarn")
      ->allow_extra_args(false);
  cmd->callback([a, io] {
    PasskeyOptions o;
    o.lengths = parse_int_list(a->lengths, "--lengths");
    o.trials = a->trials;
    o.seed = a->seed;
    o.depth_buckets = a->depth_buckets;
    o.format = parse_passkey_format(a->format, "--format");
    PasskeyFiller filler = a->haystack.empty() ? PasskeyFiller::repeated() : PasskeyFiller::from_file(a->haystack);
    if (o.format == PasskeyFormat::compact) filler = filler.words();
    EvalModel m = load_eval_model(a->ckpt, a->sets);
    // Every prompt is built before the model runs, so a length too short fails at once.
    for (int64_t len : o.lengths) make_passkey_prompt(*m.tokenizer, filler, len, 0.5, 10000, o.format);
    const auto t0 = std::chrono::steady_clock::now();
    const PasskeyResult r = run_passkey(*m.tokenizer, filler, o, model_passkey_decoder(m));
    nlohmann::json j = passkey_json(r, o, eval_settings_json(m),
                                    a->haystack.empty() ? std::string() : fs::absolute(a->haystack).string());
    j["elapsed_s"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::string header = fmt::format("{:>8} {:>7} {:>9}", "length", "trials", "accuracy");  // then depth buckets
    for (const PasskeyBucket& b : r.lengths.front().by_depth) {
      header += fmt::format(" {:>9}", fmt::format("{:.2f}-{:.2f}", b.depth_lo, b.depth_hi));
    }
    io.out << header << "\n";
    for (const PasskeyLengthResult& l : r.lengths) {
      std::string row = fmt::format("{:>8} {:>7} {:>9.3f}", l.length, l.trials, l.accuracy());
      for (const PasskeyBucket& b : l.by_depth) {
        row += b.trials > 0 ? fmt::format(" {:>9}", fmt::format("{}/{}", b.correct, b.trials)) : fmt::format(" {:>9}", "-");
      }
      io.out << row << "\n";
    }
    write_result(a->out, j);
    io.out << "wrote " << a->out << "\n";
    record_in_tensorboard(m.checkpoint, m.step, j, io);
  });
}

}  // namespace

void add_generate_commands(CLI::App& app, Io io) {
  add_generate(app, io);
  CLI::App* eval = app.get_subcommand("eval");  // registered by add_eval_commands
  add_passkey(*eval, io);
}

}  // namespace sluice::cli
