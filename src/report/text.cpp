#include "report/text.h"

#include <cmath>
#include <cstdio>
#include <string>

namespace sluice::report {

const char* const kMissing = "\u2014";

std::string escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

namespace {

std::string printf_string(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, value);
  return buf;
}

// "1.50e-04" -> "1.5e-4": drops trailing zeros of the mantissa and the exponent's padding.
std::string tidy_exponent(std::string s) {
  const auto e = s.find('e');
  if (e == std::string::npos) return s;
  std::string mant = s.substr(0, e), exp = s.substr(e + 1);
  if (mant.find('.') != std::string::npos) {
    while (!mant.empty() && mant.back() == '0') mant.pop_back();
    if (!mant.empty() && mant.back() == '.') mant.pop_back();
  }
  const bool neg = !exp.empty() && exp[0] == '-';
  if (!exp.empty() && (exp[0] == '-' || exp[0] == '+')) exp = exp.substr(1);
  while (exp.size() > 1 && exp[0] == '0') exp = exp.substr(1);
  return mant + "e" + (neg ? "-" : "") + exp;
}

}  // namespace

std::string fixed(double value, int decimals) {
  if (!std::isfinite(value)) return kMissing;
  char format[16];
  std::snprintf(format, sizeof format, "%%.%df", decimals);
  return printf_string(format, value);
}

std::string short_number(double value) {
  if (!std::isfinite(value)) return kMissing;
  const double a = std::fabs(value);
  if (a != 0 && (a < 1e-3 || a >= 1e6)) return tidy_exponent(printf_string("%.2e", value));
  return printf_string("%.3g", value);
}

std::string count(double value) {
  if (!std::isfinite(value)) return kMissing;
  const double a = std::fabs(value);
  if (a >= 1e9) return printf_string("%.2fG", value / 1e9);
  if (a >= 1e6) return printf_string("%.2fM", value / 1e6);
  if (a >= 1e4) return printf_string("%.1fk", value / 1e3);
  return printf_string("%.0f", value);
}

std::string tick_label(double value) {
  if (!std::isfinite(value)) return kMissing;
  if (value == 0) return "0";
  const double a = std::fabs(value);
  // A unit suffix only where it keeps the label exact with at most two decimals (2000 -> 2k,
  // 1500 -> 1.5k, but 1024 stays 1024); %.6g is exact for every tick value.
  for (const auto& [scale, suffix] : {std::pair{1e9, "G"}, std::pair{1e6, "M"}, std::pair{1e3, "k"}}) {
    if (a < scale) continue;
    const double m = value / scale;
    if (std::fabs(m * 100 - std::round(m * 100)) < 1e-6 * std::fabs(m)) return printf_string("%.6g", m) + suffix;
    break;
  }
  if (a < 1e-3) return tidy_exponent(printf_string("%.3e", value));
  return printf_string("%.6g", value);
}

}  // namespace sluice::report
