#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>

#include "base/dispatcher.h"
#include "registry/catalog.h"
#include "registry/registry.h"

// Health-check scheduling: runs HTTP and TCP checks on their interval, expires TTL checks,
// applies Consul's thresholds, writes status changes through the registry (so they are durable
// and bump the index), and deregisters services whose check stayed critical for
// DeregisterCriticalServiceAfter. The probing itself is behind CheckProber.
namespace trellis::registry {

// A source of uniform random numbers, injected so tests control jitter.
class RandomSource {
public:
  virtual ~RandomSource() = default;
  // Uniform in [0, 1).
  virtual double uniform() = 0;
};

class DefaultRandomSource : public RandomSource {
public:
  DefaultRandomSource() : gen_(std::random_device{}()) {}
  // RandomSource
  double uniform() override { return std::uniform_real_distribution<double>(0.0, 1.0)(gen_); }

private:
  std::mt19937_64 gen_;
};

// What to probe.
struct ProbeTarget {
  CheckType type = CheckType::kHttp;                      // kHttp or kTcp
  std::string url;                                        // HTTP
  std::string method;                                     // HTTP, never empty (GET by default)
  std::map<std::string, std::vector<std::string>> header; // HTTP
  std::string address;                                    // TCP host:port
  Duration timeout{0};
};

struct ProbeResult {
  enum class Outcome {
    kHttpResponse, // an HTTP response arrived: http_status says which
    kConnected,    // the TCP connection was established
    kFailed,       // connection refused, reset, TLS failure, ... (`output` says what)
  };
  Outcome outcome = Outcome::kFailed;
  int http_status = 0;
  std::string output; // the response body (start of it), or the failure text
};

using ProbeCallback = std::function<void(ProbeResult)>;

// An outstanding probe. Destroying it cancels the probe: its callback will not run afterwards.
// Destroying it after (or from within) the callback is allowed and does nothing.
class ProbeHandle {
public:
  virtual ~ProbeHandle() = default;
};

// Runs probes; the control plane implements it with its HTTP client and TCP connector.
class CheckProber {
public:
  virtual ~CheckProber() = default;
  // Starts probing `target`, giving up after target.timeout. `done` runs once, on the
  // scheduler's dispatcher thread (possibly inside this call), unless the handle is destroyed
  // first. The scheduler also enforces the timeout itself.
  virtual std::unique_ptr<ProbeHandle> probe(const ProbeTarget& target, ProbeCallback done) = 0;
};

// Consul's mapping: HTTP 2xx passing, 429 warning, any other status critical; TCP connected
// passing; failures (and timeouts) critical.
CheckStatus statusForProbe(const ProbeResult& r);
// The check output recorded for a probe, e.g. "HTTP GET http://10.0.0.1/health: 200 Output: ok".
std::string outputForProbe(const ProbeTarget& t, const ProbeResult& r);

struct HealthSettings {
  size_t max_concurrent_probes = 64;
  // Each wait between runs is interval * (1 + jitter * u), u uniform in [-1, 1); the first run
  // of a check is staggered uniformly over one interval so checks do not run in lockstep.
  double jitter = 0.1;
  Duration default_timeout = std::chrono::seconds(10); // when a check sets no Timeout
  // A result that changes only the output (same status) is written at most this often
  // (Consul's check_update_interval), so chatty outputs do not churn the index.
  Duration output_update_interval = std::chrono::minutes(5);
};

struct HealthStats {
  uint64_t probes_started = 0;
  uint64_t probes_timed_out = 0;
  uint64_t status_writes = 0; // writes submitted for a status or output change
  uint64_t ttl_expired = 0;
  uint64_t services_deregistered = 0; // by DeregisterCriticalServiceAfter
  size_t tracked = 0;                 // checks followed
  size_t running = 0;                 // probes outstanding now
  size_t queued = 0;                  // checks due, waiting for a probe slot
  size_t max_running = 0;             // most probes outstanding at once so far
};

// Threading: lives on the registry's loop thread; timers, prober callbacks and catalog
// notifications all run there.
class HealthScheduler : private CatalogObserver {
public:
  HealthScheduler(Dispatcher& loop, Registry& registry, CheckProber& prober, RandomSource& random,
                  HealthSettings settings = {});
  ~HealthScheduler() override;
  HealthScheduler(const HealthScheduler&) = delete;
  HealthScheduler& operator=(const HealthScheduler&) = delete;

  // Follows the catalog from now on: every check in it now (after Registry::start) and every
  // check registered, redefined or removed later. Critical-since times start now for checks
  // already critical, so a restart never deregisters a service earlier than configured.
  void start();

  // A TTL check's report (/v1/agent/check/pass|warn|fail|update): resets its TTL and writes
  // the status and output. `done` as Registry::submit; kNotFound for an unknown check,
  // kFailedPrecondition for a check that is not a TTL check.
  void updateTtl(std::string_view node, std::string_view check_id, CheckStatus status,
                 std::string output, WriteCallback done);

  HealthStats stats() const;

private:
  struct Tracked {
    std::string key;
    CheckPtr check;          // as the catalog has it now
    uint64_t generation = 0; // bumped on redefinition; older queue entries are stale
    std::unique_ptr<Timer> run_timer;
    std::unique_ptr<Timer> probe_timer; // the probe's timeout
    std::unique_ptr<Timer> ttl_timer;
    std::unique_ptr<Timer> reap_timer; // DeregisterCriticalServiceAfter
    std::unique_ptr<ProbeHandle> probe;
    uint64_t probe_seq = 0;
    ProbeTarget target;
    bool running = false;
    bool queued = false;
    uint32_t successes = 0;
    uint32_t failures = 0;
    std::optional<MonotonicTime> last_output_write;
    std::optional<MonotonicTime> critical_since;
  };

  // CatalogObserver
  void onApplied(const Batch& batch) override;

  void track(const CheckPtr& c);
  void untrack(const std::string& key);
  void setup(Tracked& t);
  void updateCritical(Tracked& t);
  void enqueue(Tracked& t);
  void pump();
  void startProbe(Tracked& t);
  void onProbeDone(const std::string& key, uint64_t seq, ProbeResult r, bool timed_out);
  void applyResult(Tracked& t, CheckStatus status, std::string output);
  void write(Tracked& t, CheckStatus status, std::string output, bool force);
  Duration jittered(Duration interval);
  static std::string keyOf(std::string_view node, std::string_view id);

  Dispatcher& loop_;
  Registry& registry_;
  CheckProber& prober_;
  RandomSource& random_;
  HealthSettings settings_;
  bool started_ = false;
  std::unordered_map<std::string, std::unique_ptr<Tracked>> checks_;
  std::deque<std::pair<std::string, uint64_t>> ready_; // (key, generation) waiting for a slot
  size_t running_ = 0;
  HealthStats stats_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

} // namespace trellis::registry
