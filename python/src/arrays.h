// Host buffers (numpy arrays, anything with the buffer protocol) read into
// eplb's types, whatever their numeric type and strides, without an
// intermediate copy; and eplb's int32 maps out as int64 numpy arrays (the
// dtype DeepSeek's, vLLM's and SGLang's policies return).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <vector>

#include "eplb/load.h"

namespace eplb::python {

namespace py = pybind11;

// A [layers][experts] load from a 2-D buffer, or from a 3-D one summed over
// its first axis (a window of steps, as SGLang keeps it). Any integer, float
// (float16 included) or bool type. Throws InvalidArgument naming `what` on
// another number of dimensions, an empty or oversized shape, or a type that
// is not a real number; the values are checked by the policy (ValidateLoad).
LoadMatrix LoadFromBuffer(const py::buffer& buffer, const char* what, bool sum_first_axis);

// A [layers][slots] placement (phy2log) from a 2-D buffer of integers.
// Throws InvalidArgument naming `what` on another shape, a non-integer type
// or a value outside int32; whether each value names an expert is checked
// where the placement is built (Placement::Validate).
std::vector<int32_t> Phy2LogFromBuffer(const py::buffer& buffer, const char* what, int layers,
                                       int slots);

// int32 values widened into a new int64 array of `shape`.
py::array_t<int64_t> Int64Array(const int32_t* values, const std::vector<py::ssize_t>& shape);

}  // namespace eplb::python
