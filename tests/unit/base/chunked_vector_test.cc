#include "base/chunked_vector.h"

#include <memory>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace trellis {
namespace {

using V = ChunkedVector<std::shared_ptr<int>>;

std::vector<int> values(const V& v) {
  std::vector<int> out;
  for (const auto& p : v)
    out.push_back(p ? *p : -1);
  return out;
}

std::vector<int> values(const std::vector<std::shared_ptr<int>>& v) {
  std::vector<int> out;
  for (const auto& p : v)
    out.push_back(p ? *p : -1);
  return out;
}

// Random pushes, sets and copies against std::vector: each copy reads as its model, whatever
// is done to the vectors it was copied from or to afterwards (copy-on-write of shared chunks).
TEST(ChunkedVector, CopiesAreIndependentAndReadLikeAVector) {
  std::mt19937 rng(7);
  std::vector<V> vs(1);
  std::vector<std::vector<std::shared_ptr<int>>> models(1);
  for (int step = 0; step < 4000; ++step) {
    const size_t which = rng() % vs.size();
    V& v = vs[which];
    auto& m = models[which];
    const uint32_t op = rng() % 10;
    if (op < 4 || m.empty()) {
      auto p = std::make_shared<int>(step);
      v.push_back(p);
      m.push_back(p);
    } else if (op < 8) {
      const size_t i = rng() % m.size();
      auto p = std::make_shared<int>(step);
      v.set(i, p);
      m[i] = p;
    } else if (vs.size() < 8) {
      vs.push_back(v); // may reallocate: v and m are not used after this
      models.push_back(models[which]);
    } else {
      const size_t from = rng() % vs.size();
      vs[which] = vs[from];
      models[which] = models[from];
    }
    for (size_t k = 0; k < vs.size(); ++k) {
      ASSERT_EQ(vs[k].size(), models[k].size()) << "step " << step;
      ASSERT_EQ(values(vs[k]), values(models[k])) << "step " << step << " vector " << k;
    }
  }
}

TEST(ChunkedVector, ACopyChangedInOnePlaceSharesTheOtherChunks) {
  V a;
  for (int i = 0; i < 100; ++i)
    a.push_back(std::make_shared<int>(i));
  ASSERT_EQ(a.chunkCount(), (100 + V::kChunk - 1) / V::kChunk);
  V b = a;
  for (size_t k = 0; k < a.chunkCount(); ++k)
    EXPECT_TRUE(b.sharesChunk(a, k));
  auto old = a[40];
  b.set(40, std::make_shared<int>(-40));
  for (size_t k = 0; k < a.chunkCount(); ++k)
    EXPECT_EQ(b.sharesChunk(a, k), k != 40 / V::kChunk) << k;
  EXPECT_EQ(*a[40], 40);
  EXPECT_EQ(*b[40], -40);
  EXPECT_EQ(a[40], old);
  // Only the vectors hold each element: the copied chunk added one reference to the others
  // of its chunk, none to the rest.
  EXPECT_EQ(a[41].use_count(), 2);
  EXPECT_EQ(a[80].use_count(), 1);
  EXPECT_EQ(values(b.toVector()).size(), 100u);
}

} // namespace
} // namespace trellis
