#include "dns/wire.h"

#include <gtest/gtest.h>

#include "dns/dns_test_util.h"

namespace trellis::dns {
namespace {

using testing::makeQuery;
using testing::QueryOptions;

// "web.service.trellis. IN A", RD, with an EDNS0 OPT of 4096 bytes and DO set, written out by
// hand from RFC 1035 4.1 and RFC 6891 6.1.2 (as dig sends it).
const std::vector<uint8_t> kDigQuery = {
    0xab, 0xcd, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, // header
    3,    'w',  'e',  'b',  7,    's',  'e',  'r',  'v',  'i',  'c',  'e',
    7,    't',  'r',  'e',  'l',  'l',  'i',  's',  0,                // qname
    0x00, 0x01, 0x00, 0x01,                                           // A IN
    0x00, 0x00, 0x29, 0x10, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, // OPT
};

std::vector<uint8_t> header(uint16_t flags, uint16_t qd, uint16_t an, uint16_t ns, uint16_t ar) {
  std::vector<uint8_t> h = {0x12, 0x34};
  for (uint16_t v : {flags, qd, an, ns, ar}) {
    h.push_back(static_cast<uint8_t>(v >> 8));
    h.push_back(static_cast<uint8_t>(v));
  }
  return h;
}

std::vector<uint8_t> cat(std::vector<uint8_t> a, const std::vector<uint8_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(DnsWireTest, ParsesAHandWrittenQuery) {
  auto q = parseQuery(kDigQuery);
  ASSERT_TRUE(q.ok()) << q.error().message;
  EXPECT_EQ(q->header.id, 0xabcd);
  EXPECT_TRUE(q->header.rd);
  EXPECT_TRUE(q->header.ad);
  EXPECT_FALSE(q->header.qr);
  EXPECT_EQ(q->question.name.toString(), "web.service.trellis.");
  EXPECT_EQ(q->question.type, RrType::kA);
  EXPECT_EQ(q->question.klass, kClassIn);
  ASSERT_TRUE(q->edns.has_value());
  EXPECT_EQ(q->edns->udp_payload_size, 4096);
  EXPECT_EQ(q->edns->version, 0);
  EXPECT_TRUE(q->edns->dnssec_ok);
}

TEST(DnsWireTest, BuiltQueryMatchesHandWrittenBytes) {
  auto built =
      makeQuery("web.service.trellis", RrType::kA, QueryOptions{.id = 0xabcd, .edns_size = 4096});
  auto expected = kDigQuery;
  expected[3] = 0x00;                   // no AD bit
  expected[expected.size() - 4] = 0x00; // no DO bit
  EXPECT_EQ(built, expected);
}

TEST(DnsWireTest, TruncationAtEveryOffsetFailsCleanly) {
  for (size_t len = 0; len < kDigQuery.size(); ++len) {
    std::vector<uint8_t> cut(kDigQuery.begin(), kDigQuery.begin() + static_cast<long>(len));
    auto q = parseQuery(cut);
    ASSERT_FALSE(q.ok()) << "accepted a query cut at " << len;
    if (len < kHeaderSize)
      EXPECT_EQ(q.error().code, ParseErrorCode::kTruncatedHeader) << len;
    else
      EXPECT_EQ(q.error().code, ParseErrorCode::kTruncated) << len << ": " << q.error().message;
    EXPECT_LE(q.error().offset, len);
    EXPECT_FALSE(q.error().message.empty());
  }
}

TEST(DnsWireTest, TruncatedResponseAtEveryOffsetFailsCleanly) {
  // A response with every record kind the builder writes, compressed.
  MessageBuilder b(kMaxMessageSize);
  Header h;
  h.qr = true;
  b.setHeader(h);
  Question q{Name::fromString("web.service.trellis").value(), RrType::kSrv, kClassIn};
  ASSERT_TRUE(b.addQuestion(q));
  ResourceRecord srv{q.name, RrType::kSrv, kClassIn, 5,
                     SrvData{1, 1, 8080, Name::fromString("n1.node.dc1.trellis").value()}};
  ASSERT_TRUE(b.addRecord(Section::kAnswer, srv));
  ResourceRecord soa{Name::fromString("trellis").value(), RrType::kSoa, kClassIn, 0,
                     SoaData{Name::fromString("ns.trellis").value(),
                             Name::fromString("hostmaster.trellis").value(), 1, 2, 3, 4, 5}};
  ASSERT_TRUE(b.addRecord(Section::kAuthority, soa));
  ResourceRecord a{Name::fromString("n1.node.dc1.trellis").value(), RrType::kA, kClassIn, 5,
                   asio::ip::make_address_v4("10.0.0.1")};
  ASSERT_TRUE(b.addRecord(Section::kAdditional, a));
  ASSERT_TRUE(b.addEdns(Edns{}));
  auto wire = b.finish();
  ASSERT_TRUE(parseMessage(wire).ok());
  for (size_t len = 0; len < wire.size(); ++len) {
    std::vector<uint8_t> cut(wire.begin(), wire.begin() + static_cast<long>(len));
    auto m = parseMessage(cut);
    ASSERT_FALSE(m.ok()) << "accepted a response cut at " << len;
    EXPECT_TRUE(m.error().code == ParseErrorCode::kTruncated ||
                m.error().code == ParseErrorCode::kTruncatedHeader ||
                m.error().code == ParseErrorCode::kBadRdata)
        << len << ": " << parseErrorCodeName(m.error().code);
  }
}

TEST(DnsWireTest, RejectsPointerToItself) {
  auto msg = cat(header(0x0100, 1, 0, 0, 0), {0xC0, 0x0C, 0x00, 0x01, 0x00, 0x01});
  auto q = parseQuery(msg);
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.error().code, ParseErrorCode::kBadPointer);
  EXPECT_EQ(q.error().offset, 12u);
}

TEST(DnsWireTest, RejectsForwardPointer) {
  auto msg = cat(header(0x0100, 1, 0, 0, 0), {0xC0, 0x12, 0x00, 0x01, 0x00, 0x01, 1, 'a', 0});
  auto q = parseQuery(msg);
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.error().code, ParseErrorCode::kBadPointer);
  EXPECT_NE(q.error().message.find("forward"), std::string::npos) << q.error().message;
}

TEST(DnsWireTest, RejectsBackwardPointerLoop) {
  // "x" then a pointer back to the start of the same name: each hop points backwards from
  // where it sits, yet the chain never ends.
  auto q = parseQuery(cat(header(0x0100, 1, 0, 0, 0), {1, 'x', 0xC0, 12, 0x00, 0x01, 0x00, 0x01}));
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.error().code, ParseErrorCode::kBadPointer);
  EXPECT_NE(q.error().message.find("loop"), std::string::npos) << q.error().message;
}

