#include <algorithm>
#include <vector>

#include "config/check.h"
#include "config/schema.h"

namespace sluice::config_detail {
namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string last_part(const std::string& p) {
  const auto dot = p.rfind('.');
  return dot == std::string::npos ? p : p.substr(dot + 1);
}

}  // namespace

std::string closest_key(const std::string& path) {
  std::vector<std::string> candidates;
  for (const auto& f : schema()) {
    candidates.push_back(f.path);
    // sections and sub-sections too ("model.rope")
    for (size_t dot = f.path.find('.'); dot != std::string::npos; dot = f.path.find('.', dot + 1))
      candidates.push_back(f.path.substr(0, dot));
  }
  std::string best;
  size_t best_d = std::string::npos;
  for (const auto& c : candidates) {
    // Full-path distance, or a right key in the wrong section ("train.lr" -> "optim.lr").
    size_t d = edit_distance(path, c);
    if (last_part(c) == last_part(path)) d = std::min<size_t>(d, 2);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  const size_t limit = std::max<size_t>(2, last_part(path).size() / 3);
  return best_d <= limit ? best : "";
}

}  // namespace sluice::config_detail
