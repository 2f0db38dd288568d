// `sluice export hf` of the variants no stock transformers class computes: they load as
// SluiceForCausalLM, the remote-code model (src/interop/remote_code/modeling_sluice.py), and
// transformers itself checks each (tests/hf_check.py in .venv, through the fixture of
// hf_export_fixture.h): a briefly trained tiny model's logits on a fixed [2, 80] batch equal
// Sluice's within 1e-5 (max abs), and 20 greedy tokens with transformers' KV cache equal
// Sluice's cached decoding. Every file of configs/ablations/ that exports as remote code is
// run with its model keys on the tiny model, then combinations the files do not have. A test's
// runs share one start of transformers (about 4 s here).
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "hf_export_fixture.h"
#include "shell_command.h"
#include "interop/hf_config.h"
#include "model/kv_cache.h"

namespace sluice {
namespace {

namespace fs = std::filesystem;

// A model of the tiny fixture size with `sets` on top; `name` names its run and its trace.
struct Variant {
  std::string name;
  std::vector<std::string> sets;
};

// A YAML node below `path` as --set overrides: "model.attention.gate.position=G1", lists as "[8,0]".
void append_overrides(const YAML::Node& node, const std::string& path, std::vector<std::string>& out) {
  if (node.IsMap()) {
    for (const auto& kv : node) append_overrides(kv.second, path + "." + kv.first.as<std::string>(), out);
  } else if (node.IsSequence()) {
    std::string list;
    for (const auto& item : node) list += (list.empty() ? "" : ",") + item.Scalar();
    out.push_back(path + "=[" + list + "]");
  } else {
    out.push_back(path + "=" + node.Scalar());
  }
}

// The files' model size (d_model 128, 8 query heads, ...); the tiny model keeps its own.
const std::set<std::string> kSizeKeys = {"model.vocab_size", "model.d_model", "model.n_layers",  "model.n_heads",
                                         "model.n_kv_heads", "model.head_dim", "model.ffn_hidden"};

// The files of configs/ablations/ starting with `prefix` whose export is the remote-code model
// (the others are Llama / Qwen3, test_interop.cpp), each as its model keys without the sizes.
std::vector<Variant> remote_code_ablations(const std::string& prefix) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(fs::path(SLUICE_SOURCE_DIR) / "configs" / "ablations"))
    if (e.path().extension() == ".yaml" && e.path().filename().string().rfind(prefix, 0) == 0) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  std::vector<Variant> out;
  for (const fs::path& f : files) {
    const LoadedConfig file = load_config(f.string(), {}, /*check_paths=*/false);
    if (!hf_config_for(file.config, 256, SpecialTokens{}, "float32").remote_code) continue;
    Variant v{f.stem().string(), {}};
    std::vector<std::string> all;
    append_overrides(YAML::LoadFile(f.string())["model"], "model", all);
    for (const std::string& s : all) {
      const std::string key = s.substr(0, s.find('='));
      if (kSizeKeys.count(key)) continue;
      // The files' L0 is their data.seq_len (128), longer than anything here. 16 lies below
      // the 80-token batch and the 29 positions of the generation, so dynamic NTK acts in the
      // full forward and in cached decoding, where Sluice's cached keys keep the base of the
      // call that rotated them (docs/attention.md, KV cache) and so must the remote model's.
      v.sets.push_back(key == "model.rope.original_max_len" ? key + "=16" : s);
    }
    out.push_back(std::move(v));
  }
  return out;
}

std::string joined(const std::vector<std::string>& sets) {
  std::string s;
  for (const std::string& x : sets) s += (s.empty() ? "" : " ") + x;
  return s;
}

// Feeds each export the sequence Sluice decoded, as generate() does (the prompt in one call,
// then one token per call, with a DynamicCache), and prints the max abs difference of those
// logits from Sluice's own cached ones, per export, as JSON.
//   python cached_check.py EXPORT EXPECTED [EXPORT EXPECTED ...]   (EXPECTED: sequence [N], prompt_length [], cached_logits [1, N, V])
constexpr const char* kCachedCheck = R"PY(
import json, sys
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

