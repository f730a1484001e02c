#include "dns/zone.h"

#include <algorithm>
#include <set>

namespace trellis::dns {

namespace {

// Labels with a fixed meaning directly under the domain (or under the datacenter label).
constexpr std::string_view kServiceLabel = "service";
constexpr std::string_view kNodeLabel = "node";
constexpr std::string_view kAddrLabel = "addr";

bool isKeyword(std::string_view l) {
  return l == kServiceLabel || l == kNodeLabel || l == kAddrLabel;
}

std::string join(const std::vector<std::string>& parts, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end; ++i) {
    if (i > begin)
      out.push_back('.');
    out += parts[i];
  }
  return out;
}

// IPv4-mapped IPv6 addresses are answered as the IPv4 addresses they are.
asio::ip::address canonical(const asio::ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped())
    return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
  return a;
}

std::string hexAddress(const asio::ip::address& a) {
  std::string out;
  auto put = [&](const auto& bytes) {
    for (unsigned char b : bytes)
      out += fmt::format("{:02x}", b);
  };
  if (a.is_v4())
    put(a.to_v4().to_bytes());
  else
    put(a.to_v6().to_bytes());
  return out;
}

std::optional<asio::ip::address> parseHexAddress(std::string_view hex) {
  if (hex.size() != 8 && hex.size() != 32)
    return std::nullopt;
  std::vector<uint8_t> bytes;
  for (size_t i = 0; i < hex.size(); i += 2) {
    int v = 0;
    for (size_t k = 0; k < 2; ++k) {
      char c = hex[i + k];
      int d = (c >= '0' && c <= '9')   ? c - '0'
              : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                                       : -1; // the zone lower-cases names before this
      if (d < 0)
        return std::nullopt;
      v = v * 16 + d;
    }
    bytes.push_back(static_cast<uint8_t>(v));
  }
  if (bytes.size() == 4) {
    asio::ip::address_v4::bytes_type b{};
    std::copy(bytes.begin(), bytes.end(), b.begin());
    return asio::ip::address(asio::ip::address_v4(b));
  }
  asio::ip::address_v6::bytes_type b{};
  std::copy(bytes.begin(), bytes.end(), b.begin());
  return asio::ip::address(asio::ip::address_v6(b));
}

ResourceRecord addressRecord(const Name& owner, const asio::ip::address& a, uint32_t ttl) {
  ResourceRecord rr;
  rr.name = owner;
  rr.ttl = ttl;
  if (a.is_v4()) {
    rr.type = RrType::kA;
    rr.rdata = a.to_v4();
  } else {
    rr.type = RrType::kAaaa;
    rr.rdata = a.to_v6();
  }
  return rr;
}

bool wantsA(RrType t) {
  return t == RrType::kA || t == RrType::kAny;
}
bool wantsAaaa(RrType t) {
  return t == RrType::kAaaa || t == RrType::kAny;
}
bool wantsSrv(RrType t) {
  return t == RrType::kSrv || t == RrType::kAny;
}
bool wants(RrType t, const asio::ip::address& a) {
  return a.is_v4() ? wantsA(t) : wantsAaaa(t);
}

} // namespace

// What a name resolved to. exists == false is NXDOMAIN; an existing name without answers is
// NODATA. Additional records belong to SRV answers and are keyed by the SRV target.
struct Zone::Lookup {
  bool exists = true;
  std::vector<ResourceRecord> answers;
  std::vector<ResourceRecord> additional;

  static Lookup nxdomain() {
    Lookup l;
    l.exists = false;
    return l;
  }
  static Lookup nodata() { return Lookup{}; }
};

