#include "io/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <limits>

#include "eplb/error.h"

namespace eplb::io {
namespace {

// Colour-blind-safe palette (Okabe-Ito).
constexpr const char* kColors[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                   "#E69F00", "#56B4E9", "#000000", "#F0E442"};

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// A "nice" tick step covering `range` in about `target` steps.
double NiceStep(double range, int target) {
  double raw = range / target;
  double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double norm = raw / mag;
  double nice = norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10;
  return nice * mag;
}

std::string FormatTick(double v, double step) {
  int decimals = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step)));
  return fmt::format("{:.{}f}", v, std::min(decimals, 6));
}

}  // namespace

std::string RenderLineChart(const PlotSpec& spec) {
  double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin;
  double ymin = xmin, ymax = -xmin;
  for (const auto& s : spec.series) {
    if (s.x.size() != s.y.size())
      throw InvalidArgument("plot: series '" + s.label + "' has " + std::to_string(s.x.size()) +
                            " x values and " + std::to_string(s.y.size()) + " y values");
    for (size_t i = 0; i < s.x.size(); ++i) {
      xmin = std::min(xmin, s.x[i]);
      xmax = std::max(xmax, s.x[i]);
      ymin = std::min(ymin, s.y[i]);
      ymax = std::max(ymax, s.y[i]);
    }
  }
  if (!std::isfinite(xmin)) throw InvalidArgument("plot: nothing to draw");
  if (spec.y_min < spec.y_max) {
    ymin = spec.y_min;
    ymax = spec.y_max;
  }
  if (xmax == xmin) xmax = xmin + 1;
  if (ymax == ymin) {
    ymin -= 0.5;
    ymax += 0.5;
  }
  // The legend sits right of the plot; leave room for its longest label.
  size_t longest = 0;
  for (const auto& s : spec.series) longest = std::max(longest, s.label.size());
  const double left = 70, right = 60 + 7.0 * static_cast<double>(longest), top = 40, bottom = 55;
  const double pw = spec.width - left - right, ph = spec.height - top - bottom;
  auto px = [&](double x) { return left + (x - xmin) / (xmax - xmin) * pw; };
  auto py = [&](double y) { return top + (1 - (y - ymin) / (ymax - ymin)) * ph; };

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{3}</text>\n",
      spec.width, spec.height, left, Escape(spec.title));
  // Grid and ticks.
  double ystep = NiceStep(ymax - ymin, 6);
  for (double v = std::ceil(ymin / ystep) * ystep; v <= ymax + ystep * 1e-9; v += ystep) {
    svg += fmt::format(
        "<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{2:.1f}\" y2=\"{1:.1f}\" stroke=\"#ddd\"/>"
        "<text x=\"{3:.1f}\" y=\"{4:.1f}\" text-anchor=\"end\">{5}</text>\n",
        left, py(v), left + pw, left - 6, py(v) + 4, FormatTick(v, ystep));
  }
  double xstep = NiceStep(xmax - xmin, 8);
  bool integer_x = true;
  for (const auto& s : spec.series)
    for (double x : s.x) integer_x = integer_x && x == std::floor(x);
  if (integer_x) xstep = std::max(xstep, 1.0);  // no half windows on the axis
  for (double v = std::ceil(xmin / xstep) * xstep; v <= xmax + xstep * 1e-9; v += xstep) {
    svg += fmt::format(
        "<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"#eee\"/>"
        "<text x=\"{0:.1f}\" y=\"{3:.1f}\" text-anchor=\"middle\">{4}</text>\n",
        px(v), top, top + ph, top + ph + 16, FormatTick(v, xstep));
  }
  svg += fmt::format(
      "<rect x=\"{0}\" y=\"{1}\" width=\"{2}\" height=\"{3}\" fill=\"none\" stroke=\"#333\"/>\n"
      "<text x=\"{4:.1f}\" y=\"{5:.1f}\" text-anchor=\"middle\">{6}</text>\n"
      "<text transform=\"translate(18,{7:.1f}) rotate(-90)\" text-anchor=\"middle\">{8}</text>\n",
      left, top, pw, ph, left + pw / 2, spec.height - 14.0, Escape(spec.x_label), top + ph / 2,
      Escape(spec.y_label));
  // Series and legend.
  for (size_t i = 0; i < spec.series.size(); ++i) {
    const auto& s = spec.series[i];
    const char* color = kColors[i % std::size(kColors)];
    std::string points;
    for (size_t k = 0; k < s.x.size(); ++k)
      points += fmt::format("{:.1f},{:.1f} ", px(s.x[k]), py(std::clamp(s.y[k], ymin, ymax)));
    svg += fmt::format(
        "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{} points=\"{}\"/>\n", color,
        s.dashed ? " stroke-dasharray=\"6,4\"" : "", points);
    if (s.x.size() <= 60)
      for (size_t k = 0; k < s.x.size(); ++k)
        svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"2.5\" fill=\"{}\"/>\n",
                           px(s.x[k]), py(std::clamp(s.y[k], ymin, ymax)), color);
    double ly = top + 10 + 20.0 * i;
    svg += fmt::format(
        "<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{2:.1f}\" y2=\"{1:.1f}\" stroke=\"{3}\" "
        "stroke-width=\"2\"{4}/><text x=\"{5:.1f}\" y=\"{6:.1f}\">{7}</text>\n",
        left + pw + 12, ly, left + pw + 36, color, s.dashed ? " stroke-dasharray=\"6,4\"" : "",
        left + pw + 42, ly + 4, Escape(s.label));
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace eplb::io
