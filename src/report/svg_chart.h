// SVG chart primitives for the report: a line chart (linear or log axes, many series, a
// legend), a grouped bar chart and a histogram. Output is a self-contained <svg> element
// with all text escaped. Non-finite values (and values <= 0 on a log axis) are skipped.
//
// Elements carry classes that tests and styles rely on: text.xtick / text.ytick (tick
// labels, placed at the tick), polyline.series and circle.marker (data-series = the
// series label), rect.bar (data-series, data-value).
#pragma once
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace sluice::report {

struct Axis {
  Axis() = default;
  Axis(std::string label_, bool log_ = false) : label(std::move(label_)), log(log_) {}  // NOLINT: implicit on purpose
  std::string label;
  bool log = false;
  std::optional<double> min, max;  // fixed ends (widened if data lies outside)
  std::vector<double> ticks;       // explicit tick values; automatic when empty
};

struct LineSeries {
  std::string label;
  std::string color;  // CSS colour
  std::string dash;   // stroke-dasharray, "" for solid
  std::vector<double> x, y;
};

struct LineChart {
  std::string title;
  Axis x, y;
  std::vector<LineSeries> series;
};

struct BarSeries {
  std::string label;
  std::string color;
  std::vector<double> values;  // one per category; NaN: no bar
};

struct BarChart {
  std::string title;
  std::string x_label;
  Axis y;  // linear; starts at 0 unless y.min says otherwise
  std::vector<std::string> categories;
  std::vector<BarSeries> series;
};

struct Histogram {
  std::string title;
  Axis x, y;                   // x: the range of the edges; y linear from 0
  std::vector<double> edges;   // bins [edges[i], edges[i+1])
  std::vector<double> values;  // one per bin
  std::string color;
};

// Chart geometry (pixels), shared by all charts: a plot area with margins, legend below.
struct Layout {
  static constexpr double kWidth = 560, kPlotHeight = 220;
  static constexpr double kLeft = 66, kRight = 18, kTop = 34, kBottom = 46;
};

// A map from data values to pixels along one axis (log10 when `log`).
struct Scale {
  double d0 = 0, d1 = 1;  // domain
  double r0 = 0, r1 = 1;  // range in pixels
  bool log = false;
  double operator()(double v) const;
};

std::string line_chart_svg(const LineChart& chart);
std::string bar_chart_svg(const BarChart& chart);
std::string histogram_svg(const Histogram& chart);

// Tick values for a domain (exposed for tests): "nice" 1-2-5 steps on a linear axis; on a
// log axis 1, 2, 5 x 10^k (decades alone when that gives more than 10), or nice linear steps
// when the range holds fewer than three of those.
std::vector<double> axis_ticks(double lo, double hi, bool log);

// The palette colour for series i (distinct for the first 10, then repeating).
std::string palette(size_t i);
// Dash patterns used to tell apart series that share a colour.
std::string dash_pattern(size_t i);

}  // namespace sluice::report
