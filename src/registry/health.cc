#include "registry/health.h"

#include <algorithm>
#include <variant>

#include "base/log.h"

namespace trellis::registry {

CheckStatus statusForProbe(const ProbeResult& r) {
  switch (r.outcome) {
  case ProbeResult::Outcome::kHttpResponse:
    if (r.http_status >= 200 && r.http_status <= 299)
      return CheckStatus::kPassing;
    if (r.http_status == 429)
      return CheckStatus::kWarning;
    return CheckStatus::kCritical;
  case ProbeResult::Outcome::kConnected:
    return CheckStatus::kPassing;
  case ProbeResult::Outcome::kFailed:
    return CheckStatus::kCritical;
  }
  return CheckStatus::kCritical;
}

std::string outputForProbe(const ProbeTarget& t, const ProbeResult& r) {
  const std::string what = t.type == CheckType::kTcp ? fmt::format("TCP connect {}", t.address)
                                                     : fmt::format("HTTP {} {}", t.method, t.url);
  switch (r.outcome) {
  case ProbeResult::Outcome::kHttpResponse:
    return fmt::format("{}: {} Output: {}", what, r.http_status, r.output);
  case ProbeResult::Outcome::kConnected:
    return fmt::format("{}: Success", what);
  case ProbeResult::Outcome::kFailed:
    return fmt::format("{}: {}", what, r.output);
  }
  return what;
}

HealthScheduler::HealthScheduler(Dispatcher& loop, Registry& registry, CheckProber& prober,
                                 RandomSource& random, HealthSettings settings)
    : loop_(loop), registry_(registry), prober_(prober), random_(random), settings_(settings) {
  if (settings_.max_concurrent_probes == 0)
    settings_.max_concurrent_probes = 1;
  settings_.jitter = std::clamp(settings_.jitter, 0.0, 0.5);
}

HealthScheduler::~HealthScheduler() {
  if (started_)
    registry_.catalog().removeObserver(this);
  // Timers and probe handles go with their checks: nothing fires afterwards.
  checks_.clear();
}

std::string HealthScheduler::keyOf(std::string_view node, std::string_view id) {
  // Names cannot hold control characters, so NUL separates them unambiguously.
  std::string k = foldName(node);
  k.push_back('\0');
  k += foldName(id);
  return k;
}

void HealthScheduler::start() {
  if (started_)
    return;
  started_ = true;
  registry_.catalog().addObserver(this);
  for (const CheckPtr& c : registry_.catalog().checksInState(std::nullopt).value)
    track(c);
}

void HealthScheduler::onApplied(const Batch& batch) {
  for (const Mutation& m : batch.mutations) {
    if (const auto* p = std::get_if<CheckPut>(&m))
      track(p->check);
    else if (const auto* d = std::get_if<CheckDelete>(&m))
      untrack(keyOf(d->node, d->id));
  }
}

void HealthScheduler::track(const CheckPtr& c) {
  const std::string key = keyOf(c->node, c->id);
  auto it = checks_.find(key);
  if (it == checks_.end()) {
    auto t = std::make_unique<Tracked>();
    t->key = key;
    t->check = c;
    Tracked* raw = t.get();
    raw->run_timer = loop_.createTimer([this, raw] { enqueue(*raw); });
    raw->probe_timer = loop_.createTimer([this, raw] {
      ++stats_.probes_timed_out;
      onProbeDone(
          raw->key, raw->probe_seq,
          ProbeResult{ProbeResult::Outcome::kFailed, 0,
                      fmt::format("timed out after {}", formatDuration(raw->target.timeout))},
          true);
    });
    raw->ttl_timer = loop_.createTimer([this, raw] {
      ++stats_.ttl_expired;
      write(*raw, CheckStatus::kCritical,
            fmt::format("TTL expired (last output before timeout follows): {}", raw->check->output),
            true);
    });
    raw->reap_timer = loop_.createTimer([this, raw] {
      const Check& ck = *raw->check;
      TLOG_INFO("health: deregistering service \"{}\" on node \"{}\": check \"{}\" critical for "
                "longer than {}",
                ck.service_id, ck.node, ck.id,
                formatDuration(ck.definition.deregister_critical_service_after));
      ++stats_.services_deregistered;
      registry_.submit(DeregisterRequest{ck.node, ck.service_id, ""}, [](Result<WriteResult> r) {
        if (!r.ok())
          TLOG_WARN("health: deregistration failed: {}", r.error().message());
      });
    });
    checks_.emplace(key, std::move(t));
    setup(*raw);
    return;
  }
  Tracked& t = *it->second;
  CheckPtr old = std::move(t.check);
  t.check = c;
  if (!(old->definition == c->definition)) {
    // Redefined: forget the running probe, counters and timers; start over.
    ++t.generation;
    if (t.running) {
      t.running = false;
      --running_;
    }
    t.queued = false;
    t.probe.reset();
    t.probe_timer->disable();
    t.run_timer->disable();
    t.ttl_timer->disable();
    t.successes = t.failures = 0;
    setup(t);
    pump();
    return;
  }
  if (old->status != c->status)
    updateCritical(t);
}

void HealthScheduler::untrack(const std::string& key) {
  auto it = checks_.find(key);
  if (it == checks_.end())
    return;
  const bool was_running = it->second->running;
  // Destroying the entry disables its timers and cancels its probe.
  checks_.erase(it);
  if (was_running) {
    --running_;
    pump();
  }
}

void HealthScheduler::setup(Tracked& t) {
  const CheckDefinition& d = t.check->definition;
  switch (d.type) {
  case CheckType::kHttp:
  case CheckType::kTcp: {
    t.target = ProbeTarget{};
    t.target.type = d.type;
    t.target.url = d.http;
    t.target.method = d.method.empty() ? "GET" : d.method;
    t.target.header = d.header;
    t.target.address = d.tcp;
    t.target.timeout = d.timeout.count() > 0 ? d.timeout : settings_.default_timeout;
    // Stagger the first run over one interval.
    auto first =
        Duration(static_cast<int64_t>(static_cast<double>(d.interval.count()) * random_.uniform()));
    t.run_timer->enable(first);
    break;
  }
  case CheckType::kTtl:
    t.ttl_timer->enable(d.ttl);
    break;
  case CheckType::kNone:
    break;
  }
  updateCritical(t);
}

void HealthScheduler::updateCritical(Tracked& t) {
  const Check& c = *t.check;
  const Duration after = c.definition.deregister_critical_service_after;
  if (after.count() <= 0 || c.service_id.empty() || c.status != CheckStatus::kCritical) {
    t.critical_since.reset();
    t.reap_timer->disable();
    return;
  }
  const MonotonicTime now = loop_.now();
  if (!t.critical_since)
    t.critical_since = now;
  const Duration elapsed = now - *t.critical_since;
  t.reap_timer->enable(std::max(Duration(0), after - elapsed));
}

Duration HealthScheduler::jittered(Duration interval) {
  const double u = 2.0 * random_.uniform() - 1.0; // [-1, 1)
  const double scaled = static_cast<double>(interval.count()) * (1.0 + settings_.jitter * u);
  return std::max(Duration(std::chrono::milliseconds(1)), Duration(static_cast<int64_t>(scaled)));
}

void HealthScheduler::enqueue(Tracked& t) {
  if (t.running || t.queued)
    return;
  t.queued = true;
  ready_.emplace_back(t.key, t.generation);
  pump();
}

void HealthScheduler::pump() {
  while (running_ < settings_.max_concurrent_probes && !ready_.empty()) {
    auto [key, gen] = std::move(ready_.front());
    ready_.pop_front();
    auto it = checks_.find(key);
    if (it == checks_.end() || it->second->generation != gen || !it->second->queued)
      continue; // removed or redefined while waiting
    it->second->queued = false;
    startProbe(*it->second);
  }
}

void HealthScheduler::startProbe(Tracked& t) {
  t.running = true;
  ++running_;
  ++stats_.probes_started;
  stats_.max_running = std::max(stats_.max_running, running_);
  const uint64_t seq = ++t.probe_seq;
  t.probe_timer->enable(t.target.timeout);
  const std::string key = t.key;
  auto handle = prober_.probe(
      t.target, [this, key, seq](ProbeResult r) { onProbeDone(key, seq, std::move(r), false); });
  // The callback may already have run (an immediate failure); keep the handle only while the
  // probe is outstanding.
  auto it = checks_.find(key);
  if (it != checks_.end() && it->second->running && it->second->probe_seq == seq)
    it->second->probe = std::move(handle);
}

void HealthScheduler::onProbeDone(const std::string& key, uint64_t seq, ProbeResult r,
                                  bool timed_out) {
  auto it = checks_.find(key);
  if (it == checks_.end())
    return;
  Tracked& t = *it->second;
  if (!t.running || t.probe_seq != seq)
    return; // a late answer to a probe that timed out or was abandoned
  t.running = false;
  --running_;
  t.probe_timer->disable();
  // On timeout this cancels the prober's work; after an answer it is a no-op (the contract
  // allows it from within the callback).
  t.probe.reset();

  applyResult(t, statusForProbe(r), outputForProbe(t.target, r));
  t.run_timer->enable(jittered(t.check->definition.interval));
  pump();
}

void HealthScheduler::applyResult(Tracked& t, CheckStatus status, std::string output) {
  // Consul's thresholds: warning counts with passing as a success.
  const CheckDefinition& d = t.check->definition;
  if (status != CheckStatus::kCritical) {
    ++t.successes;
    t.failures = 0;
    if (t.successes >= d.success_before_passing)
      write(t, status, std::move(output), false);
    return;
  }
  ++t.failures;
  t.successes = 0;
  const uint32_t before_warning =
      d.failures_before_warning ? d.failures_before_warning : d.failures_before_critical;
  if (t.failures >= d.failures_before_critical)
    write(t, CheckStatus::kCritical, std::move(output), false);
  else if (t.failures >= before_warning)
    write(t, CheckStatus::kWarning, std::move(output), false);
}

void HealthScheduler::write(Tracked& t, CheckStatus status, std::string output, bool force) {
  const Check& cur = *t.check;
  const MonotonicTime now = loop_.now();
  if (!force && cur.status == status) {
    if (cur.output == output)
      return;
    if (t.last_output_write && now - *t.last_output_write < settings_.output_update_interval)
      return;
  }
  t.last_output_write = now;
  ++stats_.status_writes;
  registry_.submit(CheckUpdateRequest{cur.node, cur.id, status, std::move(output)},
                   [](Result<WriteResult> r) {
                     // The check may have been removed meanwhile; anything else is worth a line.
                     if (!r.ok() && r.error().code() != ErrorCode::kNotFound)
                       TLOG_WARN("health: status write failed: {}", r.error().message());
                   });
}

void HealthScheduler::updateTtl(std::string_view node, std::string_view check_id,
                                CheckStatus status, std::string output, WriteCallback done) {
  auto it = checks_.find(keyOf(node, check_id));
  if (it == checks_.end() || it->second->check->definition.type != CheckType::kTtl) {
    Error e = it == checks_.end()
                  ? makeError(ErrorCode::kNotFound, "Unknown check ID \"{}\"", check_id)
                  : makeError(ErrorCode::kFailedPrecondition, "check \"{}\" is not a TTL check",
                              check_id);
    std::weak_ptr<bool> alive = alive_;
    loop_.post([alive, done = std::move(done), e = std::move(e)] {
      if (alive.lock())
        done(e);
    });
    return;
  }
  Tracked& t = *it->second;
  t.ttl_timer->enable(t.check->definition.ttl);
  t.last_output_write = loop_.now();
  registry_.submit(CheckUpdateRequest{t.check->node, t.check->id, status, std::move(output)},
                   std::move(done));
}

HealthStats HealthScheduler::stats() const {
  HealthStats s = stats_;
  s.tracked = checks_.size();
  s.running = running_;
  size_t queued = 0;
  for (const auto& [k, t] : checks_)
    queued += t->queued ? 1 : 0;
  s.queued = queued;
  return s;
}

} // namespace trellis::registry
