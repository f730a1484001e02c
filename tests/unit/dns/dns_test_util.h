#pragma once

#include <algorithm>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "dns/directory.h"
#include "dns/random.h"
#include "dns/wire.h"

namespace trellis::dns::testing {

// An in-memory catalog. Names are stored lower-case and looked up case-insensitively, as the
// Directory contract asks.
class FakeDirectory : public Directory {
public:
  void addService(const std::string& name) { services_[asciiLower(name)]; }

  void addInstance(const std::string& service, ServiceInstance inst,
                   std::vector<std::string> tags = {}) {
    services_[asciiLower(service)].push_back({std::move(inst), std::move(tags)});
  }

  void addNode(const std::string& name, std::vector<std::string> addresses) {
    NodeRecord r;
    for (const auto& a : addresses)
      r.addresses.push_back(asio::ip::make_address(a));
    nodes_[asciiLower(name)] = r;
  }

  // Directory
  std::vector<ServiceInstance> serviceInstances(std::string_view service,
                                                std::optional<std::string_view> tag) override {
    ++instance_calls;
    std::vector<ServiceInstance> out;
    auto it = services_.find(asciiLower(service));
    if (it == services_.end())
      return out;
    for (const auto& e : it->second) {
      if (tag && std::none_of(e.tags.begin(), e.tags.end(),
                              [&](const std::string& t) { return asciiEqualsIgnoreCase(t, *tag); }))
        continue;
      out.push_back(e.inst);
    }
    return out;
  }
  bool serviceExists(std::string_view service) override {
    return services_.count(asciiLower(service)) > 0;
  }
  std::optional<NodeRecord> node(std::string_view node) override {
    auto it = nodes_.find(asciiLower(node));
    if (it == nodes_.end())
      return std::nullopt;
    return it->second;
  }

  int instance_calls = 0;

private:
  struct Entry {
    ServiceInstance inst;
    std::vector<std::string> tags;
  };
  std::map<std::string, std::vector<Entry>> services_;
  std::map<std::string, NodeRecord> nodes_;
};

// A seeded, reproducible random source.
class SeededRandom : public RandomSource {
public:
  explicit SeededRandom(uint64_t seed = 42) : rng_(seed) {}
  uint64_t random() override { return rng_(); }

private:
  std::mt19937_64 rng_;
};

inline ServiceInstance instance(std::string node, const std::string& address, uint16_t port,
                                Health health = Health::kPassing, bool on_node_address = true) {
  ServiceInstance i;
  i.node = std::move(node);
  i.address = asio::ip::make_address(address);
  i.port = port;
  i.health = health;
  i.on_node_address = on_node_address;
  return i;
}

struct QueryOptions {
  uint16_t id = 0x1234;
  std::optional<uint16_t> edns_size{}; // an OPT record with this payload size
  uint8_t edns_version = 0;
  uint16_t klass = kClassIn;
  bool rd = true;
};

// A query as a stub resolver would send it.
inline std::vector<uint8_t> makeQuery(std::string_view name, RrType type, QueryOptions opts = {}) {
  MessageBuilder b(kMaxMessageSize);
  Header h;
  h.id = opts.id;
  h.rd = opts.rd;
  b.setHeader(h);
  Question q;
  q.name = Name::fromString(name).value();
  q.type = type;
  q.klass = opts.klass;
  EXPECT_TRUE(b.addQuestion(q));
  if (opts.edns_size) {
    Edns e;
    e.udp_payload_size = *opts.edns_size;
    e.version = opts.edns_version;
    EXPECT_TRUE(b.addEdns(e));
  }
  return b.finish();
}

inline Message parseOrDie(const std::vector<uint8_t>& wire) {
  auto m = parseMessage(wire);
  EXPECT_TRUE(m.ok()) << (m.ok() ? "" : m.error().message);
  if (!m.ok())
    return Message{};
  return std::move(m).value();
}

inline std::string addressOf(const ResourceRecord& rr) {
  if (auto* v4 = std::get_if<asio::ip::address_v4>(&rr.rdata))
    return v4->to_string();
  if (auto* v6 = std::get_if<asio::ip::address_v6>(&rr.rdata))
    return v6->to_string();
  return "";
}

inline std::vector<std::string> sortedAddresses(const std::vector<ResourceRecord>& rrs) {
  std::vector<std::string> out;
  for (const auto& rr : rrs)
    out.push_back(addressOf(rr));
  std::sort(out.begin(), out.end());
  return out;
}

} // namespace trellis::dns::testing
