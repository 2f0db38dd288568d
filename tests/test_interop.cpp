// `sluice export hf` checked by transformers itself (tests/hf_check.py in .venv): a briefly
// trained tiny model of each architecture that maps to a stock class is exported, loaded with
// AutoModelForCausalLM in fp32, and its logits on a fixed batch equal Sluice's within 1e-5
// (max abs); greedy generation of 20 tokens with transformers' KV cache equals Sluice's
// (the decoding of `sluice generate` at temperature 0, without its EOS stop). Variants no
// stock class computes load as the remote-code model (more in test_interop_remote.cpp); what
// no export computes is refused with its key, exit 2, nothing written.
#include <filesystem>

#include "hf_export_fixture.h"

namespace sluice {
namespace {

namespace fs = std::filesystem;

using HfExport = testing::HfExportTest;

TEST_F(HfExport, BaselineLoadsAsLlamaWithEqualLogitsAndGreedyTokens) {
  const std::string run = train_run("llama", {});
  expect_equal_outputs(export_and_check(run), "LlamaForCausalLM");
  const nlohmann::json cfg = nlohmann::json::parse(testing::read_file(run + "-hf/config.json"));
  EXPECT_EQ(cfg["model_type"], "llama");
  EXPECT_EQ(cfg["tie_word_embeddings"], true);
  // the safetensors metadata transformers expects
  EXPECT_EQ(read_safetensors(run + "-hf/model.safetensors").metadata.at("format"), "pt");
}

TEST_F(HfExport, UntiedEmbeddingsAndMultiHeadKv) {
  const std::string run = train_run("untied", {"model.tie_embeddings=false", "model.n_kv_heads=4"});
  expect_equal_outputs(export_and_check(run), "LlamaForCausalLM");
}

TEST_F(HfExport, QkNormLoadsAsQwen3) {
  const std::string run = train_run("qwen3", {"model.qk_norm=true", "model.head_dim=16"});  // head_dim != d_model/n_heads
  expect_equal_outputs(export_and_check(run), "Qwen3ForCausalLM");
  EXPECT_EQ(nlohmann::json::parse(testing::read_file(run + "-hf/config.json"))["head_dim"], 16);
}

TEST_F(HfExport, RopeScalingsMapToTransformersRopeTypes) {
  for (const std::vector<std::string>& sets :
       {std::vector<std::string>{"model.rope.scaling=linear", "model.rope.factor=2"},
        {"model.rope.scaling=ntk", "model.rope.factor=4"},
        {"model.rope.scaling=dynamic_ntk", "model.rope.factor=2", "model.rope.original_max_len=32"},
        {"model.rope.scaling=yarn", "model.rope.factor=4", "model.rope.original_max_len=32"}}) {
    SCOPED_TRACE(sets[0]);
    const std::string run = train_run(sets[0].substr(sets[0].find('=') + 1), sets);
    expect_equal_outputs(export_and_check(run), "LlamaForCausalLM");
  }
}

TEST_F(HfExport, ShardedAndBf16Files) {
  const std::string run = train_run("sharded", {"model.qk_norm=true"});
  // shards of about 50 KiB: transformers follows model.safetensors.index.json
  expect_equal_outputs(export_and_check(run, {"--max-shard-mb", "0.05"}), "Qwen3ForCausalLM");
  EXPECT_TRUE(fs::exists(run + "-hf/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(run + "-hf/model.safetensors"));
  std::string err;
  const SafetensorsFile bf16 = [&] {
    EXPECT_EQ(sluice({"export", "hf", "--ckpt", run, "--out", run + "-bf16", "--dtype", "bf16"}, &err), 0) << err;
    return read_safetensors(run + "-bf16/model.safetensors");
  }();
  for (const auto& [name, t] : bf16.tensors) EXPECT_EQ(t.scalar_type(), at::kBFloat16) << name;
  EXPECT_EQ(nlohmann::json::parse(testing::read_file(run + "-bf16/config.json"))["dtype"], "bfloat16");
}

TEST_F(HfExport, ModelsNoExportComputesAreRefusedByKey) {
  const std::string base = train_run("base", {"train.steps=2"});
  const std::string run = train_run("moe", {"model.arch=moe", "model.moe.n_experts=4", "train.steps=2"});
  std::string err;
  EXPECT_EQ(sluice({"export", "hf", "--ckpt", run, "--out", run + "-hf"}, &err), 2);
  EXPECT_NE(err.find("model.arch"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(run + "-hf")) << "nothing is written";
  EXPECT_FALSE(fs::exists(run + "-hf.tmp-export"));
  // --out must be new
  fs::create_directories(base + "-full");
  testing::write_file(base + "-full/x", "x");
  EXPECT_EQ(sluice({"export", "hf", "--ckpt", base, "--out", base + "-full"}, &err), 2);
  EXPECT_NE(err.find("--out"), std::string::npos) << err;
  EXPECT_EQ(sluice({"export", "hf", "--ckpt", dir.file("missing"), "--out", dir.file("m-hf")}, &err), 2);
}

// Variants no stock class computes load as the remote-code model (trust_remote_code=True).
TEST_F(HfExport, WindowsLoadAsTheRemoteCodeModel) {
  for (const std::vector<std::string>& sets : {std::vector<std::string>{"model.attention.window=8"},
                                               {"model.attention.window_pattern=[8,0]", "model.qk_norm=true"}}) {
    SCOPED_TRACE(sets[0]);
    const std::string run = train_run(sets.size() == 1 ? "window" : "pattern", sets);
    expect_equal_outputs(export_and_check(run), "SluiceForCausalLM");
    const nlohmann::json cfg = nlohmann::json::parse(testing::read_file(run + "-hf/config.json"));
    EXPECT_EQ(cfg["auto_map"]["AutoModelForCausalLM"], "modeling_sluice.SluiceForCausalLM");
    EXPECT_EQ(cfg["sluice"]["attention"]["window"], sets.size() == 1 ? 8 : 0);
    EXPECT_TRUE(fs::exists(run + "-hf/modeling_sluice.py"));
  }
}

}  // namespace
}  // namespace sluice
