#include "registry/model.h"

#include <gtest/gtest.h>

namespace trellis::registry {
namespace {

TEST(ModelTest, Placeholder) { EXPECT_EQ(foldName("AbC"), "abc"); }

} // namespace
} // namespace trellis::registry
