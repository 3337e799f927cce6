// The extension eplb._eplb: what python/eplb/*.py builds the API on. Every
// entry point here takes host buffers (numpy arrays, raw pointers) and plain
// values; converting torch tensors and lists is the Python side's job.
#include "bindings.h"

#ifndef EPLB_VERSION
#define EPLB_VERSION "unknown"
#endif

PYBIND11_MODULE(_eplb, m) {
  m.doc() = "eplb's C++ core (placement policies, online balancer); use the package eplb";
  m.attr("__version__") = EPLB_VERSION;
#ifdef EPLB_HAVE_CUDA
  m.attr("built_with_cuda") = true;
#else
  m.attr("built_with_cuda") = false;
#endif
  eplb::python::RegisterErrors(m);
  eplb::python::RegisterPolicy(m);
  eplb::python::RegisterLaunch(m);
  eplb::python::RegisterBalancer(m);
  eplb::python::RegisterBench(m);
}
