#include "base/result.h"

#include <memory>

#include <gtest/gtest.h>

namespace trellis {
namespace {

Result<int> half(int x) {
  if (x % 2 != 0)
    return makeError(ErrorCode::kInvalidArgument, "{} is odd", x);
  return x / 2;
}

Status quarter(int x, int* out) {
  auto h = half(x);
  TRELLIS_RETURN_IF_ERROR(h);
  auto q = half(*h);
  TRELLIS_RETURN_IF_ERROR(q);
  *out = *q;
  return okStatus();
}

TEST(ResultTest, HoldsValue) {
  auto r = half(10);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 5);
  EXPECT_EQ(r.valueOr(-1), 5);
}

TEST(ResultTest, HoldsError) {
  auto r = half(3);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(r.error().message(), "3 is odd");
  EXPECT_EQ(r.valueOr(-1), -1);
}

TEST(ResultTest, MoveOnlyValue) {
  Result<std::unique_ptr<int>> r(std::make_unique<int>(7));
  ASSERT_TRUE(r.ok());
  std::unique_ptr<int> p = std::move(r).value();
  EXPECT_EQ(*p, 7);
}

TEST(ResultTest, PropagatesFirstError) {
  int out = 0;
  EXPECT_TRUE(quarter(8, &out).ok());
  EXPECT_EQ(out, 2);
  auto st = quarter(6, &out); // 6/2 = 3, odd
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message(), "3 is odd");
}

TEST(ResultTest, ErrorContext) {
  Error e(ErrorCode::kNotFound, "no such cluster \"api\"");
  Error c = e.withContext("proxy.yaml:3");
  EXPECT_EQ(c.message(), "proxy.yaml:3: no such cluster \"api\"");
  EXPECT_EQ(c.code(), ErrorCode::kNotFound);
  EXPECT_STREQ(errorCodeName(c.code()), "not_found");
}

} // namespace
} // namespace trellis
