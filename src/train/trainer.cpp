#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "data/prefetcher.h"
#include "data/token_corpus.h"
#include "data/window_loader.h"
#include "sluice/errors.h"
#include "sluice/log.h"
#include "sluice/model.h"
#include "sluice/tokenizer.h"
#include "sluice/trainer.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/device.h"
#include "train/metrics.h"
#include "train/routing_metrics.h"
#include "train/run_dir.h"
#include "train/schedule.h"
#include "train/stop_signal.h"
#include "train/train_step.h"

namespace sluice {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Data {
  std::shared_ptr<const TokenCorpus> train, val;  // val may hold no tokens
};

// Opens data.train / data.val (see docs/config.md for which split is read) and checks the
// shards against the run's tokenizer, before anything is created.
Data open_data(const Config& cfg, const Tokenizer& tok) {
  const bool verify = cfg.data.verify_checksums;
  TokenCorpus train = TokenCorpus::open(cfg.data.train, "train", tok, "data.train", verify);
  TokenCorpus val;
  if (!cfg.data.val.empty()) {
    val = TokenCorpus::open(cfg.data.val, "val", tok, "data.val", verify);
    if (val.tokens() == 0 && TokenCorpus::is_prepared_dataset(cfg.data.val))
      val = TokenCorpus::open(cfg.data.val, "train", tok, "data.val", verify);
  } else if (TokenCorpus::is_prepared_dataset(cfg.data.train)) {
    val = TokenCorpus::open(cfg.data.train, "val", tok, "data.train", verify);
  } else if (cfg.data.val_fraction > 0) {
    std::tie(train, val) = train.split_tail(cfg.data.val_fraction);
  }
  return {std::make_shared<const TokenCorpus>(std::move(train)), std::make_shared<const TokenCorpus>(std::move(val))};
}

std::vector<std::pair<std::string, at::Tensor>> named_parameters(const CausalLM& model) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : model->named_parameters()) out.emplace_back(item.key(), item.value());
  return out;
}

// Which checkpoint to continue from, if any; refuses what cannot be resumed.
std::optional<CheckpointInfo> choose_resume(const Config& cfg, const std::string& run_dir, const std::string& resume) {
  std::optional<CheckpointInfo> info;
  const bool existing = fs::exists(fs::path(run_dir) / "config.yaml");
  if (resume != "auto" && resume != "never") {
    info = read_checkpoint_info(resolve_checkpoint(resume));
  } else if (existing) {
    if (resume == "never") {
      throw InputError("--run-dir: '" + run_dir + "' already holds a run; use --resume auto to continue it or choose a new directory");
    }
    const auto latest = latest_checkpoint(run_dir);
    if (!latest) {
      throw InputError("--run-dir: '" + run_dir + "' holds a run without a complete checkpoint to resume; choose a new directory");
    }
    info = read_checkpoint_info(*latest);
  }
  if (!info) return info;
  const ConfigDiff diff = diff_for_resume(info->config, cfg);
  if (!diff.incompatible.empty()) {
    std::string msg = "--resume: checkpoint '" + info->dir + "' does not fit this config; these keys differ:";
    for (const auto& k : diff.incompatible) msg += "\n  " + k;
    throw InputError(msg);
  }
  if (info->state.step >= cfg.train.steps) {
    throw InputError(fmt::format("--resume: checkpoint '{}' is at step {}, train.steps is {}; raise train.steps to go on",
                                 info->dir, info->state.step, cfg.train.steps));
  }
  for (const auto& k : diff.harmless) log::info("resume: changed since the checkpoint: " + k);
  return info;
}

// Keeps metrics records up to `step`: records a killed run wrote after its last checkpoint
// would otherwise repeat.
void truncate_metrics(const fs::path& path, int64_t step) {
  std::ifstream in(path);
  std::string kept, line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (nlohmann::json::parse(line).value("step", int64_t{0}) <= step) kept += line + "\n";
  }
  write_file_atomic(path.string(), kept);
}

}  // namespace