TEST(DnsWireTest, RejectsPointerLoopReachedFromAnotherName) {
  // Question "b." at 12..18; the answer's owner at 19 is "a" + a pointer to 19 itself.
  auto msg = header(0x8000, 1, 1, 0, 0);
  msg = cat(msg, {1, 'b', 0, 0x00, 0x01, 0x00, 0x01});
  msg = cat(msg, {1, 'a', 0xC0, 19, 0x00, 0x01, 0x00, 0x01, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4});
  auto m = parseMessage(msg);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().code, ParseErrorCode::kBadPointer);
  EXPECT_EQ(m.error().offset, 21u);
  EXPECT_NE(m.error().message.find("loop"), std::string::npos) << m.error().message;
}

TEST(DnsWireTest, AcceptsBackwardPointerChain) {
  // Question "x." at 12; answer owner "y" + ptr 12 at 19; additional owner ptr 19.
  auto msg = header(0x8000, 1, 1, 0, 1);
  msg = cat(msg, {1, 'x', 0, 0x00, 0x01, 0x00, 0x01});
  msg = cat(msg, {1, 'y', 0xC0, 12, 0x00, 0x01, 0x00, 0x01, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4});
  msg = cat(msg, {0xC0, 19, 0x00, 0x01, 0x00, 0x01, 0, 0, 0, 0, 0, 4, 5, 6, 7, 8});
  auto m = parseMessage(msg);
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->answers[0].name.toString(), "y.x.");
  EXPECT_EQ(m->additional[0].name.toString(), "y.x.");
  EXPECT_EQ(testing::addressOf(m->additional[0]), "5.6.7.8");
}

