#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <malloc.h>
#include <thread>

#include "data/prefetcher.h"
#include "data/token_corpus.h"
#include "data/window_loader.h"
#include "sluice/errors.h"
#include "sluice/log.h"
#include "sluice/model.h"
#include "sluice/tokenizer.h"
#include "sluice/trainer.h"
#include "train/checkpoint.h"
#include "train/device.h"
#include "train/memory_estimate.h"
#include "train/metrics.h"
#include "train/tensorboard_writer.h"
#include "train/out_of_memory.h"
#include "train/parallel.h"
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
    // A record cut short (a kill or a full disk during its write) is not JSON: dropped.
    const nlohmann::json rec = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (rec.is_object() && rec.value("step", int64_t{0}) <= step) kept += line + "\n";
  }
  write_file_atomic(path.string(), kept);
}

// Intra-op threads: train.threads, else OMP_NUM_THREADS (LibTorch reads it itself), else the
// cores shared out between the ranks on this node: ranks that each take every core run many
// times slower side by side (measured: 5-25x for two 2-thread ranks on 2 cores).
void set_threads(const Config& cfg, const Parallel& par) {
  int64_t n = cfg.train.threads;
  const char* omp = std::getenv("OMP_NUM_THREADS");
  if (n == 0 && omp != nullptr && *omp != '\0') return;
  if (n == 0) {
    const int64_t cores = std::max<int64_t>(1, std::thread::hardware_concurrency());
    n = std::max<int64_t>(1, cores / par.local_world_size());
  }
  at::set_num_threads(static_cast<int>(n));
}

// glibc serves allocations above its mmap threshold with mmap and returns them to the system
// on free; below it they come from the heap, which keeps what was freed. Its default threshold
// adapts upwards (to 32 MiB) once a large block is freed, after which a step's MB-sized
// activations live in the heap and peak RSS stays at the high-water mark of the heap's
// fragments: measured 4.4 GB against 4.0 GB at 1 MiB for the 125M config on the CPU, and most of
// what activation checkpointing frees hidden; but mapping every large block costs about 30% of
// tokens/s there, so glibc's default stays unless train.malloc_mmap_threshold_mb asks
// (benchmarks/activation_checkpoint_memory.sh).
void set_malloc_mmap_threshold(double mb) {
  if (mb <= 0 || std::getenv("MALLOC_MMAP_THRESHOLD_") != nullptr) return;  // the environment's setting wins
  mallopt(M_MMAP_THRESHOLD, static_cast<int>(mb * 1024 * 1024));
}

// The rank's share of a global batch of world·rows windows.
Batch rank_rows(const Batch& b, int64_t rank, int64_t rows) {
  // Rows rank, rank + W, ...: the ranks' shares interleave as in the training loader's batches,
  // so an expert-parallel group sees them in one process's order (capacity dropping).
  const int64_t world = b.inputs.size(0) / rows;
  const at::Tensor index = at::arange(rank, rank + world * rows, world, at::kLong);
  auto part = [&](const at::Tensor& t) { return t.defined() ? t.index_select(0, index) : t; };
  return {part(b.inputs), part(b.targets), part(b.segments)};
}

class Trainer {
 public:
  Trainer(const LoadedConfig& loaded, const TrainOptions& opts, Parallel& par)
      : cfg_(loaded.config), opts_(opts), par_(par) {}

  TrainSummary run() {
    prepare_inputs();
    try {
      phase_ = "model initialisation";
      build_model();
      open_run_dir();
      log_start();
      train_loop();
    } catch (const std::exception& e) {
      if (!is_out_of_memory(e)) throw;
      std::string phase = phase_;
      if (phase == "step") phase = stepper_->phase() == std::string("idle") ? "data loading" : stepper_->phase();
      const std::string what = dynamic_cast<const c10::Error*>(&e) != nullptr
                                   ? static_cast<const c10::Error&>(e).what_without_backtrace()
                                   : e.what();
      throw ResourceError(out_of_memory_message(cfg_, phase, current_step_, what, memory_summary_,
                                                latest_checkpoint(run_dir_), run_dir_));
    }
    return finish();
  }

