// Writing to a socket whose peer is gone raises SIGPIPE, which kills the
// process by default. Gloo and hiredis write without MSG_NOSIGNAL, so a peer
// that dies would take its survivors down with it instead of surfacing as an
// error. SigpipeBlock keeps SIGPIPE away from the calling thread while it
// lives (and from threads it starts: they inherit the mask), without changing
// the process-wide disposition, which belongs to the application.
#pragma once

#include <signal.h>

namespace eplb::io {

class SigpipeBlock {
 public:
  SigpipeBlock();
  // Discards a SIGPIPE raised while blocked, then restores the mask.
  ~SigpipeBlock();
  SigpipeBlock(const SigpipeBlock&) = delete;
  SigpipeBlock& operator=(const SigpipeBlock&) = delete;

 private:
  sigset_t old_;
  bool was_blocked_ = false;
};

}  // namespace eplb::io
