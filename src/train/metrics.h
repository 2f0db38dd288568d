#pragma once
#include <nlohmann/json.hpp>

#include <fstream>
#include <string>

namespace sluice {

// Appends one JSON object per line to RUN_DIR/metrics.jsonl, flushed per record so a
// crash loses at most the record being written.
class MetricsWriter {
 public:
  explicit MetricsWriter(const std::string& path);
  void write(const nlohmann::json& record);

 private:
  std::ofstream out_;
};

// "3h02m", "4m05s", "12s"
std::string format_duration(double seconds);
// "812", "45.2k", "1.31M"
std::string format_count(double n);

}  // namespace sluice