 private:
  const Config& cfg_;
  const TrainOptions& opts_;
  Parallel& par_;

  // prepare_inputs
  c10::Device device_{c10::kCPU};
  bool bf16_ = false;
  std::unique_ptr<DeterministicAlgorithmsScope> determinism_;
  std::unique_ptr<Tokenizer> tok_;
  Data data_;
  std::unique_ptr<WindowLoader> train_loader_;
  std::vector<Batch> val_batches_;
  std::string run_dir_;
  bool existing_ = false;
  std::optional<CheckpointInfo> resume_;
  std::optional<CheckpointInfo> init_from_;  // --init-from on a fresh start
  int64_t tokens_per_step_ = 0;  // all ranks together
  // build_model
  CausalLM model_{nullptr};
  std::unique_ptr<Optimizer> optimizer_;
  TrainingState state_;
  std::unique_ptr<TrainStep> stepper_;
  // open_run_dir
  std::unique_ptr<MetricsWriter> metrics_;  // rank 0 only
  std::unique_ptr<TensorBoardWriter> tensorboard_;  // rank 0, log.tensorboard
  // check_memory, and where an out-of-memory failure happened
  std::string memory_summary_;
  const char* phase_ = "start";  // "step": TrainStep::phase() says more
  int64_t current_step_ = 0;
  // train_loop
  ModelStats stats_;
  double peak_ = 0.0;
  TrainSummary summary_;
  at::Tensor loss_acc_, finite_acc_, skipped_acc_, gnorm_last_;
  int64_t steps_in_interval_ = 0, skipped_total_ = 0, steps_timed_ = 0;
  TrainStep::Result last_result_;
  double lr_ = 0.0;
  Clock::time_point t_start_, t_interval_;
  std::unique_ptr<Prefetcher> batches_;

  // --- everything that can fail on bad input, before the disk is touched ---
  void prepare_inputs() {
    device_ = par_.device(resolve_device(cfg_.train.device));
    determinism_ = std::make_unique<DeterministicAlgorithmsScope>(cfg_.train.deterministic);
    bf16_ = use_bf16(cfg_.train.precision, device_);
    check_memory();
    set_threads(cfg_, par_);
    set_malloc_mmap_threshold(cfg_.train.malloc_mmap_threshold_mb);
    tok_ = load_tokenizer(cfg_.data.tokenizer);
    data_ = open_data(cfg_, *tok_);
    LoaderOptions lo;
    lo.seq_len = cfg_.data.seq_len;
    lo.batch = cfg_.train.micro_batch;
    lo.seed = static_cast<uint64_t>(cfg_.train.seed);
    lo.rank = par_.rank();
    lo.world = par_.world_size();
    lo.segments = cfg_.data.respect_documents;  // validation batches too (vo below): the same objective
    train_loader_ = std::make_unique<WindowLoader>(data_.train, lo, "data.train");
    if (data_.val->tokens() == 0 && cfg_.train.eval_every > 0) {
      throw InputError("train.eval_every: no validation data (data.val is empty and " + cfg_.data.train +
                       " has no val split); set data.val, or train.eval_every: 0");
    }
    if (data_.val->tokens() > 0) {  // with eval_every 0, validation still runs once at the end
      // The same windows whatever the world size: eval_batches global micro-batches, each
      // rank evaluating its rows of every one.
      LoaderOptions vo = lo;
      vo.shuffle = false;
      vo.rank = 0;
      vo.world = 1;
      vo.batch = lo.batch * lo.world;
      const WindowLoader val(data_.val, vo, cfg_.data.val.empty() ? "data.train (val split)" : "data.val");
      for (const Batch& b : val.evenly_spaced(cfg_.train.eval_batches))
        val_batches_.push_back(rank_rows(b, par_.rank(), lo.batch));
    }
    tokens_per_step_ = cfg_.train.micro_batch * cfg_.train.grad_accum * par_.world_size() * cfg_.data.seq_len;
    run_dir_ = par_.agree("the run directory", choose_run_dir(cfg_, opts_.run_dir));
    existing_ = fs::exists(fs::path(run_dir_) / "config.yaml");
    resume_ = choose_resume(cfg_, run_dir_, opts_.resume);
    if (!resume_ && !opts_.init_from.empty()) {
      try {
        init_from_ = read_checkpoint_info(resolve_checkpoint(opts_.init_from));
      } catch (const InputError& e) {
        throw InputError(std::string("--init-from: ") + e.what());
      }
    }
    if (resume_) {
      const Config& old = resume_->config;
      const uint64_t from = resume_->state.global_micro_batch > 0 ? resume_->state.global_micro_batch
                                                                  : static_cast<uint64_t>(old.train.micro_batch);
      state_ = resume_->state;
      state_.next_batch = train_loader_->convert_index(state_.next_batch, from);
      restore_interval_sums();
      if (from != train_loader_->global_batch() ||
          old.train.grad_accum * static_cast<int64_t>(from) != cfg_.train.grad_accum * lo.batch * lo.world) {
        log::warn(fmt::format("resume: the global batch was {} x {} sequences, now {} x {}; the data order goes on "
                              "from the same position",
                              from, old.train.grad_accum, train_loader_->global_batch(), cfg_.train.grad_accum));
      }
    }
  }

