// Shared libraries opened at run time (NCCL, the CUDA driver, NIXL), so no
// eplb binary needs them to build or start. Handles stay open for the life
// of the process: unloading GPU runtimes under live resources is unsafe.
#pragma once

#include <string>
#include <vector>

namespace eplb::dyn {

class Library {
 public:
  // Opens the first candidate that loads: a bare name goes through the
  // loader's search, a path is opened as is. With `noload_first`, a library
  // already in the process under that name is reused (RTLD_NOLOAD) before
  // anything new is loaded, so eplb calls the very NCCL the engine uses.
  // Throws Error(layer, "load <what>") listing every candidate and dlerror.
  static Library Open(const std::string& layer, const std::string& what,
                      const std::vector<std::string>& candidates, bool global = false,
                      bool noload_first = false);

  // Looks a symbol up; throws Error(layer, "load <what>") naming the symbol
  // and the library when `required` and missing, else returns nullptr.
  template <class F>
  F Get(const char* symbol, bool required = true) const {
    return reinterpret_cast<F>(Resolve(symbol, required));
  }

  const std::string& path() const { return path_; }  // the candidate that loaded
  void* handle() const { return handle_; }

 private:
  void* Resolve(const char* symbol, bool required) const;
  void* handle_ = nullptr;
  std::string layer_, what_, path_;
};

}  // namespace eplb::dyn
