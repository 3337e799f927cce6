#include "util/mac.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/random.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "eplb/error.h"

namespace eplb::util {

Mac HmacSha256(std::span<const uint8_t> key, std::initializer_list<std::span<const uint8_t>> parts) {
  std::vector<uint8_t> message;
  for (const auto& p : parts) message.insert(message.end(), p.begin(), p.end());
  Mac out{};
  unsigned int len = 0;
  // One-shot HMAC (not deprecated in OpenSSL 3); fails only on allocation.
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), message.data(), message.size(),
           out.data(), &len) == nullptr ||
      len != out.size()) {
    throw Error("crypto", "hmac", "OpenSSL's HMAC-SHA256 failed");
  }
  return out;
}

bool ConstantTimeEqual(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::vector<uint8_t> RandomBytes(size_t n) {
  std::vector<uint8_t> out(n);
  size_t done = 0;
  while (done < n) {
    // Blocks only until the kernel's pool is first initialised at boot.
    const ssize_t got = ::getrandom(out.data() + done, n - done, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) throw Error("random", "getrandom", std::string("the kernel gave no random bytes: ") + std::strerror(errno));
    done += static_cast<size_t>(got);
  }
  return out;
}

std::string Hex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  s.reserve(2 * bytes.size());
  for (uint8_t b : bytes) {
    s.push_back(kDigits[b >> 4]);
    s.push_back(kDigits[b & 15]);
  }
  return s;
}

}  // namespace eplb::util
