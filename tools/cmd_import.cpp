// `sluice import hf`: a Hugging Face transformers model directory (config.json + safetensors,
// sharded or not, fp32/bf16/fp16) as a Sluice checkpoint, for `sluice eval`, `sluice generate`
// and `sluice train --init-from` (docs/interop.md).
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <memory>
#include <set>
#include <string>

#include "cli.h"
#include "interop/hf_import.h"
#include "interop/hf_tensors.h"
#include "sluice/errors.h"
#include "sluice/fs.h"
#include "sluice/model.h"
#include "train/checkpoint.h"
#include "train/safetensors.h"

#include <ATen/ATen.h>

namespace sluice::cli {
namespace fs = std::filesystem;
namespace {

struct ImportArgs {
  std::string model, out;
};

// The weights file(s) of `dir`, read and validated (named in errors).
SafetensorsFile read_weights(const fs::path& dir, std::string& described) {
  std::error_code ec;
  if (fs::exists(dir / "model.safetensors.index.json", ec)) {
    described = (dir / "model.safetensors.index.json").string();
  } else if (fs::exists(dir / "model.safetensors", ec)) {
    described = (dir / "model.safetensors").string();
  } else {
    throw InputError("--model: '" + dir.string() + "' has neither model.safetensors nor model.safetensors.index.json" +
                     (fs::exists(dir / "pytorch_model.bin", ec) ? " (pytorch_model.bin is not read: convert it to safetensors)" : ""));
  }
  return read_safetensors_sharded(dir.string(), "model");
}

void import_hf(const ImportArgs& a, Io io) {
  const fs::path dir(a.model);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw InputError("--model: '" + a.model + "' is not a directory");
  const fs::path config_file = dir / "config.json";
  if (!fs::exists(config_file, ec)) throw InputError("--model: '" + a.model + "' has no config.json");
  if (fs::exists(a.out, ec) && !fs::is_empty(a.out, ec))
    throw InputError("--out: '" + a.out + "' exists and is not empty; import into a new directory");
  const std::optional<std::string> config_text = read_whole_file(config_file.string());
  if (!config_text) throw InputError("--model: cannot read '" + config_file.string() + "'");
  HfImportPlan plan = plan_hf_import(*config_text, config_file.string());
  Config& cfg = plan.config;

  const fs::path out = fs::absolute(a.out).lexically_normal();  // where write_new_directory puts it
  const bool sentencepiece = fs::exists(dir / "tokenizer.model", ec);
  if (sentencepiece) cfg.data.tokenizer = (out / "tokenizer").string();

  // The model Sluice builds from the config says which tensors, of which shapes, must be there.
  std::string weights_file;
  SafetensorsFile weights = read_weights(dir, weights_file);
  // MoE experts stacked as Sluice keeps them; Qwen3-Next's q_proj and norms
  const GateLayout gate{cfg.model.n_heads, cfg.model.resolved_head_dim(), false};
  weights.tensors = from_hf_tensors(weights.tensors, weights_file, plan.architecture, gate);
  CausalLM model(cfg.model);
  NamedTensors tensors;
  std::set<std::string> expected;
  for (const auto& item : model->named_parameters()) {
    const std::string& name = item.key();
    expected.insert(name);
    const auto it = weights.tensors.find(name);
    if (it == weights.tensors.end()) throw InputError(fmt::format("{}: tensor {} is missing", weights_file, name));
    const at::Tensor& t = it->second;
    if (t.sizes() != item.value().sizes())
      throw InputError(fmt::format("{}: tensor {} has shape {}, {} needs {}", weights_file, name, c10::str(t.sizes()),
                                   plan.architecture, c10::str(item.value().sizes())));
    if (!t.is_floating_point())
      throw InputError(fmt::format("{}: tensor {} is not floating point ({})", weights_file, name, c10::str(t.scalar_type())));
    tensors.emplace_back(name, t.to(at::kFloat).contiguous());  // fp32 as Sluice trains; bitwise from fp32 files
  }
  for (const auto& [name, t] : weights.tensors) {
    if (expected.count(name)) continue;
    // tied models may carry the head's copy; old exports carry RoPE's buffer
    if (name == "lm_head.weight" && cfg.model.tie_embeddings) continue;
    const std::string buffer = "rotary_emb.inv_freq";
    if (name.size() >= buffer.size() && name.compare(name.size() - buffer.size(), buffer.size(), buffer) == 0) continue;
    throw InputError(fmt::format("{}: tensor {} has no place in Sluice's {} ({}); refusing rather than dropping it",
                                 weights_file, name, plan.architecture, cfg.model.tie_embeddings ? "tied" : "untied"));
  }

  write_new_directory(a.out, "--out", ".tmp-import", [&](const std::string& tmp_dir) {
    const fs::path tmp(tmp_dir);
    if (sentencepiece) {
      fs::create_directories(tmp / "tokenizer");
      fs::copy_file(dir / "tokenizer.model", tmp / "tokenizer" / "tokenizer.model");
    }
    TrainingState state;  // step 0: `--init-from` starts a new run from these weights
    save_checkpoint(tmp_dir, cfg, tensors, {}, state);
  });
  io.out << fmt::format("imported {} ({}) to {}: {} tensors, {} parameters{}\n", a.model, plan.architecture, out.string(),
                        tensors.size(), [&] {
                          int64_t n = 0;
                          for (const auto& [name, t] : tensors) n += t.numel();
                          return n;
                        }(),
                        sentencepiece ? "; tokenizer.model copied"
                        : plan.byte_tokenizer
                            ? "; byte tokenizer (a Sluice export)"
                            : "; no SentencePiece tokenizer: name one with --set data.tokenizer=... when you use it");
  io.out << fmt::format("use: sluice eval ppl --ckpt {0} ... | sluice train {0}/checkpoints/step-00000000/config.yaml "
                        "--init-from {0} --set data.train=...\n",
                        out.string());
}

}  // namespace

void add_import_commands(CLI::App& app, Io io) {
  CLI::App* imp = app.add_subcommand("import", "Import a model from another ecosystem's format.");
  imp->require_subcommand(1);
  auto a = std::make_shared<ImportArgs>();
  CLI::App* hf = imp->add_subcommand("hf", "A Hugging Face transformers model directory (docs/interop.md).");
  hf->add_option("--model", a->model, "directory with config.json and model.safetensors (or its index)")->required();
  hf->add_option("--out", a->out, "new directory: a run directory holding the checkpoint (step 0)")->required();
  hf->callback([a, io] { import_hf(*a, io); });
}

}  // namespace sluice::cli
