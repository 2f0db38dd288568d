#include "train/run_dir.h"

#include <ctime>
#include <filesystem>
#include <fstream>

#include "sluice/errors.h"
#include "sluice/fs.h"

namespace sluice {

namespace fs = std::filesystem;

std::string choose_run_dir(const Config& cfg, const std::string& explicit_dir) {
  if (!explicit_dir.empty()) return explicit_dir;
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
  return (fs::path(cfg.run.dir) / (cfg.run.name + "-" + stamp)).string();
}

void write_file_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  try {
    write_file_synced(tmp, text);
  } catch (const std::exception& e) {
    std::remove(tmp.c_str());
    throw ResourceError(std::string(e.what()) + " (" + path + " is unchanged)");
  }
  fs::rename(tmp, path);
}

void create_run_dir(const std::string& dir, const Config& cfg) {
  std::error_code ec;
  if (fs::exists(fs::path(dir) / "config.yaml", ec)) {
    throw InputError("--run-dir: '" + dir + "' already holds a run (config.yaml exists); choose a new directory");
  }
  fs::create_directories(dir, ec);
  if (ec) throw InputError("--run-dir: cannot create '" + dir + "': " + ec.message());
  write_file_atomic((fs::path(dir) / "config.yaml").string(), "# resolved by sluice " SLUICE_VERSION "\n" + to_yaml(cfg));
}

}  // namespace sluice
