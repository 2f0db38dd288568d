// `sluice train CONFIG [--set k=v ...] [--run-dir DIR]`
#include <CLI/CLI.hpp>
#include <ostream>

#include <c10/util/Exception.h>

#include "cli.h"
#include "dist/data_parallel.h"
#include "sluice/config.h"
#include "sluice/errors.h"
#include "sluice/trainer.h"
#include "train/parallel.h"

namespace sluice::cli {

namespace {

// The reducer's collectives fail inside backward with the backend's own exceptions (c10::Error,
// gloo's IoException): recognised by their transport's words, they become DistributedErrors.
[[noreturn]] void throw_naming_the_rank(const std::string& rank, const std::string& msg) {
  for (const char* transport : {"gloo", "NCCL", "Connection reset", "Connection closed", "Timed out"})
    if (msg.find(transport) != std::string::npos)
      throw DistributedError(rank + "a collective failed (another rank has probably died or stalled): " + msg);
  throw std::runtime_error(rank + msg);
}

// In a distributed run every message says which rank it comes from; a failed collective
// (c10d's errors, most often a lost peer) becomes a DistributedError (exit 3).
TrainSummary train_naming_the_rank(const LoadedConfig& cfg, const TrainOptions& opts) {
  if (!opts.parallel || opts.parallel->world_size() == 1) return sluice::train(cfg, opts);
  const std::string rank = "rank " + std::to_string(opts.parallel->rank()) + ": ";
  try {
    return sluice::train(cfg, opts);
  } catch (const DistributedError&) {
    throw;
  } catch (const InputError& e) {
    throw InputError(rank + e.what());
  } catch (const ResourceError& e) {
    throw ResourceError(rank + e.what());
  } catch (const c10::DistError& e) {
    throw DistributedError(rank + "a collective failed (another rank has probably died or stalled): " +
                           e.what_without_backtrace());
  } catch (const c10::Error& e) {
    throw_naming_the_rank(rank, e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw_naming_the_rank(rank, e.what());
  }
}

}  // namespace

void add_train_command(CLI::App& app, Io io) {
  struct Args {
    std::string file;
    std::vector<std::string> sets;
    std::string run_dir;
    std::string resume = "auto";
    int64_t stop_after = 0;
    std::string init_from;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("train", "Train a model from a YAML configuration.");
  cmd->add_option("CONFIG", args->file, "YAML configuration file")->required();
  cmd->add_option("--set", args->sets, "Override a key: --set dotted.key=value (repeatable)")
      ->type_name("KEY=VALUE")
      ->allow_extra_args(false);
  cmd->add_option("--run-dir", args->run_dir, "Run directory (default: run.dir/<run.name>-<UTC time>)");
  cmd->add_option("--resume", args->resume,
                  "auto: continue the run directory's latest checkpoint if there is one; never: refuse an "
                  "existing run directory; or a checkpoint / run directory to start from")
      ->default_str("auto");
  cmd->add_option("--stop-after", args->stop_after,
                  "Stop after this step with a checkpoint, as on SIGTERM (chunked jobs; resume later)");
  cmd->add_option("--init-from", args->init_from,
                  "Start a new run (step 0, fresh optimizer) from the weights of this checkpoint or run directory, "
                  "e.g. one of `sluice import hf`; a resumed run ignores it");
  cmd->callback([args, io] {
    const LoadedConfig cfg = load_config(args->file, args->sets);
    TrainOptions opts;
    opts.run_dir = args->run_dir;
    opts.resume = args->resume;
    opts.stop_after = args->stop_after;
    opts.init_from = args->init_from;
    opts.parallel = dist::connect(cfg);  // null without a launcher
    const TrainSummary s = train_naming_the_rank(cfg, opts);
    if (opts.parallel && !opts.parallel->is_main()) return;  // rank 0 reports for the job
    if (s.stopped_by_signal) io.out << "stopped after step " << s.steps << "; checkpoint " << s.last_checkpoint << "\n";
    io.out << "results: " << s.run_dir << " (metrics.jsonl, summary.json, config.yaml, train.log, checkpoints/)\n";
  });
}

}  // namespace sluice::cli
