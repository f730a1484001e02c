#pragma once

#include <cstdint>

namespace trellis {

// xoshiro256** seeded through splitmix64: fast, statistically strong, not cryptographic.
// The one pseudo-random generator behind load balancing, fault injection and trace ids; each
// owner (a worker, a thread) has its own, so there is no locking.
class Xoshiro256 {
public:
  explicit Xoshiro256(uint64_t seed) {
    // splitmix64 spreads any seed (including 0) over the whole state, which must not be all
    // zero.
    for (auto& s : s_) {
      uint64_t z = (seed += 0x9E3779B97F4A7C15ull);
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      s = z ^ (z >> 31);
    }
  }

  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

} // namespace trellis
