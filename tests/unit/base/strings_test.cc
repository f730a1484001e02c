#include <gtest/gtest.h>

#include "base/strings.h"

namespace trellis {
namespace {

TEST(EditDistance, CountsInsertionsDeletionsAndSubstitutions) {
  EXPECT_EQ(editDistance("", ""), 0u);
  EXPECT_EQ(editDistance("abc", ""), 3u);
  EXPECT_EQ(editDistance("", "abc"), 3u);
  EXPECT_EQ(editDistance("timeout", "timeout"), 0u);
  EXPECT_EQ(editDistance("timout", "timeout"), 1u);   // insertion
  EXPECT_EQ(editDistance("timeoutt", "timeout"), 1u); // deletion
  EXPECT_EQ(editDistance("tineout", "timeout"), 1u);  // substitution
  EXPECT_EQ(editDistance("kitten", "sitting"), 3u);
  EXPECT_EQ(editDistance("round-robbin", "round_robin"), 2u);
}

} // namespace
} // namespace trellis
