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
  // Every key, section and sub-section ("model.rope"), built once.
  static const std::vector<std::string> candidates = [] {
    std::vector<std::string> out;
    for (const auto& f : schema()) {
      out.push_back(f.path);
      for (size_t dot = f.path.find('.'); dot != std::string::npos; dot = f.path.find('.', dot + 1))
        out.push_back(f.path.substr(0, dot));
    }
    return out;
  }();
  const size_t limit = std::max<size_t>(2, last_part(path).size() / 3);
  const std::string part = last_part(path);
  std::string best;
  size_t best_d = std::string::npos;
  for (const auto& c : candidates) {
    // A right key in the wrong section ("train.lr" -> "optim.lr"), or the full-path distance;
    // that is at least the difference in length, so far longer or shorter keys are skipped
    // (an unknown key of thousands of characters cost seconds of edit distances).
    size_t d = last_part(c) == part ? 2 : std::string::npos;
    const size_t gap = path.size() > c.size() ? path.size() - c.size() : c.size() - path.size();
    if (gap <= limit && gap < std::min(d, best_d)) d = std::min(d, edit_distance(path, c));
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best_d <= limit ? best : "";
}

}  // namespace sluice::config_detail
