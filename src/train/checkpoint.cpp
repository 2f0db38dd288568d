#include "train/checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/cuda.h>
#include <torch/version.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "sluice/errors.h"
#include "sluice/fs.h"
#include "train/out_of_memory.h"
#include "train/run_dir.h"
#include "train/safetensors.h"

namespace sluice {

namespace fs = std::filesystem;

namespace {

std::string step_name(int64_t step) { return fmt::format("step-{:08}", step); }

// Test hook: SLUICE_TEST_CHECKPOINT_DELAY_MS slows every file write down, so a test can
// kill the process in the middle of writing a checkpoint.
void test_delay() {
  static const char* env = std::getenv("SLUICE_TEST_CHECKPOINT_DELAY_MS");
  if (env) std::this_thread::sleep_for(std::chrono::milliseconds(std::atoll(env)));
}

void write_text_synced(const fs::path& path, const std::string& text) {
  write_file_synced(path.string(), text);
  test_delay();
}

NamedTensors model_tensors(CausalLMImpl& model) {
  NamedTensors out;
  for (const auto& p : model.named_parameters()) out.emplace_back(p.key(), p.value());
  for (const auto& b : model.named_buffers()) out.emplace_back(b.key(), b.value());
  return out;
}

std::string shape_str(at::IntArrayRef s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

nlohmann::json to_json(const TrainingState& s) {
  nlohmann::json interval = {{"loss_sum", s.interval_loss_sum}, {"finite_steps", s.interval_finite}, {"steps", s.interval_steps}};
  if (!s.rank_loss_sums.empty()) {
    interval["rank_loss_sums"] = s.rank_loss_sums;
    interval["rank_finite_steps"] = s.rank_finite_steps;
  }
  return {{"step", s.step},
          {"tokens", s.tokens},
          {"loader", {{"next_batch", s.next_batch}, {"global_micro_batch", s.global_micro_batch}}},
          {"interval", interval},
          {"skipped_steps", s.skipped_steps}};
}

std::string read_text(const fs::path& path) {
  std::optional<std::string> text = read_whole_file(path.string());
  if (!text) throw InputError("checkpoint file '" + path.string() + "' is missing or unreadable");
  return std::move(*text);
}

// Complete checkpoints (meta.json present), oldest first.
std::vector<fs::path> complete_checkpoints(const std::string& run_dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  const fs::path root = fs::path(run_dir) / "checkpoints";
  if (!fs::is_directory(root, ec)) return out;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) == 0 && fs::is_regular_file(e.path() / "meta.json", ec)) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The files of a checkpoint into `tmp`, then renamed to root/name and named in `latest`.
std::string write_checkpoint(const fs::path& root, const fs::path& tmp, const std::string& name, const Config& cfg,
                             const NamedTensors& model_tensors, const NamedTensors& optimizer_state,
                             const TrainingState& state);

}  // namespace

std::string checkpoint_dir(const std::string& run_dir, int64_t step) {
  return (fs::path(run_dir) / "checkpoints" / step_name(step)).string();
}

std::string save_checkpoint(const std::string& run_dir, const Config& cfg, CausalLMImpl& model, Optimizer& opt,
                            const TrainingState& state) {
  return save_checkpoint(run_dir, cfg, model, opt.state_tensors(), state);
}

std::string save_checkpoint(const std::string& run_dir, const Config& cfg, CausalLMImpl& model,
                            const NamedTensors& optimizer_state, const TrainingState& state) {
  return save_checkpoint(run_dir, cfg, model_tensors(model), optimizer_state, state);
}

std::string save_checkpoint(const std::string& run_dir, const Config& cfg, const NamedTensors& model_tensors,
                            const NamedTensors& optimizer_state, const TrainingState& state) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  const std::string name = step_name(state.step);
  const fs::path tmp = root / (".tmp-" + name);
  try {
    return write_checkpoint(root, tmp, name, cfg, model_tensors, optimizer_state, state);
  } catch (const std::exception& e) {
    if (is_out_of_memory(e)) throw;
    // A full disk, a quota or a file-size limit: the new checkpoint is dropped, `latest` still
    // names the previous one (only replaced after a complete write).
    remove_tree(tmp.string());
    const std::optional<std::string> previous = latest_checkpoint(run_dir);
    throw ResourceError(fmt::format("cannot write the checkpoint of step {}: {}. {}; free space under {} and resume "
                                    "with `sluice train CONFIG --run-dir {}`",
                                    state.step, e.what(),
                                    previous ? "The previous checkpoint, " + *previous + ", is intact"
                                             : std::string("No earlier checkpoint exists"),
                                    root.string(), run_dir));
  }
}

