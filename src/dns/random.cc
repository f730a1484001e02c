#include "dns/random.h"

#include <cstdlib>

#include <openssl/rand.h>

#include "base/log.h"

namespace trellis::dns {

uint64_t RandomSource::uniform(uint64_t bound) {
  // Rejection sampling avoids the modulo bias of random() % bound.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  for (;;) {
    uint64_t v = random();
    if (v < limit)
      return v % bound;
  }
}

uint64_t RandomSourceImpl::random() {
  if (next_ == buf_.size()) {
    if (RAND_bytes(reinterpret_cast<unsigned char*>(buf_.data()), static_cast<int>(sizeof(buf_))) !=
        1) {
      // The CSPRNG failing means the process cannot make safe query IDs; stop rather than
      // continue with predictable ones.
      TLOG_ERROR("dns: RAND_bytes failed; aborting");
      std::abort();
    }
    next_ = 0;
  }
  return buf_[next_++];
}

} // namespace trellis::dns
