#pragma once

// The discovery zone: Consul's DNS naming (<svc>.service.<domain>, <node>.node.<domain>, RFC
// 2782 SRV names) answered from an abstract Directory. Bytes in, bytes out: the zone parses a
// request, decides the answer and builds the reply within the transport's size limit. It
// knows nothing of sockets; the Server does I/O and forwarding. See docs/dns.md.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/time.h"
#include "dns/directory.h"
#include "dns/random.h"
#include "dns/wire.h"

namespace trellis::dns {

enum class Transport { kUdp, kTcp };

// The SOA record served in the authority section of negative answers (and at the apex).
// Defaults are Consul's.
struct SoaConfig {
  uint32_t refresh = 3600;
  uint32_t retry = 600;
  uint32_t expire = 86400;
  // SOA MINIMUM and the SOA record's TTL: how long resolvers cache NXDOMAIN/NODATA.
  uint32_t min_ttl = 0;
};

struct ZoneConfig {
  // The zone answered: "<svc>.service.<domain>" etc. A trailing dot is optional.
  std::string domain = "trellis";
  // Further domains answered exactly like `domain` (Consul's alt_domain); answers to a query
  // under an alternate domain name their targets under that domain.
  std::vector<std::string> alt_domains = {"consul"};
  // The only datacenter: "<svc>.service.<datacenter>.<domain>" is the same as without it,
  // any other datacenter label is NXDOMAIN. Also used in SRV target names.
  std::string datacenter = "dc1";
  // TTL of service answers (A/AAAA/SRV under .service and SRV additionals) and node answers.
  uint32_t service_ttl = 0;
  uint32_t node_ttl = 0;
  // Answer only instances whose health is passing (by default warning counts as healthy).
  bool only_passing = false;
  // Most records in one answer section (Consul's a_record_limit); 0 means no limit beyond
  // the message size. Applied after shuffling, so each answer is a random subset.
  size_t max_answers = 0;
  // Cap on the client's EDNS0 UDP payload size; also the size advertised in our OPT record.
  // 512..65535.
  uint16_t max_udp_payload = 4096;
  SoaConfig soa;
  // Set by the Server when recursors are configured: out-of-zone names are then forwarded
  // (ZoneResponse::Action::kForward) instead of REFUSED, and replies carry RA.
  bool recursion_available = false;

  // Checks names and ranges; the error names the field.
  Status validate() const;
};

struct ZoneResponse {
  enum class Action {
    kReply,   // send `wire`
    kDrop,    // send nothing: the header was unreadable or the packet was a response
    kForward, // out of zone with recursion on: the Server forwards `query`
  };
  Action action = Action::kDrop;
  std::vector<uint8_t> wire;
  Rcode rcode = Rcode::kNoError;
  std::optional<RrType> qtype; // set when the question was readable
  bool truncated = false;      // TC was set
  bool malformed = false;      // the request failed to parse (FORMERR or dropped)
  std::optional<ParseError> parse_error;
  std::optional<Query> query; // the parsed query, when there is one
};

class Zone {
public:
  // `directory`, `random` and `time` must outlive the zone. Fails when `config` is invalid.
  static Result<std::unique_ptr<Zone>> create(ZoneConfig config, Directory& directory,
                                              RandomSource& random, TimeSource& time);

  // Parses `request` (untrusted) and answers it. Never throws, never reads outside the span.
  ZoneResponse handle(std::span<const uint8_t> request, Transport transport);
  // Answers an already-parsed query.
  ZoneResponse answer(const Query& query, Transport transport);

  // A reply to `query` with `rcode` and no records (the question and OPT echoed), e.g.
  // SERVFAIL when forwarding failed.
  std::vector<uint8_t> errorReply(const Query& query, Rcode rcode) const;

  // The largest reply `query` may receive over `transport`: 65535 over TCP; over UDP 512
  // without EDNS0, else the client's payload size clamped to [512, max_udp_payload].
  size_t replyLimit(const Query& query, Transport transport) const;

  const ZoneConfig& config() const { return config_; }

private:
  struct Lookup;
  Zone(ZoneConfig config, std::vector<Name> domains, Directory& directory, RandomSource& random,
       TimeSource& time);

  Lookup resolve(const Query& query, size_t domain_index, const std::vector<std::string>& rel);
  Lookup lookupService(const Query& query, size_t domain_index,
                       const std::vector<std::string>& prefix);
  Lookup lookupNode(const Query& query, const std::vector<std::string>& prefix);
  Lookup lookupAddr(const Query& query, const std::vector<std::string>& prefix);
  ResourceRecord soaRecord(size_t domain_index) const;
  Name targetFor(const ServiceInstance& inst, size_t domain_index) const;
  Header replyHeader(const Query& query, Rcode rcode, bool authoritative) const;
  std::vector<uint8_t> headerOnlyReply(const Header& request, Rcode rcode) const;

  ZoneConfig config_;
  std::vector<Name> domains_; // [0] is `domain`, then `alt_domains`; lower case
  std::string datacenter_;    // lower case
  Directory& directory_;
  RandomSource& random_;
  TimeSource& time_;
};

} // namespace trellis::dns
