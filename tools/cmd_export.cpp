// `sluice export hf`: a checkpoint as a Hugging Face transformers model directory
// (config.json, generation_config.json, model.safetensors [sharded with an index], the
// SentencePiece tokenizer), loadable with AutoModelForCausalLM.from_pretrained (docs/interop.md).
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <memory>
#include <set>
#include <string>

#include "cli.h"
#include "interop/hf_config.h"
#include "interop/hf_tensors.h"
#include "sluice/errors.h"
#include "sluice/fs.h"
#include "sluice/tokenizer.h"
#include "train/checkpoint.h"
#include "train/run_dir.h"
#include "train/safetensors.h"

#include <ATen/ATen.h>

namespace sluice::cli {
namespace fs = std::filesystem;
namespace {

// The tensor names of the stock class: every one must be in the checkpoint and nothing else.
std::set<std::string> expected_tensors(const Config& cfg) {
  const ModelConfig& m = cfg.model;
  std::set<std::string> names = {"model.embed_tokens.weight", "model.norm.weight"};
  if (!m.tie_embeddings) names.insert("lm_head.weight");
  for (int64_t i = 0; i < m.n_layers; ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    for (const char* t : {"input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                          "self_attn.v_proj", "self_attn.o_proj"})
      names.insert(p + t + ".weight");
    if (!m.is_moe_layer(i)) {
      for (const char* t : {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}) names.insert(p + t + ".weight");
    } else {
      names.insert(p + "mlp.gate.weight");  // the router
      for (const char* t : {"gate_proj", "up_proj", "down_proj"}) names.insert(p + "mlp.experts." + t);  // stacked
      if (m.moe.shared_experts > 0) {
        for (const char* t : {"gate_proj", "up_proj", "down_proj"}) names.insert(p + "mlp.shared_expert." + t + ".weight");
        if (m.moe.shared_expert_gate) names.insert(p + "mlp.shared_expert_gate.weight");
      }
    }
    if (m.qk_norm) {
      names.insert(p + "self_attn.q_norm.weight");
      names.insert(p + "self_attn.k_norm.weight");
    }
    if (is_qwen3_next_gate(m)) names.insert(p + "self_attn.g_proj.weight");
  }
  return names;
}

// tokenizer.model of a SentencePiece data.tokenizer (a directory or the file itself).
std::string sentencepiece_file(const std::string& spec) {
  fs::path p(spec);
  std::error_code ec;
  if (fs::is_directory(p, ec)) p /= "tokenizer.model";
  return p.string();
}

struct ExportArgs {
  std::string ckpt, out, dtype = "fp32";
  double max_shard_mb = 5000;
};

void export_hf(const ExportArgs& a, Io io) {
  std::error_code ec;
  if (fs::exists(a.out, ec) && !fs::is_empty(a.out, ec))
    throw InputError("--out: '" + a.out + "' exists and is not empty; export into a new directory");  // before reading
  const std::string ckpt = resolve_checkpoint(a.ckpt);
  const CheckpointInfo info = read_checkpoint_info(ckpt);
  SafetensorsFile weights = read_safetensors_sharded(ckpt, "model");
  const auto embed = weights.tensors.find("model.embed_tokens.weight");
  if (embed == weights.tensors.end())
    throw InputError("--ckpt: '" + ckpt + "' has no tensor model.embed_tokens.weight");
  const std::unique_ptr<Tokenizer> tok = load_tokenizer(info.config.data.tokenizer);
  HfModelConfig hf = hf_config_for(info.config, embed->second.size(0), tok->specials(),
                                   a.dtype == "bf16" ? "bfloat16" : "float32");
  if (tok->kind() == "byte") hf.config["sluice_tokenizer"] = "byte";  // for `sluice import hf`

  // The remote-code model takes Sluice's tensors as they are; a stock class exactly its own.
  std::set<std::string> want;
  if (hf.remote_code) {
    for (const auto& [name, t] : weights.tensors) want.insert(name);
  } else {
    want = expected_tensors(info.config);
  }
  for (const auto& [name, t] : weights.tensors)
    if (!want.count(name)) throw InputError(fmt::format("--ckpt: tensor {} of '{}' has no place in {}", name, ckpt, hf.architecture));
  for (const std::string& name : want)
    if (!weights.tensors.count(name)) throw InputError(fmt::format("--ckpt: '{}' lacks tensor {}", ckpt, name));
  NamedTensors tensors;
  const ModelConfig& m = info.config.model;
  const GateLayout gate{m.n_heads, m.resolved_head_dim(), m.attention.gate.granularity == "headwise"};
  for (auto& [name, t] : hf.remote_code ? weights.tensors : to_hf_tensors(weights.tensors, hf.architecture, gate))
    tensors.emplace_back(name, (a.dtype == "bf16" && t.is_floating_point() ? t.to(at::kBFloat16) : t).contiguous());

  std::vector<std::string> files;
  const std::string out = write_new_directory(a.out, "--out", ".tmp-export", [&](const std::string& dir) {
    const fs::path tmp(dir);
    files = write_safetensors_sharded(dir, "model", tensors, static_cast<int64_t>(a.max_shard_mb * 1024 * 1024),
                                      {{"format", "pt"}});
    write_file_synced((tmp / "config.json").string(), hf.config.dump(2) + "\n");
    write_file_synced((tmp / "generation_config.json").string(), hf.generation_config.dump(2) + "\n");
    if (hf.remote_code)
      for (const auto& [name, text] : remote_code_files()) write_file_synced((tmp / name).string(), text);
    if (tok->kind() == "sentencepiece") {
      fs::copy_file(sentencepiece_file(info.config.data.tokenizer), tmp / "tokenizer.model");
      // transformers' LlamaTokenizer puts "▁" before the text unless told not to; whether this
      // model does (add_dummy_prefix, Llama-2's) shows in "a" encoding as " a" does.
      const bool dummy_prefix = tok->encode("a") == tok->encode(" a");
      const nlohmann::json tc = {{"tokenizer_class", "LlamaTokenizer"},
                                 {"model_max_length", hf.config["max_position_embeddings"]},
                                 {"add_bos_token", false},  // Sluice's ids are the model's pieces, no BOS
                                 {"add_eos_token", false},
                                 {"add_prefix_space", dummy_prefix},
                                 {"legacy", false}};
      write_file_synced((tmp / "tokenizer_config.json").string(), tc.dump(2) + "\n");
    }
  });
  io.out << fmt::format("exported {} (step {}) as {}{} to {}: {} tensors in {} file(s), {}{}\n", ckpt, info.state.step,
                        hf.architecture, hf.remote_code ? " (remote code: load with trust_remote_code=True)" : "",
                        out, tensors.size(), files.size(), a.dtype,
                        tok->kind() == "sentencepiece" ? ", tokenizer.model" : " (byte tokenizer: no tokenizer files)");
}

}  // namespace

void add_export_commands(CLI::App& app, Io io) {
  CLI::App* exp = app.add_subcommand("export", "Export a checkpoint to another ecosystem's format.");
  exp->require_subcommand(1);
  auto a = std::make_shared<ExportArgs>();
  CLI::App* hf = exp->add_subcommand("hf", "A Hugging Face transformers model directory (docs/interop.md).");
  hf->add_option("--ckpt", a->ckpt, "checkpoint directory, or a run directory (its latest checkpoint)")->required();
  hf->add_option("--out", a->out, "new directory for config.json, model.safetensors, ...")->required();
  hf->add_option("--dtype", a->dtype, "weights as fp32 or bf16")->check(CLI::IsMember({"fp32", "bf16"}));
  hf->add_option("--max-shard-mb", a->max_shard_mb, "shard model.safetensors above this size (with an index)")
      ->check(CLI::PositiveNumber);
  hf->callback([a, io] { export_hf(*a, io); });
}

}  // namespace sluice::cli