Status ZoneConfig::validate() const {
  std::vector<Name> seen;
  auto check = [&](std::string_view field, const std::string& text) -> Status {
    auto n = Name::fromString(text);
    if (!n)
      return n.error().withContext(field);
    if (n->isRoot())
      return makeError(ErrorCode::kInvalidArgument, "{}: the root cannot be the domain", field);
    // Room for "<63-byte label>.service.<datacenter>." under it.
    if (n->wireLength() + 64 + 8 + 1 + datacenter.size() > kMaxNameLength)
      return makeError(ErrorCode::kInvalidArgument, "{}: \"{}\" is too long to have names under it",
                       field, text);
    for (const auto& s : seen)
      if (s.equals(*n))
        return makeError(ErrorCode::kInvalidArgument, "{}: \"{}\" is listed twice", field, text);
    seen.push_back(*n);
    return okStatus();
  };
  if (datacenter.empty() || datacenter.size() > kMaxLabelLength ||
      datacenter.find('.') != std::string::npos)
    return makeError(ErrorCode::kInvalidArgument,
                     "datacenter: \"{}\" must be a single DNS label of 1 to 63 bytes", datacenter);
  if (isKeyword(asciiLower(datacenter)))
    return makeError(ErrorCode::kInvalidArgument,
                     "datacenter: \"{}\" is reserved (service, node, addr)", datacenter);
  TRELLIS_RETURN_IF_ERROR(check("domain", domain));
  for (size_t i = 0; i < alt_domains.size(); ++i)
    TRELLIS_RETURN_IF_ERROR(check(fmt::format("alt_domains[{}]", i), alt_domains[i]));
  if (max_udp_payload < kMinUdpPayload)
    return makeError(ErrorCode::kInvalidArgument, "max_udp_payload: {} is below the minimum {}",
                     max_udp_payload, kMinUdpPayload);
  return okStatus();
}

Result<std::unique_ptr<Zone>> Zone::create(ZoneConfig config, Directory& directory,
                                           RandomSource& random, TimeSource& time) {
  TRELLIS_RETURN_IF_ERROR(config.validate());
  std::vector<Name> domains;
  domains.push_back(Name::fromString(config.domain)->lowercased());
  for (const auto& d : config.alt_domains)
    domains.push_back(Name::fromString(d)->lowercased());
  return std::unique_ptr<Zone>(
      new Zone(std::move(config), std::move(domains), directory, random, time));
}

Zone::Zone(ZoneConfig config, std::vector<Name> domains, Directory& directory, RandomSource& random,
           TimeSource& time)
    : config_(std::move(config)), domains_(std::move(domains)),
      datacenter_(asciiLower(config_.datacenter)), directory_(directory), random_(random),
      time_(time) {}

size_t Zone::replyLimit(const Query& query, Transport transport) const {
  if (transport == Transport::kTcp)
    return kMaxMessageSize;
  if (!query.edns)
    return kMinUdpPayload;
  return std::clamp<size_t>(query.edns->udp_payload_size, kMinUdpPayload, config_.max_udp_payload);
}

Header Zone::replyHeader(const Query& query, Rcode rcode, bool authoritative) const {
  Header h;
  h.id = query.header.id;
  h.qr = true;
  h.opcode = query.header.opcode;
  h.aa = authoritative;
  h.rd = query.header.rd;
  h.cd = query.header.cd;
  h.ra = config_.recursion_available;
  h.rcode = static_cast<uint8_t>(static_cast<uint16_t>(rcode) & 0xF);
  return h;
}

std::vector<uint8_t> Zone::headerOnlyReply(const Header& request, Rcode rcode) const {
  MessageBuilder b(kMinUdpPayload);
  Header h;
  h.id = request.id;
  h.qr = true;
  h.opcode = request.opcode;
  h.rd = request.rd;
  h.ra = config_.recursion_available;
  h.rcode = static_cast<uint8_t>(rcode);
  b.setHeader(h);
  return b.finish();
}

std::vector<uint8_t> Zone::errorReply(const Query& query, Rcode rcode) const {
  // A question and an OPT record always fit in 512 bytes (a name is at most 255).
  MessageBuilder b(kMinUdpPayload);
  b.setHeader(replyHeader(query, rcode, false));
  bool ok = b.addQuestion(query.question);
  assert(ok);
  if (query.edns) {
    Edns e;
    e.udp_payload_size = config_.max_udp_payload;
    e.dnssec_ok = query.edns->dnssec_ok;
    e.extended_rcode = static_cast<uint8_t>(static_cast<uint16_t>(rcode) >> 4);
    ok = b.addEdns(e);
    assert(ok);
  }
  (void)ok;
  return b.finish();
}