TEST(DnsWireTest, RejectsLabelLongerThan63) {
  std::vector<uint8_t> name = {64};
  name.insert(name.end(), 64, 'a');
  name.push_back(0);
  auto msg = cat(cat(header(0, 1, 0, 0, 0), name), {0, 1, 0, 1});
  auto q = parseQuery(msg);
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.error().code, ParseErrorCode::kLabelTooLong);
  EXPECT_EQ(q.error().offset, 12u);

  // The 10 label type (0x80..0xBF) is not valid either.
  msg = cat(header(0, 1, 0, 0, 0), {0x80, 'a', 0, 0, 1, 0, 1});
  q = parseQuery(msg);
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.error().code, ParseErrorCode::kLabelTooLong);
}

TEST(DnsWireTest, RejectsNameLongerThan255) {
  std::vector<uint8_t> name;
  for (int i = 0; i < 4; ++i) {
    name.push_back(63);
    name.insert(name.end(), 63, 'a');
  } // 256 bytes before the root
  name.push_back(0);
  auto q = parseQuery(cat(cat(header(0, 1, 0, 0, 0), name), {0, 1, 0, 1}));
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.error().code, ParseErrorCode::kNameTooLong);
}

TEST(DnsWireTest, NameLengthCountsLabelsReachedThroughPointers) {
  // Question: three 63-byte labels (193 bytes). Answer owner: a 63-byte label and a pointer
  // to the question: 64 + 193 = 257 bytes once decompressed.
  std::vector<uint8_t> qname;
  for (int i = 0; i < 3; ++i) {
    qname.push_back(63);
    qname.insert(qname.end(), 63, 'q');
  }
  qname.push_back(0);
  auto msg = cat(cat(header(0x8000, 1, 1, 0, 0), qname), {0, 1, 0, 1});
  std::vector<uint8_t> owner = {63};
  owner.insert(owner.end(), 63, 'o');
  owner.push_back(0xC0);
  owner.push_back(12);
  msg = cat(cat(msg, owner), {0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4});
  auto m = parseMessage(msg);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().code, ParseErrorCode::kNameTooLong);
}

TEST(DnsWireTest, RejectsBadCounts) {
  const std::vector<uint8_t> question = {1, 'a', 0, 0, 1, 0, 1};
  struct Case {
    std::vector<uint8_t> msg;
    ParseErrorCode code;
  } cases[] = {
      {cat(header(0, 0, 0, 0, 0), {}), ParseErrorCode::kBadQuestionCount},
      {cat(header(0, 2, 0, 0, 0), cat(question, question)), ParseErrorCode::kBadQuestionCount},
      {cat(header(0, 1, 1, 0, 0), question), ParseErrorCode::kUnexpectedRecords},
      {cat(header(0, 1, 0, 1, 0), question), ParseErrorCode::kUnexpectedRecords},
      {cat(header(0, 1, 0, 0, 1), question), ParseErrorCode::kTruncated},
      {cat(header(0, 1, 0, 0, 0), cat(question, {0, 0, 41, 2, 0, 0, 0, 0, 0, 0, 0})),
       ParseErrorCode::kTrailingData},
      {cat(header(0, 1, 0, 0, 0), cat(question, {0})), ParseErrorCode::kTrailingData},
  };
  for (const auto& c : cases) {
    auto q = parseQuery(c.msg);
    ASSERT_FALSE(q.ok());
    EXPECT_EQ(q.error().code, c.code) << q.error().message;
  }
  // A message claiming two questions but carrying one is cut off.
  auto m = parseMessage(cat(header(0, 2, 0, 0, 0), question));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().code, ParseErrorCode::kTruncated);
}

TEST(DnsWireTest, RejectsResponsesAndOtherOpcodes) {
  const std::vector<uint8_t> question = {1, 'a', 0, 0, 1, 0, 1};
  auto q = parseQuery(cat(header(0x8000, 1, 0, 0, 0), question));
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.error().code, ParseErrorCode::kNotAQuery);
  q = parseQuery(cat(header(5 << 11, 1, 0, 0, 0), question)); // UPDATE
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.error().code, ParseErrorCode::kUnsupportedOpcode);
}

