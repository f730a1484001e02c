#include "dns/zone.h"

#include <set>

#include <gtest/gtest.h>

#include "base/time.h"
#include "dns/dns_test_util.h"

namespace trellis::dns {
namespace {

using testing::FakeDirectory;
using testing::instance;
using testing::makeQuery;
using testing::parseOrDie;
using testing::QueryOptions;
using testing::SeededRandom;
using testing::sortedAddresses;

class ZoneTest : public ::testing::Test {
protected:
  ZoneTest() {
    dir_.addNode("node1", {"10.0.0.1"});
    dir_.addNode("node2", {"10.0.0.2", "fd00::2"});
    dir_.addNode("node3", {"10.0.0.3"});
    dir_.addInstance("web", instance("node1", "10.0.0.1", 8080), {"primary", "v1"});
    dir_.addInstance("web", instance("node2", "10.0.0.2", 8080, Health::kWarning), {"v1"});
    dir_.addInstance("web", instance("node3", "10.0.0.3", 8080, Health::kCritical), {"v1"});
    // Listens on its own address, not its node's: the SRV target is an address name.
    dir_.addInstance("web", instance("node2", "fd00::99", 9090, Health::kPassing, false));
    dir_.addInstance("db", instance("node1", "10.0.0.1", 5432), {"primary"});
    dir_.addInstance("db", instance("node2", "10.0.0.2", 5432), {"replica", "us.east"});
    dir_.addService("empty");
    dir_.addInstance("sick", instance("node3", "10.0.0.3", 1, Health::kCritical));
  }

  Zone& zone(ZoneConfig cfg = {}) {
    auto z = Zone::create(std::move(cfg), dir_, random_, time_);
    EXPECT_TRUE(z.ok()) << z.error().message();
    zone_ = std::move(z).value();
    return *zone_;
  }

  Message ask(std::string_view name, RrType type, QueryOptions opts = {},
              Transport t = Transport::kUdp) {
    if (!zone_)
      zone();
    last_ = zone_->handle(makeQuery(name, type, opts), t);
    EXPECT_EQ(last_.action, ZoneResponse::Action::kReply);
    return parseOrDie(last_.wire);
  }

  void expectNegative(const Message& m, Rcode rcode) {
    EXPECT_EQ(m.rcode(), rcode);
    EXPECT_TRUE(m.answers.empty());
    ASSERT_EQ(m.authority.size(), 1u);
    const auto& soa = m.authority[0];
    EXPECT_EQ(soa.type, RrType::kSoa);
    EXPECT_EQ(soa.name.toString(), "trellis.");
  }

