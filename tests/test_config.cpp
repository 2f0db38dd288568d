// Config loading, overrides, validation messages and the generated reference.
#include <gtest/gtest.h>
#include <time.h>

#include <filesystem>

#include "config/check.h"
#include "sluice/config.h"
#include "sluice/errors.h"
#include "test_util.h"

namespace sluice {
namespace {

using testing::TempDir;
using testing::write_file;

class ConfigTest : public ::testing::Test {
 protected:
  TempDir dir;
  std::string text = write_file(dir.file("train.txt"), "hello world\n");
  std::string base() const { return "data:\n  train: " + text + "\n"; }
};

// Loads `yaml`, expects InputError, returns its message.
std::string load_error(const std::string& yaml, const std::vector<std::string>& sets = {}) {
  try {
    load_config_text(yaml, "t.yaml", sets);
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected InputError for:\n" << yaml;
  return "";
}

TEST_F(ConfigTest, DefaultsFillEverythingNotGiven) {
  const LoadedConfig lc = load_config_text(base(), "t.yaml", {});
  const Config def;
  EXPECT_EQ(lc.config.model.d_model, def.model.d_model);
  EXPECT_EQ(lc.config.optim.lr, def.optim.lr);
  EXPECT_EQ(lc.config.data.train, std::filesystem::absolute(text).lexically_normal().string());
  ASSERT_TRUE(lc.origin.count("data.train"));
  EXPECT_EQ(lc.origin.at("data.train").line, 2);
}

TEST_F(ConfigTest, SetOverridesFileAndIsTypedLikeTheFile) {
  const LoadedConfig lc = load_config_text(base() + "train:\n  steps: 10\n", "t.yaml",
                                           {"train.steps=25", "schedule.warmup_steps=5", "optim.lr=1e-3", "model.qk_norm=true",
                                            "optim.no_decay=[norm]", "run.name=123"});
  EXPECT_EQ(lc.config.train.steps, 25);
  EXPECT_DOUBLE_EQ(lc.config.optim.lr, 1e-3);
  EXPECT_TRUE(lc.config.model.qk_norm);
  EXPECT_EQ(lc.config.optim.no_decay, std::vector<std::string>{"norm"});
  EXPECT_EQ(lc.config.run.name, "123");
  EXPECT_EQ(lc.origin.at("train.steps").file, "--set train.steps=25");
}

TEST_F(ConfigTest, ResolvedYamlRoundTrips) {
  const LoadedConfig a = load_config_text(base(), "t.yaml",
                                          {"model.d_model=96", "optim.lr=0.00031", "schedule.kind=wsd", "model.rope.base=500000"});
  const std::string yaml = to_yaml(a.config);
  const LoadedConfig b = load_config_text(yaml, "shown.yaml", {});
  EXPECT_EQ(to_yaml(b.config), yaml);
  EXPECT_NE(yaml.find("lr: 0.00031"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("base: 500000.0"), std::string::npos) << yaml;
  // every key appears
  for (const auto& k : config_keys()) {
    const std::string leaf = k.substr(k.rfind('.') + 1) + ":";
    EXPECT_NE(yaml.find(leaf), std::string::npos) << k;
  }
}

TEST_F(ConfigTest, AttentionVariantKeys) {
  const LoadedConfig lc = load_config_text(
      base() + "model:\n  attention:\n    window_pattern: [16, 16, 0]\n    gate:\n      position: G1\n", "t.yaml",
      {"model.attention.gate.granularity=headwise", "model.rope.scaling=yarn", "model.rope.factor=4",
       "model.rope.original_max_len=128", "data.seq_len=64"});
  EXPECT_EQ(lc.config.model.attention.window_pattern, (std::vector<int64_t>{16, 16, 0}));
  EXPECT_EQ(lc.config.model.window_for_layer(2), 0);
  EXPECT_EQ(lc.config.model.window_for_layer(4), 16);
  EXPECT_EQ(lc.config.model.attention.gate.position, "G1");
  EXPECT_EQ(lc.config.model.attention.gate.granularity, "headwise");
  EXPECT_EQ(lc.config.model.rope.original_max_len, 128);
  const std::string yaml = to_yaml(lc.config);
  EXPECT_NE(yaml.find("window_pattern: [16, 16, 0]"), std::string::npos) << yaml;
  EXPECT_EQ(to_yaml(load_config_text(yaml, "shown.yaml", {}).config), yaml);
  // evaluation-time overrides of RoPE scaling are ordinary --set values on top of a run's config
  const LoadedConfig eval = load_config_text(yaml, "run/config.yaml", {"model.rope.scaling=dynamic_ntk"});
  EXPECT_EQ(eval.config.model.rope.scaling, "dynamic_ntk");
}

TEST_F(ConfigTest, RespectDocumentsKey) {
  EXPECT_FALSE(load_config_text(base(), "t.yaml", {}).config.data.respect_documents);
  const LoadedConfig lc = load_config_text(base() + "  respect_documents: true\n", "t.yaml", {});
  EXPECT_TRUE(lc.config.data.respect_documents);
  EXPECT_EQ(lc.origin.at("data.respect_documents").line, 3);
  const std::string yaml = to_yaml(lc.config);
  EXPECT_NE(yaml.find("respect_documents: true"), std::string::npos) << yaml;
  EXPECT_TRUE(load_config_text(yaml, "shown.yaml", {}).config.data.respect_documents);
  EXPECT_FALSE(load_config_text(base(), "t.yaml", {"data.respect_documents=false"}).config.data.respect_documents);
  EXPECT_NE(config_reference_markdown().find("| `data.respect_documents` | bool | `false` |"), std::string::npos);
}

// Every ablation config is valid (given the data file) and they differ only in model keys.
TEST_F(ConfigTest, AblationConfigsAllLoad) {
  namespace fs = std::filesystem;
  int files = 0;
  for (const auto& entry : fs::directory_iterator(SLUICE_SOURCE_DIR "/configs/ablations")) {
    if (entry.path().extension() != ".yaml") continue;
    ++files;
    LoadedConfig lc;
    ASSERT_NO_THROW(lc = load_config(entry.path().string(), {"data.train=" + text})) << entry.path();
    EXPECT_EQ(lc.config.run.name, entry.path().stem().string()) << entry.path();
    EXPECT_EQ(lc.config.model.d_model, 128) << entry.path();
    EXPECT_EQ(lc.config.train.steps, 1000) << entry.path();
    EXPECT_EQ(lc.config.data.seq_len, 128) << entry.path();
  }
  EXPECT_GE(files, 25);
}

TEST(ConfigDocs, DocsFileMatchesSchema) {
  const std::string doc = testing::read_file(SLUICE_SOURCE_DIR "/docs/config.md");
  EXPECT_TRUE(doc == config_reference_markdown()) << "docs/config.md is stale; regenerate with: build/sluice config docs > docs/config.md";
  for (const auto& k : config_keys()) EXPECT_NE(doc.find("`" + k + "`"), std::string::npos) << k;
}

TEST(ConfigSuggest, ClosestKey) {
  EXPECT_EQ(config_detail::closest_key("model.n_head"), "model.n_heads");
  EXPECT_EQ(config_detail::closest_key("train.lr"), "optim.lr");
  EXPECT_EQ(config_detail::closest_key("modle"), "model");
  EXPECT_EQ(config_detail::closest_key("completely.unrelated.thing"), "");
  EXPECT_EQ(config_detail::closest_key("model.n_kv_head"), "model.n_kv_heads");
  EXPECT_EQ(config_detail::closest_key("optim.weight_decai"), "optim.weight_decay");
  EXPECT_EQ(config_detail::closest_key("data.train"), "data.train");
}

// fuzz (profiling fuzz_config: its slowest inputs were unknown keys): every unknown key was compared by edit distance with every
// key and section of the schema, so 60 long unknown keys (3.6 KB) took 1.8 s under the fuzz
// build. Keys far longer than any candidate are now skipped by their length difference.
// Timed in this thread's CPU time, not wall time: under a loaded CI machine (a neighbour, ctest -j)
// the release build's 50-100 ms was once measured at 505 ms of wall time.
double thread_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

TEST(ConfigSuggest, ManyLongUnknownKeysAreReportedQuickly) {
  std::string yaml;
  for (int i = 0; i < 1000; ++i) yaml += std::string(250 + i % 100, 'k') + std::to_string(i) + ": 1\n";
  const double start = thread_cpu_seconds();
  try {
    load_config_text(yaml, "t.yaml", {}, false);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("1000 problems"), std::string::npos);
  }
  const double s = thread_cpu_seconds() - start;
  EXPECT_LT(s, 0.5) << "the edit distances of unknown keys are quadratic again";
}

TEST_F(ConfigTest, ReportsEveryProblemAtOnce) {
  const std::string msg = load_error(base() + "model:\n  d_modell: 5\n  n_layer: 2\n");
  EXPECT_NE(msg.find("2 problems"), std::string::npos) << msg;
  EXPECT_NE(msg.find("t.yaml:4:3: model.d_modell"), std::string::npos) << msg;
  EXPECT_NE(msg.find("t.yaml:5:3: model.n_layer"), std::string::npos) << msg;
}

TEST_F(ConfigTest, MissingConfigFile) {
  try {
    load_config(dir.file("nope.yaml"), {});
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("nope.yaml' does not exist"), std::string::npos);
  }
}

struct BadCase {
  const char* name;
  std::string yaml;  // appended to a valid base (data.train set) unless replace_base
  std::vector<std::string> sets;
  std::vector<std::string> expect;  // substrings of the message
  bool replace_base = false;
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

class BadInput : public ConfigTest, public ::testing::WithParamInterface<BadCase> {};

TEST_P(BadInput, ClearMessage) {
  const BadCase& c = GetParam();
  std::string yaml = c.replace_base ? c.yaml : base() + c.yaml;
  // "$TXT" / "$DIR" stand for a real file / directory of this test
  for (auto [key, value] : {std::pair<std::string, std::string>{"$TXT", text}, {"$DIR", dir.path()}}) {
    for (size_t p; (p = yaml.find(key)) != std::string::npos;) yaml.replace(p, key.size(), value);
  }
  const std::string msg = load_error(yaml, c.sets);
  EXPECT_NE(msg.find("invalid configuration"), std::string::npos) << msg;
  for (const auto& e : c.expect) EXPECT_NE(msg.find(e), std::string::npos) << "missing '" << e << "' in:\n" << msg;
}

const std::vector<BadCase> kBadCases = {
    {"MalformedYaml", "model: [1, 2\n", {}, {"t.yaml:4:", "malformed YAML"}},
    {"TopLevelList", "- 1\n- 2\n", {}, {"expected a mapping of sections"}, true},
    {"UnknownSection", "modle:\n  d_model: 4\n", {}, {"t.yaml:3:1: modle: unknown key", "did you mean 'model'"}},
    {"UnknownKeyTypo", "model:\n  n_head: 4\n", {}, {"t.yaml:4:3: model.n_head", "did you mean 'model.n_heads'"}},
    {"KeyInWrongSection", "train:\n  lr: 0.1\n", {}, {"train.lr: unknown key", "did you mean 'optim.lr'"}},
    {"StringForInt", "model:\n  d_model: four\n", {}, {"t.yaml:4:12: model.d_model", "expected an integer", "'four'"}},
    {"FloatForInt", "model:\n  n_layers: 2.5\n", {}, {"model.n_layers", "expected an integer", "'2.5'"}},
    {"BadBool", "model:\n  qk_norm: maybe\n", {}, {"model.qk_norm", "expected true or false"}},
    {"RespectDocumentsNotBool", "", {"data.respect_documents=sometimes"},
     {"--set data.respect_documents=sometimes: data.respect_documents", "expected true or false", "'sometimes'"}},
    {"RespectDocumentsTypo", "", {"data.respect_document=true"}, {"unknown key", "did you mean 'data.respect_documents'"}},
    {"SectionAsScalar", "model: 5\n", {}, {"model: is a section", "got '5'"}},
    {"LeafAsMapping", "model:\n  d_model: {a: 1}\n", {}, {"model.d_model", "got a mapping"}},
    {"EnumInvalid", "model:\n  arch: sparse\n", {}, {"model.arch", "expected string: dense, moe", "got 'sparse'"}},
    {"ZeroWidth", "model:\n  d_model: 0\n", {}, {"t.yaml:4:12: model.d_model", "integer >= 1, got 0"}},
    {"NegativeLr", "optim:\n  lr: -0.1\n", {}, {"optim.lr", "float > 0.0, got -0.1"}},
    {"ValFractionTooBig", "data:\n  train: $TXT\n  val_fraction: 0.9\n", {}, {"data.val_fraction", "in [0.0, 0.5]"}, true},
    {"HeadsNotMultipleOfKv", "model:\n  n_heads: 4\n  n_kv_heads: 3\n", {}, {"model.n_kv_heads", "multiple of n_kv_heads (3)"}},
    {"DModelNotDivisible", "model:\n  d_model: 130\n  n_heads: 4\n  n_kv_heads: 4\n", {}, {"model.n_heads", "not divisible"}},
    {"OddHeadDimWithRope", "model:\n  head_dim: 33\n", {}, {"model.head_dim", "even head dimension, got 33"}},
    {"VocabSmallerThanTokenizer", "model:\n  vocab_size: 100\n", {}, {"model.vocab_size", "tokenizer 'byte' has 259"}},
    {"TokenizerMissing", "data:\n  train: $TXT\n  tokenizer: /no/tokenizer\n", {}, {"data.tokenizer", "is neither 'byte' nor a SentencePiece model"}, true},
    {"TrainFolderWithoutManifest", "data:\n  train: $DIR\n", {}, {"data.train", "has no manifest.json"}, true},
    {"MissingTrainFile", "data:\n  train: /no/such/file.txt\n", {}, {"data.train", "'/no/such/file.txt' does not exist"}, true},
    {"NegativePrefetch", "data:\n  train: $TXT\n  prefetch: -1\n", {}, {"data.prefetch", "integer >= 0"}, true},
    {"TrainRequired", "model:\n  d_model: 64\n", {}, {"data.train: is required"}, true},
    {"WarmupLongerThanRun", "train:\n  steps: 10\nschedule:\n  warmup_steps: 20\n", {}, {"schedule.warmup_steps", "exceeds train.steps (10)"}},
    {"DuplicateKey", "model:\n  d_model: 64\n  d_model: 32\n", {}, {"t.yaml:5:3: model.d_model", "duplicate key"}},
    {"SetUnknownKey", "", {"model.dmodel=3"}, {"--set model.dmodel=3", "unknown key", "did you mean 'model.d_model'"}},
    {"SetWithoutEquals", "", {"train.steps"}, {"expected KEY=VALUE"}},
    {"SetWrongType", "", {"train.steps=abc"}, {"--set train.steps=abc: train.steps", "expected an integer"}},
    {"SetSection", "", {"model=3"}, {"model: is a section"}},
    {"ListBadElement", "optim:\n  no_decay: [norm, weights]\n", {}, {"optim.no_decay", "got 'weights'"}},
    {"ListGivenScalar", "optim:\n  no_decay: norm\n", {}, {"optim.no_decay", "expected a list of strings"}},
    {"ListDuplicate", "optim:\n  no_decay: [norm, norm]\n", {}, {"optim.no_decay", "listed twice"}},
    {"WindowNotSmallerThanSeq", "data:\n  train: $TXT\n  seq_len: 64\nmodel:\n  attention:\n    window: 64\n", {}, {"model.attention.window", "smaller than data.seq_len (64)"}, true},
    {"EvalWithoutValidation", "data:\n  train: $TXT\n  val_fraction: 0.0\n", {}, {"train.eval_every", "validation needs data.val"}, true},
    {"DuplicateSection", "data:\n  seq_len: 8\n", {}, {"t.yaml:3:1: data: duplicate key"}},
    {"NegativeWorldSize", "parallel:\n  data_parallel: -2\n", {}, {"parallel.data_parallel", "integer >= 0"}},
    {"ZeroStageTwo", "parallel:\n  zero: 2\n", {}, {"parallel.zero", "in [0, 1]"}},
    {"NcclOnCpu", "train:\n  device: cpu\nparallel:\n  backend: nccl\n", {}, {"parallel.backend", "nccl runs on CUDA"}},
    {"ZeroTimeout", "parallel:\n  timeout_s: 0\n", {}, {"parallel.timeout_s"}},
    {"NotANumber", "optim:\n  lr: .nan\n", {}, {"optim.lr", "expected a finite number"}},
    {"NullLeaf", "train:\n  steps:\n", {}, {"train.steps", "got nothing"}},
    {"BadBackend", "", {"model.attention.backend=flash9"}, {"model.attention.backend", "got 'flash9'"}},
    {"BadElementwiseKernels", "model:\n  elementwise_kernels: triton\n", {},
     {"t.yaml:4:24: model.elementwise_kernels", "got 'triton'", "aten, fused"}},
    {"BadDevice", "train:\n  device: tpu\n", {}, {"train.device", "auto, cpu, cuda"}},
    // attention variants
    {"GatePositionUnknown", "", {"model.attention.gate.position=G6"}, {"model.attention.gate.position", "got 'G6'"}},
    {"GateKeyWithoutGate", "model:\n  attention:\n    gate:\n      granularity: headwise\n", {},
     {"t.yaml:6:20: model.attention.gate.granularity", "has no effect without a gate"}},
    {"HeadSharedNeedsElementwise", "", {"model.attention.gate.position=G1", "model.attention.gate.sharing=head_shared",
                                        "model.attention.gate.granularity=headwise"},
     {"model.attention.gate.sharing", "needs granularity: elementwise"}},
    {"G5HasNoHeads", "", {"model.attention.gate.position=G5", "model.attention.gate.granularity=headwise"},
     {"model.attention.gate.position", "G5 gates the dense o_proj output"}},
    {"IdentityNeedsAdditive", "", {"model.attention.gate.position=G1", "model.attention.gate.activation=identity"},
     {"model.attention.gate.activation", "only defined for the additive form"}},
    {"ConstantGateWithBias", "", {"model.attention.gate.position=G1", "model.attention.gate.input=constant",
                                  "model.attention.gate.bias=true"},
     {"model.attention.gate.input", "need input: hidden"}},
    {"SelfGateHeadwise", "", {"model.attention.gate.position=G1", "model.attention.gate.input=self",
                              "model.attention.gate.granularity=headwise"},
     {"model.attention.gate.input", "needs granularity elementwise"}},
    {"GateActivationUnknown", "", {"model.attention.gate.position=G1", "model.attention.gate.activation=relu"},
     {"model.attention.gate.activation", "got 'relu'"}},
    {"CocaNeedsRope", "", {"model.position=alibi", "model.attention.coca.mode=strict"},
     {"model.attention.coca.mode", "needs model.position: rope, got 'alibi'"}},
    {"CocaWithQkNorm", "", {"model.attention.coca.mode=slack", "model.qk_norm=true"},
     {"model.attention.coca.mode", "set qk_norm: false"}},
    {"CocaModeUnknown", "", {"model.attention.coca.mode=loose"}, {"model.attention.coca.mode", "off, strict, slack"}},
    {"AlibiWithRopeScaling", "", {"model.position=alibi", "model.rope.scaling=linear", "model.rope.factor=2"},
     {"model.rope.scaling", "'linear' scales RoPE, but model.position is 'alibi'"}},
    {"YarnNeedsOriginalLength", "", {"model.rope.scaling=yarn", "model.rope.factor=4"},
     {"model.rope.original_max_len", "is required (> 0) by rope.scaling 'yarn'"}},
    {"DynamicNtkNeedsOriginalLength", "", {"model.rope.scaling=dynamic_ntk"},
     {"model.rope.original_max_len", "rope.scaling 'dynamic_ntk'"}},
    {"RopeFactorBelowOne", "", {"model.rope.factor=0.5"}, {"model.rope.factor", "float >= 1.0, got 0.5"}},
    {"RopeScalingUnknown", "", {"model.rope.scaling=xpos"}, {"model.rope.scaling", "got 'xpos'"}},
    {"WindowPatternNegative", "model:\n  attention:\n    window_pattern: [4, -1]\n", {},
     {"model.attention.window_pattern", "list of integers >= 0, got -1"}},
    {"WindowPatternScalar", "model:\n  attention:\n    window_pattern: 4\n", {},
     {"t.yaml:5:21: model.attention.window_pattern", "expected a list of integers"}},
    {"WindowPatternBadElement", "", {"model.attention.window_pattern=[4, x]"},
     {"model.attention.window_pattern", "expected a list of integers", "got a list"}},
    {"WindowPatternWithWindow", "", {"model.attention.window_pattern=[4, 0]", "model.attention.window=8"},
     {"model.attention.window_pattern", "set one of them"}},
    {"WindowPatternNotSmallerThanSeq", "", {"data.seq_len=64", "model.attention.window_pattern=[32, 64, 0]"},
     {"model.attention.window_pattern", "entry 64 must be smaller than data.seq_len (64)"}},
    {"MoeKeyWithDenseArch", "model:\n  moe:\n    n_experts: 16\n", {}, {"t.yaml:", "model.moe.n_experts", "model.arch is 'dense'", "need model.arch: moe"}},
    {"MoeTopKExceedsExperts", "", {"model.arch=moe", "model.moe.n_experts=4", "model.moe.top_k=5"}, {"model.moe.top_k", "(5) exceeds model.moe.n_experts (4)"}},
    {"MoeEveryExceedsLayers", "", {"model.arch=moe", "model.n_layers=2", "model.moe.every=3"}, {"model.moe.every", "exceeds model.n_layers (2)"}},
    {"MoeZeroExperts", "", {"model.arch=moe", "model.moe.n_experts=0"}, {"model.moe.n_experts", "integer >= 1, got 0"}},
    {"MoeBadRouter", "", {"model.arch=moe", "model.moe.router=expert_choice"}, {"model.moe.router", "softmax_topk, topk_softmax", "got 'expert_choice'"}},
    {"MoeMixtralWithSigmoid", "", {"model.arch=moe", "model.moe.router=topk_softmax", "model.moe.scoring=sigmoid"}, {"model.moe.router", "needs model.moe.scoring: softmax"}},
    {"MoeMixtralUnnormalised", "", {"model.arch=moe", "model.moe.router=topk_softmax", "model.moe.norm_topk_prob=false"}, {"model.moe.norm_topk_prob", "always normalises"}},
    {"MoeSharedGateWithoutShared", "", {"model.arch=moe", "model.moe.shared_expert_gate=true"}, {"model.moe.shared_expert_gate", "needs model.moe.shared_experts > 0"}},
    {"MoeSharedWidthWithoutShared", "", {"model.arch=moe", "model.moe.shared_ffn_hidden=64"}, {"model.moe.shared_ffn_hidden", "needs model.moe.shared_experts > 0"}},
    {"MoeNegativeCapacity", "", {"model.arch=moe", "model.moe.capacity_factor=-1"}, {"model.moe.capacity_factor", "float >= 0.0, got -1.0"}},
    {"MoeBadScope", "", {"model.arch=moe", "model.moe.aux_loss_scope=sequence"}, {"model.moe.aux_loss_scope", "micro_batch, global_batch"}},
    {"MoeGroupedMisaligned", "", {"model.arch=moe", "model.d_model=36", "model.n_heads=4", "model.n_kv_heads=4", "model.moe.gemm=grouped"}, {"model.moe.gemm", "multiples of 8"}},
};

INSTANTIATE_TEST_SUITE_P(Config, BadInput, ::testing::ValuesIn(kBadCases),
                         [](const ::testing::TestParamInfo<BadCase>& i) { return std::string(i.param.name); });

}  // namespace
}  // namespace sluice