namespace {

std::string write_checkpoint(const fs::path& root, const fs::path& tmp, const std::string& name, const Config& cfg,
                             const NamedTensors& model_tensors, const NamedTensors& optimizer_state,
                             const TrainingState& state) {
  const fs::path final_dir = root / name;
  fs::create_directories(root);
  remove_tree(tmp.string());
  fs::create_directories(tmp);

  write_safetensors_sharded(tmp.string(), "model", model_tensors, cfg.checkpoint.max_shard_mb << 20,
                            {{"format", "pt"}, {"producer", "sluice " SLUICE_VERSION}});
  test_delay();
  write_safetensors((tmp / "optimizer.safetensors").string(), optimizer_state);
  test_delay();
  NamedTensors rng = {{"cpu", at::detail::getDefaultCPUGenerator().get_state()}};
  if (torch::cuda::is_available()) rng.emplace_back("cuda", at::cuda::detail::getDefaultCUDAGenerator().get_state());
  write_safetensors((tmp / "rng.safetensors").string(), rng);
  write_text_synced(tmp / "trainer_state.json", to_json(state).dump(2) + "\n");
  write_text_synced(tmp / "config.yaml", to_yaml(cfg));
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  const nlohmann::json meta = {{"format", "sluice-checkpoint"},
                               {"format_version", kCheckpointFormat},
                               {"sluice_version", SLUICE_VERSION},
                               {"torch_version", TORCH_VERSION},
                               {"step", state.step},
                               {"created_utc", stamp}};
  write_text_synced(tmp / "meta.json", meta.dump(2) + "\n");  // last file: marks the checkpoint complete
  fsync_path(tmp.string());

  remove_tree(final_dir.string());  // a re-run of the same step replaces it
  fs::rename(tmp, final_dir);
  fsync_path(root.string());
  write_text_synced(root / "latest.tmp", name + "\n");
  fs::rename(root / "latest.tmp", root / "latest");
  fsync_path(root.string());
  return final_dir.string();
}

}  // namespace

void prune_checkpoints(const std::string& run_dir, int64_t keep) {
  std::vector<fs::path> done = complete_checkpoints(run_dir);
  for (size_t i = 0; i + static_cast<size_t>(keep) < done.size(); ++i) remove_tree(done[i].string());
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(run_dir) / "checkpoints", ec)) {
    if (e.path().filename().string().rfind(".tmp-", 0) == 0) remove_tree(e.path().string());  // killed writes
  }
}

std::optional<std::string> latest_checkpoint(const std::string& run_dir) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  std::ifstream in(root / "latest");
  std::string name;
  std::error_code ec;
  if (in >> name && fs::is_regular_file(root / name / "meta.json", ec)) return (root / name).string();
  const std::vector<fs::path> done = complete_checkpoints(run_dir);  // `latest` missing or stale
  if (done.empty()) return std::nullopt;
  return done.back().string();
}

std::string resolve_checkpoint(const std::string& path) {
  std::error_code ec;
  if (fs::is_regular_file(fs::path(path) / "meta.json", ec)) return path;
  if (fs::is_directory(fs::path(path) / "checkpoints", ec)) {
    if (auto latest = latest_checkpoint(path)) return *latest;
    throw InputError("--resume: run directory '" + path + "' has no complete checkpoint");
  }
  throw InputError("--resume: '" + path + "' is neither a checkpoint (no meta.json) nor a run directory");
}