  FakeDirectory dir_;
  SeededRandom random_;
  SimulatedTimeSource time_;
  std::unique_ptr<Zone> zone_;
  ZoneResponse last_;
};

TEST_F(ZoneTest, ServiceAReturnsHealthyInstancesOnly) {
  auto m = ask("web.service.trellis", RrType::kA);
  EXPECT_EQ(m.rcode(), Rcode::kNoError);
  EXPECT_TRUE(m.header.qr);
  EXPECT_TRUE(m.header.aa);
  EXPECT_TRUE(m.header.rd);
  EXPECT_FALSE(m.header.ra);
  EXPECT_FALSE(m.header.tc);
  EXPECT_EQ(m.header.id, 0x1234);
  // Passing and warning are answered; critical (10.0.0.3) is not; the v6 one is not an A.
  EXPECT_EQ(sortedAddresses(m.answers), (std::vector<std::string>{"10.0.0.1", "10.0.0.2"}));
  for (const auto& rr : m.answers) {
    EXPECT_EQ(rr.type, RrType::kA);
    EXPECT_EQ(rr.ttl, 0u);
    EXPECT_EQ(rr.name.toString(), "web.service.trellis.");
  }
  EXPECT_TRUE(m.authority.empty());
}

TEST_F(ZoneTest, OnlyPassingExcludesWarning) {
  ZoneConfig cfg;
  cfg.only_passing = true;
  zone(cfg);
  auto m = ask("web.service.trellis", RrType::kA);
  EXPECT_EQ(sortedAddresses(m.answers), (std::vector<std::string>{"10.0.0.1"}));
}

TEST_F(ZoneTest, ServiceAaaa) {
  auto m = ask("web.service.trellis", RrType::kAaaa);
  EXPECT_EQ(m.rcode(), Rcode::kNoError);
  ASSERT_EQ(m.answers.size(), 1u);
  EXPECT_EQ(m.answers[0].type, RrType::kAaaa);
  EXPECT_EQ(testing::addressOf(m.answers[0]), "fd00::99");
}

TEST_F(ZoneTest, AaaaForV4OnlyServiceIsNodata) {
  auto m = ask("db.service.trellis", RrType::kAaaa);
  expectNegative(m, Rcode::kNoError);
}

TEST_F(ZoneTest, TagFiltersInstances) {
  auto m = ask("primary.web.service.trellis", RrType::kA);
  EXPECT_EQ(sortedAddresses(m.answers), (std::vector<std::string>{"10.0.0.1"}));
  m = ask("replica.db.service.trellis", RrType::kA);
  EXPECT_EQ(sortedAddresses(m.answers), (std::vector<std::string>{"10.0.0.2"}));
  // A tag with a dot spans two labels.
  m = ask("us.east.db.service.trellis", RrType::kA);
  EXPECT_EQ(sortedAddresses(m.answers), (std::vector<std::string>{"10.0.0.2"}));
  // No instance has the tag: the name does not exist.
  m = ask("canary.web.service.trellis", RrType::kA);
  expectNegative(m, Rcode::kNxDomain);
}

TEST_F(ZoneTest, SrvWithTargetsAndAdditionals) {
  auto m = ask("web.service.trellis", RrType::kSrv);
  EXPECT_EQ(m.rcode(), Rcode::kNoError);
  ASSERT_EQ(m.answers.size(), 3u);
  std::map<std::string, uint16_t> targets;
  for (const auto& rr : m.answers) {
    ASSERT_EQ(rr.type, RrType::kSrv);
    const auto& srv = std::get<SrvData>(rr.rdata);
    EXPECT_EQ(srv.priority, 1);
    EXPECT_EQ(srv.weight, 1);
    targets[srv.target.toString()] = srv.port;
  }
  std::map<std::string, uint16_t> want = {
      {"node1.node.dc1.trellis.", 8080},
      {"node2.node.dc1.trellis.", 8080},
      {"fd000000000000000000000000000099.addr.dc1.trellis.", 9090}};
  EXPECT_EQ(targets, want);
  // Each target's address is in the additional section.
  std::map<std::string, std::string> glue;
  for (const auto& rr : m.additional)
    glue[rr.name.toString()] = testing::addressOf(rr);
  std::map<std::string, std::string> want_glue = {
      {"node1.node.dc1.trellis.", "10.0.0.1"},
      {"node2.node.dc1.trellis.", "10.0.0.2"},
      {"fd000000000000000000000000000099.addr.dc1.trellis.", "fd00::99"}};
  EXPECT_EQ(glue, want_glue);
}

TEST_F(ZoneTest, SrvTargetsResolve) {
  // The names handed out as SRV targets answer A/AAAA themselves.
  auto m = ask("node1.node.dc1.trellis", RrType::kA);
  EXPECT_EQ(sortedAddresses(m.answers), (std::vector<std::string>{"10.0.0.1"}));
  m = ask("fd000000000000000000000000000099.addr.dc1.trellis", RrType::kAaaa);
  EXPECT_EQ(sortedAddresses(m.answers), (std::vector<std::string>{"fd00::99"}));
  m = ask("0a000005.addr.trellis", RrType::kA);
  EXPECT_EQ(sortedAddresses(m.answers), (std::vector<std::string>{"10.0.0.5"}));
  m = ask("0a000005.addr.trellis", RrType::kAaaa);
  expectNegative(m, Rcode::kNoError);
  m = ask("0a00000z.addr.trellis", RrType::kA);
  expectNegative(m, Rcode::kNxDomain);
  m = ask("x.0a000005.addr.trellis", RrType::kA);
  expectNegative(m, Rcode::kNxDomain);
}

TEST_F(ZoneTest, Rfc2782Form) {
  auto m = ask("_web._tcp.service.trellis", RrType::kSrv);
  EXPECT_EQ(m.rcode(), Rcode::kNoError);
  EXPECT_EQ(m.answers.size(), 3u); // _tcp means any tag
  EXPECT_EQ(m.additional.size(), 3u);
  EXPECT_EQ(m.answers[0].name.toString(), "_web._tcp.service.trellis.");

  m = ask("_db._replica.service.trellis", RrType::kSrv);
  ASSERT_EQ(m.answers.size(), 1u);
  EXPECT_EQ(std::get<SrvData>(m.answers[0].rdata).target.toString(), "node2.node.dc1.trellis.");
  EXPECT_EQ(std::get<SrvData>(m.answers[0].rdata).port, 5432);

  m = ask("_db._canary.service.trellis", RrType::kSrv);
  expectNegative(m, Rcode::kNxDomain);
  m = ask("_nosuch._tcp.service.trellis", RrType::kSrv);
  expectNegative(m, Rcode::kNxDomain);
  // The RFC 2782 parent is an empty non-terminal, so minimising resolvers go on.
  m = ask("_tcp.service.trellis", RrType::kA);
  expectNegative(m, Rcode::kNoError);
}

TEST_F(ZoneTest, NodeLookup) {
  auto m = ask("node2.node.trellis", RrType::kA);
  EXPECT_EQ(m.rcode(), Rcode::kNoError);
  EXPECT_EQ(sortedAddresses(m.answers), (std::vector<std::string>{"10.0.0.2"}));
  m = ask("node2.node.trellis", RrType::kAaaa);
  EXPECT_EQ(sortedAddresses(m.answers), (std::vector<std::string>{"fd00::2"}));
  m = ask("node2.node.trellis", RrType::kAny);
  EXPECT_EQ(sortedAddresses(m.answers), (std::vector<std::string>{"10.0.0.2", "fd00::2"}));
  m = ask("node1.node.trellis", RrType::kAaaa);
  expectNegative(m, Rcode::kNoError);
  m = ask("nosuch.node.trellis", RrType::kA);
  expectNegative(m, Rcode::kNxDomain);
}

TEST_F(ZoneTest, NxdomainCarriesSoa) {
  time_.advance(std::chrono::hours(24 * 365 * 30)); // something far from zero
  ZoneConfig cfg;
  cfg.soa.min_ttl = 7;
  cfg.soa.refresh = 11;
  zone(cfg);
  for (const char* name :
       {"nosuch.service.trellis", "foo.trellis", "a.b.foo.trellis", "web.service.otherdc.trellis",
        "web.nosuch.trellis", "x.web.service.trellis"}) {
    auto m = ask(name, RrType::kA);
    expectNegative(m, Rcode::kNxDomain);
    const auto& soa = std::get<SoaData>(m.authority[0].rdata);
    EXPECT_EQ(soa.mname.toString(), "ns.trellis.");
    EXPECT_EQ(soa.rname.toString(), "hostmaster.trellis.");
    EXPECT_EQ(soa.serial, static_cast<uint32_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                                    time_.systemTime().time_since_epoch())
                                                    .count()));
    EXPECT_EQ(soa.refresh, 11u);
    EXPECT_EQ(soa.retry, 600u);
    EXPECT_EQ(soa.expire, 86400u);
    EXPECT_EQ(soa.minimum, 7u);
    EXPECT_EQ(m.authority[0].ttl, 7u);
  }
}