TEST(DnsWireTest, RejectsBadOptRecords) {
  const std::vector<uint8_t> question = {1, 'a', 0, 0, 1, 0, 1};
  const std::vector<uint8_t> opt = {0, 0, 41, 2, 0, 0, 0, 0, 0, 0, 0};
  auto q = parseQuery(cat(header(0, 1, 0, 0, 2), cat(cat(question, opt), opt)));
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.error().code, ParseErrorCode::kBadOpt);
  EXPECT_NE(q.error().message.find("second OPT"), std::string::npos);

  q = parseQuery(
      cat(header(0, 1, 0, 0, 1), cat(question, {1, 'x', 0, 0, 41, 2, 0, 0, 0, 0, 0, 0, 0})));
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.error().code, ParseErrorCode::kBadOpt);

  auto m = parseMessage(cat(header(0x8000, 1, 1, 0, 0), cat(question, opt)));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().code, ParseErrorCode::kBadOpt);

  // An option whose length runs past the OPT rdata.
  q = parseQuery(
      cat(header(0, 1, 0, 0, 1), cat(question, {0, 0, 41, 2, 0, 0, 0, 0, 0, 0, 4, 0, 10, 0, 9})));
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.error().code, ParseErrorCode::kBadRdata);

  // A well-formed option is kept.
  q = parseQuery(cat(header(0, 1, 0, 0, 1),
                     cat(question, {0, 0, 41, 4, 0, 1, 2, 0, 0, 0, 6, 0, 10, 0, 2, 0xaa, 0xbb})));
  ASSERT_TRUE(q.ok()) << q.error().message;
  EXPECT_EQ(q->edns->udp_payload_size, 0x400);
  EXPECT_EQ(q->edns->extended_rcode, 1);
  EXPECT_EQ(q->edns->version, 2);
  ASSERT_EQ(q->edns->options.size(), 1u);
  EXPECT_EQ(q->edns->options[0].code, 10);
  EXPECT_EQ(q->edns->options[0].data, (std::vector<uint8_t>{0xaa, 0xbb}));
}

TEST(DnsWireTest, RejectsRdataThatDoesNotMatchItsType) {
  const std::vector<uint8_t> question = {1, 'a', 0, 0, 1, 0, 1};
  // An A record with 5 bytes of rdata.
  auto m =
      parseMessage(cat(header(0x8000, 1, 1, 0, 0),
                       cat(question, {0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4, 5})));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().code, ParseErrorCode::kBadRdata);
  // An SRV whose target runs past its rdlength.
  m = parseMessage(
      cat(header(0x8000, 1, 1, 0, 0),
          cat(question, {0xC0, 12, 0, 33, 0, 1, 0, 0, 0, 0, 0, 7, 0, 1, 0, 1, 0, 80, 1, 'b', 0})));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().code, ParseErrorCode::kBadRdata);
}

TEST(DnsWireTest, NamesFromText) {
  auto n = Name::fromString("Web.Service.Trellis.");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->labelCount(), 3u);
  EXPECT_EQ(n->toString(), "Web.Service.Trellis.");
  EXPECT_TRUE(n->equals(Name::fromString("web.service.trellis").value()));
  EXPECT_TRUE(n->endsWith(Name::fromString("TRELLIS").value()));
  EXPECT_FALSE(n->endsWith(Name::fromString("vice.trellis").value()));
  EXPECT_TRUE(Name::fromString(".")->isRoot());

  auto esc = Name::fromString("a\\.b\\092\\000.c");
  ASSERT_TRUE(esc.ok()) << esc.error().message();
  ASSERT_EQ(esc->labelCount(), 2u);
  EXPECT_EQ(esc->labels()[0], std::string("a.b\\\0", 5));
  EXPECT_EQ(Name::fromString(esc->toString()).value(), *esc);
  EXPECT_EQ(esc->toString(), "a\\.b\\\\\\000.c.");

  EXPECT_FALSE(Name::fromString("a..b").ok());
  EXPECT_FALSE(Name::fromString(std::string(64, 'x') + ".com").ok());
  EXPECT_FALSE(Name::fromString("a\\").ok());
  EXPECT_FALSE(Name::fromString("a\\25").ok());
  EXPECT_FALSE(Name::fromString("a\\256").ok());
  std::string long_name;
  for (int i = 0; i < 4; ++i)
    long_name += std::string(63, 'x') + ".";
  auto too_long = Name::fromString(long_name);
  ASSERT_FALSE(too_long.ok());
  EXPECT_NE(too_long.error().message().find("more than 255"), std::string::npos);
}

