#include "telemetry/metrics.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "base/log.h"
#include "telemetry/text.h"

namespace trellis::telemetry {
namespace {

// Release assert: label names and their count are code, so a mismatch is a bug to stop on.
[[noreturn]] void fatal(const std::string& msg) {
  TLOG_ERROR("telemetry: {}", msg);
  std::fprintf(stderr, "telemetry: %s\n", msg.c_str());
  std::abort();
}

bool isMetricName(std::string_view s) {
  if (s.empty())
    return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
      return false;
  }
  return true;
}

bool isLabelName(std::string_view s) {
  if (s.empty())
    return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
      return false;
  }
  return true;
}

bool endsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::vector<std::string> seriesNamesOf(MetricType type, std::string_view name) {
  std::vector<std::string> names{std::string(name)};
  if (type == MetricType::kHistogram) {
    for (const char* suffix : {"_bucket", "_sum", "_count"})
      names.push_back(std::string(name) + suffix);
  }
  return names;
}

void appendUint(uint64_t v, std::string& out) {
  const fmt::format_int digits(v);
  out.append(digits.data(), digits.size());
}

// Appends `{a="x",b="y"` (no closing brace) or nothing when there are no labels and no
// extra label follows.
void appendLabels(const LabelNames& names, const LabelValues& values, std::string& out) {
  for (size_t i = 0; i < names.size(); ++i) {
    out.push_back(i == 0 ? '{' : ',');
    out.append(names[i]);
    out.append("=\"");
    appendPrometheusLabelValue(values[i], out);
    out.push_back('"');
  }
}

void appendSample(std::string_view name, std::string_view suffix, const LabelNames& names,
                  const LabelValues& values, double v, std::string& out) {
  out.append(name);
  out.append(suffix);
  appendLabels(names, values, out);
  if (!names.empty())
    out.push_back('}');
  out.push_back(' ');
  appendPrometheusValue(v, out);
  out.push_back('\n');
}

void appendSample(std::string_view name, std::string_view suffix, const LabelNames& names,
                  const LabelValues& values, uint64_t v, std::string& out) {
  out.append(name);
  out.append(suffix);
  appendLabels(names, values, out);
  if (!names.empty())
    out.push_back('}');
  out.push_back(' ');
  appendUint(v, out);
  out.push_back('\n');
}

} // namespace

const char* metricTypeName(MetricType type) {
  switch (type) {
  case MetricType::kCounter:
    return "counter";
  case MetricType::kGauge:
    return "gauge";
  case MetricType::kHistogram:
    return "histogram";
  }
  return "untyped";
}

const std::vector<double>& defaultDurationBuckets() {
  static const std::vector<double> kBuckets{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                            0.1,    0.25,  0.5,    1,     2.5,  5,     10};
  return kBuckets;
}