TEST_F(ZoneTest, NodataCases) {
  // Empty non-terminals, the apex, and names without data of the asked type.
  for (const char* name : {"trellis", "service.trellis", "node.trellis", "addr.trellis",
                           "dc1.trellis", "service.dc1.trellis", "node.dc1.trellis"}) {
    SCOPED_TRACE(name);
    expectNegative(ask(name, RrType::kA), Rcode::kNoError);
  }
  SCOPED_TRACE("types without data");
  expectNegative(ask("web.service.trellis", RrType::kTxt), Rcode::kNoError);
  expectNegative(ask("web.service.trellis", RrType::kMx), Rcode::kNoError);
  expectNegative(ask("web.service.trellis", static_cast<RrType>(4242)), Rcode::kNoError);
  expectNegative(ask("trellis", RrType::kNs), Rcode::kNoError);
  // A service known but without instances, or with none healthy.
  expectNegative(ask("empty.service.trellis", RrType::kA), Rcode::kNoError);
  expectNegative(ask("sick.service.trellis", RrType::kA), Rcode::kNoError);
  expectNegative(ask("sick.service.trellis", RrType::kSrv), Rcode::kNoError);
}

TEST_F(ZoneTest, ApexSoa) {
  auto m = ask("trellis", RrType::kSoa);
  EXPECT_EQ(m.rcode(), Rcode::kNoError);
  ASSERT_EQ(m.answers.size(), 1u);
  EXPECT_EQ(m.answers[0].type, RrType::kSoa);
  EXPECT_TRUE(m.authority.empty());
}