ZoneResponse Zone::handle(std::span<const uint8_t> request, Transport transport) {
  auto parsed = parseQuery(request);
  if (parsed)
    return answer(parsed.value(), transport);
  ZoneResponse resp;
  resp.parse_error = parsed.error();
  auto header = parseHeader(request);
  if (!header || header->qr) {
    // Nothing to address a reply to, or a response: answering responses invites loops.
    resp.malformed = true;
    resp.action = ZoneResponse::Action::kDrop;
    return resp;
  }
  resp.action = ZoneResponse::Action::kReply;
  if (parsed.error().code == ParseErrorCode::kUnsupportedOpcode) {
    resp.rcode = Rcode::kNotImp;
  } else {
    resp.malformed = true;
    resp.rcode = Rcode::kFormErr;
  }
  resp.wire = headerOnlyReply(header.value(), resp.rcode);
  return resp;
}

ZoneResponse Zone::answer(const Query& query, Transport transport) {
  ZoneResponse resp;
  resp.action = ZoneResponse::Action::kReply;
  resp.qtype = query.question.type;
  resp.query = query;
  auto fail = [&](Rcode rcode) {
    resp.rcode = rcode;
    resp.wire = errorReply(query, rcode);
    return std::move(resp);
  };

  if (query.edns && query.edns->version != 0)
    return fail(Rcode::kBadVers);
  if (query.question.type == RrType::kOpt)
    return fail(Rcode::kFormErr); // RFC 6891 6.1.1: OPT is not a question type

  // The longest matching domain wins, so "a.consul" may be configured beside "consul".
  const Name& qname = query.question.name;
  std::optional<size_t> domain_index;
  for (size_t i = 0; i < domains_.size(); ++i)
    if (qname.endsWith(domains_[i]) &&
        (!domain_index || domains_[i].labelCount() > domains_[*domain_index].labelCount()))
      domain_index = i;
  if (!domain_index) {
    if (config_.recursion_available) {
      resp.action = ZoneResponse::Action::kForward;
      return resp;
    }
    return fail(Rcode::kRefused);
  }
  if (query.question.klass != kClassIn)
    return fail(Rcode::kRefused);
  switch (query.question.type) {
  case RrType::kAxfr:
  case RrType::kIxfr:
  case RrType::kMaila:
  case RrType::kMailb:
    return fail(Rcode::kNotImp);
  default:
    break;
  }

  std::vector<std::string> rel;
  size_t n_rel = qname.labelCount() - domains_[*domain_index].labelCount();
  for (size_t i = 0; i < n_rel; ++i)
    rel.push_back(asciiLower(qname.labels()[i]));
  Lookup lk = resolve(query, *domain_index, rel);

  resp.rcode = lk.exists ? Rcode::kNoError : Rcode::kNxDomain;
  MessageBuilder b(replyLimit(query, transport));
  b.setHeader(replyHeader(query, resp.rcode, true));
  if (query.edns)
    b.reserveTail(MessageBuilder::kOptSize);
  bool ok = b.addQuestion(query.question);
  assert(ok);
  (void)ok;
  bool truncated = false;
  for (const auto& rr : lk.answers) {
    if (!b.addRecord(Section::kAnswer, rr)) {
      truncated = true;
      break;
    }
  }
  if (!truncated) {
    // The SOA lets resolvers cache the negative answer (RFC 2308). If even that does not fit
    // the answer is still complete, so no TC.
    if (lk.answers.empty())
      (void)b.addRecord(Section::kAuthority, soaRecord(*domain_index));
    // Additional records are optional: drop what does not fit without setting TC
    // (RFC 2181 9).
    for (const auto& rr : lk.additional)
      (void)b.addRecord(Section::kAdditional, rr);
  }
  b.header().tc = truncated;
  if (query.edns) {
    Edns e;
    e.udp_payload_size = config_.max_udp_payload;
    e.dnssec_ok = query.edns->dnssec_ok;
    ok = b.addEdns(e);
    assert(ok);
  }
  resp.truncated = truncated;
  resp.wire = b.finish();
  return resp;
}

