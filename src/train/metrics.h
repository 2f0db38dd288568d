#pragma once
#include <nlohmann/json.hpp>

#include <string>

namespace sluice {

// Appends one JSON object per line to RUN_DIR/metrics.jsonl, one write(2) per record so a
// crash loses at most the record being written. A failed write (full disk, file-size limit)
// throws ResourceError naming the file, after cutting the file back to its last whole record.
class MetricsWriter {
 public:
  explicit MetricsWriter(const std::string& path);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;
  void write(const nlohmann::json& record);

 private:
  std::string path_;
  int fd_ = -1;
};

// "3h02m", "4m05s", "12s"
std::string format_duration(double seconds);
// "812", "45.2k", "1.31M"
std::string format_count(double n);

}  // namespace sluice
