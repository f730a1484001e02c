#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "base/units.h"

// Metrics registry: counters, gauges and histograms, sharded per worker.
//
// Thread-safety story:
// - A registry has N shards, one per thread that updates metrics (typically one per data-plane
//   worker, plus one for the main/control thread). Every series owns one cell (or, for a
//   histogram, a run of cells) in every shard; a shard's cells live in blocks of memory that
//   only that shard's thread writes, so workers never share a cache line.
// - Registering a family or resolving a child (handle(), Scope::counter(), ...) takes the
//   registry's mutex. It is meant for startup or configuration time, never per request.
// - Updates through a handle (CounterHandle::inc, GaugeHandle::set, HistogramHandle::observe)
//   take no lock and do no atomic read-modify-write: the owning thread does a relaxed load
//   and a relaxed store of its own cell, which compiles to a plain add. A handle must only be
//   used on the thread that owns its shard.
// - A scrape (renderPrometheus, value(), snapshot()) takes the mutex, reads every shard's
//   cells with relaxed loads and sums them. A scrape concurrent with updates sees each cell
//   either before or after an update; a histogram's _count is computed from its buckets so
//   the two always agree, while _sum may lag by the observations in flight.
namespace trellis::telemetry {

using LabelNames = std::vector<std::string>;
using LabelValues = std::vector<std::string>;

enum class MetricType { kCounter, kGauge, kHistogram };

const char* metricTypeName(MetricType type);

// Limits of a registry. Every one exists so that label values taken from configuration or
// traffic cannot grow memory without bound.
struct RegistryOptions {
  // Number of shards (threads that update metrics). At least 1.
  size_t shards = 1;
  // Most children (label-value combinations) one family may have. A child past the limit is
  // not created: its handle writes to a discarded cell, and
  // trellis_metrics_series_rejected_total{family=...} counts the refusal.
  size_t max_series_per_family = 10000;
  // Label values longer than this many bytes are cut (at a UTF-8 boundary).
  size_t max_label_value_bytes = 256;
};

// Most finite buckets a histogram may have (the +Inf bucket is implicit).
inline constexpr size_t kMaxHistogramBuckets = 64;

// The default request-duration buckets, in seconds: 0.5 ms .. 10 s.
const std::vector<double>& defaultDurationBuckets();

// Content-Type of renderPrometheus() output, for the /metrics handler.
inline constexpr std::string_view kPrometheusContentType =
    "text/plain; version=0.0.4; charset=utf-8";

namespace detail {

using Cell = std::atomic<uint64_t>;

// Adds to a cell that only the calling thread writes: no lock prefix, no RMW.
inline void ownerAdd(Cell& c, uint64_t n) {
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}
inline void ownerAddDouble(Cell& c, double d) {
  const double v = std::bit_cast<double>(c.load(std::memory_order_relaxed)) + d;
  c.store(std::bit_cast<uint64_t>(v), std::memory_order_relaxed);
}

// Cells that default-constructed and rejected handles write to. Never read.
Cell* discardCells();

class FamilyBase;

} // namespace detail

// Increments one counter series on one shard. Cheap to copy; cache it.
class CounterHandle {
public:
  // A handle bound to nothing: updates are discarded.
  CounterHandle() : cell_(detail::discardCells()) {}

  void inc() { detail::ownerAdd(*cell_, 1); }
  void add(uint64_t n) { detail::ownerAdd(*cell_, n); }

private:
  friend class CounterFamily;
  explicit CounterHandle(detail::Cell* cell) : cell_(cell) {}
  detail::Cell* cell_;
};

// Updates one gauge series' contribution from one shard. The series' value is the sum of the
// contributions of every shard, so inc()/dec() from different workers add up; set() sets
// only this shard's contribution (use one shard, or a callback, for a single global value).
class GaugeHandle {
public:
  GaugeHandle() : cell_(detail::discardCells()) {}

  void set(double v) { cell_->store(std::bit_cast<uint64_t>(v), std::memory_order_relaxed); }
  void add(double d) { detail::ownerAddDouble(*cell_, d); }
  void sub(double d) { detail::ownerAddDouble(*cell_, -d); }
  void inc() { add(1.0); }
  void dec() { add(-1.0); }

private:
  friend class GaugeFamily;
  explicit GaugeHandle(detail::Cell* cell) : cell_(cell) {}
  detail::Cell* cell_;
};

// Records observations into one histogram series on one shard.
class HistogramHandle {
public:
  HistogramHandle() : cells_(detail::discardCells()) {}