Zone::Lookup Zone::resolve(const Query& query, size_t domain_index,
                           const std::vector<std::string>& rel) {
  if (rel.empty()) {
    // The apex: only the SOA lives here.
    Lookup lk;
    RrType t = query.question.type;
    if (t == RrType::kSoa || t == RrType::kAny) {
      ResourceRecord soa = soaRecord(domain_index);
      soa.name = query.question.name;
      lk.answers.push_back(std::move(soa));
    }
    return lk;
  }
  size_t k = rel.size();
  if (rel[k - 1] == datacenter_) {
    --k;
    if (k == 0)
      return Lookup::nodata(); // "<dc>.<domain>": an empty non-terminal
  }
  std::string_view kind = rel[k - 1];
  std::vector<std::string> prefix(rel.begin(), rel.begin() + static_cast<ptrdiff_t>(k - 1));
  if (!isKeyword(kind))
    return Lookup::nxdomain();
  if (prefix.empty())
    return Lookup::nodata(); // "service.<domain>" and friends: empty non-terminals
  if (kind == kServiceLabel)
    return lookupService(query, domain_index, prefix);
  if (kind == kNodeLabel)
    return lookupNode(query, prefix);
  return lookupAddr(query, prefix);
}

Name Zone::targetFor(const ServiceInstance& inst, size_t domain_index) const {
  const Name& domain = domains_[domain_index];
  if (inst.on_node_address && !inst.node.empty()) {
    // "<node>.node.<dc>.<domain>"; a node name with dots spans labels, which the node lookup
    // joins back. Falls through to the address form if the name is not a valid DNS name.
    std::vector<std::string> labels;
    size_t start = 0;
    for (;;) {
      size_t dot = inst.node.find('.', start);
      labels.push_back(inst.node.substr(start, dot - start));
      if (dot == std::string::npos)
        break;
      start = dot + 1;
    }
    labels.emplace_back(kNodeLabel);
    labels.push_back(config_.datacenter);
    labels.insert(labels.end(), domain.labels().begin(), domain.labels().end());
    auto n = Name::fromLabels(std::move(labels));
    if (n)
      return std::move(n).value();
  }
  // "<hex address>.addr.<dc>.<domain>", as Consul names instances with their own address.
  std::vector<std::string> labels = {hexAddress(canonical(inst.address)), std::string(kAddrLabel),
                                     config_.datacenter};
  labels.insert(labels.end(), domain.labels().begin(), domain.labels().end());
  return Name::fromLabels(std::move(labels)).value(); // validate() left room for this
}

