// Message authentication for what a run's ranks write where strangers may
// look (the store, the Gloo connections): HMAC-SHA256 from Debian's OpenSSL
// (libcrypto), a constant-time comparison, and random bytes from the kernel
// (getrandom(2), the OS random source). Nothing here is a cipher: values stay
// readable to whoever can read them; what the MAC gives is that nobody
// without the key can write a value a rank accepts.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace eplb::util {

using MacKey = std::array<uint8_t, 32>;
using Mac = std::array<uint8_t, 32>;

// HMAC-SHA256 of the concatenation of `parts` under `key`.
Mac HmacSha256(std::span<const uint8_t> key, std::initializer_list<std::span<const uint8_t>> parts);

inline std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Compares without an early exit, so the time taken says nothing about
// where two tags first differ.
bool ConstantTimeEqual(std::span<const uint8_t> a, std::span<const uint8_t> b);

// `n` bytes from getrandom(2). Throws eplb::Error (layer "random") when the
// kernel refuses.
std::vector<uint8_t> RandomBytes(size_t n);

// Lower-case hexadecimal.
std::string Hex(std::span<const uint8_t> bytes);

}  // namespace eplb::util
