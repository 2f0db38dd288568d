#include "report/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "report/text.h"

namespace sluice::report {

namespace {

constexpr double kCharWidth = 6.3;    // estimated width of one character at font-size 11
constexpr double kLegendRow = 18;
constexpr size_t kMaxLabel = 70;      // legend labels are cut after this many characters
constexpr size_t kMarkersUpTo = 40;   // series with at most this many points get dots

std::string px(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

bool usable(double v, bool log) { return std::isfinite(v) && (!log || v > 0); }

double nice_step(double raw) {
  if (!(raw > 0) || !std::isfinite(raw)) return 1;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  const double m = raw / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

std::vector<double> linear_ticks(double lo, double hi, int target) {
  const double step = nice_step((hi - lo) / target);
  std::vector<double> ticks;
  for (double k = std::ceil(lo / step - 1e-9); k * step <= hi + 1e-9 * step && ticks.size() < 100; k += 1) {
    const double t = k * step;
    ticks.push_back(std::fabs(t) < 1e-12 * step ? 0.0 : t);
  }
  return ticks;
}

struct Domain {
  double lo = 0, hi = 1;
  std::vector<double> ticks;
};

// The axis domain covering `values` (already filtered to usable ones) and its ticks.
Domain make_domain(const std::vector<double>& values, const Axis& axis) {
  Domain d;
  if (!values.empty()) {
    const auto [mn, mx] = std::minmax_element(values.begin(), values.end());
    d.lo = *mn;
    d.hi = *mx;
  } else if (axis.log) {
    d.lo = 1, d.hi = 10;
  }
  if (axis.min && usable(*axis.min, axis.log)) d.lo = values.empty() ? *axis.min : std::min(d.lo, *axis.min);
  if (axis.max && usable(*axis.max, axis.log)) d.hi = values.empty() ? *axis.max : std::max(d.hi, *axis.max);
  for (double t : axis.ticks) {  // explicit ticks are always visible
    if (usable(t, axis.log)) d.lo = std::min(d.lo, t), d.hi = std::max(d.hi, t);
  }
  if (axis.log) {
    double a = std::log10(d.lo), b = std::log10(d.hi);
    const double pad = b > a ? 0.04 * (b - a) : 0.3;
    if (!axis.min) a -= pad;
    if (!axis.max) b += pad;
    d.lo = std::pow(10.0, a);
    d.hi = std::pow(10.0, b);
  } else {
    if (d.hi == d.lo) {
      const double pad = d.lo == 0 ? 1.0 : 0.1 * std::fabs(d.lo);
      if (!axis.min) d.lo -= pad;
      if (!axis.max) d.hi += pad;
      if (d.hi == d.lo) d.hi = d.lo + 1;
    }
    if (axis.ticks.empty()) {  // widen to whole steps so that the ends carry ticks
      const double step = nice_step((d.hi - d.lo) / 5);
      if (!axis.min) d.lo = std::floor(d.lo / step + 1e-9) * step;
      if (!axis.max) d.hi = std::ceil(d.hi / step - 1e-9) * step;
    } else {  // explicit ticks sit on data points: keep those off the frame
      const double pad = 0.04 * (d.hi - d.lo);
      if (!axis.min) d.lo -= pad;
      if (!axis.max) d.hi += pad;
    }
  }
  if (axis.ticks.empty()) {
    d.ticks = axis_ticks(d.lo, d.hi, axis.log);
  } else {
    for (double t : axis.ticks) {
      if (usable(t, axis.log)) d.ticks.push_back(t);
    }
  }
  return d;
}

std::string svg_open(double height, const std::string& title) {
  return "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"" + px(Layout::kWidth) + "\" height=\"" +
         px(height) + "\" viewBox=\"0 0 " + px(Layout::kWidth) + " " + px(height) +
         "\" font-family=\"sans-serif\" font-size=\"11\" role=\"img\" aria-label=\"" + escape(title) + "\">\n<title>" +
         escape(title) + "</title>\n<rect class=\"background\" x=\"0\" y=\"0\" width=\"" + px(Layout::kWidth) +
         "\" height=\"" + px(height) + "\" fill=\"#ffffff\"/>\n<text class=\"title\" x=\"" + px(Layout::kLeft) +
         "\" y=\"20\" font-size=\"13\" font-weight=\"bold\" fill=\"#222\">" + escape(title) + "</text>\n";
}

double plot_left() { return Layout::kLeft; }
double plot_right() { return Layout::kWidth - Layout::kRight; }
double plot_top() { return Layout::kTop; }
double plot_bottom() { return Layout::kTop + Layout::kPlotHeight; }

// Grid lines, tick labels and axis titles. `x_ticks` may be empty (bar charts label bands).
std::string frame(const Scale& xs, const std::vector<double>& x_ticks, const std::string& x_label, const Scale& ys,
                  const std::vector<double>& y_ticks, const std::string& y_label) {
  std::string s = "<g class=\"axes\">\n";
  for (double t : y_ticks) {
    const double y = ys(t);
    s += "<line x1=\"" + px(plot_left()) + "\" x2=\"" + px(plot_right()) + "\" y1=\"" + px(y) + "\" y2=\"" + px(y) +
         "\" stroke=\"#e4e4e4\"/>\n";
    s += "<text class=\"ytick\" x=\"" + px(plot_left() - 6) + "\" y=\"" + px(y) +
         "\" dy=\"0.32em\" text-anchor=\"end\" fill=\"#444\">" + escape(tick_label(t)) + "</text>\n";
  }
  for (double t : x_ticks) {
    const double x = xs(t);
    s += "<line x1=\"" + px(x) + "\" x2=\"" + px(x) + "\" y1=\"" + px(plot_top()) + "\" y2=\"" + px(plot_bottom()) +
         "\" stroke=\"#efefef\"/>\n";
    s += "<text class=\"xtick\" x=\"" + px(x) + "\" y=\"" + px(plot_bottom() + 15) +
         "\" text-anchor=\"middle\" fill=\"#444\">" + escape(tick_label(t)) + "</text>\n";
  }
  s += "<rect x=\"" + px(plot_left()) + "\" y=\"" + px(plot_top()) + "\" width=\"" + px(plot_right() - plot_left()) +
       "\" height=\"" + px(plot_bottom() - plot_top()) + "\" fill=\"none\" stroke=\"#999\"/>\n";
  const double xmid = (plot_left() + plot_right()) / 2, ymid = (plot_top() + plot_bottom()) / 2;
  if (!x_label.empty()) {
    s += "<text class=\"xlabel\" x=\"" + px(xmid) + "\" y=\"" + px(plot_bottom() + 34) +
         "\" text-anchor=\"middle\" fill=\"#222\">" + escape(x_label) + "</text>\n";
  }
  if (!y_label.empty()) {
    s += "<text class=\"ylabel\" x=\"14\" y=\"" + px(ymid) + "\" transform=\"rotate(-90 14 " + px(ymid) +
         ")\" text-anchor=\"middle\" fill=\"#222\">" + escape(y_label) + "</text>\n";
  }
  return s + "</g>\n";
}

std::string cut(const std::string& label) {
  if (label.size() <= kMaxLabel) return label;
  size_t n = kMaxLabel;
  while (n > 0 && (static_cast<unsigned char>(label[n]) & 0xC0) == 0x80) --n;  // keep UTF-8 sequences whole
  return label.substr(0, n) + "\u2026";
}

struct LegendEntry {
  std::string label, color, dash;
  bool bar = false;
};

// Rows of swatch + label under the plot; returns the markup and adds its height to `height`.
std::string legend(const std::vector<LegendEntry>& entries, double& height) {
  if (entries.empty()) return "";
  std::string s = "<g class=\"legend\">\n";
  double x = plot_left(), y = height + 4;
  for (const LegendEntry& e : entries) {
    const std::string label = cut(e.label);
    const double w = 30 + kCharWidth * static_cast<double>(label.size()) + 14;
    if (x > plot_left() && x + w > plot_right()) {
      x = plot_left();
      y += kLegendRow;
    }
    if (e.bar) {
      s += "<rect x=\"" + px(x) + "\" y=\"" + px(y - 5) + "\" width=\"22\" height=\"10\" fill=\"" + escape(e.color) +
           "\"/>\n";
    } else {
      s += "<line x1=\"" + px(x) + "\" x2=\"" + px(x + 22) + "\" y1=\"" + px(y) + "\" y2=\"" + px(y) + "\" stroke=\"" +
           escape(e.color) + "\" stroke-width=\"2.5\"" +
           (e.dash.empty() ? std::string() : " stroke-dasharray=\"" + escape(e.dash) + "\"") + "/>\n";
    }
    s += "<text x=\"" + px(x + 28) + "\" y=\"" + px(y) + "\" dy=\"0.32em\" fill=\"#222\">" + escape(label) + "</text>\n";
    x += w;
  }
  height = y + kLegendRow - 4;
  return s + "</g>\n";
}

std::string no_data_note() {
  return "<text class=\"nodata\" x=\"" + px((plot_left() + plot_right()) / 2) + "\" y=\"" +
         px((plot_top() + plot_bottom()) / 2) + "\" text-anchor=\"middle\" fill=\"#888\">no finite values</text>\n";
}

}  // namespace

double Scale::operator()(double v) const {
  const double a = log ? std::log10(d0) : d0, b = log ? std::log10(d1) : d1, t = log ? std::log10(v) : v;
  return r0 + (t - a) / (b - a) * (r1 - r0);
}

std::vector<double> axis_ticks(double lo, double hi, bool log) {
  if (!log) return linear_ticks(lo, hi, 5);
  // 1-2-5 steps through the decades; decades alone when those are too many; evenly spaced
  // round values when the range is too narrow for either (a loss going from 7 to 3).
  std::vector<double> ticks, decades;
  const int k0 = static_cast<int>(std::floor(std::log10(lo))), k1 = static_cast<int>(std::ceil(std::log10(hi)));
  for (int k = k0; k <= k1; ++k) {
    const double p = std::pow(10.0, k);
    for (double m : {1.0, 2.0, 5.0}) {
      const double t = m * p;
      if (t < lo * (1 - 1e-9) || t > hi * (1 + 1e-9)) continue;
      ticks.push_back(t);
      if (m == 1.0) decades.push_back(t);
    }
  }
  if (ticks.size() > 10) {
    const size_t every = (decades.size() + 5) / 6;  // at most about six labels
    std::vector<double> thinned;
    for (size_t i = 0; i < decades.size(); i += every) thinned.push_back(decades[i]);
    return thinned;
  }
  if (ticks.size() >= 3) return ticks;
  ticks.clear();
  for (double t : linear_ticks(lo, hi, 5)) {
    if (t > 0) ticks.push_back(t);
  }
  return ticks;
}

std::string palette(size_t i) {
  static const char* const colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                       "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};
  return colors[i % 10];
}

std::string dash_pattern(size_t i) {
  static const char* const dashes[] = {"", "6 3", "2 2", "8 3 2 3"};
  return dashes[i % 4];
}

std::string line_chart_svg(const LineChart& chart) {
  std::vector<double> xs_all, ys_all;
  for (const LineSeries& s : chart.series) {
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (usable(s.x[i], chart.x.log) && usable(s.y[i], chart.y.log)) {
        xs_all.push_back(s.x[i]);
        ys_all.push_back(s.y[i]);
      }
    }
  }
  const Domain dx = make_domain(xs_all, chart.x), dy = make_domain(ys_all, chart.y);
  const Scale xs{dx.lo, dx.hi, plot_left(), plot_right(), chart.x.log};
  const Scale ys{dy.lo, dy.hi, plot_bottom(), plot_top(), chart.y.log};

  std::string body = frame(xs, dx.ticks, chart.x.label, ys, dy.ticks, chart.y.label);
  if (xs_all.empty()) body += no_data_note();
  std::vector<LegendEntry> entries;
  for (const LineSeries& s : chart.series) {
    std::vector<std::pair<double, double>> pts;
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (usable(s.x[i], chart.x.log) && usable(s.y[i], chart.y.log)) pts.emplace_back(s.x[i], s.y[i]);
    }
    std::stable_sort(pts.begin(), pts.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    entries.push_back({s.label, s.color, s.dash, false});
    if (pts.empty()) continue;
    const std::string series = escape(s.label), color = escape(s.color);
    body += "<g class=\"series-group\">\n<polyline class=\"series\" data-series=\"" + series + "\" fill=\"none\" stroke=\"" +
            color + "\" stroke-width=\"1.8\" stroke-linejoin=\"round\"" +
            (s.dash.empty() ? std::string() : " stroke-dasharray=\"" + escape(s.dash) + "\"") + " points=\"";
    for (size_t i = 0; i < pts.size(); ++i) body += (i ? " " : "") + px(xs(pts[i].first)) + "," + px(ys(pts[i].second));
    body += "\"/>\n";
    if (pts.size() <= kMarkersUpTo) {
      for (const auto& [x, y] : pts) {
        body += "<circle class=\"marker\" data-series=\"" + series + "\" cx=\"" + px(xs(x)) + "\" cy=\"" + px(ys(y)) +
                "\" r=\"2.6\" fill=\"" + color + "\"/>\n";
      }
    }
    body += "</g>\n";
  }
  double height = plot_bottom() + Layout::kBottom;
  const std::string leg = legend(entries, height);
  return svg_open(height, chart.title) + body + leg + "</svg>\n";
}

std::string bar_chart_svg(const BarChart& chart) {
  std::vector<double> values;
  for (const BarSeries& s : chart.series) {
    for (double v : s.values) {
      if (std::isfinite(v)) values.push_back(v);
    }
  }
  Axis yaxis = chart.y;
  yaxis.log = false;
  if (!yaxis.min) yaxis.min = 0.0;
  const Domain dy = make_domain(values, yaxis);
  const Scale ys{dy.lo, dy.hi, plot_bottom(), plot_top(), false};
  const Scale xs{0, 1, plot_left(), plot_right(), false};
  std::string body = frame(xs, {}, chart.x_label, ys, dy.ticks, chart.y.label);
  if (values.empty()) body += no_data_note();

  const size_t n = std::max<size_t>(chart.categories.size(), 1), k = std::max<size_t>(chart.series.size(), 1);
  const double band = (plot_right() - plot_left()) / static_cast<double>(n);
  const double bar = band * 0.8 / static_cast<double>(k);
  const size_t label_every = (n + 19) / 20;
  for (size_t c = 0; c < chart.categories.size(); ++c) {
    if (c % label_every != 0) continue;
    body += "<text class=\"xtick\" x=\"" + px(plot_left() + band * (static_cast<double>(c) + 0.5)) + "\" y=\"" +
            px(plot_bottom() + 15) + "\" text-anchor=\"middle\" fill=\"#444\">" + escape(chart.categories[c]) + "</text>\n";
  }
  const double base = ys(std::max(dy.lo, 0.0));
  std::vector<LegendEntry> entries;
  for (size_t si = 0; si < chart.series.size(); ++si) {
    const BarSeries& s = chart.series[si];
    entries.push_back({s.label, s.color, "", true});
    for (size_t c = 0; c < std::min(s.values.size(), chart.categories.size()); ++c) {
      const double v = s.values[c];
      if (!std::isfinite(v)) continue;
      const double x = plot_left() + band * (static_cast<double>(c) + 0.1) + bar * static_cast<double>(si);
      const double top = std::min(ys(v), base), h = std::fabs(ys(v) - base);
      body += "<rect class=\"bar\" data-series=\"" + escape(s.label) + "\" data-value=\"" + escape(short_number(v)) +
              "\" x=\"" + px(x) + "\" y=\"" + px(top) + "\" width=\"" + px(std::max(bar - 0.5, 0.5)) + "\" height=\"" +
              px(h) + "\" fill=\"" + escape(s.color) + "\"><title>" + escape(s.label + ", " + chart.x_label + " " +
                                                                              chart.categories[c] + ": " +
                                                                              short_number(v)) +
              "</title></rect>\n";
    }
  }
  double height = plot_bottom() + Layout::kBottom;
  const std::string leg = legend(entries, height);
  return svg_open(height, chart.title) + body + leg + "</svg>\n";
}

std::string histogram_svg(const Histogram& chart) {
  const size_t bins = std::min(chart.values.size(), chart.edges.empty() ? 0 : chart.edges.size() - 1);
  std::vector<double> xs_all, ys_all;
  for (double e : chart.edges) {
    if (std::isfinite(e)) xs_all.push_back(e);
  }
  for (size_t i = 0; i < bins; ++i) {
    if (std::isfinite(chart.values[i])) ys_all.push_back(chart.values[i]);
  }
  Axis xaxis = chart.x, yaxis = chart.y;
  xaxis.log = yaxis.log = false;
  if (!yaxis.min) yaxis.min = 0.0;
  const Domain dx = make_domain(xs_all, xaxis), dy = make_domain(ys_all, yaxis);
  const Scale xs{dx.lo, dx.hi, plot_left(), plot_right(), false};
  const Scale ys{dy.lo, dy.hi, plot_bottom(), plot_top(), false};
  std::string body = frame(xs, dx.ticks, chart.x.label, ys, dy.ticks, chart.y.label);
  if (ys_all.empty()) body += no_data_note();
  for (size_t i = 0; i < bins; ++i) {
    const double a = chart.edges[i], b = chart.edges[i + 1], v = chart.values[i];
    if (!std::isfinite(a) || !std::isfinite(b) || !std::isfinite(v)) continue;
    const double x0 = xs(std::min(a, b)), x1 = xs(std::max(a, b)), top = ys(v);
    body += "<rect class=\"bar\" data-value=\"" + escape(short_number(v)) + "\" x=\"" + px(x0) + "\" y=\"" + px(top) +
            "\" width=\"" + px(std::max(x1 - x0 - 0.5, 0.5)) + "\" height=\"" + px(ys(dy.lo) - top) + "\" fill=\"" +
            escape(chart.color) + "\"><title>" + escape("[" + short_number(a) + ", " + short_number(b) +
                                                        "): " + short_number(v)) +
            "</title></rect>\n";
  }
  return svg_open(plot_bottom() + Layout::kBottom, chart.title) + body + "</svg>\n";
}

}  // namespace sluice::report
