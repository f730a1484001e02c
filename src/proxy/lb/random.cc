#include "proxy/lb/random.h"

namespace trellis::proxy {
namespace {

uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

} // namespace

RandomGeneratorImpl::RandomGeneratorImpl(uint64_t seed) {
  // splitmix64 spreads any seed (including 0) over the whole state, which must not be all zero.
  for (auto& s : s_)
    s = splitmix64(seed);
}

uint64_t RandomGeneratorImpl::random() {
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

} // namespace trellis::proxy
