// The balancer's reports (balancer.h) as Python dicts, with the C++ field
// names as keys.
#pragma once

#include <pybind11/pybind11.h>

#include "eplb/balancer.h"

namespace eplb::python {

namespace py = pybind11;

py::dict CommitEventDict(const CommitEvent& e);
py::dict CycleReportDict(const CycleReport& r);
py::dict MetricsDict(const BalancerMetrics& m);

}  // namespace eplb::python
