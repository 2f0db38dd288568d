#include "sluice/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <stdexcept>

namespace sluice::log {
namespace {

spdlog::level::level_enum to_spd(Level l) {
  switch (l) {
    case Level::debug: return spdlog::level::debug;
    case Level::info: return spdlog::level::info;
    case Level::warn: return spdlog::level::warn;
    case Level::error: return spdlog::level::err;
    case Level::off: return spdlog::level::off;
  }
  return spdlog::level::info;
}

struct State {
  std::mutex mu;
  std::string tag;  // "[rank 3] " or empty
  std::shared_ptr<spdlog::logger> logger;
  std::shared_ptr<spdlog::sinks::sink> console;
  std::shared_ptr<spdlog::sinks::sink> file;
};

State& state() {
  static State s;
  return s;
}

std::shared_ptr<spdlog::logger> logger() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.logger) {
    // Logs go to stderr so that stdout stays clean for machine-readable output.
    s.console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    s.console->set_pattern("%^[%H:%M:%S %L]%$ " + s.tag + "%v");
    s.console->set_level(spdlog::level::info);
    s.logger = std::make_shared<spdlog::logger>("sluice", s.console);
    s.logger->set_level(spdlog::level::trace);
  }
  return s.logger;
}

}  // namespace

Level parse_level(std::string_view name) {
  if (name == "debug") return Level::debug;
  if (name == "info") return Level::info;
  if (name == "warn") return Level::warn;
  if (name == "error") return Level::error;
  if (name == "off") return Level::off;
  throw std::invalid_argument("unknown log level '" + std::string(name) + "'");
}

void init(Level console, const std::string& file_path) {
  auto lg = logger();
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  s.console->set_level(to_spd(console));
  if (s.file) {
    s.file->flush();
    auto& sinks = lg->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), s.file), sinks.end());
    s.file.reset();
  }
  if (!file_path.empty()) {
    s.file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(file_path, /*truncate=*/false);
    s.file->set_pattern("[%Y-%m-%d %H:%M:%S.%e %l] " + s.tag + "%v");
    s.file->set_level(spdlog::level::debug);
    lg->sinks().push_back(s.file);
  }
  lg->flush_on(spdlog::level::info);
}

void set_console_level(Level level) {
  logger();
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  s.console->set_level(to_spd(level));
}

void set_tag(const std::string& tag) {
  logger();
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  s.tag = tag.empty() ? "" : "[" + tag + "] ";
  s.console->set_pattern("%^[%H:%M:%S %L]%$ " + s.tag + "%v");
  if (s.file) s.file->set_pattern("[%Y-%m-%d %H:%M:%S.%e %l] " + s.tag + "%v");
}

void close_file() {
  auto lg = logger();
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.file) return;
  s.file->flush();
  auto& sinks = lg->sinks();
  sinks.erase(std::remove(sinks.begin(), sinks.end(), s.file), sinks.end());
  s.file.reset();
}

void debug(std::string_view msg) { logger()->debug("{}", msg); }
void info(std::string_view msg) { logger()->info("{}", msg); }
void warn(std::string_view msg) { logger()->warn("{}", msg); }
void error(std::string_view msg) { logger()->error("{}", msg); }

}  // namespace sluice::log