TEST_F(ZoneTest, DatacenterLabelIsOptional) {
  auto with = ask("web.service.dc1.trellis", RrType::kA);
  EXPECT_EQ(sortedAddresses(with.answers), (std::vector<std::string>{"10.0.0.1", "10.0.0.2"}));
}

TEST_F(ZoneTest, OutsideTheDomainIsRefused) {
  auto m = ask("example.com", RrType::kA);
  EXPECT_EQ(m.rcode(), Rcode::kRefused);
  EXPECT_FALSE(m.header.aa);
  EXPECT_TRUE(m.answers.empty());
  ASSERT_EQ(m.questions.size(), 1u);
  EXPECT_EQ(m.questions[0].name.toString(), "example.com.");
  // "trellis" must match whole labels.
  EXPECT_EQ(ask("web.service.nottrellis", RrType::kA).rcode(), Rcode::kRefused);
}

TEST_F(ZoneTest, OutsideTheDomainIsForwardedWithRecursion) {
  ZoneConfig cfg;
  cfg.recursion_available = true;
  zone(cfg);
  auto resp = zone_->handle(makeQuery("example.com", RrType::kA), Transport::kUdp);
  EXPECT_EQ(resp.action, ZoneResponse::Action::kForward);
  ASSERT_TRUE(resp.query);
  EXPECT_EQ(resp.query->question.name.toString(), "example.com.");
  // In-zone answers now advertise recursion.
  EXPECT_TRUE(ask("web.service.trellis", RrType::kA).header.ra);
}

TEST_F(ZoneTest, AltDomainAnswersUnderItsOwnName) {
  auto m = ask("web.service.consul", RrType::kSrv);
  EXPECT_EQ(m.rcode(), Rcode::kNoError);
  ASSERT_EQ(m.answers.size(), 3u);
  for (const auto& rr : m.answers)
    EXPECT_TRUE(
        std::get<SrvData>(rr.rdata).target.endsWith(Name::fromString("dc1.consul").value()));
  auto nx = ask("nosuch.service.consul", RrType::kA);
  EXPECT_EQ(nx.rcode(), Rcode::kNxDomain);
  ASSERT_EQ(nx.authority.size(), 1u);
  EXPECT_EQ(nx.authority[0].name.toString(), "consul.");
}

TEST_F(ZoneTest, CaseInsensitiveAndEchoesQuestionCase) {
  auto m = ask("WeB.SeRvIcE.TRELLIS", RrType::kA);
  EXPECT_EQ(m.rcode(), Rcode::kNoError);
  EXPECT_EQ(sortedAddresses(m.answers), (std::vector<std::string>{"10.0.0.1", "10.0.0.2"}));
  // Question and owner names come back byte for byte (resolvers using 0x20 check this).
  EXPECT_EQ(m.questions[0].name.labels(), (std::vector<std::string>{"WeB", "SeRvIcE", "TRELLIS"}));
  for (const auto& rr : m.answers)
    EXPECT_EQ(rr.name.labels(), (std::vector<std::string>{"WeB", "SeRvIcE", "TRELLIS"}));
  EXPECT_EQ(ask("NODE1.Node.DC1.Trellis", RrType::kA).answers.size(), 1u);
  EXPECT_EQ(ask("_WEB._TCP.service.trellis", RrType::kSrv).answers.size(), 3u);
  EXPECT_EQ(ask("PRIMARY.web.service.CONSUL", RrType::kA).answers.size(), 1u);
}

