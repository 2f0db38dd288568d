#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>

#include "data/prefetcher.h"
#include "data/token_corpus.h"
#include "data/window_loader.h"
#include "sluice/tokenizer.h"
#include "sluice/errors.h"
#include "sluice/log.h"
#include "sluice/model.h"
#include "sluice/trainer.h"
#include "train/adamw.h"
#include "train/device.h"
#include "train/metrics.h"
#include "train/run_dir.h"
#include "train/schedule.h"
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

}  // namespace

TrainSummary train(const LoadedConfig& loaded, const TrainOptions& opts) {
  const Config& cfg = loaded.config;
  log::set_console_level(log::parse_level(cfg.log.level));

  // --- everything that can fail on bad input, before the disk is touched ---
  const c10::Device device = resolve_device(cfg.train.device);
  const bool bf16 = use_bf16(cfg.train.precision, device);
  if (cfg.train.threads > 0) at::set_num_threads(static_cast<int>(cfg.train.threads));
  const std::unique_ptr<Tokenizer> tok = load_tokenizer(cfg.data.tokenizer);
  const Data data = open_data(cfg, *tok);
  LoaderOptions lo;
  lo.seq_len = cfg.data.seq_len;
  lo.batch = cfg.train.micro_batch;
  lo.seed = static_cast<uint64_t>(cfg.train.seed);
  const WindowLoader train_loader(data.train, lo, "data.train");
  std::vector<Batch> val_batches;
  if (data.val->tokens() == 0 && cfg.train.eval_every > 0) {
    throw InputError("train.eval_every: no validation data (data.val is empty and " + cfg.data.train +
                     " has no val split); set data.val, or train.eval_every: 0");
  }
  if (data.val->tokens() > 0) {  // with eval_every 0, validation still runs once at the end
    LoaderOptions vo = lo;
    vo.shuffle = false;
    val_batches = WindowLoader(data.val, vo, cfg.data.val.empty() ? "data.train (val split)" : "data.val")
                      .evenly_spaced(cfg.train.eval_batches);
  }
  const bool validating = !val_batches.empty();
  const std::string run_dir = choose_run_dir(cfg, opts.run_dir);
  if (fs::exists(fs::path(run_dir) / "config.yaml")) {
    throw InputError("--run-dir: '" + run_dir + "' already holds a run (config.yaml exists); choose a new directory");
  }

  at::manual_seed(static_cast<uint64_t>(cfg.train.seed));  // CPU and CUDA default generators
  CausalLM model(cfg.model);  // initialised on the CPU: the same weights whatever the device
  model->to(device);
  AdamW optimizer(named_parameters(model), cfg.optim);
  TrainStep stepper(model, optimizer, cfg.train.grad_clip, device, bf16);
  Prefetcher batches([&train_loader](uint64_t k) { return train_loader.batch(k); }, 0,
                     static_cast<int>(cfg.data.prefetch), device);

  // --- the run directory ---
  create_run_dir(run_dir, cfg);
  if (cfg.log.file) log::init(log::parse_level(cfg.log.level), (fs::path(run_dir) / "train.log").string());
  MetricsWriter metrics((fs::path(run_dir) / "metrics.jsonl").string());

  const ModelStats stats = model_stats(cfg.model, cfg.data.seq_len);
  const int64_t tokens_per_step = cfg.train.micro_batch * cfg.train.grad_accum * cfg.data.seq_len;
  const double peak = peak_flops(device, cfg.log.peak_tflops);
  log::info(fmt::format("run dir {}", run_dir));
  log::info(fmt::format("device {} ({}), precision {}, attention backend {}", device.str(), device_name(device),
                        bf16 ? "bf16 autocast" : "fp32", cfg.model.attention.backend));
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
  summary.final_val_loss = std::numeric_limits<double>::quiet_NaN();
  const auto t_start = Clock::now();
  auto t_interval = t_start;
  int64_t steps_in_interval = 0;
  at::Tensor loss_acc = at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device));
  at::Tensor gnorm_last;
  const int64_t total = cfg.train.steps;

  for (int64_t step = 1; step <= total; ++step) {
    std::vector<Batch> micro;
    for (int64_t i = 0; i < cfg.train.grad_accum; ++i) micro.push_back(batches.next());
    const double lr = learning_rate(cfg.schedule, cfg.optim.lr, step, total);
    const TrainStep::Result r = stepper.run(micro, lr);
    loss_acc.add_(r.loss);
    gnorm_last = r.grad_norm;
    ++steps_in_interval;

    const bool last = step == total;
    const bool log_now = step % cfg.train.log_every == 0 || last;
    const bool eval_now = validating && ((cfg.train.eval_every > 0 && step % cfg.train.eval_every == 0) || last);
    if (!log_now && !eval_now) continue;

    nlohmann::json rec;
    rec["step"] = step;
    if (log_now) {
      const double loss = loss_acc.item<double>() / static_cast<double>(steps_in_interval);  // syncs the device
      const double gnorm = gnorm_last.item<double>();
      if (!std::isfinite(loss)) throw std::runtime_error(fmt::format("non-finite training loss at step {}", step));
      const double dt = seconds_since(t_interval);
      const double tps = static_cast<double>(steps_in_interval * tokens_per_step) / dt;
      const double eta = dt / static_cast<double>(steps_in_interval) * static_cast<double>(total - step);
      rec["loss"] = loss;
      rec["lr"] = lr;
      rec["grad_norm"] = gnorm;
      rec["tokens"] = step * tokens_per_step;
      rec["tokens_per_s"] = tps;
      rec["elapsed_s"] = seconds_since(t_start);
      rec["data_wait_ms"] = 1e3 * batches.take_wait_seconds() / static_cast<double>(steps_in_interval);
      std::string line = fmt::format("step {}/{} | loss {:.4f} | lr {:.2e} | gnorm {:.3f} | {} tok/s", step, total,
                                     loss, lr, gnorm, format_count(tps));
      if (peak > 0) {
        const double mfu = tps * stats.train_flops_per_token / peak;
        rec["mfu"] = mfu;
        line += fmt::format(" | mfu {:.1f}%", 100.0 * mfu);
      }
      line += " | ETA " + format_duration(eta);
      log::info(line);
      summary.final_loss = loss;
      summary.logged_losses.push_back(loss);
      loss_acc.zero_();
      steps_in_interval = 0;
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
    metrics.write(rec);
  }

  summary.steps = total;
  const double elapsed = seconds_since(t_start);
  summary.tokens_per_s = static_cast<double>(total * tokens_per_step) / elapsed;
  nlohmann::json s = {{"steps", total},
                      {"final_loss", summary.final_loss},
                      {"tokens", total * tokens_per_step},
                      {"elapsed_s", elapsed},
                      {"tokens_per_s", summary.tokens_per_s},
                      {"params", count_parameters(*model)},
                      {"train_flops_per_token", stats.train_flops_per_token},
                      {"device", device_name(device)}};
  if (validating) s["final_val_loss"] = summary.final_val_loss;
  write_file_atomic((fs::path(run_dir) / "summary.json").string(), s.dump(2) + "\n");
  log::info(fmt::format("done: {} steps in {}, final loss {:.4f}{}", total, format_duration(elapsed),
                        summary.final_loss,
                        validating ? fmt::format(", val_loss {:.4f}", summary.final_val_loss) : std::string()));
  log::close_file();
  return summary;
}

}  // namespace sluice
