// eplb's C++ exceptions as the Python classes of eplb.errors:
//   eplb::InvalidArgument -> eplb.InvalidArgument (a ValueError)
//   eplb::TimeoutError    -> eplb.TimeoutError (an eplb.Error and a TimeoutError)
//   eplb::Error           -> eplb.Error (a RuntimeError)
// with the C++ error's layer, operation, rank and peer as attributes. The
// classes live in Python (eplb/errors.py) so they can have two bases; when
// that module cannot be imported the builtin classes stand in.
#include <exception>
#include <string>

#include "bindings.h"
#include "eplb/error.h"

namespace eplb::python {
namespace {

// eplb.errors.<name>, or nullptr when the module cannot be imported.
PyObject* ErrorClass(const char* name) {
  PyObject* module = PyImport_ImportModule("eplb.errors");
  if (module == nullptr) {
    PyErr_Clear();
    return nullptr;
  }
  PyObject* cls = PyObject_GetAttrString(module, name);
  Py_DECREF(module);
  if (cls == nullptr) PyErr_Clear();
  return cls;
}

void RaiseError(const char* name, PyObject* fallback, const eplb::Error& e) {
  PyObject* cls = ErrorClass(name);
  if (cls == nullptr) {
    PyErr_SetString(fallback, e.what());
    return;
  }
  PyObject* instance = PyObject_CallFunction(cls, "sssii", e.what(), e.layer().c_str(),
                                             e.operation().c_str(), e.rank(), e.peer());
  if (instance != nullptr) {
    PyErr_SetObject(cls, instance);
    Py_DECREF(instance);
  }  // else the constructor's own exception stands
  Py_DECREF(cls);
}

void RaiseInvalid(const char* what) {
  PyObject* cls = ErrorClass("InvalidArgument");
  PyErr_SetString(cls != nullptr ? cls : PyExc_ValueError, what);
  Py_XDECREF(cls);
}

}  // namespace

void RegisterErrors(py::module_& m) {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const eplb::TimeoutError& e) {
      RaiseError("TimeoutError", PyExc_TimeoutError, e);
    } catch (const eplb::Error& e) {
      RaiseError("Error", PyExc_RuntimeError, e);
    } catch (const eplb::InvalidArgument& e) {
      RaiseInvalid(e.what());
    }
  });
}

}  // namespace eplb::python