  // Pre-flight (train.memory_check): refuse a step that cannot fit before anything is built.
  // Every rank decides alike, so that none waits for a rank that stopped.
  void check_memory() {
    if (cfg_.train.memory_check == "off") return;
    StepMemoryLayout layout;
    layout.world_size = par_.world_size();
    layout.expert_parallel = cfg_.parallel.expert_parallel;
    layout.cuda = device_.is_cuda();
    layout.bf16 = bf16_;
    const MemoryEstimate est = estimate_step_memory(cfg_, layout);
    AvailableMemory avail = device_.is_cuda()
                                ? AvailableMemory{free_device_memory(device_), "cudaMemGetInfo on " + device_.str()}
                                : available_host_memory(par_.local_world_size());
    if (avail.bytes < 0) {
      memory_summary_ = format_bytes(est.total()) + " (free memory unknown)";
      return;
    }
    memory_summary_ = fmt::format("{} of {} available ({})", format_bytes(est.total()), format_bytes(avail.bytes),
                                  avail.source);
    const bool fits = est.total() <= avail.bytes;
    const std::string report = fits ? std::string() : explain_memory_shortfall(cfg_, layout, est, avail, device_.str());
    if (cfg_.train.memory_check == "warn") {
      if (!fits) log::warn(report);
      return;
    }
    if (!par_.any(!fits)) return;
    if (!fits) throw InputError(report);
    throw InputError("train.memory_check: another rank's step does not fit in its memory (see its message); nothing "
                     "was started");
  }

  // --- model, optimizer (parallelism applied around the model), checkpoint ---
  void build_model() {
    at::manual_seed(static_cast<uint64_t>(cfg_.train.seed));  // CPU and CUDA default generators
    model_ = CausalLM(cfg_.model);  // initialised on the CPU: the same weights whatever the device
    model_->set_loss_chunk_tokens(cfg_.train.loss_chunk_tokens);
    model_->set_activation_checkpointing(cfg_.train.activation_checkpointing);
    par_.shard_model(*model_);       // expert parallelism keeps this rank's experts
    model_->to(device_);
    model_->set_routing_count_reducer(par_.routing_count_reducer());
    optimizer_ = par_.make_optimizer(*model_, named_parameters(model_), cfg_);
    const TensorPart part = [this](const std::string& name, const at::Tensor& whole) { return par_.local_part(name, whole); };
    if (resume_) {
      load_checkpoint(resume_->dir, *model_, optimizer_.get(), /*restore_rng=*/true, part);
    } else if (init_from_) {
      // Weights only: names and shapes must match (the message names the tensor); the model keys
      // may differ where they change no shape (e.g. RoPE scaling for a longer context).
      try {
        load_checkpoint(init_from_->dir, *model_, nullptr, /*restore_rng=*/false, part);
      } catch (const InputError& e) {
        throw InputError(std::string("--init-from: ") + e.what());
      }
    }
    state_.global_micro_batch = train_loader_->global_batch();
    stepper_ = std::make_unique<TrainStep>(model_, *optimizer_, cfg_.train.grad_clip, device_, bf16_, &par_);
  }