Zone::Lookup Zone::lookupService(const Query& query, size_t domain_index,
                                 const std::vector<std::string>& prefix) {
  std::string svc;
  std::optional<std::string> tag;
  if (prefix.size() == 2 && prefix[0][0] == '_' && prefix[1][0] == '_') {
    // RFC 2782: "_<svc>._<tag>.service", where _tcp means any tag.
    svc = prefix[0].substr(1);
    std::string t = prefix[1].substr(1);
    if (t != "tcp")
      tag = std::move(t);
  } else if (prefix.size() == 1 && prefix[0][0] == '_' && !directory_.serviceExists(prefix[0])) {
    // "_<tag>.service" is the parent of RFC 2782 names: an empty non-terminal, so a
    // resolver minimising its queries (RFC 9156) carries on down to "_<svc>._<tag>".
    return Lookup::nodata();
  } else {
    // "[<tag>.]<svc>.service"; a tag may itself contain dots.
    svc = prefix.back();
    if (prefix.size() > 1)
      tag = join(prefix, 0, prefix.size() - 1);
  }
  if (svc.empty() || !directory_.serviceExists(svc))
    return Lookup::nxdomain();
  std::vector<ServiceInstance> insts =
      directory_.serviceInstances(svc, tag ? std::optional<std::string_view>(*tag) : std::nullopt);
  if (tag && insts.empty())
    return Lookup::nxdomain(); // no instance has the tag: the name does not exist

  std::erase_if(insts, [&](const ServiceInstance& i) {
    return i.health == Health::kCritical || (config_.only_passing && i.health != Health::kPassing);
  });
  for (auto& i : insts)
    i.address = canonical(i.address);
  // Fisher-Yates with the injected source, so clients spread over instances.
  for (size_t i = insts.size(); i > 1; --i)
    std::swap(insts[i - 1], insts[random_.uniform(i)]);

  const RrType qtype = query.question.type;
  const Name& owner = query.question.name;
  const uint32_t ttl = config_.service_ttl;
  // Each answer with the address its SRV target needs in the additional section, so that
  // trimming to max_answers drops both together.
  struct Entry {
    ResourceRecord rr;
    std::optional<asio::ip::address> glue;
  };
  std::vector<Entry> entries;
  std::set<asio::ip::address> seen; // one record per address (several ports on one host)
  for (const auto& i : insts)
    if (wants(qtype, i.address) && seen.insert(i.address).second)
      entries.push_back({addressRecord(owner, i.address, ttl), std::nullopt});
  if (wantsSrv(qtype)) {
    for (const auto& i : insts) {
      ResourceRecord rr;
      rr.name = owner;
      rr.type = RrType::kSrv;
      rr.ttl = ttl;
      rr.rdata = SrvData{1, i.weight, i.port, targetFor(i, domain_index)};
      entries.push_back({std::move(rr), i.address});
    }
  }
  if (config_.max_answers > 0 && entries.size() > config_.max_answers)
    entries.resize(config_.max_answers);
  Lookup lk;
  std::set<std::pair<std::string, asio::ip::address>> glued; // once per target and address
  for (auto& e : entries) {
    if (e.glue) {
      const Name& target = std::get<SrvData>(e.rr.rdata).target;
      if (glued.emplace(target.lowercased().toString(), *e.glue).second)
        lk.additional.push_back(addressRecord(target, *e.glue, ttl));
    }
    lk.answers.push_back(std::move(e.rr));
  }
  return lk;
}

Zone::Lookup Zone::lookupNode(const Query& query, const std::vector<std::string>& prefix) {
  std::string node = join(prefix, 0, prefix.size());
  auto rec = directory_.node(node);
  if (!rec)
    return Lookup::nxdomain();
  Lookup lk;
  std::set<asio::ip::address> seen;
  for (const auto& a : rec->addresses) {
    auto c = canonical(a);
    if (wants(query.question.type, c) && seen.insert(c).second)
      lk.answers.push_back(addressRecord(query.question.name, c, config_.node_ttl));
  }
  if (config_.max_answers > 0 && lk.answers.size() > config_.max_answers)
    lk.answers.resize(config_.max_answers);
  return lk;
}

Zone::Lookup Zone::lookupAddr(const Query& query, const std::vector<std::string>& prefix) {
  if (prefix.size() != 1)
    return Lookup::nxdomain();
  auto a = parseHexAddress(prefix[0]);
  if (!a)
    return Lookup::nxdomain();
  Lookup lk;
  if (wants(query.question.type, *a))
    lk.answers.push_back(addressRecord(query.question.name, *a, config_.node_ttl));
  return lk;
}

ResourceRecord Zone::soaRecord(size_t domain_index) const {
  const Name& domain = domains_[domain_index];
  SoaData d;
  d.mname = Name::fromLabels({"ns"}).value().concat(domain);
  d.rname = Name::fromLabels({"hostmaster"}).value().concat(domain);
  // Like Consul, the serial is the current time: the zone changes continuously.
  d.serial = static_cast<uint32_t>(
      std::chrono::duration_cast<std::chrono::seconds>(time_.systemTime().time_since_epoch())
          .count());
  d.refresh = config_.soa.refresh;
  d.retry = config_.soa.retry;
  d.expire = config_.soa.expire;
  d.minimum = config_.soa.min_ttl;
  ResourceRecord rr;
  rr.name = domain;
  rr.type = RrType::kSoa;
  rr.ttl = config_.soa.min_ttl;
  rr.rdata = std::move(d);
  return rr;
}

} // namespace trellis::dns