TEST(DnsWireTest, BuilderCompressesAndRoundTrips) {
  MessageBuilder b(kMaxMessageSize);
  Header h;
  h.id = 77;
  h.qr = true;
  h.aa = true;
  h.rcode = 3;
  b.setHeader(h);
  Question q{Name::fromString("WeB.service.trellis").value(), RrType::kSrv, kClassIn};
  ASSERT_TRUE(b.addQuestion(q));
  Name target = Name::fromString("node1.node.dc1.trellis").value();
  ASSERT_TRUE(b.addRecord(Section::kAnswer,
                          {q.name, RrType::kSrv, kClassIn, 30, SrvData{1, 5, 8080, target}}));
  ASSERT_TRUE(b.addRecord(
      Section::kAnswer, {q.name, RrType::kA, kClassIn, 30, asio::ip::make_address_v4("10.1.2.3")}));
  ASSERT_TRUE(b.addRecord(Section::kAnswer, {q.name, RrType::kAaaa, kClassIn, 30,
                                             asio::ip::make_address_v6("fd00::1")}));
  Name domain = Name::fromString("trellis").value();
  ASSERT_TRUE(b.addRecord(
      Section::kAuthority,
      {domain, RrType::kSoa, kClassIn, 0,
       SoaData{Name::fromString("ns.trellis").value(),
               Name::fromString("hostmaster.trellis").value(), 100, 3600, 600, 86400, 0}}));
  ASSERT_TRUE(b.addRecord(Section::kAdditional, {target, RrType::kA, kClassIn, 30,
                                                 asio::ip::make_address_v4("10.1.2.3")}));
  Edns e;
  e.udp_payload_size = 1232;
  e.dnssec_ok = true;
  e.options.push_back({10, {1, 2, 3, 4, 5, 6, 7, 8}});
  ASSERT_TRUE(b.addEdns(e));
  auto wire = b.finish();

  // The first answer's owner is a pointer to the question name at offset 12.
  size_t answer_at = kHeaderSize + q.name.wireLength() + 4;
  EXPECT_EQ(wire[answer_at], 0xC0);
  EXPECT_EQ(wire[answer_at + 1], 12);

  auto m = parseMessage(wire);
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->header.id, 77);
  EXPECT_TRUE(m->header.qr);
  EXPECT_TRUE(m->header.aa);
  EXPECT_EQ(m->rcode(), Rcode::kNxDomain);
  ASSERT_EQ(m->questions.size(), 1u);
  EXPECT_EQ(m->questions[0].name.labels()[0], "WeB"); // case kept
  ASSERT_EQ(m->answers.size(), 3u);
  EXPECT_EQ(m->answers[0].name.labels()[0], "WeB");
  const auto& srv = std::get<SrvData>(m->answers[0].rdata);
  EXPECT_EQ(srv.priority, 1);
  EXPECT_EQ(srv.weight, 5);
  EXPECT_EQ(srv.port, 8080);
  EXPECT_EQ(srv.target, target);
  EXPECT_EQ(m->answers[0].ttl, 30u);
  EXPECT_EQ(testing::addressOf(m->answers[1]), "10.1.2.3");
  EXPECT_EQ(testing::addressOf(m->answers[2]), "fd00::1");
  ASSERT_EQ(m->authority.size(), 1u);
  const auto& soa = std::get<SoaData>(m->authority[0].rdata);
  EXPECT_EQ(soa.mname.toString(), "ns.trellis.");
  EXPECT_EQ(soa.rname.toString(), "hostmaster.trellis.");
  EXPECT_EQ(soa.serial, 100u);
  EXPECT_EQ(soa.expire, 86400u);
  ASSERT_EQ(m->additional.size(), 1u);
  EXPECT_EQ(m->additional[0].name, target);
  ASSERT_TRUE(m->edns);
  EXPECT_EQ(m->edns->udp_payload_size, 1232);
  EXPECT_TRUE(m->edns->dnssec_ok);
  ASSERT_EQ(m->edns->options.size(), 1u);
  EXPECT_EQ(m->edns->options[0].data.size(), 8u);

  // RFC 2782: the SRV target is written out in full (its first label, not a pointer)...
  size_t target_at = answer_at + 2 + 10 + 6;
  EXPECT_EQ(wire[target_at], 5); // "node1"
  // ...and the additional record's owner points at it.
  size_t additional_at = wire.size() - (11 + 12) - (2 + 10 + 4);
  EXPECT_EQ(wire[additional_at], 0xC0 | (target_at >> 8));
  EXPECT_EQ(wire[additional_at + 1], target_at & 0xFF);
}

