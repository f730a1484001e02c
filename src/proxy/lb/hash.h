#pragma once

#include <cstdint>
#include <string_view>

namespace trellis::proxy {

// A fast non-cryptographic 64-bit hash with full avalanche, for consistent hashing (ring
// positions, Maglev permutations) and for hashing request keys (header, cookie, source IP)
// into LbContext::hash. Stable across runs and machines: every proxy places an endpoint at the
// same ring positions. Not for hash tables exposed to attackers who can choose keys freely.
uint64_t hash64(std::string_view data, uint64_t seed = 0);

// The 64-bit finaliser used by hash64: a bijection with good avalanche, for mixing integers.
uint64_t mix64(uint64_t x);

} // namespace trellis::proxy
