// Which UCX transports NIXL's UCX backend can use for host memory on this
// machine, for the log line a rank writes when its agent starts.
//
// What UCX 1.23 (the one NIXL's wheel ships) does, measured with
// UCX_PROTO_INFO=y between two processes of one machine: NIXL asks for
// peer-failure error handling, which excludes UCX's shared-memory transports
// (posix, sysv: they cannot report a dead peer), so control messages go over
// TCP on loopback, while the bulk READs go through CMA (process_vm_readv,
// zero-copy). CMA needs ptrace permission over the peer, which Yama's
// ptrace_scope >= 1 refuses between sibling processes: there eplb excludes
// CMA (UCX_TLS=^cma) before the first agent starts, so UCX moves the bytes
// over TCP rather than failing them. A UCX_TLS the user set is left alone.
// GPU memory: UCX's cuda_ipc transport reads a peer's GPU memory directly,
// but UCX disables that READ (get_zcopy) where it finds no NVLink, two
// ranks sharing a GPU included, and falls back to a software emulation over
// TCP; eplb sets UCX_CUDA_IPC_ENABLE_GET_ZCOPY=y unless the user set it.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "eplb/listen_address.h"

namespace eplb::comm {

// What NIXL's UCX backend will use on this machine, without changing
// anything: "host memory: READs over cma (zero-copy), control over tcp ...;
// GPU memory: READs over cuda_ipc (...)", or what the user's UCX_TLS says.
// For `eplb info` and the communicator's log line.
std::string DescribeUcxTransports();

// Sets UCX_CUDA_IPC_ENABLE_GET_ZCOPY=y, and UCX_TLS=^cma where ptrace rules
// refuse CMA, for the process, unless the user set them; once, before the
// first NIXL agent. Returns DescribeUcxTransports() as it was before.
std::string ChooseUcxTransports();

// EPLB_NIXL_UCX_PARAMS="key=value,key=value": parameters for NIXL's UCX
// backend on top of its defaults (ucx_error_handling_mode, num_workers,
// num_threads, ...). At most 32 entries, keys and values of at most 256
// characters; anything else throws InvalidArgument naming the variable.
std::vector<std::pair<std::string, std::string>> ParseUcxParams(const std::string& text);

// The network devices UCX may use for a rank that listens on `listen`
// (listen_address.h): its interface, so that UCX's TCP transport listens
// there alone as Gloo does (by default UCX listens on every interface), and
// every RDMA port of this host (/sys/class/infiniband/<dev>/ports/<n>, as
// "mlx5_0:1"), which the READs should keep using. Empty when the address is
// on no interface.
std::string UcxNetDevices(const ListenAddress& listen);

// Sets UCX_NET_DEVICES to UcxNetDevices(listen) for the process unless the
// user set it (a value eplb set earlier is replaced), before an agent starts.
// Returns what UCX will use: "eth0 (the listen interface)" or
// "UCX_NET_DEVICES=... (set by the user)".
std::string ChooseUcxNetDevices(const ListenAddress& listen);

// Yama's ptrace_scope (/proc/sys/kernel/yama/ptrace_scope), -1 without Yama.
int YamaPtraceScope();

}  // namespace eplb::comm