  // --- the run directory: rank 0 creates or continues it; every rank writes its own log ---
  void open_run_dir() {
    par_.barrier("every rank to read the run directory");  // before rank 0 changes it
    const fs::path dir(run_dir_);
    if (par_.is_main()) {
      if (!existing_) {
        create_run_dir(run_dir_, cfg_);
      } else {
        write_file_atomic((dir / "config.yaml").string(), "# resolved by sluice " SLUICE_VERSION "\n" + to_yaml(cfg_));
        truncate_metrics(dir / "metrics.jsonl", state_.step);
      }
      metrics_ = std::make_unique<MetricsWriter>((dir / "metrics.jsonl").string());
      if (cfg_.log.tensorboard) tensorboard_ = std::make_unique<TensorBoardWriter>(run_dir_, existing_ ? state_.step : 0);
    }
    par_.barrier("rank 0 to create the run directory");
    const bool distributed = par_.world_size() > 1;
    std::string log_file;
    if (par_.is_main() && cfg_.log.file) log_file = (dir / "train.log").string();
    if (distributed && !par_.is_main()) {
      fs::create_directories(dir / "logs");
      log_file = (dir / "logs" / fmt::format("rank-{}.log", par_.rank())).string();
    }
    if (!log_file.empty()) log::init(log::parse_level(cfg_.log.level), log_file);
    if (!par_.is_main()) log::set_console_level(std::max(log::parse_level(cfg_.log.level), log::Level::warn));
    if (distributed && par_.is_main() && cfg_.log.file) {  // logs/rank-0.log is train.log
      fs::create_directories(dir / "logs");
      std::error_code ec;
      fs::remove(dir / "logs" / "rank-0.log", ec);
      fs::create_symlink("../train.log", dir / "logs" / "rank-0.log", ec);
    }
  }

  void log_start() {
    stats_ = model_stats(cfg_.model, cfg_.data.seq_len);
    peak_ = peak_flops(device_, cfg_.log.peak_tflops);
    log::info(fmt::format("run dir {}", run_dir_));
    if (resume_) log::info(fmt::format("resuming from {} (step {})", resume_->dir, state_.step));
    if (init_from_) {
      log::info(fmt::format("initialised from {} (weights of its step {}; step 0, fresh optimizer)", init_from_->dir,
                            init_from_->state.step));
      for (const std::string& d : diff_for_resume(init_from_->config, cfg_).incompatible)
        if (d.rfind("model.", 0) == 0) log::info("init-from: model key differs from the checkpoint's: " + d);
    }
    if (par_.world_size() > 1) log::info("distributed: " + par_.describe());
    log::info(fmt::format("device {} ({}), precision {}, attention backend {}, {} threads", device_.str(),
                          device_name(device_), bf16_ ? "bf16 autocast" : "fp32", cfg_.model.attention.backend,
                          at::get_num_threads()));
    if (cfg_.train.deterministic) {
      const char* cublas = std::getenv("CUBLAS_WORKSPACE_CONFIG");
      log::info(fmt::format("train.deterministic: PyTorch's deterministic algorithms on (CUBLAS_WORKSPACE_CONFIG={})",
                            cublas != nullptr ? cublas : ""));
    }
    if (cfg_.data.respect_documents) {
      uint64_t docs = 0;
      for (size_t i = 0; i < data_.train->segments(); ++i) docs += data_.train->segment(i).documents();
      if (docs <= data_.train->segments()) {
        log::warn("data.respect_documents: the training data holds no document boundaries (a text file is one "
                  "document), so the mask changes nothing; prepare a dataset with `sluice data prepare`");
      } else {
        log::info("data.respect_documents: attention stays within each packed document");
      }
    }
    log::info(fmt::format("model: {} parameters ({} in embeddings), {:.3g} training FLOPs/token",
                          format_count(static_cast<double>(par_.parameter_count(*model_))),
                          format_count(static_cast<double>(stats_.params_embedding)), stats_.train_flops_per_token));
    if (!memory_summary_.empty()) log::info("memory: a step needs about " + memory_summary_ + " (train.memory_check)");
    log::info(fmt::format("optimizer state: {} per rank{}", format_count(static_cast<double>(optimizer_->state_bytes())) + "B",
                          cfg_.parallel.zero == 1 && par_.world_size() > 1 ? " (ZeRO-1: sharded)" : ""));
    log::info(fmt::format("data: {} train / {} val tokens ({} tokenizer, vocabulary {}); {} steps per epoch",
                          format_count(static_cast<double>(data_.train->tokens())),
                          format_count(static_cast<double>(data_.val->tokens())), tok_->kind(), tok_->vocab_size(),
                          train_loader_->batches_per_epoch() / cfg_.train.grad_accum));
    log::info(fmt::format("global batch: {} sequences = micro_batch {} x grad_accum {} x {} rank(s); {} tokens per step",
                          cfg_.train.micro_batch * cfg_.train.grad_accum * par_.world_size(), cfg_.train.micro_batch,
                          cfg_.train.grad_accum, par_.world_size(), tokens_per_step_));
  }