CheckpointInfo read_checkpoint_info(const std::string& dir) {
  const fs::path meta = fs::path(dir) / "meta.json";
  check_checkpoint_meta(read_text(meta), dir, meta.string());
  CheckpointInfo info;
  info.dir = dir;
  const fs::path cfg_path = fs::path(dir) / "config.yaml";
  if (!fs::exists(cfg_path)) throw InputError("checkpoint file '" + cfg_path.string() + "' is missing");
  info.config = load_config(cfg_path.string(), {}, /*check_paths=*/false).config;
  const fs::path state = fs::path(dir) / "trainer_state.json";
  info.state = parse_training_state(read_text(state), state.string());
  return info;
}

void load_checkpoint(const std::string& dir, CausalLMImpl& model, Optimizer* opt, bool restore_rng,
                     const TensorPart& part) {
  at::NoGradGuard no_grad;
  SafetensorsFile weights = read_safetensors_sharded(dir, "model");
  const std::string file = (fs::path(dir) / "model.safetensors").string();
  std::set<std::string> expected;
  for (auto& [name, t] : model_tensors(model)) {
    expected.insert(name);
    const auto it = weights.tensors.find(name);
    if (it == weights.tensors.end()) throw InputError("checkpoint file '" + file + "': tensor '" + name + "' is missing");
    const at::Tensor src = part ? part(name, it->second) : it->second;
    if (src.sizes() != t.sizes()) {
      throw InputError("checkpoint file '" + file + "': tensor '" + name + "' has shape " + shape_str(src.sizes()) +
                       ", the model expects " + shape_str(t.sizes()));
    }
    if (src.scalar_type() != t.scalar_type()) {
      throw InputError("checkpoint file '" + file + "': tensor '" + name + "' has dtype " +
                       std::string(c10::toString(src.scalar_type())) + ", the model expects " +
                       std::string(c10::toString(t.scalar_type())));
    }
    t.copy_(src);
  }
  for (const auto& kv : weights.tensors)
    if (!expected.count(kv.first))
      throw InputError("checkpoint file '" + file + "': unexpected tensor '" + kv.first + "' (a different model?)");

  if (opt) {
    const std::string opt_file = (fs::path(dir) / "optimizer.safetensors").string();
    opt->load_state_tensors(read_safetensors(opt_file).tensors, opt_file);
  }
  if (restore_rng) {
    const SafetensorsFile rng = read_safetensors((fs::path(dir) / "rng.safetensors").string());
    if (rng.tensors.count("cpu")) {
      at::Generator gen = at::detail::getDefaultCPUGenerator();
      gen.set_state(rng.tensors.at("cpu"));
    }
    if (rng.tensors.count("cuda") && torch::cuda::is_available()) {
      at::Generator gen = at::cuda::detail::getDefaultCUDAGenerator();
      gen.set_state(rng.tensors.at("cuda"));
    }
  }
}

ConfigDiff diff_for_resume(const Config& checkpoint, const Config& current) {
  // Changing these would make the weights, the optimizer state or the data position mean
  // something else, or change what the model computes (model.*, data.respect_documents: the
  // attention mask). Everything else (logging, evaluation, schedule length, checkpointing,
  // attention backend, elementwise kernels, data paths, the world size, micro-batch and
  // accumulation, ZeRO) may change between a save and a resume; the trainer checks that the
  // data position converts.
  auto fixed = [](const std::string& key) {
    if (key == "model.attention.backend" || key == "model.moe.gemm" || key == "model.elementwise_kernels")
      return false;  // same math
    for (const char* p : {"model.", "data.tokenizer", "data.seq_len", "data.respect_documents", "train.seed",
                          "optim.name"})
      if (key.rfind(p, 0) == 0) return true;
    return false;
  };
  ConfigDiff d;
  const auto a = config_values(checkpoint), b = config_values(current);
  for (const auto& [key, old_value] : a) {
    const std::string& new_value = b.at(key);
    if (old_value == new_value) continue;
    (fixed(key) ? d.incompatible : d.harmless).push_back(key + ": " + old_value + " -> " + new_value);
  }
  return d;
}

}  // namespace sluice