  // Counts `v` in the first bucket whose upper bound is >= v. NaN is ignored.
  void observe(double v) {
    if (v != v)
      return;
    const size_t i = static_cast<size_t>(std::lower_bound(bounds_, bounds_ + n_, v) - bounds_);
    detail::ownerAdd(cells_[i], 1);
    detail::ownerAddDouble(cells_[n_ + 1], v);
  }
  // Observes a duration in seconds.
  void observe(std::chrono::nanoseconds d) {
    observe(std::chrono::duration<double>(d).count());
  }

private:
  friend class HistogramFamily;
  HistogramHandle(detail::Cell* cells, const double* bounds, size_t n)
      : cells_(cells), bounds_(bounds), n_(n) {}
  // n_ + 1 per-bucket (not cumulative) counts, the last for +Inf, then the sum's bits.
  detail::Cell* cells_;
  const double* bounds_ = nullptr;
  size_t n_ = 0;
};

class Registry;

// Keeps a callback series registered; destroying (or reset()) removes the series, after
// which the callback is never called again. Must not outlive its registry.
class CallbackRegistration {
public:
  CallbackRegistration() = default;
  CallbackRegistration(CallbackRegistration&& o) noexcept { *this = std::move(o); }
  CallbackRegistration& operator=(CallbackRegistration&& o) noexcept;
  CallbackRegistration(const CallbackRegistration&) = delete;
  CallbackRegistration& operator=(const CallbackRegistration&) = delete;
  ~CallbackRegistration() { reset(); }

  void reset();
  bool active() const { return family_ != nullptr; }

private:
  friend class detail::FamilyBase;
  CallbackRegistration(detail::FamilyBase* family, LabelValues values, uint64_t id)
      : family_(family), values_(std::move(values)), id_(id) {}
  detail::FamilyBase* family_ = nullptr;
  LabelValues values_;
  uint64_t id_ = 0;
};

// A histogram series' merged state, as read by a scrape.
struct HistogramSnapshot {
  std::vector<double> bounds;       // finite upper bounds
  std::vector<uint64_t> cumulative; // bounds.size() + 1 entries; the last is +Inf == count
  double sum = 0;
  uint64_t count = 0;
};

namespace detail {

// What the three family kinds share. Owned by the registry; lives as long as it does.
class FamilyBase {
public:
  virtual ~FamilyBase() = default;

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const LabelNames& labelNames() const { return label_names_; }
  MetricType type() const { return type_; }
  // Children (series) currently registered, sharded and callback ones alike.
  size_t childCount() const;

protected:
  friend class trellis::telemetry::Registry;
  friend class trellis::telemetry::CallbackRegistration;

  struct Child {
    static constexpr size_t kNoSlot = ~size_t{0};
    size_t slot = kNoSlot; // first cell in every shard; kNoSlot for a callback child
    uint64_t callback_id = 0;
    std::function<uint64_t()> counter_fn;
    std::function<double()> gauge_fn;
  };

  FamilyBase(Registry& registry, MetricType type, std::string name, std::string help,
             LabelNames label_names, std::vector<double> bounds);

  // Cells per child in each shard.
  size_t cellsPerChild() const { return type_ == MetricType::kHistogram ? bounds_.size() + 2 : 1; }
  // Finds or creates the sharded child for `values`, returning its cells in `shard`, or the
  // discard cells when the child cannot exist. Takes the registry lock.
  Cell* resolve(size_t shard, const LabelValues& values);
  // Adds a callback child. Takes the registry lock.
  Result<CallbackRegistration> addCallbackChild(const LabelValues& values, Child child);
  void removeCallbackChild(const LabelValues& values, uint64_t id);
  // Label values checked for arity (a release assert: label names are code) and normalised
  // (valid UTF-8, cut to the registry's length limit).
  LabelValues normalise(const LabelValues& values) const;
  std::mutex& registryMutex() const;
  // Sum over shards of the cell at `slot + offset`. Registry lock held.
  uint64_t sumCells(size_t slot, size_t offset) const;
  double sumDoubleCells(size_t slot, size_t offset) const;
  HistogramSnapshot snapshotLocked(const Child& c) const;

  Registry& registry_;
  const MetricType type_;
  const std::string name_;
  const std::string help_;
  const LabelNames label_names_;
  const std::vector<double> bounds_; // histograms only
  std::map<LabelValues, Child> children_;
  uint64_t rejected_ = 0; // children refused for the series limit or a conflict
};

} // namespace detail

class CounterFamily : public detail::FamilyBase {
public:
  // Finds or creates the child for `values` (one per label name) and returns a handle that
  // adds to `shard`'s cell. Takes the registry lock: call once, off the hot path, and cache.
  CounterHandle handle(size_t shard, const LabelValues& values = {}) {
    return CounterHandle(resolve(shard, values));
  }
  // Adds a child whose value is `fn()` at every scrape. `fn` runs on the scraping thread,
  // under the registry lock: it must be thread-safe, quick, and must not use the registry.
  // Fails when a child with these values exists or the series limit is reached.
  Result<CallbackRegistration> addCallback(const LabelValues& values,
                                           std::function<uint64_t()> fn);
  // The child's value summed over shards (0 when there is no such child).
  uint64_t value(const LabelValues& values = {}) const;

private:
  friend class Registry;
  using FamilyBase::FamilyBase;
};

class GaugeFamily : public detail::FamilyBase {
public:
  GaugeHandle handle(size_t shard, const LabelValues& values = {}) {
    return GaugeHandle(resolve(shard, values));
  }
  // As CounterFamily::addCallback; for "remaining capacity", "active connections" and the like.
  Result<CallbackRegistration> addCallback(const LabelValues& values, std::function<double()> fn);
  double value(const LabelValues& values = {}) const;

private:
  friend class Registry;
  using FamilyBase::FamilyBase;
};

class HistogramFamily : public detail::FamilyBase {
public:
  HistogramHandle handle(size_t shard, const LabelValues& values = {}) {
    return HistogramHandle(resolve(shard, values), bounds_.data(), bounds_.size());
  }
  const std::vector<double>& bounds() const { return bounds_; }
  // Merged buckets, sum and count (all zero when there is no such child).
  HistogramSnapshot snapshot(const LabelValues& values = {}) const;

private:
  friend class Registry;
  using FamilyBase::FamilyBase;
};

// One thread's view of a registry: resolves handles on that thread's shard.
class Scope {
public:
  Scope(Registry& registry, size_t shard) : registry_(&registry), shard_(shard) {}