result = {}
for export, expected in zip(sys.argv[1::2], sys.argv[2::2]):
    e = load_file(expected)
    model = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32, trust_remote_code=True).eval()
    seq, p = e["sequence"].long().unsqueeze(0), int(e["prompt_length"])
    with torch.no_grad():
        out = model(seq[:, :p], use_cache=True)
        cache, logits = out.cache, [out.logits]
        for t in range(p, seq.shape[1]):
            out = model(seq[:, t:t + 1], past_key_values=cache, use_cache=True)
            logits.append(out.logits)
    result[export] = (torch.cat(logits, 1) - e["cached_logits"]).abs().max().item()
print(json.dumps(result))
)PY";

class HfExportRemote : public testing::HfExportTest {
 protected:
  // Trains, exports and checks each variant; returns the runs.
  std::vector<std::string> expect_each_matches_sluice(const std::vector<Variant>& variants) const {
    std::vector<std::string> runs;
    std::vector<HfCase> cases;
    for (const Variant& v : variants) {
      SCOPED_TRACE(v.name + ": " + joined(v.sets));
      runs.push_back(train_run(v.name, v.sets));
      cases.push_back(export_for_check(runs.back()));
    }
    const std::vector<nlohmann::json> verdicts = hf_check(cases);  // one start of transformers for all
    for (size_t i = 0; i < variants.size(); ++i) {
      SCOPED_TRACE(variants[i].name + ": " + joined(variants[i].sets));
      std::printf("[variant] %s\n", variants[i].name.c_str());  // the fixture prints the logits' difference next
      expect_equal_outputs(verdicts[i], "SluiceForCausalLM");
    }
    return runs;
  }

  // Sluice's logits of its prompt and greedy tokens (export_and_check's) decoded with its KV
  // cache as generate() does, written beside the run; returns how far they are from its full
  // forward over the same sequence (max abs).
  static double write_cached_logits(const std::string& run) {
    const SafetensorsFile e = read_safetensors(run + "-expected.safetensors");
    const at::Tensor prompt = e.tensors.at("prompt"), seq = at::cat({prompt, e.tensors.at("generated")}).unsqueeze(0);
    const int64_t p = prompt.numel(), n = seq.size(1);
    EvalModel m = load_eval_model(run, {});
    at::NoGradGuard no_grad;
    KVCache cache(m.model->config(), n);
    std::vector<at::Tensor> parts{m.model->forward_cached(seq.narrow(1, 0, p), cache)};
    for (int64_t t = p; t < n; ++t) parts.push_back(m.model->forward_cached(seq.narrow(1, t, 1), cache));
    const at::Tensor cached = at::cat(parts, 1).contiguous();
    write_safetensors(run + "-cached.safetensors",
                      {{"sequence", seq[0].contiguous()}, {"prompt_length", at::tensor(std::vector<int64_t>{p})},
                       {"cached_logits", cached}});
    return (cached - m.model->forward(seq)).abs().max().item<double>();
  }

  // transformers' cached logits of each run's export against Sluice's (one Python start for all).
  void expect_equal_cached_logits(const std::vector<std::string>& runs) const {
    const std::string script = testing::write_file(dir.file("cached_check.py"), kCachedCheck);
    std::vector<std::string> args = {script};
    for (const std::string& run : runs) args.insert(args.end(), {run + "-hf", run + "-cached.safetensors"});
    const std::string result = dir.file("cached_check.json");
    const std::string cmd = testing::redirected(testing::python_command(args), result, result + ".err");
    ASSERT_EQ(std::system(cmd.c_str()), 0) << testing::read_file(result + ".err");
    const nlohmann::json j = nlohmann::json::parse(testing::read_file(result));
    for (const std::string& run : runs) {
      const double d = j.at(run + "-hf").get<double>();
      EXPECT_LE(d, 1e-5) << run << ": transformers' cached logits differ from Sluice's cached decoding";
      std::printf("  %-30s max |cached logits - Sluice's cached| = %.3g\n", fs::path(run).filename().c_str(), d);
    }
  }
};

