#include "cli.h"

#include <c10/util/Exception.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "sluice/errors.h"

namespace sluice::cli {

int run(int argc, const char* const* argv, Io io) {
  CLI::App app{"Sluice: pretraining decoder transformers and studying attention.", "sluice"};
  app.set_version_flag("--version", "sluice " SLUICE_VERSION);
  app.require_subcommand(1);
  app.footer("Exit codes: 0 success, 2 bad input (config, arguments, data files), 1 internal error or out of memory/disk during a run, 3 a distributed "
             "run lost a rank (another rank died or hung).");
  add_train_command(app, io);
  add_launch_command(app, io);
  add_config_commands(app, io);
  add_data_commands(app, io);
  add_eval_commands(app, io);
  add_stats_commands(app, io);
  add_generate_commands(app, io);
  add_report_command(app, io);
  add_ablate_command(app, io);
  add_export_commands(app, io);
  add_import_commands(app, io);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help / --version arrive here with exit code 0; everything else is a usage error.
    const int code = app.exit(e, io.out, io.err);
    return code == 0 ? kExitOk : kExitBadInput;
  } catch (const ExitRequest& e) {
    return e.code;
  } catch (const InputError& e) {
    io.err << "error: " << e.what() << "\n";
    return kExitBadInput;
  } catch (const ResourceError& e) {
    io.err << "error: " << e.what() << "\n";
    return kExitInternal;
  } catch (const DistributedError& e) {
    io.err << "distributed error: " << e.what() << "\n";
    return kExitPeerLost;
  } catch (const c10::Error& e) {
    io.err << "internal error: " << e.what_without_backtrace() << "\n";
    return kExitInternal;
  } catch (const std::exception& e) {
    io.err << "internal error: " << e.what() << "\n";
    return kExitInternal;
  }
  return kExitOk;
}

int run(const std::vector<std::string>& args, Io io) {
  std::vector<const char*> argv{"sluice"};
  for (const auto& a : args) argv.push_back(a.c_str());
  return run(static_cast<int>(argv.size()), argv.data(), io);
}

}  // namespace sluice::cli
