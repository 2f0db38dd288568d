// `sluice eval ppl` (and the other evaluation commands)
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>

#include "cli.h"
#include "data/token_corpus.h"
#include "eval/eval_model.h"
#include "eval/attention_stats.h"
#include "eval/perplexity.h"
#include "train/tensorboard_writer.h"
#include "train/safetensors.h"
#include "sluice/fs.h"
#include "train/device.h"
#include "sluice/errors.h"
#include "train/run_dir.h"

namespace sluice::cli {

namespace fs = std::filesystem;

// "512,1024,2048" -> {512, 1024, 2048}
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& arg) {
  std::vector<int64_t> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    try {
      size_t used = 0;
      const long long v = std::stoll(item, &used);
      if (used != item.size() || v <= 0) throw std::invalid_argument(item);
      out.push_back(v);
    } catch (const std::exception&) {
      throw InputError(arg + ": expected positive integers separated by commas, got '" + text + "'");
    }
  }
  if (out.empty()) throw InputError(arg + ": expected at least one length");
  return out;
}

// Writes a result file atomically, creating its folder.
void write_result(const std::string& path, const nlohmann::json& j) {
  const fs::path p(path);
  if (p.has_parent_path()) fs::create_directories(p.parent_path());
  write_file_atomic(path, j.dump(2) + "\n");
}

std::string write_new_directory(const std::string& out, const std::string& arg, const std::string& tmp_suffix,
                                const std::function<void(const std::string& dir)>& write) {
  std::error_code ec;
  if (fs::exists(out, ec) && !fs::is_empty(out, ec))
    throw InputError(arg + ": '" + out + "' exists and is not empty; write into a new directory");
  const fs::path final_dir = fs::absolute(out).lexically_normal();
  if (final_dir.has_parent_path()) fs::create_directories(final_dir.parent_path());
  const fs::path tmp = final_dir.string() + tmp_suffix;
  remove_tree(tmp.string());
  try {
    fs::create_directories(tmp);
    write(tmp.string());
    if (fs::exists(final_dir, ec)) fs::remove(final_dir);  // an empty directory
    fs::rename(tmp, final_dir);
    fsync_path(final_dir.parent_path().string());
  } catch (...) {
    remove_tree(tmp.string());
    throw;
  }
  return final_dir.string();
}

void record_in_tensorboard(const std::string& checkpoint, int64_t step, const nlohmann::json& j, Io io) {
  const fs::path ckpt = fs::absolute(checkpoint).lexically_normal();
  const fs::path run = ckpt.parent_path().parent_path();
  std::error_code ec;
  if (ckpt.parent_path().filename() != "checkpoints" || !fs::is_directory(run / "tb", ec)) return;
  const std::vector<tb::Scalar> scalars = eval_tensorboard_scalars(j);
  if (scalars.empty()) return;
  try {
    io.out << "tensorboard: " << write_eval_event(run.string(), step, scalars) << "\n";
  } catch (const std::exception& e) {  // the result file is written; TensorBoard is a view of it
    io.err << "warning: " << e.what() << "\n";
  }
}

// The evaluation corpus: a dataset folder's `split` (its train split when that one is empty),
// or a text file as one document.
TokenCorpus open_eval_corpus(const std::string& path, const std::string& split, const Tokenizer& tok) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw InputError("--data: '" + path + "' does not exist");
  TokenCorpus c = TokenCorpus::open(path, split, tok, "--data", /*verify_checksums=*/false);
  if (c.tokens() == 0 && TokenCorpus::is_prepared_dataset(path)) c = TokenCorpus::open(path, "train", tok, "--data", false);
  if (c.tokens() < 2) throw InputError("--data: '" + path + "' holds no tokens to evaluate");
  return c;
}

