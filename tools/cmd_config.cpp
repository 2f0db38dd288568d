// `sluice config validate|show|docs|memory`
#include <CLI/CLI.hpp>
#include <ostream>

#include "cli.h"
#include "sluice/config.h"
#include "train/memory_estimate.h"

namespace sluice::cli {

void add_config_commands(CLI::App& app, Io io) {
  CLI::App* config = app.add_subcommand("config", "Check and print configurations.");
  config->require_subcommand(1);

  struct Args {
    std::string file;
    std::vector<std::string> sets;
  };
  auto args = std::make_shared<Args>();
  auto add_common = [args](CLI::App* sub) {
    sub->add_option("CONFIG", args->file, "YAML configuration file")->required();
    sub->add_option("--set", args->sets, "Override a key: --set dotted.key=value (repeatable)")
        ->type_name("KEY=VALUE")
        ->allow_extra_args(false);
  };

  CLI::App* validate = config->add_subcommand("validate", "Validate a configuration; exit 0 when valid, 2 otherwise.");
  add_common(validate);
  validate->callback([args, io] {
    load_config(args->file, args->sets);
    io.out << args->file << ": ok\n";
  });

  CLI::App* show = config->add_subcommand("show", "Print the fully resolved configuration as YAML (defaults filled in).");
  add_common(show);
  show->callback([args, io] { io.out << to_yaml(load_config(args->file, args->sets).config); });

  struct MemoryArgs {
    int64_t ranks = 1;
    std::string device = "cpu";
  };
  auto mem = std::make_shared<MemoryArgs>();
  CLI::App* memory = config->add_subcommand(
      "memory", "Print the estimate of a training step's memory per rank (train.memory_check, docs/memory.md).");
  add_common(memory);
  memory->add_option("--ranks", mem->ranks, "Ranks in the job (ZeRO-1 shards over them)")->check(CLI::PositiveNumber);
  memory->add_option("--device", mem->device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}))->default_str("cpu");
  memory->callback([args, mem, io] {
    const Config cfg = load_config(args->file, args->sets).config;
    StepMemoryLayout layout;
    layout.world_size = mem->ranks;
    layout.expert_parallel = cfg.parallel.expert_parallel;
    layout.cuda = mem->device == "cuda";
    layout.bf16 = cfg.train.precision == "bf16" || (cfg.train.precision == "auto" && layout.cuda);
    const MemoryEstimate est = estimate_step_memory(cfg, layout);
    io.out << args->file << ": a training step needs about " << format_bytes(est.total()) << " per rank on "
           << mem->device << " (" << (layout.bf16 ? "bf16 autocast" : "fp32") << ", " << mem->ranks << " rank(s))\n";
    for (const auto& p : est.parts) io.out << "  " << p.name << ": " << format_bytes(p.bytes) << "  (" << p.detail << ")\n";
  });

  CLI::App* docs = config->add_subcommand("docs", "Print the reference of every key as Markdown (docs/config.md).");
  docs->callback([io] { io.out << config_reference_markdown(); });
}

}  // namespace sluice::cli