namespace detail {

Cell* discardCells() {
  // Written concurrently by any thread holding an unbound handle; atomics keep that defined.
  static Cell cells[kMaxHistogramBuckets + 2] = {};
  return cells;
}

FamilyBase::FamilyBase(Registry& registry, MetricType type, std::string name, std::string help,
                       LabelNames label_names, std::vector<double> bounds)
    : registry_(registry), type_(type), name_(std::move(name)), help_(std::move(help)),
      label_names_(std::move(label_names)), bounds_(std::move(bounds)) {}

std::mutex& FamilyBase::registryMutex() const { return registry_.mu_; }

size_t FamilyBase::childCount() const {
  std::lock_guard lock(registry_.mu_);
  return children_.size();
}

LabelValues FamilyBase::normalise(const LabelValues& values) const {
  if (values.size() != label_names_.size()) {
    fatal(fmt::format("metric {}: {} label values given for {} label names", name_,
                      values.size(), label_names_.size()));
  }
  LabelValues out;
  out.reserve(values.size());
  for (const std::string& v : values) {
    std::string s;
    appendValidUtf8(truncateUtf8(v, registry_.options_.max_label_value_bytes), s);
    out.push_back(std::move(s));
  }
  return out;
}

Cell* FamilyBase::resolve(size_t shard, const LabelValues& values) {
  if (shard >= registry_.shardCount()) {
    fatal(fmt::format("metric {}: shard {} out of range (registry has {})", name_, shard,
                      registry_.shardCount()));
  }
  LabelValues key = normalise(values);
  std::lock_guard lock(registry_.mu_);
  auto it = children_.find(key);
  if (it == children_.end()) {
    if (children_.size() >= registry_.options_.max_series_per_family) {
      registry_.noteRejectedLocked(*this);
      return discardCells();
    }
    Child child;
    child.slot = registry_.allocateCellsLocked(cellsPerChild());
    it = children_.emplace(std::move(key), std::move(child)).first;
  } else if (it->second.slot == Child::kNoSlot) {
    TLOG_ERROR("metric {}: a callback series already has these label values", name_);
    registry_.noteRejectedLocked(*this);
    return discardCells();
  }
  return &registry_.cellLocked(shard, it->second.slot);
}

Result<CallbackRegistration> FamilyBase::addCallbackChild(const LabelValues& values,
                                                          Child child) {
  LabelValues key = normalise(values);
  std::lock_guard lock(registry_.mu_);
  if (children_.count(key) != 0) {
    return makeError(ErrorCode::kAlreadyExists, "metric {}: a series with these labels exists",
                     name_);
  }
  if (children_.size() >= registry_.options_.max_series_per_family) {
    registry_.noteRejectedLocked(*this);
    return makeError(ErrorCode::kResourceExhausted,
                     "metric {}: series limit ({}) reached", name_,
                     registry_.options_.max_series_per_family);
  }
  child.callback_id = registry_.next_callback_id_++;
  const uint64_t id = child.callback_id;
  children_.emplace(key, std::move(child));
  return CallbackRegistration(this, std::move(key), id);
}

void FamilyBase::removeCallbackChild(const LabelValues& values, uint64_t id) {
  std::function<uint64_t()> counter_fn;
  std::function<double()> gauge_fn;
  {
    std::lock_guard lock(registry_.mu_);
    auto it = children_.find(values);
    if (it == children_.end() || it->second.callback_id != id)
      return;
    // Destroy the callbacks outside the lock: their captures may own arbitrary things.
    counter_fn = std::move(it->second.counter_fn);
    gauge_fn = std::move(it->second.gauge_fn);
    children_.erase(it);
  }
}

uint64_t FamilyBase::sumCells(size_t slot, size_t offset) const {
  uint64_t total = 0;
  for (size_t s = 0; s < registry_.shardCount(); ++s)
    total += registry_.cellLocked(s, slot + offset).load(std::memory_order_relaxed);
  return total;
}

double FamilyBase::sumDoubleCells(size_t slot, size_t offset) const {
  double total = 0;
  for (size_t s = 0; s < registry_.shardCount(); ++s) {
    total += std::bit_cast<double>(
        registry_.cellLocked(s, slot + offset).load(std::memory_order_relaxed));
  }
  return total;
}

HistogramSnapshot FamilyBase::snapshotLocked(const Child& c) const {
  HistogramSnapshot snap;
  snap.bounds = bounds_;
  snap.cumulative.resize(bounds_.size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += sumCells(c.slot, i);
    snap.cumulative[i] = running;
  }
  snap.count = running;
  snap.sum = sumDoubleCells(c.slot, bounds_.size() + 1);
  return snap;
}

} // namespace detail

CallbackRegistration& CallbackRegistration::operator=(CallbackRegistration&& o) noexcept {
  if (this != &o) {
    reset();
    family_ = o.family_;
    values_ = std::move(o.values_);
    id_ = o.id_;
    o.family_ = nullptr;
  }
  return *this;
}

