// Hostile YAML found by fuzzing (tests/fuzz/fuzz_manifest.cc) and its neighbours: each class
// must end in a precise error, with time and memory bounded by the documented limits, not by
// what the text would expand to. Each input here used to hang, exhaust memory or build
// hundreds of MiB of yaml-cpp nodes before failing. The minimized inputs are also seeds in
// tests/fuzz/corpus/fuzz_manifest/.

#include <string>

#include <gtest/gtest.h>

#include "manifest/helpers.h"
#include "manifest/manifest.h"

namespace trellis::manifest {
namespace {

using testing::loadError;
using testing::loadOne;

// A token yaml-cpp 0.7 cannot place at a document's top level (jbeder/yaml-cpp#1040) made
// LoadAll report an empty document at that token forever, allocating a node each time until
// memory ran out. The first input is the fuzzer's artifact as found.
TEST(YamlLimits, StrayTokenIsAnErrorNotAnEndlessStreamOfDocuments) {
  EXPECT_EQ(loadError(std::string(",e\x01\x00%\x00", 6)),
            "test.yaml: invalid YAML at line 1, column 1: unexpected \",\"");
  EXPECT_EQ(loadError(","), "test.yaml: invalid YAML at line 1, column 1: unexpected \",\"");
  EXPECT_EQ(loadError("&a ,"), "test.yaml: invalid YAML at line 1, column 4: unexpected \",\"");
  // After a complete document, and after an explicit document end.
  EXPECT_EQ(loadError("- a\n,\n"), "test.yaml: invalid YAML at line 2, column 1: unexpected \",\"");
  EXPECT_EQ(loadError("a\n...\n,\n"),
            "test.yaml: invalid YAML at line 3, column 1: unexpected \",\"");
  EXPECT_EQ(loadError("---\n,\n"), "test.yaml: invalid YAML at line 2, column 1: unexpected \",\"");
  // Behind a UTF-8 byte order mark (not counted in yaml-cpp's positions).
  EXPECT_EQ(loadError("\xef\xbb\xbf- a\n,\n"),
            "test.yaml: invalid YAML at line 2, column 1: unexpected \",\"");
  // In UTF-16 yaml-cpp's positions are not byte offsets: the token is not quoted.
  EXPECT_EQ(loadError(std::string("\xff\xfe-\0 \0a\0\n\0,\0", 12)),
            "test.yaml: invalid YAML at line 2, column 1: unexpected token");
  // Commas inside a flow collection are still fine.
  const Resource r = loadOne("apiVersion: v1\nkind: Service\nmetadata: {name: api,}\n"
                             "spec: {ports: [{port: 80},]}\n");
  EXPECT_EQ(r.metadata.name, "api");
}

// "Billion laughs": 7 short lines whose aliases expand to 10^7 values. Stopped at the alias
// that crosses the node budget, before anything is copied.
TEST(YamlLimits, AliasBombStopsAtTheNodeBudget) {
  std::string bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i <= 6; ++i) {
    bomb += fmt::format("a{}: &a{} [", i, i);
    for (int j = 0; j < 10; ++j)
      bomb += fmt::format("{}*a{}", j == 0 ? "" : ", ", i - 1);
    bomb += "]\n";
  }
  EXPECT_EQ(loadError(bomb), "test.yaml: document 1, line 6: a5[3]: alias *a4: more than 500000 "
                             "YAML nodes in the file (keys and values, aliases expanded)");
}

// Aliases of a long string multiply bytes rather than nodes.
TEST(YamlLimits, AliasesOfALongStringStopAtTheByteBudget) {
  std::string text = "a: &a \"" + std::string(1024 * 1024, 'x') + "\"\n";
  text += "b: [*a, *a, *a, *a, *a, *a, *a, *a]\n";
  EXPECT_EQ(loadError(text), "test.yaml: document 1, line 2: b[6]: alias *a: more than 8388608 "
                             "bytes of keys and values in the file (aliases expanded)");
}

// An anchor is registered before its node is complete, so yaml-cpp accepts an alias to an
// enclosing node: a cycle, which JSON cannot hold and which used to be expanded until the
// node budget ran out.
TEST(YamlLimits, AliasInsideItsOwnAnchorIsAnError) {
  EXPECT_EQ(loadError("&a [*a, *a]\n"),
            "test.yaml: document 1, line 1: [0]: alias *a refers to a value that contains it");
  EXPECT_EQ(loadError("spec: &s {ports: *s}\n"),
            "test.yaml: document 1, line 1: spec.ports: alias *s refers to a value that "
            "contains it");
}

// Deep flow and block nesting stop at kMaxNestingDepth while parsing, before yaml-cpp recurses
// further (its own guard is at 500 levels and says only "bad file"). A node at depth 33 is the
// error: for nested mappings that is the key of the 33rd.
TEST(YamlLimits, DeepNestingStopsAtTheDepthLimit) {
  std::string path;
  for (int i = 0; i < 33; ++i)
    path += "[0]";
  EXPECT_EQ(loadError(std::string(40, '[') + std::string(40, ']')),
            "test.yaml: document 1, line 1: " + path + ": nested more than 32 levels deep");

  std::string block;
  for (int i = 0; i < 40; ++i)
    block += std::string(i, ' ') + "- \n";
  EXPECT_EQ(loadError(block),
            "test.yaml: document 1, line 34: " + path + ": nested more than 32 levels deep");

  std::string maps;
  for (int i = 0; i < 40; ++i)
    maps += "{a: ";
  maps += "1" + std::string(40, '}');
  path = "a";
  for (int i = 1; i < 32; ++i)
    path += ".a";
  EXPECT_EQ(loadError(maps),
            "test.yaml: document 1, line 1: " + path + ": nested more than 32 levels deep");

  // Unclosed and far deeper: the same error, at the same depth, without reading further.
  for (std::string_view open : {"[", "{a: "}) {
    std::string text;
    for (int i = 0; i < 100000; ++i)
      text += open;
    const std::string got = loadError(text);
    EXPECT_EQ(got.rfind("test.yaml: document 1, line 1: ", 0), 0u) << got;
    EXPECT_NE(got.find(": nested more than 32 levels deep"), std::string::npos) << got;
  }
}

// An alias can carry an anchored tree deeper than the text nests it.
TEST(YamlLimits, AliasThatNestsPastTheDepthLimit) {
  const std::string deep = std::string(31, '[') + std::string(31, ']');
  // Anchored at depth 1 its innermost list is at depth 31; the alias puts it at 33.
  EXPECT_EQ(loadError("d: &d " + deep + "\nspec: {a: {b: *d}}\n"),
            "test.yaml: document 1, line 2: spec.a.b: alias *d nests values more than 32 levels "
            "deep");
  // At depth 2 it still fits (innermost at 32): the error is the missing kind.
  const std::string fits = loadError("d: &d " + deep + "\nspec: {a: *d}\n");
  EXPECT_EQ(fits.find("levels deep"), std::string::npos) << fits;
  EXPECT_NE(fits.find("document 1: kind: required field is missing"), std::string::npos) << fits;
}

// Without aliases: a text of empty list items (two bytes each) reaches the node budget, and
// the error comes at the item that crosses it instead of after yaml-cpp built ~0.5 KiB of
// node for every item.
TEST(YamlLimits, ManyNodesStopAtTheNodeBudget) {
  std::string items;
  for (size_t i = 0; i <= kMaxNodesPerFile; ++i)
    items += "-\n";
  // yaml-cpp places an empty item at the next `-`, hence line 500001 for item 499999.
  EXPECT_EQ(loadError(items), "test.yaml: document 1, line 500001: [499999]: more than 500000 "
                              "YAML nodes in the file (keys and values, aliases expanded)");
}

// The document limit is checked as each document starts, not after all are parsed.
TEST(YamlLimits, DocumentsStopAtTheLimit) {
  std::string many;
  for (size_t i = 0; i < 100000; ++i)
    many += "---\n";
  EXPECT_EQ(loadError(many),
            "test.yaml: document 1001, line 1001: more than 1000 documents, the limit per file");
}

// Anchors and aliases that stay within the limits keep working, expanded as copies.
TEST(YamlLimits, OrdinaryAliasesStillWork) {
  const Resource r = loadOne("apiVersion: v1\nkind: Service\n"
                             "metadata: {name: api, labels: &l {app: api}, annotations: *l}\n"
                             "spec: {ports: [&p {name: http, port: 80}]}\n");
  EXPECT_EQ(r.metadata.labels.at("app"), "api");
  EXPECT_EQ(r.metadata.annotations.at("app"), "api");
  // Anchors are per document: the same name in the next document is a new anchor.
  auto two = loadString("apiVersion: v1\nkind: Service\nmetadata: {name: &n a}\n"
                        "spec: {ports: [{port: 80}]}\n---\n"
                        "apiVersion: v1\nkind: Service\nmetadata: {name: &n b, labels: {x: *n}}\n"
                        "spec: {ports: [{port: 80}]}\n",
                        "test.yaml");
  ASSERT_TRUE(two.ok()) << two.error().message();
  ASSERT_EQ(two->size(), 2u);
  EXPECT_EQ((*two)[1].metadata.labels.at("x"), "b");
  // An alias to an anchor of an earlier document is yaml-cpp's error.
  EXPECT_EQ(loadError("a: &n 1\n---\nb: *n\n"),
            "test.yaml: invalid YAML at line 3, column 4: the referenced anchor is not defined");
}

} // namespace
} // namespace trellis::manifest
