// The pieces of the extension eplb._eplb, one file each; module.cc calls
// every Register* in turn.
#pragma once

#include <pybind11/pybind11.h>

namespace eplb::python {

namespace py = pybind11;

void RegisterErrors(py::module_& m);    // errors.cc: C++ exceptions -> eplb.errors
void RegisterPolicy(py::module_& m);    // policy.cc: rebalance, policies
void RegisterLaunch(py::module_& m);    // launch.cc: launch_env
void RegisterBalancer(py::module_& m);  // balancer.cc: the online balancer
void RegisterBench(py::module_& m);     // bench.cc: the C++ baseline of the overhead benchmark

}  // namespace eplb::python
