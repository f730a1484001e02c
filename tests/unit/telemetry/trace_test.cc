#include "telemetry/trace.h"

#include <regex>
#include <set>

#include <gtest/gtest.h>

namespace trellis::telemetry {
namespace {

constexpr const char* kValid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

TEST(TraceparentTest, ParsesTheSpecExample) {
  auto ctx = parseTraceparent(kValid);
  ASSERT_TRUE(ctx.ok()) << ctx.error().message();
  EXPECT_EQ(ctx->traceIdHex(), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(ctx->spanIdHex(), "00f067aa0ba902b7");
  EXPECT_EQ(ctx->flags, 0x01);
  EXPECT_TRUE(ctx->sampled());
  EXPECT_EQ(ctx->traceparent(), kValid);
}

TEST(TraceparentTest, TableOfCases) {
  struct Case {
    std::string value;
    bool ok;
    std::string error_fragment; // for failures
  };
  const std::string tid = "4bf92f3577b34da6a3ce929d0e0e4736";
  const std::string pid = "00f067aa0ba902b7";
  const Case cases[] = {
      {"00-" + tid + "-" + pid + "-00", true, ""},
      {"00-" + tid + "-" + pid + "-ff", true, ""}, // unknown flags parse
      {"01-" + tid + "-" + pid + "-01", true, ""}, // future version, same layout
      {"cc-" + tid + "-" + pid + "-01-future-fields", true, ""},
      {"", false, "too short"},
      {"0", false, "too short"},
      {"ff-" + tid + "-" + pid + "-01", false, "version ff"},
      {"0g-" + tid + "-" + pid + "-01", false, "version"},
      {"00-" + tid + "-" + pid + "-01-", false, "55 characters"},
      {"00-" + tid + "-" + pid + "-1", false, "55 characters"},
      {"00-" + tid + "-" + pid, false, "55 characters"},
      {"01-" + tid + "-" + pid, false, "at least 55"},
      {"01-" + tid + "-" + pid + "-01x", false, "followed by '-'"},
      {"00_" + tid + "-" + pid + "-01", false, "offset 2"},
      {"00-" + tid + "_" + pid + "-01", false, "offset 35"},
      {"00-" + tid + "-" + pid + "_01", false, "offset 52"},
      {"00-4BF92F3577B34DA6A3CE929D0E0E4736-" + pid + "-01", false, "trace-id"},
      {"00-" + tid + "-00F067AA0BA902B7-01", false, "parent-id"},
      {"00-" + tid + "-" + pid + "-0X", false, "trace-flags"},
      {"00-4bf92f3577b34da6a3ce929d0e0e473z-" + pid + "-01", false, "offset 34"},
      {"00-00000000000000000000000000000000-" + pid + "-01", false, "trace-id is all zeros"},
      {"00-" + tid + "-0000000000000000-01", false, "parent-id is all zeros"},
      {"00-" + tid + "-" + pid + "-01\n", false, "55 characters"},
  };
  for (const Case& c : cases) {
    auto r = parseTraceparent(c.value);
    EXPECT_EQ(r.ok(), c.ok) << c.value;
    if (!r.ok() && !c.ok) {
      EXPECT_NE(r.error().message().find(c.error_fragment), std::string::npos)
          << c.value << " -> " << r.error().message();
      EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    }
  }
}

TEST(TraceparentTest, ChildKeepsTraceIdAndSampledBit) {
  IdGenerator gen(42);
  TraceContext parent = parseTraceparent(kValid).value();
  parent.flags = 0xff;
  std::set<std::string> spans;
  for (int i = 0; i < 100; ++i) {
    TraceContext child = gen.childOf(parent);
    EXPECT_EQ(child.trace_id, parent.trace_id);
    EXPECT_NE(child.span_id, parent.span_id);
    EXPECT_EQ(child.flags, kTraceFlagSampled) << "unknown flags are not propagated";
    auto reparsed = parseTraceparent(child.traceparent());
    ASSERT_TRUE(reparsed.ok());
    EXPECT_EQ(*reparsed, child);
    spans.insert(child.spanIdHex());
  }
  EXPECT_EQ(spans.size(), 100u);
  parent.flags = 0;
  EXPECT_FALSE(gen.childOf(parent).sampled());
}

TEST(TraceparentTest, PropagateContinuesOrStartsTraces) {
  IdGenerator gen(7);
  TraceContext continued = gen.propagate(kValid, false);
  EXPECT_EQ(continued.traceIdHex(), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_TRUE(continued.sampled());

  for (std::string_view bad : {std::string_view(), std::string_view("garbage")}) {
    TraceContext fresh = gen.propagate(bad, true);
    EXPECT_NE(fresh.traceIdHex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    EXPECT_TRUE(fresh.sampled());
    EXPECT_TRUE(parseTraceparent(fresh.traceparent()).ok());
  }
  EXPECT_FALSE(gen.propagate("", false).sampled());
}

TEST(TraceparentTest, NewTracesAreValidAndDistinct) {
  IdGenerator gen(1);
  std::set<std::string> ids;
  const std::regex shape("00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]");
  for (int i = 0; i < 1000; ++i) {
    TraceContext t = gen.newTrace(i % 2 == 0);
    const std::string tp = t.traceparent();
    EXPECT_TRUE(std::regex_match(tp, shape)) << tp;
    EXPECT_TRUE(parseTraceparent(tp).ok()) << tp;
    ids.insert(t.traceIdHex());
  }
  EXPECT_EQ(ids.size(), 1000u);
}

TEST(RequestIdTest, Uuid4Format) {
  IdGenerator gen(99);
  const std::regex uuid4("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}");
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    std::string id = gen.requestId();
    ASSERT_EQ(id.size(), kRequestIdLength);
    EXPECT_TRUE(std::regex_match(id, uuid4)) << id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000u);

  char buf[kRequestIdLength + 1];
  buf[kRequestIdLength] = '#';
  gen.writeRequestId(buf);
  EXPECT_EQ(buf[kRequestIdLength], '#') << "writes exactly 36 bytes";
  EXPECT_TRUE(std::regex_match(std::string(buf, kRequestIdLength), uuid4));
}

TEST(RequestIdTest, SeedsAreReproducibleAndThreadGeneratorsDiffer) {
  IdGenerator a(5), b(5), c(6);
  EXPECT_EQ(a.requestId(), b.requestId());
  EXPECT_NE(a.requestId(), c.requestId());

  std::string main_id = threadIdGenerator().requestId();
  std::string other_id;
  std::thread t([&] { other_id = threadIdGenerator().requestId(); });
  t.join();
  EXPECT_NE(main_id, other_id);
}

TEST(RequestIdTest, AcceptableIncomingIds) {
  EXPECT_TRUE(isAcceptableRequestId("abc-123"));
  EXPECT_TRUE(isAcceptableRequestId(std::string(kMaxRequestIdBytes, 'x')));
  EXPECT_FALSE(isAcceptableRequestId(""));
  EXPECT_FALSE(isAcceptableRequestId(std::string(kMaxRequestIdBytes + 1, 'x')));
  EXPECT_FALSE(isAcceptableRequestId("has space"));
  EXPECT_FALSE(isAcceptableRequestId("new\nline"));
  EXPECT_FALSE(isAcceptableRequestId("caf\xc3\xa9"));
}

} // namespace
} // namespace trellis::telemetry
