#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "registry/catalog.h"
#include "registry/test_util.h"

namespace trellis::registry {
namespace {

using namespace testing;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

KvPutRequest put(std::string key, std::string value, std::optional<uint64_t> cas = std::nullopt,
                 uint64_t flags = 0) {
  return KvPutRequest{std::move(key), std::move(value), flags, cas};
}

std::vector<std::string> keysOf(const std::vector<KvPtr>& v) {
  std::vector<std::string> out;
  for (const auto& e : v)
    out.push_back(e->key);
  return out;
}

TEST(KvTest, PutGetAndIndexes) {
  Catalog c;
  applyOk(c, put("config/a", "1", std::nullopt, 42));
  applyOk(c, put("other", "x"));
  applyOk(c, put("config/a", "2", std::nullopt, 43));
  auto e = c.kvGet("config/a");
  ASSERT_TRUE(e.value);
  EXPECT_EQ(e.value->value, "2");
  EXPECT_EQ(e.value->flags, 43u);
  EXPECT_EQ(e.value->create_index, 1u);
  EXPECT_EQ(e.value->modify_index, 3u);
  EXPECT_EQ(e.value->lock_index, 0u);
  EXPECT_EQ(e.index, 3u);
  EXPECT_EQ(c.kvGet("other").index, 2u) << "a key's index is its own ModifyIndex";
  EXPECT_FALSE(c.kvGet("missing").value);
}

TEST(KvTest, EveryPutBumpsEvenWithTheSameValue) {
  Catalog c;
  applyOk(c, put("k", "v"));
  uint64_t idx = applyOk(c, put("k", "v"));
  EXPECT_EQ(idx, 2u) << "as Consul: KV writes always take a new index";
  EXPECT_EQ(c.kvGet("k").value->modify_index, 2u);
}

TEST(KvTest, BinaryValuesAndKeys) {
  Catalog c;
  std::string value("\x00\x01\xff zero", 8);
  applyOk(c, put("bin", value));
  EXPECT_EQ(c.kvGet("bin").value->value, value);
}

TEST(KvTest, RecurseListsThePrefix) {
  Catalog c;
  for (const char* k : {"a/1", "a/2", "a/b/3", "ab", "b/1"})
    applyOk(c, put(k, "v"));
  EXPECT_THAT(keysOf(c.kvList("a/").value), ElementsAre("a/1", "a/2", "a/b/3"));
  EXPECT_THAT(keysOf(c.kvList("a").value), ElementsAre("a/1", "a/2", "a/b/3", "ab"));
  EXPECT_EQ(c.kvList("").value.size(), 5u);
  EXPECT_TRUE(c.kvList("zzz").value.empty());
  EXPECT_EQ(c.kvList("a/").index, 3u);
}

TEST(KvTest, KeysWithSeparator) {
  Catalog c;
  for (const char* k : {"a/b/c", "a/b/d", "a/e", "a/f/", "a/f/g/h", "b", "a/"})
    applyOk(c, put(k, "v"));
  EXPECT_THAT(c.kvKeys("a/", "/").value, ElementsAre("a/", "a/b/", "a/e", "a/f/"));
  EXPECT_THAT(c.kvKeys("", "/").value, ElementsAre("a/", "b"));
  EXPECT_THAT(c.kvKeys("a/").value, ElementsAre("a/", "a/b/c", "a/b/d", "a/e", "a/f/", "a/f/g/h"));
  // A multi-character separator.
  Catalog d;
  for (const char* k : {"x::y::z", "x::w", "x"})
    applyOk(d, put(k, "v"));
  EXPECT_THAT(d.kvKeys("x::", "::").value, ElementsAre("x::w", "x::y::"));
}

TEST(KvTest, KeysWithSeparatorSkipsHighBytes) {
  Catalog c;
  applyOk(c, put("p/\xff\xff/a", "v"));
  applyOk(c, put("p/\xff\xff/b", "v"));
  applyOk(c, put("p/z", "v"));
  EXPECT_THAT(c.kvKeys("p/", "/").value, ElementsAre("p/z", "p/\xff\xff/"));
}

TEST(KvTest, CasZeroCreatesOnly) {
  Catalog c;
  applyOk(c, put("lock", "me", 0));
  Error e = applyErr(c, put("lock", "you", 0));
  EXPECT_EQ(e.code(), ErrorCode::kFailedPrecondition);
  EXPECT_THAT(e.message(), HasSubstr("already exists"));
  EXPECT_EQ(c.kvGet("lock").value->value, "me");
}

TEST(KvTest, CasMustMatchModifyIndex) {
  Catalog c;
  uint64_t idx = applyOk(c, put("k", "1"));
  applyOk(c, put("other", "x"));
  Error e = applyErr(c, put("k", "2", idx + 1));
  EXPECT_EQ(e.code(), ErrorCode::kFailedPrecondition);
  EXPECT_THAT(e.message(), HasSubstr("has ModifyIndex 1, not 2"));
  uint64_t idx2 = applyOk(c, put("k", "2", idx));
  EXPECT_EQ(c.kvGet("k").value->value, "2");
  // The old index is stale now.
  EXPECT_EQ(applyErr(c, put("k", "3", idx)).code(), ErrorCode::kFailedPrecondition);
  applyOk(c, put("k", "3", idx2));
  // cas=N on a missing key fails.
  EXPECT_THAT(applyErr(c, put("missing", "x", 5)).message(), HasSubstr("does not exist"));
}

TEST(KvTest, DeleteWithCas) {
  Catalog c;
  uint64_t idx = applyOk(c, put("k", "1"));
  EXPECT_EQ(applyErr(c, KvDeleteRequest{"k", false, idx + 7}).code(),
            ErrorCode::kFailedPrecondition);
  EXPECT_TRUE(c.kvGet("k").value);
  applyOk(c, KvDeleteRequest{"k", false, idx});
  EXPECT_FALSE(c.kvGet("k").value);
  // Deleting what is not there succeeds (with or without cas), changing nothing.
  auto r = c.apply(KvDeleteRequest{"k", false, 3});
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->changed);
}

TEST(KvTest, DeleteRecurse) {
  Catalog c;
  for (const char* k : {"a/1", "a/2", "ab", "b"})
    applyOk(c, put(k, "v"));
  uint64_t idx = applyOk(c, KvDeleteRequest{"a/", true, std::nullopt});
  EXPECT_EQ(idx, 5u) << "one write, one index";
  EXPECT_THAT(keysOf(c.kvList("").value), ElementsAre("ab", "b"));
  EXPECT_THAT(applyErr(c, KvDeleteRequest{"a", true, 1}).message(),
              HasSubstr("cas cannot be combined with recurse"));
  applyOk(c, KvDeleteRequest{"", true, std::nullopt});
  EXPECT_TRUE(c.kvList("").value.empty());
  EXPECT_EQ(c.counts().kv, 0u);
}

TEST(KvTest, DeletesMoveTheIndexOfTheKeyAndPrefix) {
  Catalog c;
  applyOk(c, put("a/1", "v"));
  applyOk(c, put("b", "v"));
  EXPECT_EQ(c.kvList("a/").index, 1u);
  applyOk(c, KvDeleteRequest{"a/1", false, std::nullopt});
  EXPECT_EQ(c.kvGet("a/1").index, 3u) << "a tombstone keeps the delete's index";
  EXPECT_EQ(c.kvList("a/").index, 3u);
  EXPECT_EQ(c.kvGet("b").index, 2u);
}

TEST(KvTest, ReapedTombstonesNeverMoveIndexesBack) {
  CatalogSettings s;
  s.max_kv_tombstones = 2;
  Catalog c(s);
  for (int i = 0; i < 5; ++i)
    applyOk(c, put("k" + std::to_string(i), "v"));
  for (int i = 0; i < 5; ++i)
    applyOk(c, KvDeleteRequest{"k" + std::to_string(i), false, std::nullopt});
  EXPECT_LE(c.counts().kv_tombstones, 2u);
  // k0 was deleted at index 6 and its tombstone is gone: its index must still be >= 6.
  EXPECT_GE(c.kvGet("k0").index, 6u);
  EXPECT_GE(c.kvList("k").index, 10u);
}

TEST(KvTest, Validation) {
  Catalog c;
  EXPECT_THAT(applyErr(c, put("", "v")).message(), HasSubstr("KV key: missing"));
  CatalogSettings s;
  s.limits.max_kv_value_size = 4;
  s.limits.max_kv_key_length = 8;
  Catalog d(s);
  EXPECT_THAT(applyErr(d, put("k", "12345")).message(), HasSubstr("5 bytes, the limit is 4"));
  EXPECT_THAT(applyErr(d, put("123456789", "1")).message(), HasSubstr("the limit is 8"));
  s.limits.max_kv_entries = 1;
  Catalog e(s);
  applyOk(e, put("a", "1"));
  EXPECT_EQ(applyErr(e, put("b", "1")).code(), ErrorCode::kResourceExhausted);
  applyOk(e, put("a", "2")); // updating an existing key is fine at the limit
}

} // namespace
} // namespace trellis::registry
