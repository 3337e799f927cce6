// A small SVG line chart, enough for `eplb simulate` to show balancedness
// over time for several policies. Self-contained SVG 1.1 text, no scripts.
#pragma once

#include <string>
#include <vector>

namespace eplb::io {

struct PlotSeries {
  std::string label;
  std::vector<double> x;
  std::vector<double> y;
  bool dashed = false;
};

struct PlotSpec {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<PlotSeries> series;
  // Fixed y range when y_min < y_max; otherwise taken from the data.
  double y_min = 0, y_max = 0;
  int width = 900, height = 480;
};

// Renders the chart. Throws InvalidArgument when a series has x and y of
// different lengths or no series has a point.
std::string RenderLineChart(const PlotSpec& spec);

}  // namespace eplb::io