void CallbackRegistration::reset() {
  if (family_ != nullptr) {
    family_->removeCallbackChild(values_, id_);
    family_ = nullptr;
  }
}

Result<CallbackRegistration> CounterFamily::addCallback(const LabelValues& values,
                                                        std::function<uint64_t()> fn) {
  Child child;
  child.counter_fn = std::move(fn);
  return addCallbackChild(values, std::move(child));
}

uint64_t CounterFamily::value(const LabelValues& values) const {
  LabelValues key = normalise(values);
  std::lock_guard lock(registryMutex());
  auto it = children_.find(key);
  if (it == children_.end())
    return 0;
  if (it->second.counter_fn)
    return it->second.counter_fn();
  return sumCells(it->second.slot, 0);
}

Result<CallbackRegistration> GaugeFamily::addCallback(const LabelValues& values,
                                                      std::function<double()> fn) {
  Child child;
  child.gauge_fn = std::move(fn);
  return addCallbackChild(values, std::move(child));
}

double GaugeFamily::value(const LabelValues& values) const {
  LabelValues key = normalise(values);
  std::lock_guard lock(registryMutex());
  auto it = children_.find(key);
  if (it == children_.end())
    return 0;
  if (it->second.gauge_fn)
    return it->second.gauge_fn();
  return sumDoubleCells(it->second.slot, 0);
}

HistogramSnapshot HistogramFamily::snapshot(const LabelValues& values) const {
  LabelValues key = normalise(values);
  std::lock_guard lock(registryMutex());
  auto it = children_.find(key);
  if (it == children_.end()) {
    HistogramSnapshot empty;
    empty.bounds = bounds_;
    empty.cumulative.assign(bounds_.size() + 1, 0);
    return empty;
  }
  return snapshotLocked(it->second);
}

Registry::Registry(RegistryOptions options) : options_(options) {
  if (options_.shards == 0)
    fatal("registry needs at least one shard");
  blocks_.resize(options_.shards);
  rejected_family_ =
      counter("trellis_metrics_series_rejected_total",
              "Metric series not created because their family reached its series limit or "
              "the label values were taken by a series of another kind.",
              {"family"})
          .value();
}

Registry::~Registry() = default;

Scope Registry::scope(size_t shard) {
  if (shard >= options_.shards)
    fatal(fmt::format("scope {} out of range (registry has {} shards)", shard, options_.shards));
  return Scope(*this, shard);
}

Result<CounterFamily*> Registry::counter(std::string_view name, std::string_view help,
                                         LabelNames label_names) {
  if (!endsWith(name, "_total")) {
    return makeError(ErrorCode::kInvalidArgument,
                     "metric {}: a counter's name must end in _total", name);
  }
  return registerFamily<CounterFamily>(MetricType::kCounter, name, help, std::move(label_names),
                                       {});
}

Result<GaugeFamily*> Registry::gauge(std::string_view name, std::string_view help,
                                     LabelNames label_names) {
  return registerFamily<GaugeFamily>(MetricType::kGauge, name, help, std::move(label_names), {});
}

Result<HistogramFamily*> Registry::histogram(std::string_view name, std::string_view help,
                                             LabelNames label_names,
                                             std::vector<double> buckets) {
  if (buckets.empty() || buckets.size() > kMaxHistogramBuckets) {
    return makeError(ErrorCode::kInvalidArgument,
                     "metric {}: a histogram needs 1 to {} buckets, got {}", name,
                     kMaxHistogramBuckets, buckets.size());
  }
  for (size_t i = 0; i < buckets.size(); ++i) {
    if (!std::isfinite(buckets[i])) {
      return makeError(ErrorCode::kInvalidArgument,
                       "metric {}: bucket {} is not finite (+Inf is implicit)", name, i);
    }
    if (i > 0 && buckets[i] <= buckets[i - 1]) {
      return makeError(ErrorCode::kInvalidArgument,
                       "metric {}: buckets must strictly increase ({} after {})", name,
                       buckets[i], buckets[i - 1]);
    }
  }
  for (const std::string& l : label_names) {
    if (l == "le") {
      return makeError(ErrorCode::kInvalidArgument,
                       "metric {}: label name \"le\" is reserved for histogram buckets", name);
    }
  }
  return registerFamily<HistogramFamily>(MetricType::kHistogram, name, help,
                                         std::move(label_names), std::move(buckets));
}