TrainSummary train(const LoadedConfig& loaded, const TrainOptions& opts) {
  const Config& cfg = loaded.config;
  log::set_console_level(log::parse_level(cfg.log.level));

  // --- everything that can fail on bad input, before the disk is touched ---
  const c10::Device device = resolve_device(cfg.train.device);
  const DeterministicAlgorithmsScope determinism(cfg.train.deterministic);
  const bool bf16 = use_bf16(cfg.train.precision, device);
  if (cfg.train.threads > 0) at::set_num_threads(static_cast<int>(cfg.train.threads));
  const std::unique_ptr<Tokenizer> tok = load_tokenizer(cfg.data.tokenizer);
  const Data data = open_data(cfg, *tok);
  LoaderOptions lo;
  lo.seq_len = cfg.data.seq_len;
  lo.batch = cfg.train.micro_batch;
  lo.seed = static_cast<uint64_t>(cfg.train.seed);
  lo.segments = cfg.data.respect_documents;  // validation batches too (vo below): the same objective
  const WindowLoader train_loader(data.train, lo, "data.train");
  if (data.val->tokens() == 0 && cfg.train.eval_every > 0) {
    throw InputError("train.eval_every: no validation data (data.val is empty and " + cfg.data.train +
                     " has no val split); set data.val, or train.eval_every: 0");
  }
  std::vector<Batch> val_batches;
  if (data.val->tokens() > 0) {  // with eval_every 0, validation still runs once at the end
    LoaderOptions vo = lo;
    vo.shuffle = false;
    val_batches = WindowLoader(data.val, vo, cfg.data.val.empty() ? "data.train (val split)" : "data.val")
                      .evenly_spaced(cfg.train.eval_batches);
  }
  const bool validating = !val_batches.empty();
  const std::string run_dir = choose_run_dir(cfg, opts.run_dir);
  const bool existing = fs::exists(fs::path(run_dir) / "config.yaml");
  const std::optional<CheckpointInfo> resume = choose_resume(cfg, run_dir, opts.resume);

  at::manual_seed(static_cast<uint64_t>(cfg.train.seed));  // CPU and CUDA default generators
  CausalLM model(cfg.model);  // initialised on the CPU: the same weights whatever the device
  model->to(device);
  AdamW optimizer(named_parameters(model), cfg.optim);
  TrainingState state;
  if (resume) {
    load_checkpoint(resume->dir, *model, &optimizer, /*restore_rng=*/true);
    state = resume->state;
  }
  TrainStep stepper(model, optimizer, cfg.train.grad_clip, device, bf16);

  // --- the run directory ---
  if (!existing) {
    create_run_dir(run_dir, cfg);
  } else {
    write_file_atomic((fs::path(run_dir) / "config.yaml").string(), "# resolved by sluice " SLUICE_VERSION "\n" + to_yaml(cfg));
    truncate_metrics(fs::path(run_dir) / "metrics.jsonl", state.step);
  }
  if (cfg.log.file) log::init(log::parse_level(cfg.log.level), (fs::path(run_dir) / "train.log").string());
  MetricsWriter metrics((fs::path(run_dir) / "metrics.jsonl").string());

  const ModelStats stats = model_stats(cfg.model, cfg.data.seq_len);
  const int64_t tokens_per_step = cfg.train.micro_batch * cfg.train.grad_accum * cfg.data.seq_len;
  const double peak = peak_flops(device, cfg.log.peak_tflops);
  log::info(fmt::format("run dir {}", run_dir));
  if (resume) log::info(fmt::format("resuming from {} (step {})", resume->dir, state.step));
  log::info(fmt::format("device {} ({}), precision {}, attention backend {}", device.str(), device_name(device),
                        bf16 ? "bf16 autocast" : "fp32", cfg.model.attention.backend));
  if (cfg.train.deterministic) {
    const char* cublas = std::getenv("CUBLAS_WORKSPACE_CONFIG");
    log::info(fmt::format("train.deterministic: PyTorch's deterministic algorithms on (CUBLAS_WORKSPACE_CONFIG={})",
                          cublas != nullptr ? cublas : ""));
  }
  if (cfg.data.respect_documents) {
    uint64_t docs = 0;
    for (size_t i = 0; i < data.train->segments(); ++i) docs += data.train->segment(i).documents();
    if (docs <= data.train->segments()) {
      log::warn("data.respect_documents: the training data holds no document boundaries (a text file is one "
                "document), so the mask changes nothing; prepare a dataset with `sluice data prepare`");
    } else {
      log::info("data.respect_documents: attention stays within each packed document");
    }
  }
  log::info(fmt::format("model: {} parameters ({} in embeddings), {:.3g} training FLOPs/token",
                        format_count(static_cast<double>(count_parameters(*model))),
                        format_count(static_cast<double>(stats.params_embedding)), stats.train_flops_per_token));
  log::info(fmt::format("data: {} train / {} val tokens ({} tokenizer, vocabulary {}); {} tokens per step; "
                        "{} steps per epoch",
                        format_count(static_cast<double>(data.train->tokens())),
                        format_count(static_cast<double>(data.val->tokens())), tok->kind(), tok->vocab_size(),
                        tokens_per_step, train_loader.batches_per_epoch() / cfg.train.grad_accum));

  TrainSummary summary;
  summary.run_dir = run_dir;
  summary.resumed_from_step = state.step;
  summary.final_val_loss = std::numeric_limits<double>::quiet_NaN();
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  // Interval accumulators live on the device so that steps never wait for the host.
  at::Tensor loss_acc = at::full({}, state.interval_loss_sum, f32);
  at::Tensor finite_acc = at::full({}, static_cast<double>(state.interval_finite), f32);
  at::Tensor skipped_acc = at::zeros({}, f32);
  int64_t steps_in_interval = state.interval_steps;
  int64_t skipped_total = state.skipped_steps;
  at::Tensor gnorm_last;
  TrainStep::Result last_result;
  double lr = 0.0;
  const int64_t total = cfg.train.steps;
  const auto t_start = Clock::now();
  auto t_interval = t_start;
  int64_t steps_timed = 0;  // steps in this process's current interval (for tokens/s)
  Prefetcher batches([&train_loader](uint64_t k) { return train_loader.batch(k); }, state.next_batch,
                     static_cast<int>(cfg.data.prefetch), device);
  StopSignal stop;

  // Reads the device counters; in abort mode a non-finite step ends the run here (exit 1),
  // before any checkpoint could store its consequences.
  auto check_nonfinite = [&](int64_t step) {
    const auto skipped = static_cast<int64_t>(skipped_acc.item<double>());
    if (skipped == 0) return;
    skipped_acc.zero_();
    skipped_total += skipped;
    if (cfg.train.on_nonfinite == "skip") {
      log::warn(fmt::format("step {}: {} update(s) with non-finite gradients skipped ({} in all)", step, skipped, skipped_total));
      return;
    }
    const nlohmann::json diag = {{"step", step},
                                 {"nonfinite_steps_since_last_check", skipped},
                                 {"grad_norm", gnorm_last.item<double>()},
                                 {"lr", lr},
                                 {"last_checkpoint", latest_checkpoint(run_dir).value_or("")},
                                 {"message", "gradients were not finite; the update was not applied and training stopped "
                                             "(train.on_nonfinite: abort). Lower optim.lr or raise train.grad_clip, "
                                             "or set train.on_nonfinite: skip."}};
    write_file_atomic((fs::path(run_dir) / "nonfinite.json").string(), diag.dump(2) + "\n");
    throw std::runtime_error(fmt::format("non-finite gradients at or before step {}; see {}/nonfinite.json", step, run_dir));
  };

  for (int64_t step = state.step + 1; step <= total; ++step) {
    std::vector<Batch> micro;
    for (int64_t i = 0; i < cfg.train.grad_accum; ++i) micro.push_back(batches.next());
    lr = learning_rate(cfg.schedule, cfg.optim.lr, step, total);
    const TrainStep::Result r = stepper.run(micro, lr);
    const at::Tensor finite = r.loss.isfinite();
    loss_acc.add_(at::where(finite, r.loss, at::zeros_like(r.loss)));
    finite_acc.add_(finite.to(at::kFloat));
    skipped_acc.add_(r.skipped);
    gnorm_last = r.grad_norm;
    last_result = r;
    ++steps_in_interval;
    ++steps_timed;

    const bool last = step == total;
    const bool stopping = stop.requested() || step == opts.stop_after;
    const bool log_now = step % cfg.train.log_every == 0 || last;
    const bool eval_now = validating && ((cfg.train.eval_every > 0 && step % cfg.train.eval_every == 0) || last);
    const bool save_now = (cfg.checkpoint.every > 0 && step % cfg.checkpoint.every == 0) || last || stopping;

    nlohmann::json rec;
    rec["step"] = step;
    if (log_now) {
      check_nonfinite(step);
      const double n_finite = finite_acc.item<double>();
      const double loss = n_finite > 0 ? loss_acc.item<double>() / n_finite : std::numeric_limits<double>::quiet_NaN();
      const double gnorm = gnorm_last.item<double>();
      const double dt = seconds_since(t_interval);
      const double tps = static_cast<double>(steps_timed * tokens_per_step) / dt;
      const double eta = dt / static_cast<double>(steps_timed) * static_cast<double>(total - step);
      rec["loss"] = loss;
      rec["lr"] = lr;
      rec["grad_norm"] = gnorm;
      rec["tokens"] = step * tokens_per_step;
      rec["tokens_per_s"] = tps;
      rec["elapsed_s"] = seconds_since(t_start);
      rec["data_wait_ms"] = 1e3 * batches.take_wait_seconds() / static_cast<double>(steps_timed);
      rec["skipped_steps"] = skipped_total;
      // MoE: balancing losses of the interval's last step, and routing statistics
      if (last_result.aux_loss.defined()) rec["aux_loss"] = last_result.aux_loss.item<double>();
      if (last_result.z_loss.defined()) rec["z_loss"] = last_result.z_loss.item<double>();
      const auto routing = model->routing_stats();
      add_routing_metrics(rec, routing);
      std::string line = fmt::format("step {}/{} | loss {:.4f} | lr {:.2e} | gnorm {:.3f} | {} tok/s", step, total,
                                     loss, lr, gnorm, format_count(tps));
      if (peak > 0) {
        const double mfu = tps * stats.train_flops_per_token / peak;
        rec["mfu"] = mfu;
        line += fmt::format(" | mfu {:.1f}%", 100.0 * mfu);
      }
      line += " | ETA " + format_duration(eta);
      log::info(line);
      if (!routing.empty()) log::info(routing_summary(routing));
      summary.final_loss = loss;
      summary.logged_losses.push_back(loss);
      loss_acc.zero_();
      finite_acc.zero_();
      steps_in_interval = 0;
      steps_timed = 0;
      t_interval = Clock::now();
    }
    if (eval_now) {
      const auto t_eval = Clock::now();
      const double val = stepper.evaluate(val_batches);
      rec["val_loss"] = val;
      summary.final_val_loss = val;
      log::info(fmt::format("step {}/{} | val_loss {:.4f} (ppl {:.2f})", step, total, val, std::exp(val)));
      t_interval += Clock::now() - t_eval;  // keep evaluation out of the throughput figure
    }
    if (log_now || eval_now) metrics.write(rec);
    if (save_now) {
      const auto t_save = Clock::now();
      check_nonfinite(step);
      state.step = step;
      state.tokens = step * tokens_per_step;
      state.next_batch = batches.next_index();
      state.interval_loss_sum = loss_acc.item<double>();
      state.interval_finite = static_cast<int64_t>(finite_acc.item<double>());
      state.interval_steps = steps_in_interval;
      state.skipped_steps = skipped_total;
      summary.last_checkpoint = save_checkpoint(run_dir, cfg, *model, optimizer, state);
      prune_checkpoints(run_dir, cfg.checkpoint.keep_last);
      log::info(fmt::format("checkpoint {} ({:.1f}s)", summary.last_checkpoint, seconds_since(t_save)));
      t_interval += Clock::now() - t_save;
    }
    summary.steps = step;
    if (stopping && !last) {
      summary.stopped_by_signal = true;
      log::warn(fmt::format("stopped ({}) after step {}; continue with: sluice train CONFIG --run-dir {} "
                            "(--resume auto is the default)",
                            stop.requested() ? "signal " + std::to_string(stop.signal()) : std::string("--stop-after"),
                            step, run_dir));
      break;
    }
  }

  const double elapsed = seconds_since(t_start);
  const int64_t done_here = summary.steps - summary.resumed_from_step;
  summary.tokens_per_s = static_cast<double>(done_here * tokens_per_step) / elapsed;
  nlohmann::json s = {{"steps", summary.steps},
                      {"target_steps", total},
                      {"stopped_by_signal", summary.stopped_by_signal},
                      {"resumed_from_step", summary.resumed_from_step},
                      {"final_loss", summary.final_loss},
                      {"tokens", summary.steps * tokens_per_step},
                      {"elapsed_s", elapsed},
                      {"tokens_per_s", summary.tokens_per_s},
                      {"skipped_steps", skipped_total},
                      {"params", count_parameters(*model)},
                      {"train_flops_per_token", stats.train_flops_per_token},
                      {"last_checkpoint", summary.last_checkpoint},
                      {"device", device_name(device)}};
  if (validating && std::isfinite(summary.final_val_loss)) s["final_val_loss"] = summary.final_val_loss;
  write_file_atomic((fs::path(run_dir) / "summary.json").string(), s.dump(2) + "\n");
  log::info(fmt::format("{}: {} steps in {}, final loss {:.4f}{}", summary.stopped_by_signal ? "stopped" : "done",
                        summary.steps, format_duration(elapsed), summary.final_loss,
                        std::isfinite(summary.final_val_loss) ? fmt::format(", val_loss {:.4f}", summary.final_val_loss)
                                                              : std::string()));
  log::close_file();
  return summary;
}

}  // namespace sluice
