#pragma once

#include <memory>

#include "base/dispatcher.h"
#include "http/client.h"
#include "registry/health.h"

namespace trellis::control {

// Runs the registry's HTTP and TCP checks on the loop. HTTP checks take http:// URLs whose
// host is an IP literal or "localhost" (the loop never blocks on name resolution); https://
// and other hosts fail with an output that says so. Output is the start of the response body.
class CheckProberImpl : public registry::CheckProber {
public:
  explicit CheckProberImpl(Dispatcher& loop);
  ~CheckProberImpl() override;

  // registry::CheckProber
  std::unique_ptr<registry::ProbeHandle> probe(const registry::ProbeTarget& target,
                                               registry::ProbeCallback done) override;

  // Bytes of a response body kept for the check's output.
  static constexpr size_t kMaxOutputBytes = 4096;

private:
  std::unique_ptr<registry::ProbeHandle> probeHttp(const registry::ProbeTarget& target,
                                                   registry::ProbeCallback done);
  std::unique_ptr<registry::ProbeHandle> probeTcp(const registry::ProbeTarget& target,
                                                  registry::ProbeCallback done);
  std::unique_ptr<registry::ProbeHandle> failLater(std::string output,
                                                   registry::ProbeCallback done);

  Dispatcher& loop_;
  http::Client client_;
};

} // namespace trellis::control