  size_t shard() const { return shard_; }
  Registry& registry() const { return *registry_; }

  CounterHandle counter(CounterFamily& f, const LabelValues& values = {}) const {
    return f.handle(shard_, values);
  }
  GaugeHandle gauge(GaugeFamily& f, const LabelValues& values = {}) const {
    return f.handle(shard_, values);
  }
  HistogramHandle histogram(HistogramFamily& f, const LabelValues& values = {}) const {
    return f.handle(shard_, values);
  }

private:
  Registry* registry_;
  size_t shard_;
};

// The set of metric families one process exposes on /metrics.
class Registry {
public:
  explicit Registry(RegistryOptions options = {});
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  size_t shardCount() const { return options_.shards; }
  const RegistryOptions& options() const { return options_; }
  // The view for shard `shard` (< shardCount(); a release assert).
  Scope scope(size_t shard);

  // Registers a family, or returns the existing one when a family of that name was
  // registered with the same type, help and label names. Errors (kInvalidArgument) name what
  // is wrong: an invalid metric or label name, a counter not ending in `_total`, a reserved
  // label (`__*`, `le` on a histogram), duplicate label names, bad buckets; kAlreadyExists
  // when the name, or a series name it generates (`_bucket`, `_sum`, `_count`), is taken by
  // a different family.
  Result<CounterFamily*> counter(std::string_view name, std::string_view help,
                                 LabelNames label_names = {});
  Result<GaugeFamily*> gauge(std::string_view name, std::string_view help,
                             LabelNames label_names = {});
  // `buckets`: strictly increasing finite upper bounds, 1..kMaxHistogramBuckets of them.
  Result<HistogramFamily*> histogram(std::string_view name, std::string_view help,
                                     LabelNames label_names = {},
                                     std::vector<double> buckets = defaultDurationBuckets());

  // Registers a family without labels whose one series is `fn()` at every scrape (see
  // CounterFamily::addCallback for what `fn` may do). Fails as counter()/gauge() do, and with
  // kAlreadyExists when the family already has its series.
  Result<CallbackRegistration> counterCallback(std::string_view name, std::string_view help,
                                               std::function<uint64_t()> fn);
  Result<CallbackRegistration> gaugeCallback(std::string_view name, std::string_view help,
                                             std::function<double()> fn);

  // Renders every family with at least one child in the Prometheus text format 0.0.4:
  // families sorted by name, children by label values, one `# HELP` and `# TYPE` each.
  std::string renderPrometheus() const;
  void renderPrometheus(std::string& out) const;

  // Children over all families.
  size_t seriesCount() const;

private:
  friend class detail::FamilyBase;
  friend class CallbackRegistration;

  template <typename F>
  Result<F*> registerFamily(MetricType type, std::string_view name, std::string_view help,
                            LabelNames label_names, std::vector<double> bounds,
                            bool create_unlabelled_child = true);
  // Reserves `n` consecutive cells in every shard; returns the first cell's index.
  size_t allocateCellsLocked(size_t n);
  detail::Cell& cellLocked(size_t shard, size_t index) const;
  void noteRejectedLocked(detail::FamilyBase& family);
  void renderFamilyLocked(const detail::FamilyBase& f, std::string& out) const;

  // A shard's memory: blocks of cells written only by the shard's thread.
  static constexpr size_t kCellsPerBlock = 512;
  struct alignas(64) Block {
    detail::Cell cells[kCellsPerBlock] = {};
  };

  const RegistryOptions options_;
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<detail::FamilyBase>, std::less<>> families_;
  std::set<std::string, std::less<>> series_names_; // every sample name a family produces
  std::vector<std::vector<std::unique_ptr<Block>>> blocks_; // [shard][block]
  size_t next_cell_ = 0;
  uint64_t next_callback_id_ = 1;
  CounterFamily* rejected_family_ = nullptr;
};

} // namespace trellis::telemetry