TEST_F(ZoneTest, ShufflingVariesOrder) {
  for (int i = 0; i < 8; ++i)
    dir_.addInstance("wide", instance(fmt::format("n{}", i), fmt::format("10.1.0.{}", i), 80));
  std::set<std::vector<std::string>> orders;
  std::set<std::string> firsts;
  for (int i = 0; i < 40; ++i) {
    auto m = ask("wide.service.trellis", RrType::kA);
    ASSERT_EQ(m.answers.size(), 8u);
    std::vector<std::string> order;
    for (const auto& rr : m.answers)
      order.push_back(testing::addressOf(rr));
    firsts.insert(order[0]);
    orders.insert(order);
  }
  EXPECT_GT(orders.size(), 30u);
  EXPECT_GE(firsts.size(), 5u); // the head moves, which is what clients use

  // The order comes from the injected source: the same seed, the same sequence.
  auto orderWith = [&](uint64_t seed) {
    SeededRandom r(seed);
    auto z = Zone::create(ZoneConfig{}, dir_, r, time_).value();
    auto m =
        parseOrDie(z->handle(makeQuery("wide.service.trellis", RrType::kA), Transport::kUdp).wire);
    std::vector<std::string> order;
    for (const auto& rr : m.answers)
      order.push_back(testing::addressOf(rr));
    return order;
  };
  EXPECT_EQ(orderWith(5), orderWith(5));
}

TEST_F(ZoneTest, TtlSettings) {
  ZoneConfig cfg;
  cfg.service_ttl = 30;
  cfg.node_ttl = 60;
  zone(cfg);
  auto m = ask("web.service.trellis", RrType::kSrv);
  for (const auto& rr : m.answers)
    EXPECT_EQ(rr.ttl, 30u);
  for (const auto& rr : m.additional)
    EXPECT_EQ(rr.ttl, 30u);
  m = ask("node1.node.trellis", RrType::kA);
  ASSERT_EQ(m.answers.size(), 1u);
  EXPECT_EQ(m.answers[0].ttl, 60u);
}

TEST_F(ZoneTest, AnswerLimit) {
  for (int i = 0; i < 10; ++i)
    dir_.addInstance("wide", instance(fmt::format("n{}", i), fmt::format("10.1.0.{}", i), 80));
  ZoneConfig cfg;
  cfg.max_answers = 3;
  zone(cfg);
  auto m = ask("wide.service.trellis", RrType::kA);
  EXPECT_EQ(m.answers.size(), 3u);
  EXPECT_FALSE(m.header.tc); // a limit, not a truncation
  m = ask("wide.service.trellis", RrType::kSrv, {}, Transport::kTcp);
  EXPECT_EQ(m.answers.size(), 3u);
  EXPECT_EQ(m.additional.size(), 3u); // only the kept targets' addresses
  std::set<std::string> srv_targets, glue_names;
  for (const auto& rr : m.answers)
    srv_targets.insert(std::get<SrvData>(rr.rdata).target.toString());
  for (const auto& rr : m.additional)
    glue_names.insert(rr.name.toString());
  EXPECT_EQ(srv_targets, glue_names);
}

class ZoneSizeTest : public ZoneTest {
protected:
  ZoneSizeTest() {
    for (int i = 0; i < 100; ++i)
      dir_.addInstance("big", instance(fmt::format("n{}", i),
                                       fmt::format("10.2.{}.{}", i / 250, i % 250 + 1), 80));
  }
};

TEST_F(ZoneSizeTest, UdpWithoutEdnsIsTruncatedTo512) {
  auto m = ask("big.service.trellis", RrType::kA);
  EXPECT_TRUE(m.header.tc);
  EXPECT_TRUE(last_.truncated);
  EXPECT_LE(last_.wire.size(), 512u);
  EXPECT_GT(m.answers.size(), 10u); // as many as fit
  EXPECT_LT(m.answers.size(), 100u);
  EXPECT_TRUE(m.additional.empty());
  // The same question over TCP gets everything.
  auto full = ask("big.service.trellis", RrType::kA, {}, Transport::kTcp);
  EXPECT_FALSE(full.header.tc);
  EXPECT_EQ(full.answers.size(), 100u);
}

