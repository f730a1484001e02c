#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace trellis::dns {

// Where the DNS code gets randomness: answer shuffling and the IDs of forwarded queries.
// Injected so tests can make order deterministic or assert that it varies.
class RandomSource {
public:
  virtual ~RandomSource() = default;
  // A uniformly distributed 64-bit value.
  virtual uint64_t random() = 0;
  // A uniformly distributed value in [0, bound); bound must be > 0.
  uint64_t uniform(uint64_t bound);
};

// Cryptographically strong randomness (OpenSSL's CSPRNG), because forwarded query IDs must
// not be predictable (RFC 5452). Buffers 256 bytes per refill. Not thread-safe: one per
// dispatcher.
class RandomSourceImpl : public RandomSource {
public:
  // RandomSource
  uint64_t random() override;

private:
  std::array<uint64_t, 32> buf_{};
  size_t next_ = buf_.size();
};

} // namespace trellis::dns