// Table 1, 3 and 4 rows of the gated-attention paper: G1-G5, elementwise/headwise,
// head-shared, additive, the activations, input self and constant, output_norm.
TEST_F(HfExportRemote, GateAblationsMatchSluice) {
  const std::vector<Variant> variants = remote_code_ablations("t");
  // (rows that export as a stock class, e.g. Qwen3-Next for a G1 sigmoid gate, are not here)
  ASSERT_FALSE(variants.empty()) << "no configs/ablations/t*.yaml exported as remote code";
  expect_each_matches_sluice(variants);
}

// What the schema allows and no ablation file has, several keys per run.
TEST_F(HfExportRemote, GateCombinationsMatchSluice) {
  const std::string g = "model.attention.gate.";
  expect_each_matches_sluice({
      // headwise + additive; a bias through the fused q/gate GEMM; output_norm before a G1 gate;
      // MQA; static NTK
      {"g1-headwise-additive-norm",
       {g + "position=G1", g + "granularity=headwise", g + "form=additive", g + "bias=true", g + "fuse_q_proj=true",
        "model.attention.output_norm=true", "model.n_kv_heads=1", "model.rope.scaling=ntk", "model.rope.factor=4"}},
      // head_shared at G3 of constant logits, before QK-norm; YaRN
      {"g3-head-shared-constant",
       {g + "position=G3", g + "sharing=head_shared", g + "activation=ns_sigmoid", g + "input=constant",
        "model.qk_norm=true", "model.rope.scaling=yarn", "model.rope.factor=4", "model.rope.original_max_len=32"}},
      // head_shared at G4, additive SiLU, all projections in one GEMM; linear RoPE; untied head
      {"g4-head-shared-fused",
       {g + "position=G4", g + "sharing=head_shared", g + "form=additive", g + "activation=silu",
        g + "fuse_q_proj=true", "model.fused_projections=true", "model.rope.scaling=linear", "model.rope.factor=2",
        "model.tie_embeddings=false", "model.attention.window_pattern=[8,0]"}},
  });
}

// ALiBi, NoPE, CoCA strict and slack with and without dynamic NTK (the files), and beyond
// them. The KV cache carries the positions here (CoCA's K_eff, ALiBi's distances, dynamic
// NTK's per-call base), and greedy tokens of a tiny model hardly depend on them: dynamic NTK's
// cached decoding differs from a full forward by ~2e-4 in the logits, against greedy margins
// of ~1e-2. So transformers' cached logits are compared with Sluice's cached ones as well.
TEST_F(HfExportRemote, PositionVariantsMatchSluiceWithTheKvCache) {
  std::vector<Variant> variants = remote_code_ablations("pos_");
  ASSERT_FALSE(variants.empty()) << "no configs/ablations/pos_*.yaml exported as remote code";
  const std::string g = "model.attention.gate.";
  // 6 heads: ALiBi's slopes of a non-power of two; the bias inside a window; QK-norm and the
  // plain G1 sigmoid gate (with RoPE it may export as a stock class, Qwen3-Next)
  variants.push_back({"alibi-window-6-heads",
                      {"model.position=alibi", "model.attention.window=8", "model.n_heads=6", "model.head_dim=8",
                       "model.qk_norm=true", g + "position=G1"}});
  // CoCA's K_eff of a gated k_proj, evicted by a window; head_dim 16
  variants.push_back({"coca-strict-window-g3",
                      {"model.attention.coca.mode=strict", "model.attention.window=8", g + "position=G3",
                       g + "granularity=headwise", g + "bias=true", "model.head_dim=16"}});
  const std::vector<std::string> runs = expect_each_matches_sluice(variants);
  for (size_t i = 0; i < runs.size(); ++i) {
    const double own = write_cached_logits(runs[i]);
    // Sluice's exception (docs/attention.md): so the check below tells re-rotated keys apart
    if (variants[i].name.find("dynamic_ntk") != std::string::npos)
      EXPECT_GT(own, 1e-4) << variants[i].name << ": Sluice's cached decoding should differ from its full forward";
  }
  expect_equal_cached_logits(runs);
}

}  // namespace
}  // namespace sluice
