// The `sluice` command line, callable in-process (tests) with its own output streams.
#pragma once
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace sluice::cli {

struct Io {
  std::ostream& out;  // results (config show, paths)
  std::ostream& err;  // error messages
};

// Thrown by a command that has already reported its outcome and wants this exit code
// (`sluice launch` passing on a rank's).
struct ExitRequest {
  int code;
};

// Runs the CLI; returns the process exit code (0 ok, 2 bad input, 1 internal error, 3 a lost rank).
int run(int argc, const char* const* argv, Io io);
int run(const std::vector<std::string>& args, Io io);  // args without the program name

// Subcommand registration; each file adds its commands to the app.
void add_config_commands(CLI::App& app, Io io);
void add_train_command(CLI::App& app, Io io);
void add_launch_command(CLI::App& app, Io io);
void add_data_commands(CLI::App& app, Io io);
void add_eval_commands(CLI::App& app, Io io);
void add_stats_commands(CLI::App& app, Io io);
void add_report_command(CLI::App& app, Io io);
void add_ablate_command(CLI::App& app, Io io);
void add_export_commands(CLI::App& app, Io io);
void add_import_commands(CLI::App& app, Io io);
// `generate`, and `eval passkey` under the `eval` command (call after add_eval_commands).
void add_generate_commands(CLI::App& app, Io io);

// Shared by the evaluation commands (cmd_eval.cpp).
// "512,1024,2048" -> {512, 1024, 2048}; InputError naming `arg` otherwise.
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& arg);
// Writes a result file atomically, creating its folder.
void write_result(const std::string& path, const nlohmann::json& j);
// The scalars of an evaluation result as a TensorBoard event at the checkpoint's step, in
// RUN_DIR/tb/eval/, when `checkpoint` is a run directory's whose training wrote RUN_DIR/tb/
// (log.tensorboard); prints the file written.
// Writes a new directory `out` (absent or empty, else InputError naming `arg`) through `write`,
// which fills the sibling temporary directory `out` + `tmp_suffix`, then renamed into place: a
// failed or refused write leaves nothing behind. Returns the absolute path.
std::string write_new_directory(const std::string& out, const std::string& arg, const std::string& tmp_suffix,
                                const std::function<void(const std::string& dir)>& write);
void record_in_tensorboard(const std::string& checkpoint, int64_t step, const nlohmann::json& j, Io io);

}  // namespace sluice::cli