Result<CallbackRegistration> Registry::counterCallback(std::string_view name,
                                                      std::string_view help,
                                                      std::function<uint64_t()> fn) {
  if (!endsWith(name, "_total")) {
    return makeError(ErrorCode::kInvalidArgument,
                     "metric {}: a counter's name must end in _total", name);
  }
  auto family = registerFamily<CounterFamily>(MetricType::kCounter, name, help, {}, {}, false);
  if (!family.ok())
    return family.error();
  return (*family)->addCallback({}, std::move(fn));
}

Result<CallbackRegistration> Registry::gaugeCallback(std::string_view name, std::string_view help,
                                                    std::function<double()> fn) {
  auto family = registerFamily<GaugeFamily>(MetricType::kGauge, name, help, {}, {}, false);
  if (!family.ok())
    return family.error();
  return (*family)->addCallback({}, std::move(fn));
}

template <typename F>
Result<F*> Registry::registerFamily(MetricType type, std::string_view name, std::string_view help,
                                    LabelNames label_names, std::vector<double> bounds,
                                    bool create_unlabelled_child) {
  if (!isMetricName(name)) {
    return makeError(ErrorCode::kInvalidArgument,
                     "metric name \"{}\" is invalid: use [a-zA-Z_:][a-zA-Z0-9_:]*", name);
  }
  if (!isValidUtf8(help))
    return makeError(ErrorCode::kInvalidArgument, "metric {}: help is not valid UTF-8", name);
  for (size_t i = 0; i < label_names.size(); ++i) {
    const std::string& l = label_names[i];
    if (!isLabelName(l)) {
      return makeError(ErrorCode::kInvalidArgument,
                       "metric {}: label name \"{}\" is invalid: use [a-zA-Z_][a-zA-Z0-9_]*",
                       name, l);
    }
    if (l.rfind("__", 0) == 0) {
      return makeError(ErrorCode::kInvalidArgument,
                       "metric {}: label name \"{}\" is reserved (starts with __)", name, l);
    }
    for (size_t j = 0; j < i; ++j) {
      if (label_names[j] == l) {
        return makeError(ErrorCode::kInvalidArgument, "metric {}: label \"{}\" given twice",
                         name, l);
      }
    }
  }

  std::lock_guard lock(mu_);
  if (auto it = families_.find(name); it != families_.end()) {
    detail::FamilyBase& f = *it->second;
    if (f.type() != type || f.help() != help || f.labelNames() != label_names ||
        f.bounds_ != bounds) {
      return makeError(ErrorCode::kAlreadyExists,
                       "metric {}: already registered as a {} with other help, labels or "
                       "buckets",
                       name, metricTypeName(f.type()));
    }
    return static_cast<F*>(&f);
  }
  const std::vector<std::string> series = seriesNamesOf(type, name);
  for (const std::string& s : series) {
    if (series_names_.count(s) != 0) {
      return makeError(ErrorCode::kAlreadyExists,
                       "metric {}: series name {} is already produced by another family", name,
                       s);
    }
  }
  series_names_.insert(series.begin(), series.end());
  std::unique_ptr<F> family(new F(*this, type, std::string(name), std::string(help),
                                  std::move(label_names), std::move(bounds)));
  F* raw = family.get();
  // A family without labels has exactly one series: create it now so it renders as 0.
  if (raw->labelNames().empty() && create_unlabelled_child) {
    detail::FamilyBase::Child child;
    child.slot = allocateCellsLocked(raw->cellsPerChild());
    raw->children_.emplace(LabelValues{}, std::move(child));
  }
  families_.emplace(std::string(name), std::move(family));
  return raw;
}