void add_eval_commands(CLI::App& app, Io io) {
  CLI::App* eval = app.add_subcommand("eval", "Evaluate a checkpoint.");
  eval->require_subcommand(1);

  struct PplArgs {
    std::string ckpt, data, seq_lens, out, split = "val";
    int64_t stride = 0, max_docs = 0, batch = 4;
    std::vector<std::string> sets;
  };
  auto a = std::make_shared<PplArgs>();
  CLI::App* ppl = eval->add_subcommand("ppl", "Token-level perplexity per sequence length (sliding window with --stride).");
  ppl->add_option("--ckpt", a->ckpt, "checkpoint directory, or a run directory (its latest checkpoint)")->required();
  ppl->add_option("--data", a->data, "dataset folder (its val split) or a text file")->required();
  ppl->add_option("--seq-len", a->seq_lens, "window lengths, e.g. 512,1024,2048")->required();
  ppl->add_option("--stride", a->stride, "move windows by this many tokens and score only their last S (default: the window length)");
  ppl->add_option("--max-docs", a->max_docs, "evaluate only the first K documents");
  ppl->add_option("--split", a->split, "split of a dataset folder")->check(CLI::IsMember({"val", "train"}));
  ppl->add_option("--batch", a->batch, "windows per forward pass")->check(CLI::PositiveNumber);
  ppl->add_option("--out", a->out, "result JSON")->required();
  ppl->add_option("--set", a->sets, "override a key of the checkpoint's config, e.g. model.rope.scaling=dynamic_ntk")
      ->allow_extra_args(false);
  ppl->callback([a, io] {
    const std::vector<int64_t> lens = parse_int_list(a->seq_lens, "--seq-len");
    if (a->stride < 0) throw InputError("--stride: expected a positive number");
    for (int64_t n : lens)
      if (a->stride > n) throw InputError(fmt::format("--stride: {} is longer than --seq-len {}; tokens would be skipped", a->stride, n));
    EvalModel m = load_eval_model(a->ckpt, a->sets);
    const TokenCorpus corpus = open_eval_corpus(a->data, a->split, *m.tokenizer);
    const auto t0 = std::chrono::steady_clock::now();
    reset_peak_device_memory(m.device);
    nlohmann::json results = nlohmann::json::array();
    io.out << fmt::format("{:>8} {:>7} {:>10} {:>6} {:>9} {:>10}\n", "seq_len", "stride", "tokens", "docs", "nll", "ppl");
    for (int64_t n : lens) {
      const int64_t stride = a->stride > 0 ? a->stride : n;
      const PerplexityResult r = evaluate_perplexity(m, corpus, n, stride, a->max_docs, a->batch);
      const double ppl_value = std::exp(r.nll());
      results.push_back({{"seq_len", n}, {"stride", a->stride > 0 ? nlohmann::json(stride) : nlohmann::json(nullptr)},
                         {"tokens", r.tokens}, {"documents", r.documents}, {"nll", r.nll()}, {"ppl", ppl_value}});
      io.out << fmt::format("{:>8} {:>7} {:>10} {:>6} {:>9.4f} {:>10.3f}\n", n, stride, r.tokens, r.documents, r.nll(), ppl_value);
    }
    const nlohmann::json j = {{"kind", "eval_ppl"},
                              {"settings", eval_settings_json(m)},
                              {"data", fs::absolute(a->data).string()},
                              {"split", a->split},
                              {"max_docs", a->max_docs},
                              {"protocol", "sliding window (Press et al.): windows of seq_len moved by stride, the last "
                                           "stride predictions of each window scored, every target once; documents "
                                           "separately; mean NLL over tokens"},
                              {"results", results},
                              {"peak_device_memory_bytes", peak_device_memory(m.device)},
                              {"elapsed_s", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
    write_result(a->out, j);
    io.out << "wrote " << a->out << "\n";
    record_in_tensorboard(m.checkpoint, m.step, j, io);
  });
}

void add_stats_commands(CLI::App& app, Io io) {
  CLI::App* stats = app.add_subcommand("stats", "Statistics of a checkpoint's forward passes.");
  stats->require_subcommand(1);
  struct Args {
    std::string ckpt, data, out, split = "val";
    int64_t seq_len = 0, sequences = 8;
    std::vector<std::string> sets;
  };
  auto a = std::make_shared<Args>();
  CLI::App* attn = stats->add_subcommand(
      "attention", "Attention sink (first-token probability), gate scores and sparsity, activation magnitudes.");
  attn->add_option("--ckpt", a->ckpt, "checkpoint directory, or a run directory (its latest checkpoint)")->required();
  attn->add_option("--data", a->data, "dataset folder (its val split) or a text file")->required();
  attn->add_option("--seq-len", a->seq_len, "tokens per sequence (default: the checkpoint's data.seq_len)");
  attn->add_option("--sequences", a->sequences, "number of sequences")->check(CLI::PositiveNumber);
  attn->add_option("--split", a->split, "split of a dataset folder")->check(CLI::IsMember({"val", "train"}));
  attn->add_option("--out", a->out, "result JSON")->required();
  attn->add_option("--set", a->sets, "override a key of the checkpoint's config")->allow_extra_args(false);
  attn->callback([a, io] {
    EvalModel m = load_eval_model(a->ckpt, a->sets);
    const int64_t seq_len = a->seq_len > 0 ? a->seq_len : m.config.data.seq_len;
    const TokenCorpus corpus = open_eval_corpus(a->data, a->split, *m.tokenizer);
    std::string how;
    const std::vector<at::Tensor> seqs = select_sequences(corpus, seq_len, a->sequences, how);
    if (seqs.empty()) throw InputError(fmt::format("--data: no sequence of {} tokens in '{}'", seq_len, a->data));
    const auto t0 = std::chrono::steady_clock::now();
    reset_peak_device_memory(m.device);
    AttentionStatsObserver obs(m.config.model.n_layers);
    {
      at::NoGradGuard no_grad;
      AutocastScope autocast(m.device, m.bf16);
      for (const at::Tensor& s : seqs) m.model->hidden(s.to(m.device), &obs);
    }
    nlohmann::json j = obs.to_json();
    j["kind"] = "stats_attention";
    j["settings"] = eval_settings_json(m);
    j["data"] = fs::absolute(a->data).string();
    j["sequences"] = seqs.size();
    j["seq_len"] = seq_len;
    j["sequence_starts"] = how;
    j["peak_device_memory_bytes"] = peak_device_memory(m.device);
    j["elapsed_s"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    io.out << fmt::format("{} sequences of {} tokens ({}); first-token attention per layer:\n", seqs.size(), seq_len, how);
    const auto& per_layer = j["sink"]["per_layer"];
    for (size_t i = 0; i < per_layer.size(); ++i) {
      const auto& acts = j["activations"]["per_layer"][i];
      io.out << fmt::format("  layer {:>2}: sink {:.3f}  max|h| {:.1f}", i, per_layer[i].is_null() ? 0.0 : per_layer[i].get<double>(),
                            acts.is_null() ? 0.0 : acts["residual_max"].get<double>());
      if (!j["gates"].is_null() && !j["gates"]["per_layer"][i].is_null())
        io.out << fmt::format("  gate mean {:.3f}", j["gates"]["per_layer"][i]["mean"].get<double>());
      io.out << "\n";
    }
    if (!j["sink"]["mean"].is_null())
      io.out << fmt::format("mean sink {:.3f}, heads above 0.5: {:.1f}%\n", j["sink"]["mean"].get<double>(),
                            100 * j["sink"]["share_heads_over_half"].get<double>());
    write_result(a->out, j);
    io.out << "wrote " << a->out << "\n";
    record_in_tensorboard(m.checkpoint, m.step, j, io);
  });
}

}  // namespace sluice::cli