TEST(DnsWireTest, BuilderRejectsWhatDoesNotFitAndStaysConsistent) {
  MessageBuilder b(512);
  Header h;
  h.qr = true;
  b.setHeader(h);
  Question q{Name::fromString("web.service.trellis").value(), RrType::kA, kClassIn};
  ASSERT_TRUE(b.addQuestion(q));
  b.reserveTail(MessageBuilder::kOptSize);
  int added = 0;
  for (int i = 0; i < 100; ++i) {
    size_t before = b.size();
    // Each record brings a new name, so a rejected one must also forget its names.
    std::string n = fmt::format("host{}.node.dc1.trellis", i);
    ResourceRecord rr{Name::fromString(n).value(), RrType::kA, kClassIn, 0,
                      asio::ip::make_address_v4(static_cast<uint32_t>(i + 1))};
    if (!b.addRecord(Section::kAnswer, rr)) {
      EXPECT_EQ(b.size(), before);
      break;
    }
    ++added;
  }
  EXPECT_GT(added, 10);
  EXPECT_LT(added, 100);
  ASSERT_TRUE(b.addEdns(Edns{}));
  auto wire = b.finish();
  EXPECT_LE(wire.size(), 512u);
  auto m = parseMessage(wire);
  ASSERT_TRUE(m.ok()) << m.error().message;
  ASSERT_EQ(m->answers.size(), static_cast<size_t>(added));
  for (int i = 0; i < added; ++i)
    EXPECT_EQ(m->answers[i].name.toString(), fmt::format("host{}.node.dc1.trellis.", i));
  EXPECT_TRUE(m->edns.has_value());
}

TEST(DnsWireTest, RolledBackNamesAreNotCompressionTargets) {
  MessageBuilder b(512);
  b.setHeader(Header{});
  ASSERT_TRUE(b.addQuestion({Name::fromString("q").value(), RrType::kA, kClassIn}));
  // A record that cannot fit (its raw rdata is too big) but whose owner is new.
  ResourceRecord big{Name::fromString("zz.example").value(), RrType::kTxt, kClassIn, 0,
                     std::vector<uint8_t>(600, 'x')};
  ASSERT_FALSE(b.addRecord(Section::kAnswer, big));
  ResourceRecord small{Name::fromString("yy.zz.example").value(), RrType::kA, kClassIn, 0,
                       asio::ip::make_address_v4("1.1.1.1")};
  ASSERT_TRUE(b.addRecord(Section::kAnswer, small));
  auto m = parseMessage(b.finish());
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->answers[0].name.toString(), "yy.zz.example.");
}

TEST(DnsWireTest, GarbageNeverCrashes) {
  testing::SeededRandom rng(7);
  for (int i = 0; i < 20000; ++i) {
    std::vector<uint8_t> junk(rng.random() % 80);
    for (auto& c : junk)
      c = static_cast<uint8_t>(rng.random());
    if (junk.size() > 5 && (i % 2))
      junk[4] = 0, junk[5] = 1; // often one question, to get past the header checks
    auto q = parseQuery(junk);
    auto m = parseMessage(junk);
    if (!q.ok()) {
      EXPECT_FALSE(q.error().message.empty());
    }
    if (!m.ok()) {
      EXPECT_FALSE(m.error().message.empty());
    }
  }
}

} // namespace
} // namespace trellis::dns
