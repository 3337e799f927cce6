#include "support/stranger.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace eplb::test {
namespace {

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The parent pid in /proc/<pid>/stat ("pid (comm) state ppid ..."; comm may
// hold spaces and parentheses, so the fields start after the last ')').
pid_t ParentOf(const std::string& stat) {
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(stat.substr(close + 1));
  std::string state;
  pid_t ppid = -1;
  fields >> state >> ppid;
  return ppid;
}

// Connects to 127.0.0.1:port without blocking for long: a listening socket
// answers at once; -1 when refused.
int ConnectLoopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool WriteAll(int fd, const std::vector<char>& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Gloo's frame header (gloo/transport/tcp/pair.h, Op::preamble).
struct Header {
  size_t nbytes, opcode, slot, offset, length, roffset;
};
constexpr size_t kSendUnbound = 1, kNotifySendReady = 2, kNotifyRecvReady = 3;

bool ReadAll(int fd, void* out, size_t n, Deadline until) {
  auto* p = static_cast<char*>(out);
  size_t done = 0;
  while (done < n) {
    if (Expired(until)) return false;
    const ssize_t got = ::recv(fd, p + done, n - done, 0);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (got <= 0) return false;
    done += static_cast<size_t>(got);
  }
  return true;
}

bool WriteFrame(int fd, size_t opcode, size_t slot, size_t length, const std::vector<char>& data = {}) {
  const Header h{sizeof(Header) + (opcode == kSendUnbound ? length : 0), opcode, slot, 0, length, 0};
  std::vector<char> frame(sizeof h);
  std::memcpy(frame.data(), &h, sizeof h);
  if (opcode == kSendUnbound) {
    std::vector<char> body = data;
    body.resize(length, 0);
    frame.insert(frame.end(), body.begin(), body.end());
  }
  return WriteAll(fd, frame);
}

// The echo peer on one connection, until `until` or the connection ends.
void Echo(int fd, Deadline until) {
  timeval tv{0, 100000};  // reads wake every 100 ms to look at the deadline
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::map<size_t, std::vector<std::vector<char>>> sent;  // per slot, what the rank sent
  std::map<size_t, std::vector<size_t>> wanted;           // per slot, receives it posted
  auto serve = [&](size_t slot) {
    while (!sent[slot].empty() && !wanted[slot].empty()) {
      const size_t n = wanted[slot].front();
      wanted[slot].erase(wanted[slot].begin());
      std::vector<char> bytes = sent[slot].front();
      sent[slot].erase(sent[slot].begin());
      if (!WriteFrame(fd, kNotifySendReady, slot, n) || !WriteFrame(fd, kSendUnbound, slot, n, bytes)) return false;
    }
    return true;
  };
  while (!Expired(until)) {
    Header h{};
    if (!ReadAll(fd, &h, sizeof h, until)) return;
    if (h.opcode == kSendUnbound) {
      if (h.length > (64u << 20)) return;
      std::vector<char> data(h.length);
      if (!ReadAll(fd, data.data(), data.size(), until)) return;
      sent[h.slot].push_back(std::move(data));
    } else if (h.opcode == kNotifySendReady) {
      // The rank wants to send: say a receive is posted, so it does.
      if (!WriteFrame(fd, kNotifyRecvReady, h.slot, h.length)) return;
    } else if (h.opcode == kNotifyRecvReady) {
      wanted[h.slot].push_back(h.length);
    }
    if (!serve(h.slot)) return;
  }
}

}  // namespace

std::vector<pid_t> ProcessTree(pid_t root) {
  std::map<pid_t, pid_t> parent;
  if (DIR* d = ::opendir("/proc")) {
    while (dirent* e = ::readdir(d)) {
      char* end = nullptr;
      const long pid = std::strtol(e->d_name, &end, 10);
      if (end == e->d_name || *end != '\0') continue;
      parent[static_cast<pid_t>(pid)] = ParentOf(ReadText(std::string("/proc/") + e->d_name + "/stat"));
    }
    ::closedir(d);
  }
  std::vector<pid_t> tree = {root};
  for (size_t i = 0; i < tree.size(); ++i)
    for (const auto& [pid, ppid] : parent)
      if (ppid == tree[i]) tree.push_back(pid);
  return tree;
}

std::vector<ListeningSocket> LoopbackListeners() {
  std::vector<ListeningSocket> out;
  std::istringstream lines(ReadText("/proc/net/tcp"));
  std::string line;
  std::getline(lines, line);  // the header
  while (std::getline(lines, line)) {
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
    std::istringstream f(line);
    std::string sl, local, remote, state, queues, timer, retransmits, uid, timeout;
    unsigned long inode = 0;
    f >> sl >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode;
    if (state != "0A") continue;  // TCP_LISTEN
    const size_t colon = local.find(':');
    if (colon == std::string::npos) continue;
    // 127.0.0.1 is written as the 32-bit word in host order: 0100007F here.
    if (local.substr(0, colon) != "0100007F") continue;
    out.push_back({static_cast<int>(std::stoul(local.substr(colon + 1), nullptr, 16)), inode});
  }
  return out;
}

std::vector<unsigned long> SocketInodes(pid_t pid) {
  std::vector<unsigned long> out;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    char target[64];
    const ssize_t n = ::readlink((dir + "/" + e->d_name).c_str(), target, sizeof(target) - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    unsigned long inode = 0;
    if (std::sscanf(target, "socket:[%lu]", &inode) == 1) out.push_back(inode);
  }
  ::closedir(d);
  return out;
}

StrangerMode ParseStrangerMode(const std::string& name) {
  if (name == "frame") return StrangerMode::kFrame;
  if (name == "garbage") return StrangerMode::kGarbage;
  if (name == "hold") return StrangerMode::kHold;
  if (name == "echo") return StrangerMode::kEcho;
  throw std::invalid_argument("stranger mode '" + name + "': expected frame, garbage, hold or echo");
}

std::vector<char> CraftedGlooFrame(size_t slot, size_t length) {
  // nbytes (header and data), opcode (1: SEND_UNBOUND_BUFFER), slot, offset,
  // length, roffset.
  const size_t header[6] = {6 * sizeof(size_t) + length, 1, slot, 0, length, 0};
  std::vector<char> frame(sizeof(header) + length, 'x');
  std::memcpy(frame.data(), header, sizeof(header));
  return frame;
}

std::string StrangerReport::Describe() const {
  return "stranger: " + std::to_string(listeners_seen) + " listening sockets seen, " +
         std::to_string(connected) + " connected to, " + std::to_string(sent) + " written to";
}

StrangerReport RunStranger(pid_t root, StrangerMode mode, Deadline until, std::chrono::microseconds poll,
                           const std::function<void(const std::string&)>& log) {
  StrangerReport report;
  std::set<unsigned long> done;                         // listeners acted on, or not the tree's
  std::map<unsigned long, Clock::time_point> pending;   // new listeners not yet placed
  std::vector<int> held;
  std::vector<std::thread> echoes;
  std::mt19937_64 random(static_cast<uint64_t>(::getpid()));
  // Slot 0x7fffffff: no rank posts a receive there.
  const std::vector<char> frame = CraftedGlooFrame(0x7fffffff, 1);
  std::vector<char> garbage(4096);
  std::vector<pid_t> tree;
  auto tree_at = Clock::now() - std::chrono::seconds(1);
  // Until the deadline, or until the tree's root has ended (and was reaped).
  while (!Expired(until) && ::kill(root, 0) == 0) {
    // The tree's processes change rarely (ranks start once): every 100 ms.
    if (Clock::now() - tree_at > std::chrono::milliseconds(100)) {
      tree = ProcessTree(root);
      tree_at = Clock::now();
    }
    const std::vector<ListeningSocket> listeners = LoopbackListeners();
    for (const ListeningSocket& s : listeners) {
      if (done.count(s.inode)) continue;
      pending.emplace(s.inode, Clock::now());
    }
    if (!pending.empty()) {
      std::set<unsigned long> mine;
      for (pid_t pid : tree)
        for (unsigned long inode : SocketInodes(pid)) mine.insert(inode);
      std::map<int, unsigned long> ports;
      for (const ListeningSocket& s : listeners) ports[s.port] = s.inode;
      for (auto it = pending.begin(); it != pending.end();) {
        const unsigned long inode = it->first;
        int port = -1;
        for (const auto& [p, i] : ports)
          if (i == inode) port = p;
        if (port < 0 || (!mine.count(inode) && tree_at > it->second)) {
          done.insert(inode);  // closed already, or another process's
          it = pending.erase(it);
          continue;
        }
        if (!mine.count(inode)) {
          ++it;  // perhaps a rank started after the last look at the tree
          continue;
        }
        done.insert(inode);
        it = pending.erase(it);
        ++report.listeners_seen;
        const int fd = ConnectLoopback(port);
        if (fd < 0) continue;
        ++report.connected;
        bool wrote = false;
        switch (mode) {
          case StrangerMode::kFrame:
            wrote = WriteAll(fd, frame);
            break;
          case StrangerMode::kGarbage:
            for (char& c : garbage) c = static_cast<char>(random());
            wrote = WriteAll(fd, garbage);
            break;
          case StrangerMode::kHold:
            break;
          case StrangerMode::kEcho:
            echoes.emplace_back(Echo, fd, until);
            break;
        }
        if (wrote) ++report.sent;
        if (log)
          log("port " + std::to_string(port) + ": connected" +
              (wrote ? ", written to" : mode == StrangerMode::kEcho ? ", playing the peer" : ", holding"));
        held.push_back(fd);  // closed at the end: closing early would only end the connection sooner
      }
    }
    std::this_thread::sleep_for(poll);
  }
  for (auto& t : echoes) t.join();
  for (int fd : held) ::close(fd);
  return report;
}

}  // namespace eplb::test
