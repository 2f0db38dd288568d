// `sluice ablate GRID.yaml --out DIR [--jobs N] [--dry-run] [--slurm] [--only I]` (docs/ablate.md):
// every run of the grid trained by `sluice train` in its own process, then evaluated by
// `sluice eval ppl` / `eval passkey` / `stats attention`, then one table. Rerunning skips what
// is finished and resumes the interrupted run from its checkpoint.
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <cstring>
#include <mutex>
#include <sstream>
#include <nlohmann/json.hpp>
#include <ostream>
#include <thread>

#include "ablate/grid.h"
#include "ablate/grid_report.h"
#include "ablate/results.h"
#include "cli.h"
#include "dist/child_process.h"
#include "sluice/config.h"
#include "sluice/errors.h"
#include "sluice/fs.h"

namespace sluice::cli {

namespace {

namespace fs = std::filesystem;
using ablate::RunSpec;

std::string self_binary() {
  std::error_code ec;
  const fs::path p = fs::read_symlink("/proc/self/exe", ec);
  if (ec) throw std::runtime_error("cannot find the sluice binary (/proc/self/exe): " + ec.message());
  return p.string();
}

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (int64_t x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

// Runs `args` with stdout and stderr appended to `log` and OMP_NUM_THREADS=threads; the exit code
// (128 + signal when killed).
int run_logged(const std::vector<std::string>& args, const std::string& log, int64_t threads) {
  {
    std::ofstream(log, std::ios::app) << "$";
    std::ofstream out(log, std::ios::app);
    for (const auto& a : args) out << " " << a;
    out << "\n";
  }
  const pid_t pid = spawn_logged(args,
                                 environment_with({"OMP_NUM_THREADS=" + std::to_string(threads)},
                                                  [](const std::string& name) { return name == "OMP_NUM_THREADS"; }),
                                 log, /*append=*/true);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

// The last "error: ..." line a command wrote to the log, for the failure summary.
std::string last_error(const std::string& log) {
  std::ifstream in(log);
  std::string line, found;
  while (std::getline(in, line))
    if (line.rfind("error: ", 0) == 0 || line.rfind("internal error: ", 0) == 0) found = line;
  return found.empty() ? std::string() : ": " + found;
}

struct Plan {
  ablate::Grid grid;
  std::vector<RunSpec> runs;
  std::string out, runs_dir, logs_dir, binary;
  int64_t threads = 1;
};

// A run's data for evaluation: the grid's, else the run's data.val, else its data.train when
// that is a dataset folder (whose val split the commands read). A training text file is refused:
// its perplexity would be measured on the text the model trained on.
std::string eval_data(const std::string& wanted, const RunSpec& run, const std::string& key) {
  if (!wanted.empty()) return wanted;
  const Config c = load_config(run.config_file, run.overrides).config;
  if (!c.data.val.empty()) return c.data.val;
  if (fs::is_directory(c.data.train)) return c.data.train;
  throw InputError(key + ": required for run '" + run.name + "', whose data.train is a text file and data.val is "
                   "empty (held-out text to evaluate on)");
}

// Every evaluation's data is known, and exists, before the first run starts.
void validate_evals(const Plan& p) {
  auto check = [](const std::string& data, const std::string& key) {
    if (!fs::exists(data)) throw InputError(key + ": '" + data + "' does not exist");
  };
  for (const RunSpec& r : p.runs) {
    if (p.grid.ppl.enabled) check(eval_data(p.grid.ppl.data, r, "evals.ppl.data"), "evals.ppl.data");
    if (p.grid.stats.enabled) check(eval_data(p.grid.stats.data, r, "evals.stats.data"), "evals.stats.data");
  }
  if (p.grid.passkey.enabled && !p.grid.passkey.haystack.empty()) check(p.grid.passkey.haystack, "evals.passkey.haystack");
}

bool finished(const std::string& run_dir) {
  std::ifstream in(fs::path(run_dir) / "summary.json");
  if (!in) return false;
  const nlohmann::json s = nlohmann::json::parse(in, nullptr, false);
  return !s.is_discarded() && !s.value("stopped_by_signal", true) &&
         s.value("steps", int64_t{-1}) == s.value("target_steps", int64_t{-2});
}

// Trains (or resumes, or skips) one run and runs its missing evaluations; "" on success, else
// what failed.
std::string execute(const Plan& p, const RunSpec& run, std::ostream& progress, std::mutex& mu) {
  const std::string dir = (fs::path(p.runs_dir) / run.name).string();
  const std::string log = (fs::path(p.logs_dir) / (run.name + ".log")).string();
  auto say = [&](const std::string& s) {
    std::lock_guard<std::mutex> lock(mu);
    progress << "[ablate] " << run.name << ": " << s << std::endl;
  };
  const auto t0 = std::chrono::steady_clock::now();
  if (finished(dir)) {
    say("trained (skipped)");
  } else {
    say(fs::exists(dir) ? "resuming training (log " + log + ")" : "training (log " + log + ")");
    std::vector<std::string> args = {p.binary, "train", run.config_file, "--run-dir", dir,
                                     "--set", "train.threads=" + std::to_string(p.threads)};
    for (const auto& o : run.overrides) args.insert(args.end(), {"--set", o});
    const int rc = run_logged(args, log, p.threads);
    if (rc != 0 || !finished(dir)) return fmt::format("training exited {} (see {}){}", rc, log, last_error(log));
  }
  fs::create_directories(fs::path(dir) / "eval");
  struct Eval {
    bool enabled;
    std::string file;
    std::vector<std::string> args;
  };
  const ablate::Grid& g = p.grid;
  std::vector<Eval> evals;
  if (g.ppl.enabled) {
    std::vector<std::string> a = {p.binary, "eval", "ppl", "--ckpt", dir, "--data", eval_data(g.ppl.data, run, "evals.ppl.data"),
                                  "--seq-len", join(g.ppl.seq_len)};
    if (g.ppl.stride > 0) a.insert(a.end(), {"--stride", std::to_string(g.ppl.stride)});
    for (const auto& o : g.ppl.overrides) a.insert(a.end(), {"--set", o});
    evals.push_back({true, "ppl.json", a});
  }
  if (g.passkey.enabled) {
    std::vector<std::string> a = {p.binary, "eval", "passkey", "--ckpt", dir, "--lengths", join(g.passkey.lengths)};
    if (g.passkey.trials > 0) a.insert(a.end(), {"--trials", std::to_string(g.passkey.trials)});
    if (!g.passkey.format.empty()) a.insert(a.end(), {"--format", g.passkey.format});
    if (!g.passkey.haystack.empty()) a.insert(a.end(), {"--haystack", g.passkey.haystack});
    for (const auto& o : g.passkey.overrides) a.insert(a.end(), {"--set", o});
    evals.push_back({true, "passkey.json", a});
  }
  if (g.stats.enabled) {
    std::vector<std::string> a = {p.binary, "stats", "attention", "--ckpt", dir, "--data", eval_data(g.stats.data, run, "evals.stats.data")};
    if (g.stats.sequences > 0) a.insert(a.end(), {"--sequences", std::to_string(g.stats.sequences)});
    evals.push_back({true, "stats.json", a});
  }
  for (Eval& e : evals) {
    const fs::path out = fs::path(dir) / "eval" / e.file;
    if (fs::exists(out)) continue;  // written atomically: present means complete
    e.args.insert(e.args.end(), {"--out", out.string()});
    say("evaluating " + e.file.substr(0, e.file.size() - 5));
    const int rc = run_logged(e.args, log, p.threads);
    if (rc != 0) return fmt::format("{} exited {} (see {}){}", e.args[1] + " " + e.args[2], rc, log, last_error(log));
  }
  say(fmt::format("done ({:.0f}s)", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()));
  return "";
}

void write_slurm_script(const Plan& p, const std::string& grid_file, std::ostream& out) {
  const fs::path script = fs::path(p.out) / "ablate.sbatch";
  std::ostringstream s;
  s << "#!/usr/bin/env bash\n"
    << "# One array task per run of " << grid_file << " (" << p.runs.size() << " runs); written by sluice ablate --slurm.\n"
    << "# Submit: sbatch " << script.string() << "\n"
    << "# When all tasks are done, collect the tables: " << p.binary << " ablate " << grid_file << " --out " << p.out
    << "\n"
    << "#SBATCH --job-name=sluice-ablate\n"
    << "#SBATCH --array=0-" << p.runs.size() - 1 << "\n"
    << "#SBATCH --output=" << p.logs_dir << "/slurm-%a.out\n"
    << "#SBATCH --requeue\n"
    << "set -euo pipefail\n"
    << "cd " << fs::current_path().string() << "\n"
    << "exec " << p.binary << " ablate " << grid_file << " --out " << p.out << " --only \"$SLURM_ARRAY_TASK_ID\"\n";
  write_file_synced(script.string(), s.str());
  fs::permissions(script, fs::perms::owner_exec, fs::perm_options::add);
  out << "wrote " << script.string() << " (" << p.runs.size() << " array tasks); submit it with sbatch\n";
}

}  // namespace

void add_ablate_command(CLI::App& app, Io io) {
  struct Args {
    std::string grid, out;
    int64_t jobs = 1;
    int64_t threads = 0;
    bool dry_run = false, slurm = false;
    int64_t only = -1;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("ablate", "Train and evaluate every run of an ablation grid; one table at the end.");
  cmd->add_option("GRID", args->grid, "grid YAML (docs/ablate.md)")->required();
  cmd->add_option("--out", args->out, "output directory (runs/, logs/, results.json, results.csv)")->required();
  cmd->add_option("--jobs", args->jobs, "runs at a time on this machine (the cores are split between them)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--threads", args->threads, "threads per run (default: the cores divided by --jobs)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--dry-run", args->dry_run, "print the runs and how each differs from the base; run nothing");
  cmd->add_flag("--slurm", args->slurm, "write DIR/ablate.sbatch (one array task per run) instead of running");
  cmd->add_option("--only", args->only, "run only the run with this index (0-based, as --dry-run lists them)");
  cmd->callback([args, io] {
    Plan p;
    p.grid = ablate::load_grid(args->grid);
    p.runs = ablate::expand(p.grid);
    ablate::validate_runs(p.runs);  // exit 2 before anything starts
    validate_evals(p);
    if (args->only >= static_cast<int64_t>(p.runs.size()))
      throw InputError(fmt::format("--only: {} is not a run index (the grid has {} runs, 0-{})", args->only, p.runs.size(),
                                   p.runs.size() - 1));
    if (args->dry_run) {
      io.out << args->grid << ": " << p.runs.size() << " run(s) into " << args->out << "/runs/\n";
      for (size_t i = 0; i < p.runs.size(); ++i) {
        const RunSpec& r = p.runs[i];
        io.out << fmt::format("[{}] {} ({}{})\n", i, r.name, r.config_file,
                              r.overrides.empty() ? "" : " + " + std::to_string(r.overrides.size()) + " override(s)");
        const auto diff = ablate::differences_from_base(p.grid, r);
        if (diff.empty()) io.out << "    (the base config)\n";
        for (const auto& d : diff) io.out << "    " << d << "\n";
      }
      return;
    }
    p.out = fs::absolute(args->out).string();
    p.runs_dir = (fs::path(p.out) / "runs").string();
    p.logs_dir = (fs::path(p.out) / "logs").string();
    p.binary = self_binary();
    fs::create_directories(p.runs_dir);
    fs::create_directories(p.logs_dir);
    if (args->slurm) {
      p.threads = 0;
      write_slurm_script(p, args->grid, io.out);
      return;
    }
    const int64_t cores = std::max<unsigned>(1, std::thread::hardware_concurrency());
    const int64_t jobs = std::min<int64_t>(args->jobs, static_cast<int64_t>(p.runs.size()));
    p.threads = args->threads > 0 ? args->threads : std::max<int64_t>(1, cores / jobs);
    std::vector<size_t> todo;
    for (size_t i = 0; i < p.runs.size(); ++i)
      if (args->only < 0 || static_cast<int64_t>(i) == args->only) todo.push_back(i);
    io.out << fmt::format("[ablate] {} run(s), {} at a time, {} thread(s) each; out {}\n", todo.size(), jobs, p.threads,
                          p.out);
    std::atomic<size_t> next{0};
    std::mutex mu;
    std::vector<std::string> failures;
    std::vector<std::thread> workers;
    for (int64_t w = 0; w < jobs; ++w) {
      workers.emplace_back([&] {
        for (size_t k = next++; k < todo.size(); k = next++) {
          const RunSpec& run = p.runs[todo[k]];
          std::string err;
          try {
            err = execute(p, run, io.out, mu);
          } catch (const std::exception& e) {
            err = e.what();
          }
          if (!err.empty()) {
            std::lock_guard<std::mutex> lock(mu);
            io.out << "[ablate] " << run.name << ": FAILED: " << err << std::endl;
            failures.push_back(run.name + ": " + err);
          }
        }
      });
    }
    for (auto& t : workers) t.join();
    std::vector<ablate::RunResult> results;
    for (const RunSpec& r : p.runs) results.push_back(ablate::read_run_result(r, p.runs_dir));
    ablate::write_results(results, p.out);
    io.out << ablate::summary_table(results);
    const bool report = ablate::write_grid_report(results, p.out + "/report.html") > 0;
    io.out << "results: " << p.out << "/results.json, " << p.out << "/results.csv"
           << (report ? ", " + p.out + "/report.html" : std::string()) << "\n";
    if (!failures.empty()) {
      std::string list;
      for (const auto& f : failures) list += "\n  " + f;
      throw std::runtime_error(fmt::format("{} of {} run(s) failed (rerun the same command to retry them):{}",
                                           failures.size(), todo.size(), list));
    }
  });
}

}  // namespace sluice::cli
