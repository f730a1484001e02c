#include "registry/model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "registry/store/codec.h"
#include "registry/test_util.h"

namespace trellis::registry {
namespace {

using namespace testing;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

TEST(ModelTest, CheckStatusNames) {
  for (CheckStatus s : {CheckStatus::kPassing, CheckStatus::kWarning, CheckStatus::kCritical}) {
    auto parsed = parseCheckStatus(checkStatusName(s));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, s);
  }
  auto bad = parseCheckStatus("PASSING");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message(), HasSubstr("invalid check status \"PASSING\""));
}

TEST(ModelTest, FoldNameIsAsciiLowercase) {
  EXPECT_EQ(foldName("Web-API_1"), "web-api_1");
  EXPECT_EQ(foldName("\xc3\x89t\xc3\xa9"), "\xc3\x89t\xc3\xa9") << "non-ASCII bytes unchanged";
}

TEST(ModelTest, SameContentIgnoresIndexes) {
  Service a = service("web", "w1", 80, {"x"});
  Service b = a;
  b.create_index = 5;
  b.modify_index = 9;
  EXPECT_TRUE(sameContent(a, b));
  b.weights.warning = 3;
  EXPECT_FALSE(sameContent(a, b));
}

TEST(ModelTest, MetaRules) {
  Limits l;
  Node n = node("n1");
  for (int i = 0; i < 65; ++i)
    n.meta["k" + std::to_string(i)] = "v";
  auto st = validateNode(n, l);
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error().message(), HasSubstr("NodeMeta: 65 pairs, the limit is 64"));
  n.meta.clear();
  n.meta[std::string(129, 'k')] = "v";
  EXPECT_THAT(validateNode(n, l).error().message(), HasSubstr("is longer than 128 bytes"));
  n.meta.clear();
  n.meta["k"] = std::string(513, 'v');
  EXPECT_THAT(validateNode(n, l).error().message(),
              HasSubstr("value of \"k\" is 513 bytes long, the limit is 512"));
  n.meta.clear();
  n.meta["ok_key-1"] = "v";
  EXPECT_TRUE(validateNode(n, l).ok());
}

TEST(ModelTest, IdentifiersRejectControlCharactersAndSlashes) {
  Limits l;
  EXPECT_THAT(validateNode(node("a\nb"), l).error().message(),
              HasSubstr("contains a control character"));
  EXPECT_THAT(validateNode(node(std::string(300, 'n')), l).error().message(),
              HasSubstr("300 bytes long, the limit is 256"));
  Node uuid = node("n");
  uuid.id = "0123ABCD-0000-1111-2222-333344445555";
  EXPECT_TRUE(validateNode(uuid, l).ok());
}

TEST(ModelTest, CheckDefinitionsMustMatchTheirType) {
  Limits l;
  Check c = ttlCheck("t", 10s);
  c.definition.http = "http://x/";
  EXPECT_THAT(validateCheck(c, l).error().message(),
              HasSubstr("HTTP is not allowed on a ttl check"));
  Check none = check("n", CheckStatus::kPassing);
  none.definition.interval = 10s;
  EXPECT_THAT(validateCheck(none, l).error().message(),
              HasSubstr("Interval/Timeout is not allowed on a none check"));
  Check neg = httpCheck("h", "http://x/", 10s);
  neg.definition.timeout = -1s;
  EXPECT_THAT(validateCheck(neg, l).error().message(), HasSubstr("Check.Timeout: must not be "
                                                                 "negative"));
  Check method = httpCheck("h", "http://x/", 10s);
  method.definition.method = "get";
  EXPECT_THAT(validateCheck(method, l).error().message(), HasSubstr("upper-case HTTP method"));
  Check port = httpCheck("h", "http://x/", 10s);
  port.definition.type = CheckType::kTcp;
  port.definition.http.clear();
  port.definition.tcp = "db:99999";
  EXPECT_THAT(validateCheck(port, l).error().message(), HasSubstr("port must be 1-65535"));
  port.definition.tcp = "[::1]:5432";
  EXPECT_TRUE(validateCheck(port, l).ok());
}

TEST(CodecTest, RoundTripsEveryField) {
  Check c = httpCheck("h", "https://10.0.0.1:8443/health?x=\"y\"", 15s, "w1");
  c.node = "n1";
  c.service_name = "web";
  c.status = CheckStatus::kWarning;
  c.output = "line1\nline2\t\"quoted\" \\ back";
  c.notes = "notes";
  c.definition.method = "POST";
  c.definition.header = {{"X-Token", {"a", "b"}}, {"Accept", {}}};
  c.definition.timeout = 3s;
  c.definition.deregister_critical_service_after = 90s;
  c.definition.success_before_passing = 2;
  c.definition.failures_before_warning = 1;
  c.definition.failures_before_critical = 4;
  c.create_index = 3;
  c.modify_index = 18446744073709551615ull;
  auto back = codec::decodeCheck(codec::encodeCheck(c));
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_TRUE(sameContent(c, **back));
  EXPECT_EQ((*back)->modify_index, c.modify_index);

  Service s = service("web", "w1", 65535, {"a", "b"});
  s.node = "n1";
  s.address = "10.0.0.2";
  s.meta = {{"version", "1.2"}};
  s.weights = {10, 0};
  s.enable_tag_override = true;
  auto sb = codec::decodeService(codec::encodeService(s));
  ASSERT_TRUE(sb.ok());
  EXPECT_TRUE(sameContent(s, **sb));

  Node n = node("n1");
  n.id = "11111111-2222-3333-4444-555555555555";
  n.tagged_addresses = {{"lan", "10.0.0.1"}, {"wan", "1.2.3.4"}};
  n.meta = {{"zone", "a"}};
  auto nb = codec::decodeNode(codec::encodeNode(n));
  ASSERT_TRUE(nb.ok());
  EXPECT_TRUE(sameContent(n, **nb));
}

TEST(CodecTest, InvalidUtf8BecomesAReplacementCharacter) {
  Check c = check("c", CheckStatus::kCritical);
  c.node = "n1";
  c.output = "ok \xff\xfe bad \xe2\x82 cut \x01 ctl \xe2\x82\xac euro";
  auto back = codec::decodeCheck(codec::encodeCheck(c));
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_EQ((*back)->output, "ok \xef\xbf\xbd\xef\xbf\xbd bad \xef\xbf\xbd\xef\xbf\xbd cut \x01 "
                             "ctl \xe2\x82\xac euro");
}

TEST(CodecTest, DecodeErrorsNameTheField) {
  EXPECT_THAT(codec::decodeNode("[1]").error().message(), HasSubstr("not a JSON object"));
  EXPECT_THAT(codec::decodeNode("{\"Node\": 5}").error().message(),
              HasSubstr("field Node is not a string"));
  EXPECT_THAT(codec::decodeService("{\"Node\":\"n\",\"ID\":\"i\",\"Service\":\"s\",\"Port\":70000}")
                  .error()
                  .message(),
              HasSubstr("field Port is not in range"));
  EXPECT_THAT(codec::decodeCheck("{\"Node\":\"n\",\"CheckID\":\"c\",\"Status\":\"bogus\"}")
                  .error()
                  .message(),
              HasSubstr("field Status"));
  EXPECT_THAT(
      codec::decodeCheck(
          "{\"Node\":\"n\",\"CheckID\":\"c\",\"Status\":\"passing\",\"Definition\":{\"Type\":"
          "\"grpc\"}}")
          .error()
          .message(),
      HasSubstr("Definition.Type \"grpc\" is unknown"));
}

} // namespace
} // namespace trellis::registry
