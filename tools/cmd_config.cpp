// `sluice config validate|show|docs`
#include <CLI/CLI.hpp>
#include <ostream>

#include "cli.h"
#include "sluice/config.h"

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

  CLI::App* docs = config->add_subcommand("docs", "Print the reference of every key as Markdown (docs/config.md).");
  docs->callback([io] { io.out << config_reference_markdown(); });
}

}  // namespace sluice::cli
