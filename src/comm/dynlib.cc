#include "comm/dynlib.h"

#include <dlfcn.h>

#include "eplb/error.h"

namespace eplb::dyn {

Library Library::Open(const std::string& layer, const std::string& what,
                      const std::vector<std::string>& candidates, bool global, bool noload_first) {
  const int mode = RTLD_NOW | (global ? RTLD_GLOBAL : RTLD_LOCAL);
  std::string tried;
  Library lib;
  lib.layer_ = layer;
  lib.what_ = what;
  if (noload_first) {
    for (const auto& c : candidates) {
      if (void* h = ::dlopen(c.c_str(), mode | RTLD_NOLOAD)) {
        lib.handle_ = h;
        lib.path_ = c;
        return lib;
      }
    }
  }
  for (const auto& c : candidates) {
    if (c.empty()) continue;
    ::dlerror();
    if (void* h = ::dlopen(c.c_str(), mode)) {
      lib.handle_ = h;
      lib.path_ = c;
      return lib;
    }
    const char* err = ::dlerror();
    tried += "\n  " + c + ": " + (err ? err : "unknown dlopen error");
  }
  throw Error(layer, "load " + what, "could not load it; tried:" + tried);
}

void* Library::Resolve(const char* symbol, bool required) const {
  ::dlerror();
  void* p = ::dlsym(handle_, symbol);
  if (p == nullptr && required)
    throw Error(layer_, "load " + what_, std::string("symbol ") + symbol + " missing from " + path_ +
                                              " (library too old?)");
  return p;
}

}  // namespace eplb::dyn
