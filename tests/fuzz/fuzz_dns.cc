// Fuzzes the DNS wire parser and the zone's answer path with untrusted packets.
//
// Properties checked beyond "no crash, no sanitizer report":
//  - whatever parseMessage accepts, MessageBuilder can write back and parseMessage accepts
//    again with the same records;
//  - every reply the zone produces parses, fits the transport's limit, and carries the
//    request's ID.

#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>

#include "base/time.h"
#include "dns/directory.h"
#include "dns/random.h"
#include "dns/wire.h"
#include "dns/zone.h"

namespace {

using namespace trellis;
using namespace trellis::dns;

#define FUZZ_CHECK(cond)                                                                           \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      __builtin_trap();                                                                            \
  } while (0)

class FuzzDirectory : public Directory {
public:
  FuzzDirectory() {
    add("web", "node1", "10.0.0.1", 8080, Health::kPassing, true, {"primary"});
    add("web", "node2", "fd00::2", 8080, Health::kWarning, false, {"v1"});
    add("web", "node3", "10.0.0.3", 8080, Health::kCritical, true, {});
    for (int i = 0; i < 60; ++i)
      add("big", "n" + std::to_string(i), "10.1.0." + std::to_string(i + 1), 80, Health::kPassing,
          true, {"t" + std::to_string(i % 3)});
    services_["empty"];
    nodes_["node1"] = {{asio::ip::make_address("10.0.0.1")}};
    nodes_["node2"] = {{asio::ip::make_address("10.0.0.2"), asio::ip::make_address("fd00::2")}};
  }

  std::vector<ServiceInstance> serviceInstances(std::string_view service,
                                                std::optional<std::string_view> tag) override {
    std::vector<ServiceInstance> out;
    auto it = services_.find(std::string(service));
    if (it == services_.end())
      return out;
    for (const auto& [inst, tags] : it->second) {
      bool match = !tag;
      for (const auto& t : tags)
        match = match || t == *tag;
      if (match)
        out.push_back(inst);
    }
    return out;
  }
  bool serviceExists(std::string_view service) override {
    return services_.count(std::string(service)) > 0;
  }
  std::optional<NodeRecord> node(std::string_view node) override {
    auto it = nodes_.find(std::string(node));
    if (it == nodes_.end())
      return std::nullopt;
    return it->second;
  }

private:
  void add(const std::string& svc, const std::string& node, const std::string& addr, uint16_t port,
           Health health, bool on_node, std::vector<std::string> tags) {
    ServiceInstance i;
    i.node = node;
    i.address = asio::ip::make_address(addr);
    i.port = port;
    i.health = health;
    i.on_node_address = on_node;
    services_[svc].emplace_back(i, std::move(tags));
  }

  std::map<std::string, std::vector<std::pair<ServiceInstance, std::vector<std::string>>>>
      services_;
  std::map<std::string, NodeRecord> nodes_;
};

// Deterministic, so a crash reproduces from its input alone.
class CountingRandom : public RandomSource {
public:
  uint64_t random() override {
    return state_ = state_ * 6364136223846793005ULL + 1442695040888963407ULL;
  }

private:
  uint64_t state_ = 1;
};

struct Env {
  FuzzDirectory dir;
  CountingRandom random;
  SimulatedTimeSource time;
  std::unique_ptr<Zone> zone;
  std::unique_ptr<Zone> limited;

  Env() {
    zone = Zone::create(ZoneConfig{}, dir, random, time).value();
    ZoneConfig cfg;
    cfg.max_answers = 5;
    cfg.recursion_available = true;
    cfg.max_udp_payload = 1232;
    cfg.domain = "Example.Internal.";
    cfg.alt_domains = {"consul", "a.consul"};
    limited = Zone::create(cfg, dir, random, time).value();
  }
};

void roundTrip(const Message& m) {
  MessageBuilder b(kMaxMessageSize);
  b.setHeader(m.header);
  for (const auto& q : m.questions)
    if (!b.addQuestion(q))
      return;
  for (const auto& rr : m.answers)
    if (!b.addRecord(Section::kAnswer, rr))
      return;
  for (const auto& rr : m.authority)
    if (!b.addRecord(Section::kAuthority, rr))
      return;
  for (const auto& rr : m.additional)
    if (!b.addRecord(Section::kAdditional, rr))
      return;
  if (m.edns && !b.addEdns(*m.edns))
    return;
  auto wire = b.finish();
  auto again = parseMessage(wire);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->questions.size() == m.questions.size());
  FUZZ_CHECK(again->answers.size() == m.answers.size());
  FUZZ_CHECK(again->authority.size() == m.authority.size());
  FUZZ_CHECK(again->additional.size() == m.additional.size());
  FUZZ_CHECK(again->edns.has_value() == m.edns.has_value());
  for (size_t i = 0; i < m.questions.size(); ++i)
    FUZZ_CHECK(again->questions[i].name.labels() == m.questions[i].name.labels());
  for (size_t i = 0; i < m.answers.size(); ++i) {
    FUZZ_CHECK(again->answers[i].name.labels() == m.answers[i].name.labels());
    FUZZ_CHECK(again->answers[i].type == m.answers[i].type);
  }
}

void answer(Zone& zone, std::span<const uint8_t> request, Transport transport) {
  ZoneResponse r = zone.handle(request, transport);
  if (r.action != ZoneResponse::Action::kReply)
    return;
  auto reply = parseMessage(r.wire);
  FUZZ_CHECK(reply.ok());
  FUZZ_CHECK(reply->header.qr);
  FUZZ_CHECK(request.size() >= 2);
  FUZZ_CHECK(reply->header.id == ((request[0] << 8) | request[1]));
  FUZZ_CHECK(reply->rcode() == r.rcode);
  if (r.query)
    FUZZ_CHECK(r.wire.size() <= zone.replyLimit(*r.query, transport));
  else
    FUZZ_CHECK(r.wire.size() <= kMinUdpPayload);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Env* env = new Env();
  std::span<const uint8_t> input(data, size);
  auto m = parseMessage(input);
  if (m.ok())
    roundTrip(m.value());
  answer(*env->zone, input, Transport::kUdp);
  answer(*env->zone, input, Transport::kTcp);
  answer(*env->limited, input, Transport::kUdp);
  return 0;
}
