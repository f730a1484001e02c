#include "proxy/lb/hash.h"

#include <cstring>

namespace trellis::proxy {
namespace {

// Odd 64-bit constants with well-spread bits (the same primes xxHash64 and others use).
constexpr uint64_t kP1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kP3 = 0x165667B19E3779F9ull;
constexpr uint64_t kP4 = 0x85EBCA77C2B2AE63ull;

uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

uint64_t load64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v; // byte order only matters for cross-endian stability; all targets are little endian
}

// One lane step: multiply-rotate-multiply, so each input bit affects many state bits.
uint64_t absorb(uint64_t h, uint64_t k) {
  k *= kP2;
  k = rotl(k, 31);
  k *= kP1;
  h ^= k;
  return rotl(h, 27) * kP1 + kP4;
}

} // namespace

uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xFF51AFD7ED558CCDull;
  x ^= x >> 33;
  x *= 0xC4CEB9FE1A85EC53ull;
  x ^= x >> 33;
  return x;
}

uint64_t hash64(std::string_view data, uint64_t seed) {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  const size_t n = data.size();
  uint64_t h = (seed + kP3) ^ (static_cast<uint64_t>(n) * kP1);
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    h = absorb(h, load64(p + i));
  if (i < n) {
    // Tail: pack the remaining 1..7 bytes into one word; the length in h keeps "a" and "a\0"
    // apart.
    uint64_t k = 0;
    for (size_t j = 0; i + j < n; ++j)
      k |= static_cast<uint64_t>(p[i + j]) << (8 * j);
    h = absorb(h, k);
  }
  return mix64(h ^ rotl(seed, 17));
}

} // namespace trellis::proxy