  void train_loop() {
    summary_.run_dir = run_dir_;
    summary_.resumed_from_step = state_.step;
    summary_.final_val_loss = std::numeric_limits<double>::quiet_NaN();
    const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device_);
    // Interval accumulators live on the device so that steps never wait for the host.
    loss_acc_ = at::full({}, state_.interval_loss_sum, f32);
    finite_acc_ = at::full({}, static_cast<double>(state_.interval_finite), f32);
    skipped_acc_ = at::zeros({}, f32);
    steps_in_interval_ = state_.interval_steps;
    skipped_total_ = state_.skipped_steps;
    t_start_ = t_interval_ = Clock::now();
    batches_ = std::make_unique<Prefetcher>([this](uint64_t k) { return train_loader_->batch(k); }, state_.next_batch,
                                            static_cast<int>(cfg_.data.prefetch), device_);
    StopSignal stop;
    const int64_t total = cfg_.train.steps;
    for (int64_t step = state_.step + 1; step <= total; ++step) {
      current_step_ = step;
      if (step == state_.step + 1) apply_test_address_space_headroom();
      phase_ = "step";
      train_step(step);
      phase_ = "logging";
      const bool last = step == total;
      // Every rank stops at the same step, also when a signal reached only some of them.
      const bool stopping = par_.any(stop.requested()) || step == opts_.stop_after;
      const bool log_now = step % cfg_.train.log_every == 0 || last;
      const bool eval_now = !val_batches_.empty() &&
                            ((cfg_.train.eval_every > 0 && step % cfg_.train.eval_every == 0) || last);
      const bool save_now = (cfg_.checkpoint.every > 0 && step % cfg_.checkpoint.every == 0) || last || stopping;
      if (cfg_.parallel.check_every > 0 && step % cfg_.parallel.check_every == 0)
        par_.check_parameters_agree(*model_, step);
      nlohmann::json rec;
      rec["step"] = step;
      if (log_now) log_interval(step, rec);
      phase_ = "step";  // TrainStep::phase() is "evaluation" inside
      if (eval_now) validate(step, rec);
      phase_ = "logging";
      if ((log_now || eval_now) && metrics_) metrics_->write(rec);
      if ((log_now || eval_now) && tensorboard_) tensorboard_->write(rec);
      phase_ = "checkpoint write";
      if (save_now) save(step);
      summary_.steps = step;
      if (stopping && !last) {
        summary_.stopped_by_signal = true;
        log::warn(fmt::format("stopped ({}) after step {}; continue with: sluice train CONFIG --run-dir {} "
                              "(--resume auto is the default)",
                              stop.requested() ? "signal " + std::to_string(stop.signal())
                              : step == opts_.stop_after ? std::string("--stop-after")
                                                         : std::string("a signal to another rank"),
                              step, run_dir_));
        break;
      }
    }
  }

  void train_step(int64_t step) {
    std::vector<Batch> micro;
    for (int64_t i = 0; i < cfg_.train.grad_accum; ++i) micro.push_back(batches_->next());
    lr_ = learning_rate(cfg_.schedule, cfg_.optim.lr, step, cfg_.train.steps);
    const TrainStep::Result r = stepper_->run(micro, lr_);
    const at::Tensor finite = r.loss.isfinite();
    loss_acc_.add_(at::where(finite, r.loss, at::zeros_like(r.loss)));
    finite_acc_.add_(finite.to(at::kFloat));
    skipped_acc_.add_(r.skipped);
    gnorm_last_ = r.grad_norm;
    last_result_ = r;
    ++steps_in_interval_;
    ++steps_timed_;
  }

  // Reads the device counters; in abort mode a non-finite step ends the run here (exit 1),
  // before any checkpoint could store its consequences. The gradient norm is global, so every
  // rank decides alike.
  void check_nonfinite(int64_t step) {
    const auto skipped = static_cast<int64_t>(skipped_acc_.item<double>());
    if (skipped == 0) return;
    skipped_acc_.zero_();
    skipped_total_ += skipped;
    if (cfg_.train.on_nonfinite == "skip") {
      log::warn(fmt::format("step {}: {} update(s) with non-finite gradients skipped ({} in all)", step, skipped,
                            skipped_total_));
      return;
    }
    if (par_.is_main()) {
      const nlohmann::json diag = {
          {"step", step},
          {"nonfinite_steps_since_last_check", skipped},
          {"grad_norm", gnorm_last_.item<double>()},
          {"lr", lr_},
          {"last_checkpoint", latest_checkpoint(run_dir_).value_or("")},
          {"message", "gradients were not finite; the update was not applied and training stopped "
                      "(train.on_nonfinite: abort). Lower optim.lr or raise train.grad_clip, "
                      "or set train.on_nonfinite: skip."}};
      write_file_atomic((fs::path(run_dir_) / "nonfinite.json").string(), diag.dump(2) + "\n");
    }
    throw std::runtime_error(fmt::format("non-finite gradients at or before step {}; see {}/nonfinite.json", step, run_dir_));
  }

  // The interval's means over all ranks: loss, the MoE losses and routing statistics.
  void log_interval(int64_t step, nlohmann::json& rec) {
    check_nonfinite(step);
    at::Tensor sums = at::stack({loss_acc_, finite_acc_});
    if (last_result_.aux_loss.defined()) sums = at::cat({sums, at::stack({last_result_.aux_loss, last_result_.z_loss})});
    sums = sums.to(at::kDouble);
    par_.sum_(sums);
    const at::Tensor host = sums.cpu();
    const double* v = host.data_ptr<double>();
    const double n_finite = v[1];
    const double loss = n_finite > 0 ? v[0] / n_finite : std::numeric_limits<double>::quiet_NaN();
    const double gnorm = gnorm_last_.item<double>();
    const double dt = seconds_since(t_interval_);
    const double tps = static_cast<double>(steps_timed_ * tokens_per_step_) / dt;
    const double eta = dt / static_cast<double>(steps_timed_) * static_cast<double>(cfg_.train.steps - step);
    const auto world = static_cast<double>(par_.world_size());
    rec["loss"] = loss;
    rec["lr"] = lr_;
    rec["grad_norm"] = gnorm;
    rec["tokens"] = step * tokens_per_step_;
    rec["tokens_per_s"] = tps;
    rec["elapsed_s"] = seconds_since(t_start_);
    rec["data_wait_ms"] = 1e3 * batches_->take_wait_seconds() / static_cast<double>(steps_timed_);
    rec["skipped_steps"] = skipped_total_;
    for (const auto& [key, value] : par_.interval_metrics(steps_timed_, dt)) rec[key] = value;
    // MoE: balancing losses of the interval's last step, and routing statistics
    if (last_result_.aux_loss.defined()) {
      rec["aux_loss"] = v[2] / world;
      rec["z_loss"] = v[3] / world;
    }
    auto routing = model_->routing_stats();
    sum_routing_stats(routing, par_);
    add_routing_metrics(rec, routing);
    std::string line = fmt::format("step {}/{} | loss {:.4f} | lr {:.2e} | gnorm {:.3f} | {} tok/s", step,
                                   cfg_.train.steps, loss, lr_, gnorm, format_count(tps));
    if (peak_ > 0) {
      const double mfu = tps / world * stats_.train_flops_per_token / peak_;  // per device
      rec["mfu"] = mfu;
      line += fmt::format(" | mfu {:.1f}%", 100.0 * mfu);
    }
    line += " | ETA " + format_duration(eta);
    log::info(line);
    if (!routing.empty()) log::info(routing_summary(routing));
    summary_.final_loss = loss;
    summary_.logged_losses.push_back(loss);
    loss_acc_.zero_();
    finite_acc_.zero_();
    steps_in_interval_ = 0;
    steps_timed_ = 0;
    t_interval_ = Clock::now();
  }

  void validate(int64_t step, nlohmann::json& rec) {
    const auto t_eval = Clock::now();
    at::Tensor sum = stepper_->evaluate_sum(val_batches_).to(at::kDouble);
    par_.sum_(sum);
    const double val = sum.item<double>() / static_cast<double>(val_batches_.size() * par_.world_size());
    rec["val_loss"] = val;
    summary_.final_val_loss = val;
    log::info(fmt::format("step {}/{} | val_loss {:.4f} (ppl {:.2f})", step, cfg_.train.steps, val, std::exp(val)));
    t_interval_ += Clock::now() - t_eval;  // keep evaluation out of the throughput figure
  }

  // Every rank gathers the optimizer state (sharded under ZeRO-1); rank 0 writes; no rank goes
  // on before the checkpoint is complete.
  void save(int64_t step) {
    const auto t_save = Clock::now();
    check_nonfinite(step);
    state_.step = step;
    state_.tokens = step * tokens_per_step_;
    state_.next_batch = batches_->next_index();
    state_.interval_loss_sum = loss_acc_.item<double>();
    state_.interval_finite = static_cast<int64_t>(finite_acc_.item<double>());
    state_.interval_steps = steps_in_interval_;
    state_.skipped_steps = skipped_total_;
    if (par_.world_size() > 1) gather_interval_sums();
    const NamedTensors weights = par_.whole_model_tensors(*model_);  // both collectives: every rank
    const NamedTensors opt_state = optimizer_->state_tensors();
    if (par_.is_main()) {
      summary_.last_checkpoint = save_checkpoint(run_dir_, cfg_, weights, opt_state, state_);
      prune_checkpoints(run_dir_, cfg_.checkpoint.keep_last);
    }
    par_.barrier(fmt::format("rank 0 to write the checkpoint of step {}", step));
    summary_.last_checkpoint = checkpoint_dir(run_dir_, step);
    log::info(fmt::format("checkpoint {} ({:.1f}s)", summary_.last_checkpoint, seconds_since(t_save)));
    t_interval_ += Clock::now() - t_save;
  }

  // Each rank's partial interval sums into the state (rank-indexed), their totals beside them.
  void gather_interval_sums() {
    const int64_t W = par_.world_size();
    at::Tensor all = at::zeros({W, 2}, at::kDouble);
    all[par_.rank()][0] = state_.interval_loss_sum;
    all[par_.rank()][1] = static_cast<double>(state_.interval_finite);
    par_.sum_(all);
    state_.rank_loss_sums.assign(static_cast<size_t>(W), 0.0);
    state_.rank_finite_steps.assign(static_cast<size_t>(W), 0);
    state_.interval_loss_sum = 0;
    state_.interval_finite = 0;
    for (int64_t r = 0; r < W; ++r) {
      state_.rank_loss_sums[static_cast<size_t>(r)] = all[r][0].item<double>();
      state_.rank_finite_steps[static_cast<size_t>(r)] = static_cast<int64_t>(all[r][1].item<double>());
      state_.interval_loss_sum += state_.rank_loss_sums[static_cast<size_t>(r)];
      state_.interval_finite += state_.rank_finite_steps[static_cast<size_t>(r)];
    }
  }

  // A checkpoint's interval sums as this rank's share: its own on the same world size, else
  // the mean per rank (the logged interval mean is the same; its last bits may not be).
  void restore_interval_sums() {
    const auto W = static_cast<size_t>(par_.world_size());
    const size_t saved = std::max<size_t>(1, state_.rank_loss_sums.size());
    if (state_.rank_loss_sums.size() == W) {
      state_.interval_loss_sum = state_.rank_loss_sums[static_cast<size_t>(par_.rank())];
      state_.interval_finite = state_.rank_finite_steps[static_cast<size_t>(par_.rank())];
    } else if (saved != W) {
      state_.interval_loss_sum /= static_cast<double>(saved);
      state_.interval_finite = static_cast<int64_t>(std::llround(static_cast<double>(state_.interval_finite) / static_cast<double>(saved)));
    }
    state_.rank_loss_sums.clear();
    state_.rank_finite_steps.clear();
  }

  TrainSummary finish() {
    const double elapsed = seconds_since(t_start_);
    const int64_t done_here = summary_.steps - summary_.resumed_from_step;
    summary_.tokens_per_s = static_cast<double>(done_here * tokens_per_step_) / elapsed;
    nlohmann::json s = {{"steps", summary_.steps},
                        {"target_steps", cfg_.train.steps},
                        {"stopped_by_signal", summary_.stopped_by_signal},
                        {"resumed_from_step", summary_.resumed_from_step},
                        {"final_loss", summary_.final_loss},
                        {"tokens", summary_.steps * tokens_per_step_},
                        {"elapsed_s", elapsed},
                        {"tokens_per_s", summary_.tokens_per_s},
                        {"skipped_steps", skipped_total_},
                        {"params", par_.parameter_count(*model_)},
                        {"train_flops_per_token", stats_.train_flops_per_token},
                        {"last_checkpoint", summary_.last_checkpoint},
                        {"device", device_name(device_)},
                        {"world_size", par_.world_size()}};
    if (!val_batches_.empty() && std::isfinite(summary_.final_val_loss)) s["final_val_loss"] = summary_.final_val_loss;
    if (par_.is_main()) write_file_atomic((fs::path(run_dir_) / "summary.json").string(), s.dump(2) + "\n");
    log::info(fmt::format("{}: {} steps in {}, final loss {:.4f}{}", summary_.stopped_by_signal ? "stopped" : "done",
                          summary_.steps, format_duration(elapsed), summary_.final_loss,
                          std::isfinite(summary_.final_val_loss)
                              ? fmt::format(", val_loss {:.4f}", summary_.final_val_loss)
                              : std::string()));
    log::close_file();
    return summary_;
  }
};

}  // namespace

TrainSummary train(const LoadedConfig& loaded, const TrainOptions& opts) {
  Parallel single;
  Parallel& par = opts.parallel ? *opts.parallel : single;
  // Rank 0 speaks for the job on the console; the others only warn there (all of it goes to
  // their RUN_DIR/logs/rank-R.log).
  log::set_console_level(log::parse_level(loaded.config.log.level));
  if (par.world_size() > 1) log::set_tag(fmt::format("rank {}", par.rank()));
  if (!par.is_main()) log::set_console_level(std::max(log::parse_level(loaded.config.log.level), log::Level::warn));
  return Trainer(loaded, opts, par).run();
}

}  // namespace sluice
