// Validation beyond single keys: shapes that must agree, files that must exist.
#pragma once
#include <string>
#include <vector>

#include "sluice/config.h"

namespace sluice::config_detail {

struct Problem {
  std::string path;     // key the problem is reported at
  std::string message;  // what is wrong and what was expected
};

// Cross-key consistency and file existence. Key-local type/range checks happen in load.cpp.
std::vector<Problem> check_consistency(const Config& c, bool check_paths = true);

// The known key or section closest to `path`, or "" when nothing is close.
std::string closest_key(const std::string& path);

}  // namespace sluice::config_detail
