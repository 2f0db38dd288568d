// Project logging. The implementation is the only place that sees spdlog (and fmt 9);
// this header is plain C++ so it can be included next to LibTorch (fmt 12).
// Callers format with fmt::format (torch's header-only fmt) or c10::str.
#pragma once
#include <string>
#include <string_view>

namespace sluice::log {

enum class Level { debug, info, warn, error, off };

// Parses "debug|info|warn|error|off"; throws std::invalid_argument otherwise.
Level parse_level(std::string_view name);

// Console logging at `console`; when `file_path` is non-empty, also a full log file there.
void init(Level console, const std::string& file_path = "");
void set_console_level(Level level);
// A tag after the time in every console and file line ("rank 3" in a distributed run); empty: none.
void set_tag(const std::string& tag);
// Stops writing to the log file (closes it).
void close_file();

void debug(std::string_view msg);
void info(std::string_view msg);
void warn(std::string_view msg);
void error(std::string_view msg);

}  // namespace sluice::log
