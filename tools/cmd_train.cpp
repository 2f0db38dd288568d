// `sluice train CONFIG [--set k=v ...] [--run-dir DIR]`
#include <CLI/CLI.hpp>
#include <ostream>

#include "cli.h"
#include "sluice/config.h"
#include "sluice/trainer.h"

namespace sluice::cli {

void add_train_command(CLI::App& app, Io io) {
  struct Args {
    std::string file;
    std::vector<std::string> sets;
    std::string run_dir;
    std::string resume = "auto";
    int64_t stop_after = 0;
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
  cmd->callback([args, io] {
    const LoadedConfig cfg = load_config(args->file, args->sets);
    TrainOptions opts;
    opts.run_dir = args->run_dir;
    opts.resume = args->resume;
    opts.stop_after = args->stop_after;
    const TrainSummary s = sluice::train(cfg, opts);
    if (s.stopped_by_signal) io.out << "stopped after step " << s.steps << "; checkpoint " << s.last_checkpoint << "\n";
    io.out << "results: " << s.run_dir << " (metrics.jsonl, summary.json, config.yaml, train.log, checkpoints/)\n";
  });
}

}  // namespace sluice::cli
