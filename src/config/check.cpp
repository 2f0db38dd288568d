#include "config/check.h"

#include <filesystem>
#include <string>

#include "sluice/errors.h"
#include "sluice/tokenizer.h"

namespace sluice::config_detail {
namespace {

namespace fs = std::filesystem;

// A text file, or a folder prepared by `sluice data prepare` (it holds manifest.json).
void check_data_path(std::vector<Problem>& out, const std::string& key, const std::string& path, bool required) {
  if (path.empty()) {
    if (required) out.push_back({key, "is required: a text file or a folder made by `sluice data prepare`"});
    return;
  }
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (ec || !fs::exists(st)) {
    out.push_back({key, "'" + path + "' does not exist"});
  } else if (fs::is_directory(st)) {
    if (!fs::is_regular_file(fs::path(path) / "manifest.json", ec))
      out.push_back({key, "folder '" + path + "' has no manifest.json; make it with `sluice data prepare` or give a text file"});
  } else if (!fs::is_regular_file(st)) {
    out.push_back({key, "'" + path + "' is not a regular file"});
  }
}

std::string strip_key(const std::string& msg, const std::string& key) {
  return msg.compare(0, key.size() + 2, key + ": ") == 0 ? msg.substr(key.size() + 2) : msg;
}

}  // namespace

std::vector<Problem> check_consistency(const Config& c, bool check_paths) {
  std::vector<Problem> out;
  const ModelConfig& m = c.model;

  if (m.head_dim == 0 && m.d_model % m.n_heads != 0) {
    out.push_back({"model.n_heads", "model.d_model (" + std::to_string(m.d_model) + ") is not divisible by n_heads (" +
                                        std::to_string(m.n_heads) +
                                        "); change the sizes or set model.head_dim explicitly"});
  }
  if (m.n_heads % m.n_kv_heads != 0) {
    out.push_back({"model.n_kv_heads", "n_heads (" + std::to_string(m.n_heads) + ") must be a multiple of n_kv_heads (" +
                                           std::to_string(m.n_kv_heads) + ")"});
  }
  if (m.position == "rope" && m.n_heads > 0 && (m.head_dim > 0 || m.d_model % m.n_heads == 0) &&
      m.resolved_head_dim() % 2 != 0) {
    out.push_back({m.head_dim > 0 ? "model.head_dim" : "model.d_model",
                   "RoPE needs an even head dimension, got " + std::to_string(m.resolved_head_dim())});
  }
  int64_t tok_vocab = 0;
  if (check_paths) {
    try {
      tok_vocab = load_tokenizer(c.data.tokenizer, "data.tokenizer")->vocab_size();
    } catch (const InputError& e) {
      out.push_back({"data.tokenizer", strip_key(e.what(), "data.tokenizer")});
    }
  }
  if (tok_vocab > 0 && m.vocab_size > 0 && m.vocab_size < tok_vocab) {
    out.push_back({"model.vocab_size", "is " + std::to_string(m.vocab_size) + " but tokenizer '" + c.data.tokenizer +
                                           "' has " + std::to_string(tok_vocab) + " tokens; need at least that many"});
  }
  if (c.schedule.warmup_steps > c.train.steps) {
    out.push_back({"schedule.warmup_steps", "(" + std::to_string(c.schedule.warmup_steps) + ") exceeds train.steps (" +
                                                std::to_string(c.train.steps) + ")"});
  }
  const bool text_file = !c.data.train.empty() && fs::is_regular_file(c.data.train);
  if (text_file && c.data.val.empty() && c.data.val_fraction == 0.0 && c.train.eval_every > 0) {
    out.push_back({"train.eval_every", "validation needs data.val or data.val_fraction > 0; set eval_every: 0 to "
                                       "train without validation"});
  }
  if (m.attention.window > 0 && m.attention.window >= c.data.seq_len) {
    // Not an error in principle, but a window that never binds is almost always a typo.
    out.push_back({"model.attention.window", "(" + std::to_string(m.attention.window) +
                                                 ") must be smaller than data.seq_len (" +
                                                 std::to_string(c.data.seq_len) + "); use 0 for full attention"});
  }
  if (check_paths) {
    check_data_path(out, "data.train", c.data.train, /*required=*/true);
    check_data_path(out, "data.val", c.data.val, /*required=*/false);
  }
  return out;
}

}  // namespace sluice::config_detail
