// `sluice launch --nproc N [--port P] -- train CONFIG ...`: one node's ranks without torchrun.
#include <CLI/CLI.hpp>
#include <ostream>

#include "cli.h"
#include "dist/launcher.h"
#include "sluice/errors.h"

namespace sluice::cli {

void add_launch_command(CLI::App& app, Io io) {
  struct Args {
    int nproc = 0;
    int port = 0;
    double grace = 30.0;
    std::vector<std::string> command;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "launch", "Run N ranks of a sluice command on this node (torchrun's variables; docs/distributed.md).");
  cmd->add_option("--nproc", args->nproc, "Ranks to start (e.g. one per GPU)")->required()->check(CLI::Range(1, 1024));
  cmd->add_option("--port", args->port, "Rendezvous port on 127.0.0.1 (default: a free one)")->check(CLI::Range(0, 65535));
  cmd->add_option("--grace", args->grace, "Seconds the other ranks get to exit after one fails, before SIGKILL")
      ->default_str("30");
  cmd->add_option("COMMAND", args->command, "The sluice command every rank runs, after --: train CONFIG ...")
      ->required();
  cmd->footer("Example: sluice launch --nproc 2 -- train configs/tiny.yaml --set train.threads=1\n"
              "SIGINT/SIGTERM are passed to every rank (they stop at the same step with a checkpoint). When a rank "
              "fails, the others are stopped and the launcher exits with the first failure's code (128+N for a "
              "signal N), naming the rank.");
  cmd->callback([args, io] {
    if (args->command.empty() || args->command[0] == "launch") {
      throw InputError("launch: COMMAND: expected a sluice command after --, e.g. -- train CONFIG");
    }
    dist::LaunchOptions o;
    o.nproc = args->nproc;
    o.port = args->port;
    o.grace_s = args->grace;
    o.executable = "/proc/self/exe";
    o.args = args->command;
    const int code = dist::launch_local(o, io.err);
    if (code != 0) throw ExitRequest{code};
  });
}

}  // namespace sluice::cli
