#include "arrays.h"

#include <bit>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>

#include "eplb/error.h"
#include "eplb/policy.h"

namespace eplb::python {
namespace {

enum class Kind { kBool, kSigned, kUnsigned, kFloat };

struct Element {
  Kind kind;
  int bytes;
};

// The element type of a buffer from its struct-module format: native or
// little-endian integers, floats of 2, 4 or 8 bytes, bool.
Element ElementOf(const py::buffer_info& info, const char* what) {
  std::string f = info.format;
  if (!f.empty() && (f[0] == '@' || f[0] == '=' || f[0] == '<')) f.erase(0, 1);
  const int bytes = static_cast<int>(info.itemsize);
  auto bad = [&] {
    return InvalidArgument(std::string(what) + ": elements of format '" + info.format + "' (" +
                           std::to_string(bytes) +
                           " bytes) are not real numbers eplb reads; use integers, floats or bool");
  };
  if (f.size() != 1) throw bad();
  switch (f[0]) {
    case '?': return {Kind::kBool, bytes};
    case 'b': case 'h': case 'i': case 'l': case 'q': case 'n':
      if (bytes == 1 || bytes == 2 || bytes == 4 || bytes == 8) return {Kind::kSigned, bytes};
      break;
    case 'B': case 'H': case 'I': case 'L': case 'Q': case 'N':
      if (bytes == 1 || bytes == 2 || bytes == 4 || bytes == 8) return {Kind::kUnsigned, bytes};
      break;
    case 'e': case 'f': case 'd':
      if (bytes == 2 || bytes == 4 || bytes == 8) return {Kind::kFloat, bytes};
      break;
    default: break;
  }
  throw bad();
}

// IEEE half to float (the buffer's float16, numpy's 'e').
float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24
    const float v = static_cast<float>(mant) * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  const uint32_t bits = exp == 0x1f ? sign | 0x7f800000u | (mant << 13)
                                    : sign | ((exp + 112u) << 23) | (mant << 13);
  return std::bit_cast<float>(bits);
}

template <typename T>
T Load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

double AsDouble(const char* p, Element e) {
  switch (e.kind) {
    case Kind::kBool: return *p != 0 ? 1.0 : 0.0;
    case Kind::kSigned:
      switch (e.bytes) {
        case 1: return Load<int8_t>(p);
        case 2: return Load<int16_t>(p);
        case 4: return Load<int32_t>(p);
        default: return static_cast<double>(Load<int64_t>(p));
      }
    case Kind::kUnsigned:
      switch (e.bytes) {
        case 1: return Load<uint8_t>(p);
        case 2: return Load<uint16_t>(p);
        case 4: return Load<uint32_t>(p);
        default: return static_cast<double>(Load<uint64_t>(p));
      }
    case Kind::kFloat:
      switch (e.bytes) {
        case 2: return HalfToFloat(Load<uint16_t>(p));
        case 4: return Load<float>(p);
        default: return Load<double>(p);
      }
  }
  return 0;
}

// Reads rows x cols elements at (row stride, col stride) into out, adding
// when `add`. One loop per element type, so the common cases are tight.
template <typename T>
void ReadTyped(const char* base, py::ssize_t rows, py::ssize_t cols, py::ssize_t rs,
               py::ssize_t cs, double* out, bool add) {
  for (py::ssize_t r = 0; r < rows; ++r) {
    const char* row = base + r * rs;
    double* o = out + r * cols;
    if (add)
      for (py::ssize_t c = 0; c < cols; ++c) o[c] += static_cast<double>(Load<T>(row + c * cs));
    else
      for (py::ssize_t c = 0; c < cols; ++c) o[c] = static_cast<double>(Load<T>(row + c * cs));
  }
}

void ReadMatrix(const char* base, Element e, py::ssize_t rows, py::ssize_t cols, py::ssize_t rs,
                py::ssize_t cs, double* out, bool add) {
  if (e.kind == Kind::kSigned && e.bytes == 4) return ReadTyped<int32_t>(base, rows, cols, rs, cs, out, add);
  if (e.kind == Kind::kSigned && e.bytes == 8) return ReadTyped<int64_t>(base, rows, cols, rs, cs, out, add);
  if (e.kind == Kind::kFloat && e.bytes == 4) return ReadTyped<float>(base, rows, cols, rs, cs, out, add);
  if (e.kind == Kind::kFloat && e.bytes == 8) return ReadTyped<double>(base, rows, cols, rs, cs, out, add);
  for (py::ssize_t r = 0; r < rows; ++r)
    for (py::ssize_t c = 0; c < cols; ++c) {
      const double v = AsDouble(base + r * rs + c * cs, e);
      out[r * cols + c] = add ? out[r * cols + c] + v : v;
    }
}

std::string ShapeText(const py::buffer_info& info) {
  std::string s = "[";
  for (size_t i = 0; i < info.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(info.shape[i]);
  return s + "]";
}

}  // namespace

LoadMatrix LoadFromBuffer(const py::buffer& buffer, const char* what, bool sum_first_axis) {
  const py::buffer_info info = buffer.request();
  const int want = sum_first_axis ? 3 : 2;
  if (info.ndim != want)
    throw InvalidArgument(std::string(what) + " must have " + std::to_string(want) + " dimensions (" +
                          (sum_first_axis ? "[window, layers, experts]" : "[layers, experts]") +
                          "), got " + std::to_string(info.ndim) + ": shape " + ShapeText(info));
  const Element e = ElementOf(info, what);
  const py::ssize_t steps = sum_first_axis ? info.shape[0] : 1;
  const py::ssize_t layers = info.shape[want - 2], experts = info.shape[want - 1];
  if (steps < 1 || layers < 1 || experts < 1)
    throw InvalidArgument(std::string(what) + " is empty: shape " + ShapeText(info));
  if (layers > kMaxLayers || experts > kMaxExperts)
    throw InvalidArgument(std::string(what) + ": shape " + ShapeText(info) + " has more than " +
                          std::to_string(kMaxLayers) + " layers or " + std::to_string(kMaxExperts) +
                          " experts");
  LoadMatrix load(static_cast<int>(layers), static_cast<int>(experts));
  const char* base = static_cast<const char*>(info.ptr);
  for (py::ssize_t s = 0; s < steps; ++s)
    ReadMatrix(base + (sum_first_axis ? s * info.strides[0] : 0), e, layers, experts,
               info.strides[want - 2], info.strides[want - 1], load.values.data(), s > 0);
  return load;
}

std::vector<int32_t> Phy2LogFromBuffer(const py::buffer& buffer, const char* what, int layers,
                                       int slots) {
  const py::buffer_info info = buffer.request();
  if (info.ndim != 2 || info.shape[0] != layers || info.shape[1] != slots)
    throw InvalidArgument(std::string(what) + " must have shape [" + std::to_string(layers) + ", " +
                          std::to_string(slots) + "] ([layers, num_replicas]), got " + ShapeText(info));
  const Element e = ElementOf(info, what);
  if (e.kind != Kind::kSigned && e.kind != Kind::kUnsigned)
    throw InvalidArgument(std::string(what) + " must hold integers (expert ids), not format '" +
                          info.format + "'");
  std::vector<int32_t> out(static_cast<size_t>(layers) * slots);
  const char* base = static_cast<const char*>(info.ptr);
  auto refuse = [&](int l, int p, const std::string& value) {
    return InvalidArgument(std::string(what) + ": layer " + std::to_string(l) + " slot " + std::to_string(p) +
                           " holds " + value + ", not an expert id");
  };
  auto fits = [](auto v) {
    using T = decltype(v);
    if constexpr (std::is_signed_v<T>)
      return v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max();
    else
      return v <= static_cast<T>(std::numeric_limits<int32_t>::max());
  };
  // One tight loop per type: the range check is a compare, the load a move.
  auto read = [&](auto type_tag) {
    using T = decltype(type_tag);
    for (int l = 0; l < layers; ++l) {
      const char* row = base + l * info.strides[0];
      int32_t* o = out.data() + static_cast<size_t>(l) * slots;
      bool ok = true;
      for (int p = 0; p < slots; ++p) {
        const T v = Load<T>(row + p * info.strides[1]);
        ok &= fits(v);
        o[p] = static_cast<int32_t>(v);
      }
      if (!ok)
        for (int p = 0; p < slots; ++p) {
          const T v = Load<T>(row + p * info.strides[1]);
          if (!fits(v)) throw refuse(l, p, std::to_string(v));
        }
    }
  };
  if (e.kind == Kind::kSigned) {
    switch (e.bytes) {
      case 8: read(int64_t{}); break;
      case 4: read(int32_t{}); break;
      case 2: read(int16_t{}); break;
      default: read(int8_t{}); break;
    }
  } else {
    switch (e.bytes) {
      case 8: read(uint64_t{}); break;
      case 4: read(uint32_t{}); break;
      case 2: read(uint16_t{}); break;
      default: read(uint8_t{}); break;
    }
  }
  return out;
}

py::array_t<int64_t> Int64Array(const int32_t* values, const std::vector<py::ssize_t>& shape) {
  py::array_t<int64_t> out(shape);
  int64_t* o = out.mutable_data();
  const py::ssize_t n = out.size();
  for (py::ssize_t i = 0; i < n; ++i) o[i] = values[i];
  return out;
}

}  // namespace eplb::python
