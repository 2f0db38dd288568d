// Text helpers of the report: escaping for HTML/SVG and number formatting. A missing or
// non-finite value is shown as an em dash everywhere in the page.
#pragma once
#include <string>

namespace sluice::report {

extern const char* const kMissing;  // "—"

// Escapes & < > " ' so that any text is safe inside element content and attribute values.
std::string escape(const std::string& text);

// `value` with `decimals` digits after the point ("—" when not finite).
std::string fixed(double value, int decimals);
// Three significant digits, compact: 0.000123 -> "1.23e-4", 0.38 -> "0.38", 1234 -> "1234".
std::string short_number(double value);
// Counts with a unit suffix: 1234567 -> "1.23M" ("—" when not finite).
std::string count(double value);
// Axis tick labels: short but exact (2000 -> "2k", 1024 -> "1024", 0.25 -> "0.25", 5e-4 -> "5e-4").
std::string tick_label(double value);

}  // namespace sluice::report
