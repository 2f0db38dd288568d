#pragma once
#include <string>

#include "sluice/config.h"

namespace sluice {

// The run directory for this run: `explicit_dir` when given, else run.dir/<run.name>-<UTC time>.
std::string choose_run_dir(const Config& cfg, const std::string& explicit_dir);
// Refuses (InputError) a directory that already holds a run; creates it and writes the
// resolved config.yaml (atomically: temp file then rename).
void create_run_dir(const std::string& dir, const Config& cfg);
// Writes `text` to `path` through a temporary file and rename, so readers never see half a file.
void write_file_atomic(const std::string& path, const std::string& text);

}  // namespace sluice