TEST_F(ZoneSizeTest, EdnsPayloadSizeIsHonoured) {
  // 100 A records with compressed owners are 1600 bytes of answers.
  auto m = ask("big.service.trellis", RrType::kA, QueryOptions{.edns_size = 4096});
  EXPECT_FALSE(m.header.tc);
  EXPECT_EQ(m.answers.size(), 100u);
  ASSERT_TRUE(m.edns);
  EXPECT_EQ(m.edns->udp_payload_size, 4096); // we advertise max_udp_payload
  EXPECT_EQ(m.edns->version, 0);

  m = ask("big.service.trellis", RrType::kA, QueryOptions{.edns_size = 1000});
  EXPECT_TRUE(m.header.tc);
  EXPECT_LE(last_.wire.size(), 1000u);
  EXPECT_GT(last_.wire.size(), 900u);
  EXPECT_TRUE(m.edns); // OPT kept even when truncated

  // Below 512 counts as 512 (RFC 6891 6.2.5).
  m = ask("big.service.trellis", RrType::kA, QueryOptions{.edns_size = 100});
  EXPECT_TRUE(m.header.tc);
  EXPECT_LE(last_.wire.size(), 512u);
  EXPECT_GT(last_.wire.size(), 400u);

  // Above max_udp_payload is clamped to it.
  ZoneConfig cfg;
  cfg.max_udp_payload = 1232;
  zone(cfg);
  m = ask("big.service.trellis", RrType::kA, QueryOptions{.edns_size = 65000});
  EXPECT_TRUE(m.header.tc);
  EXPECT_LE(last_.wire.size(), 1232u);
  EXPECT_EQ(m.edns->udp_payload_size, 1232);
}

TEST_F(ZoneSizeTest, AdditionalsThatDoNotFitAreDroppedWithoutTc) {
  // Ten SRV answers fit in 512 bytes; their ten glue records do not.
  ZoneConfig cfg;
  cfg.max_answers = 10;
  zone(cfg);
  auto m = ask("big.service.trellis", RrType::kSrv);
  EXPECT_FALSE(m.header.tc);
  EXPECT_EQ(m.answers.size(), 10u);
  EXPECT_LT(m.additional.size(), 10u);
  EXPECT_LE(last_.wire.size(), 512u);
}

TEST_F(ZoneTest, UnknownEdnsVersionIsBadvers) {
  auto m =
      ask("web.service.trellis", RrType::kA, QueryOptions{.edns_size = 1232, .edns_version = 1});
  EXPECT_EQ(m.rcode(), Rcode::kBadVers);
  EXPECT_EQ(m.header.rcode, 0);
  ASSERT_TRUE(m.edns);
  EXPECT_EQ(m.edns->extended_rcode, 1);
  EXPECT_EQ(m.edns->version, 0);
  EXPECT_TRUE(m.answers.empty());
}

TEST_F(ZoneTest, AnyReturnsAddressesAndSrv) {
  auto m = ask("web.service.trellis", RrType::kAny);
  std::map<RrType, int> count;
  for (const auto& rr : m.answers)
    count[rr.type]++;
  EXPECT_EQ(count[RrType::kA], 2);
  EXPECT_EQ(count[RrType::kAaaa], 1);
  EXPECT_EQ(count[RrType::kSrv], 3);
  EXPECT_EQ(m.additional.size(), 3u);
}

TEST_F(ZoneTest, SameAddressIsAnsweredOnceButEachPortHasAnSrv) {
  dir_.addInstance("multi", instance("node1", "10.0.0.1", 1000));
  dir_.addInstance("multi", instance("node1", "10.0.0.1", 2000));
  EXPECT_EQ(ask("multi.service.trellis", RrType::kA).answers.size(), 1u);
  auto m = ask("multi.service.trellis", RrType::kSrv);
  EXPECT_EQ(m.answers.size(), 2u);
  EXPECT_EQ(m.additional.size(), 1u);
}

TEST_F(ZoneTest, V4MappedAddressesAreAnsweredAsV4) {
  dir_.addInstance("mapped", instance("node1", "::ffff:10.9.9.9", 80, Health::kPassing, false));
  auto m = ask("mapped.service.trellis", RrType::kA);
  EXPECT_EQ(sortedAddresses(m.answers), (std::vector<std::string>{"10.9.9.9"}));
  m = ask("mapped.service.trellis", RrType::kSrv);
  EXPECT_EQ(std::get<SrvData>(m.answers[0].rdata).target.toString(), "0a090909.addr.dc1.trellis.");
}

TEST_F(ZoneTest, NodeNamesThatAreNotDnsNamesGetAddressTargets) {
  dir_.addInstance("odd", instance("bad..name", "10.4.4.4", 80));
  auto m = ask("odd.service.trellis", RrType::kSrv);
  ASSERT_EQ(m.answers.size(), 1u);
  EXPECT_EQ(std::get<SrvData>(m.answers[0].rdata).target.toString(), "0a040404.addr.dc1.trellis.");
}

