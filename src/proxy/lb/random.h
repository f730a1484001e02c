#pragma once

#include <cstdint>

#include "base/random.h"

namespace trellis::proxy {

// A source of random 64-bit values. Load balancers, weighted route selection and fault
// injection take one in their constructor so tests can make them deterministic.
// Not thread-safe: each worker owns its own.
class RandomGenerator {
public:
  virtual ~RandomGenerator() = default;

  // Returns a uniformly distributed 64-bit value.
  virtual uint64_t random() = 0;
};

// xoshiro256** seeded through splitmix64: fast, statistically strong, not cryptographic.
class RandomGeneratorImpl : public RandomGenerator {
public:
  explicit RandomGeneratorImpl(uint64_t seed) : gen_(seed) {}

  // RandomGenerator
  uint64_t random() override { return gen_.next(); }

private:
  Xoshiro256 gen_;
};

// Maps a uniform 64-bit value onto [0, n) without division (Lemire's multiply-shift); the
// bias is below 2^-32 for any n that fits in 32 bits. n must be > 0.
inline uint64_t scaleRandom(uint64_t r, uint64_t n) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(r) * n) >> 64);
}

} // namespace trellis::proxy
