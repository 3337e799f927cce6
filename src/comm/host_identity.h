// Which machine this process runs on, as ranks compare it: two ranks share a
// node (IPC, one GPU's identity) only if both the host name and the kernel's
// boot id agree (containers on one host may share a name, not a boot id).
#pragma once

#include <string>

namespace eplb::comm {

std::string HostName();  // gethostname, or "unknown"
std::string BootId();    // /proc/sys/kernel/random/boot_id, or "" where unreadable

}  // namespace eplb::comm