TEST_F(ZoneTest, ErrorRcodes) {
  zone();
  // Class CHAOS.
  EXPECT_EQ(ask("web.service.trellis", RrType::kTxt, QueryOptions{.klass = 3}).rcode(),
            Rcode::kRefused);
  // Zone transfers.
  EXPECT_EQ(ask("trellis", RrType::kAxfr).rcode(), Rcode::kNotImp);
  EXPECT_EQ(ask("trellis", RrType::kIxfr).rcode(), Rcode::kNotImp);
  // OPT as a question type.
  EXPECT_EQ(ask("trellis", RrType::kOpt).rcode(), Rcode::kFormErr);

  // Two questions: FORMERR with the ID kept.
  auto two = makeQuery("web.service.trellis", RrType::kA, QueryOptions{.id = 0xbeef});
  two[5] = 2;
  auto q2 = makeQuery("db.service.trellis", RrType::kA);
  two.insert(two.end(), q2.begin() + kHeaderSize, q2.end());
  auto r = zone_->handle(two, Transport::kUdp);
  ASSERT_EQ(r.action, ZoneResponse::Action::kReply);
  EXPECT_TRUE(r.malformed);
  ASSERT_TRUE(r.parse_error);
  EXPECT_EQ(r.parse_error->code, ParseErrorCode::kBadQuestionCount);
  auto m = parseOrDie(r.wire);
  EXPECT_EQ(m.rcode(), Rcode::kFormErr);
  EXPECT_EQ(m.header.id, 0xbeef);
  EXPECT_TRUE(m.header.qr);

  // UPDATE: NOTIMP, not malformed.
  auto update = makeQuery("trellis", RrType::kSoa);
  update[2] |= 5 << 3;
  r = zone_->handle(update, Transport::kUdp);
  ASSERT_EQ(r.action, ZoneResponse::Action::kReply);
  EXPECT_FALSE(r.malformed);
  m = parseOrDie(r.wire);
  EXPECT_EQ(m.rcode(), Rcode::kNotImp);
  EXPECT_EQ(m.header.opcode, Opcode::kUpdate);

  // Garbage after a readable header: FORMERR.
  std::vector<uint8_t> junk = {0x11, 0x22, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  r = zone_->handle(junk, Transport::kUdp);
  ASSERT_EQ(r.action, ZoneResponse::Action::kReply);
  EXPECT_TRUE(r.malformed);
  m = parseOrDie(r.wire);
  EXPECT_EQ(m.rcode(), Rcode::kFormErr);
  EXPECT_EQ(m.header.id, 0x1122);
  EXPECT_TRUE(m.header.rd);

  // Unreadable header, or a response: dropped.
  r = zone_->handle(std::vector<uint8_t>{1, 2, 3}, Transport::kUdp);
  EXPECT_EQ(r.action, ZoneResponse::Action::kDrop);
  EXPECT_TRUE(r.malformed);
  auto response = makeQuery("web.service.trellis", RrType::kA);
  response[2] |= 0x80;
  r = zone_->handle(response, Transport::kUdp);
  EXPECT_EQ(r.action, ZoneResponse::Action::kDrop);
}

TEST_F(ZoneTest, ConfigValidation) {
  auto bad = [&](ZoneConfig cfg, std::string_view needle) {
    auto st = cfg.validate();
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message().find(needle), std::string::npos) << st.error().message();
  };
  ZoneConfig c;
  EXPECT_TRUE(c.validate().ok());
  c.domain = "";
  bad(c, "domain");
  c = {};
  c.domain = "a..b";
  bad(c, "domain");
  c = {};
  c.alt_domains = {"Trellis."};
  bad(c, "listed twice");
  c = {};
  c.datacenter = "service";
  bad(c, "reserved");
  c = {};
  c.datacenter = "a.b";
  bad(c, "datacenter");
  c = {};
  c.max_udp_payload = 100;
  bad(c, "max_udp_payload");
  c = {};
  c.domain = std::string(63, 'x') + "." + std::string(63, 'y') + "." + std::string(63, 'z');
  bad(c, "too long");
  EXPECT_FALSE(Zone::create(c, dir_, random_, time_).ok());
}

} // namespace
} // namespace trellis::dns