size_t Registry::allocateCellsLocked(size_t n) {
  // A child's cells must be contiguous in one block: skip the rest of a block that is short.
  if (next_cell_ / kCellsPerBlock != (next_cell_ + n - 1) / kCellsPerBlock)
    next_cell_ = (next_cell_ / kCellsPerBlock + 1) * kCellsPerBlock;
  const size_t first = next_cell_;
  next_cell_ += n;
  const size_t blocks_needed = (next_cell_ + kCellsPerBlock - 1) / kCellsPerBlock;
  for (auto& shard : blocks_) {
    while (shard.size() < blocks_needed)
      shard.push_back(std::make_unique<Block>());
  }
  return first;
}

detail::Cell& Registry::cellLocked(size_t shard, size_t index) const {
  return blocks_[shard][index / kCellsPerBlock]->cells[index % kCellsPerBlock];
}

void Registry::noteRejectedLocked(detail::FamilyBase& family) {
  ++family.rejected_;
  if (family.rejected_ > 1 || &family == rejected_family_)
    return; // the family's series exists already (or this is the rejection family itself)
  TLOG_WARN("metric {}: series limit ({}) reached or labels conflict; new series dropped",
            family.name(), options_.max_series_per_family);
  // The callback runs at scrape time under mu_, which guards rejected_.
  detail::FamilyBase::Child child;
  detail::FamilyBase* f = &family;
  child.counter_fn = [f] { return f->rejected_; };
  child.callback_id = next_callback_id_++;
  LabelValues key{std::string(truncateUtf8(family.name(), options_.max_label_value_bytes))};
  rejected_family_->children_.emplace(std::move(key), std::move(child));
}

void Registry::renderFamilyLocked(const detail::FamilyBase& f, std::string& out) const {
  if (f.children_.empty())
    return;
  out.append("# HELP ");
  out.append(f.name());
  out.push_back(' ');
  appendPrometheusHelp(f.help(), out);
  out.append("\n# TYPE ");
  out.append(f.name());
  out.push_back(' ');
  out.append(metricTypeName(f.type()));
  out.push_back('\n');

  const LabelNames& names = f.labelNames();
  for (const auto& [values, child] : f.children_) {
    switch (f.type()) {
    case MetricType::kCounter:
      appendSample(f.name(), "", names, values,
                   child.counter_fn ? child.counter_fn() : f.sumCells(child.slot, 0), out);
      break;
    case MetricType::kGauge:
      appendSample(f.name(), "", names, values,
                   child.gauge_fn ? child.gauge_fn() : f.sumDoubleCells(child.slot, 0), out);
      break;
    case MetricType::kHistogram: {
      const HistogramSnapshot snap = f.snapshotLocked(child);
      for (size_t i = 0; i <= snap.bounds.size(); ++i) {
        out.append(f.name());
        out.append("_bucket");
        appendLabels(names, values, out);
        out.append(names.empty() ? "{le=\"" : ",le=\"");
        if (i < snap.bounds.size())
          appendPrometheusValue(snap.bounds[i], out);
        else
          out.append("+Inf");
        out.append("\"} ");
        appendUint(snap.cumulative[i], out);
        out.push_back('\n');
      }
      appendSample(f.name(), "_sum", names, values, snap.sum, out);
      appendSample(f.name(), "_count", names, values, snap.count, out);
      break;
    }
    }
  }
}

std::string Registry::renderPrometheus() const {
  std::string out;
  renderPrometheus(out);
  return out;
}

void Registry::renderPrometheus(std::string& out) const {
  std::lock_guard lock(mu_);
  for (const auto& [name, family] : families_)
    renderFamilyLocked(*family, out);
}

size_t Registry::seriesCount() const {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto& [name, family] : families_)
    n += family->children_.size();
  return n;
}

} // namespace trellis::telemetry
