#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "manifest/helpers.h"
#include "manifest/manifest.h"

namespace trellis::manifest {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::expectRoundTrip;
using testing::loadError;
using testing::loadOne;

constexpr std::string_view kService = R"(apiVersion: v1
kind: Service
metadata: {name: api}
spec: {ports: [{name: http, port: 80}]}
)";

std::string serviceNamed(std::string_view name, std::string_view ns = "default") {
  return fmt::format("apiVersion: v1\nkind: Service\nmetadata: {{name: {}, namespace: {}}}\n"
                     "spec: {{ports: [{{port: 80}}]}}\n",
                     name, ns);
}

TEST(Load, MultiDocumentFileWithEveryKind) {
  auto r = loadString(R"(# comments and empty documents are skipped
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec: {ports: [{name: http, port: 80}]}
---
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{kind: Service, group: "", name: api}]
  rules: [{backendRefs: [{name: api, port: 80}]}]
---
apiVersion: trellis.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: api}
spec: {targetRef: {kind: Service, name: api}, retries: {attempts: 1}}
...
)",
                      "mesh.yaml");
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[0].kind(), Kind::kService);
  EXPECT_EQ((*r)[1].kind(), Kind::kHttpRoute);
  EXPECT_EQ((*r)[2].kind(), Kind::kTrafficPolicy);
  // The same name in different kinds is three identities.
  EXPECT_NE((*r)[0].id(), (*r)[1].id());
  for (const Resource& res : *r)
    expectRoundTrip(res);

  auto empty = loadString("# nothing here\n", "empty.yaml");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST(Load, DocumentIndexCountsEveryDocument) {
  const std::string msg = loadError(std::string(kService) + "---\n---\n" +
                                    "apiVersion: v1\nkind: Service\n"
                                    "metadata: {name: broken}\nspec: {}\n");
  EXPECT_EQ(msg, "test.yaml: document 3 (Service \"broken\"): spec.ports: required field is "
                 "missing");
}

TEST(Load, RejectsTheSameIdentityTwice) {
  EXPECT_EQ(loadError(std::string(kService) + "---\n" + std::string(kService)),
            "test.yaml: document 2 (Service \"api\"): Service default/api is also defined by "
            "document 1");
  // Another namespace is another identity.
  auto r = loadString(serviceNamed("api") + "---\n" + serviceNamed("api", "other"), "x.yaml");
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->size(), 2u);
}

TEST(Load, KindsAndApiVersions) {
  const std::string unknown = loadError("apiVersion: apps/v1\nkind: Deployment\n"
                                        "metadata: {name: d}\nspec: {}\n");
  EXPECT_EQ(unknown, "test.yaml: document 1 (Deployment \"d\"): kind: unknown kind "
                     "\"Deployment\" (supported: HTTPRoute (apiVersion "
                     "gateway.networking.k8s.io/v1), TrafficPolicy (apiVersion "
                     "trellis.dev/v1alpha1), Service (apiVersion v1))");
  EXPECT_NE(loadError("apiVersion: gateway.networking.k8s.io/v1beta1\nkind: HTTPRoute\n"
                      "metadata: {name: r}\nspec: {}\n")
                .find("apiVersion: unsupported apiVersion \"gateway.networking.k8s.io/v1beta1\" "
                      "for HTTPRoute (supported: "),
            std::string::npos);
  EXPECT_NE(loadError("kind: Service\nmetadata: {name: s}\nspec: {}\n")
                .find("test.yaml: document 1 (Service \"s\"): apiVersion: required field is "
                      "missing (Service is v1)"),
            std::string::npos);
  EXPECT_NE(loadError("apiVersion: v1\nmetadata: {name: s}\n")
                .find("test.yaml: document 1: kind: required field is missing (supported: "),
            std::string::npos);
  EXPECT_EQ(loadError("- a\n- b\n"), "test.yaml: document 1: expected a mapping with apiVersion, "
                                     "kind, metadata and spec, got a list");
  EXPECT_NE(loadError(std::string(kService) + "status: {}\n")
                .find("document 1 (Service \"api\"): status: unknown field (expected one of: "
                      "apiVersion, kind, metadata, spec)"),
            std::string::npos);
  EXPECT_NE(loadError("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n")
                .find("(Service \"s\"): spec: required field is missing"),
            std::string::npos);
}

TEST(Load, Metadata) {
  auto withMeta = [](std::string_view meta) {
    return fmt::format("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
                       "metadata: {}\nspec: {{parentRefs: [{{name: edge}}]}}\n",
                       meta);
  };
  // HTTPRoute names are DNS subdomains (dots allowed); Service names DNS-1035 labels.
  EXPECT_EQ(loadOne(withMeta("{name: api.v2}")).metadata.name, "api.v2");
  struct Case {
    const char* meta;
    const char* expected;
  };
  const Case cases[] = {
      {"{}", "document 1 (HTTPRoute): metadata.name: required field is missing"},
      {"{name: Api}", "metadata.name: invalid name \"Api\""},
      {"{name: api-}", "metadata.name: invalid name \"api-\""},
      {"{name: a, namespace: my.ns}", "metadata.namespace: invalid namespace \"my.ns\""},
      {"{name: a, labels: {\"bad key!\": x}}", "metadata.labels.bad key!: invalid key"},
      {"{name: a, labels: {app: \"-x\"}}", "metadata.labels.app: invalid label value \"-x\""},
      {"{name: a, labels: {Example.com/app: x}}", "the prefix before '/' must be a DNS subdomain"},
      {"{name: a, annotations: {note: 5}}",
       "metadata.annotations.note: expected a string, got an integer 5 (quote it"},
      {"{name: a, uid: x}", "metadata.uid: unknown field (expected one of: name, namespace, "
                            "labels, annotations)"},
      {"{name: a, lables: {}}", "metadata.lables: unknown field (did you mean \"labels\"?)"},
      {"[a]", "metadata: expected a mapping, got a list"},
  };
  for (const Case& c : cases) {
    const std::string msg = loadError(withMeta(c.meta));
    EXPECT_NE(msg.find(c.expected), std::string::npos)
        << "got:      " << msg << "\nexpected: " << c.expected;
  }
  EXPECT_NE(loadError("apiVersion: v1\nkind: Service\nmetadata: {name: api.v2}\n"
                      "spec: {ports: [{port: 80}]}\n")
                .find("metadata.name: invalid Service name \"api.v2\""),
            std::string::npos);
  EXPECT_NE(loadError(serviceNamed("1api")).find("invalid Service name \"1api\""),
            std::string::npos);
  const std::string big(kMaxAnnotationBytes, 'x');
  EXPECT_NE(loadError(withMeta(fmt::format("{{name: a, annotations: {{note: {}}}}}", big)))
                .find("metadata.annotations: 262148 bytes in all, at most 262144 allowed"),
            std::string::npos);
  const Resource r = loadOne(withMeta("{name: a, namespace: team-a, labels: {app: web, "
                                      "example.com/tier: \"\"}, annotations: {note: \"any "
                                      "text: at all\"}}"));
  EXPECT_EQ(r.metadata.namespace_name, "team-a");
  EXPECT_EQ(r.metadata.labels.at("example.com/tier"), "");
  expectRoundTrip(r);
}

// YAML 1.2 typing, as JSON sees it: quoted is a string, plain 80 an integer.
TEST(Load, YamlTypesAndStructure) {
  EXPECT_NE(loadError("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
                      "spec: {ports: [{port: \"80\"}]}\n")
                .find("spec.ports[0].port: expected an integer, got a string \"80\""),
            std::string::npos);
  // `yes` and `on` are plain strings in YAML 1.2, unlike YAML 1.1.
  EXPECT_NE(loadError("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
                      "spec: {ports: [{port: yes}]}\n")
                .find("expected an integer, got a string \"yes\""),
            std::string::npos);
  // Hex and octal integers are integers.
  const Resource hex = loadOne("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
                               "spec: {ports: [{port: 0x50}]}\n");
  EXPECT_EQ(std::get<Service>(hex.spec).ports[0].port, 80);
  // An empty value is absent (Kubernetes' null).
  const Resource nulls = loadOne("apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n"
                                 "  labels:\nspec:\n  selector: ~\n  ports: [{port: 80}]\n");
  EXPECT_TRUE(nulls.metadata.labels.empty());
  // Block scalars are strings.
  const Resource block = loadOne("apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n"
                                 "  annotations:\n    note: |\n      line one\n      line two\n"
                                 "spec: {ports: [{port: 80}]}\n");
  EXPECT_EQ(block.metadata.annotations.at("note"), "line one\nline two\n");

  EXPECT_EQ(loadError("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n"
                      "  ports: [{port: 80}]\n  ports: [{port: 81}]\n"),
            "test.yaml: document 1, line 6: spec.ports: duplicate key");
  EXPECT_EQ(loadError("apiVersion: v1\nkind: [Service\n"),
            "test.yaml: invalid YAML at line 3, column 1: end of sequence flow not found");
  EXPECT_NE(loadError("apiVersion: v1\nkind: Service\nmetadata: {name: !custom s}\n")
                .find("document 1, line 3: metadata.name: unsupported YAML tag \"!custom\""),
            std::string::npos);
  EXPECT_NE(loadError("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
                      "spec: {ports: [{port: .inf}]}\n")
                .find("spec.ports[0].port: .inf is not supported (numbers must be finite)"),
            std::string::npos);
  EXPECT_NE(loadError("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
                      "spec: {ports: [{port: 99999999999999999999999}]}\n")
                .find("integer 99999999999999999999999 is out of range"),
            std::string::npos);
  EXPECT_NE(loadError("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
                      "spec: {ports: [{port: 80}], ? [a]: b}\n")
                .find("spec: mapping keys must be strings"),
            std::string::npos);
  // Explicitly tagged strings stay strings.
  EXPECT_NE(loadError("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
                      "spec: {ports: [{port: !!str 80}]}\n")
                .find("expected an integer, got a string \"80\""),
            std::string::npos);
}

TEST(Load, Limits) {
  // Nesting.
  std::string deep = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: ";
  for (size_t i = 0; i < kMaxNestingDepth + 1; ++i)
    deep += "[";
  for (size_t i = 0; i < kMaxNestingDepth + 1; ++i)
    deep += "]";
  EXPECT_NE(loadError(deep + "\n").find("nested more than 32 levels deep"), std::string::npos);

  // Nesting far past the limit stops at the limit while parsing (no stack overflow), and
  // aliases that multiply ("billion laughs") stop at the node budget, not at memory: both are
  // covered with the other hostile inputs in yaml_limits_test.cc.
  EXPECT_NE(loadError(std::string(100000, '[')).find("nested more than 32 levels deep"),
            std::string::npos);
  EXPECT_NE(loadError("a: *missing\n").find("test.yaml: invalid YAML"), std::string::npos);

  // Hostile keys and values are cut and escaped in messages.
  const std::string long_key = loadError(std::string(kService) + std::string(1000, 'k') + ": 1\n");
  EXPECT_LT(long_key.size(), 400u);
  EXPECT_NE(long_key.find(std::string(64, 'k') + "...: unknown field"), std::string::npos)
      << long_key;
  EXPECT_NE(loadError(std::string(kService) + "\"a\\x01b\": 1\n").find("a\\x01b: unknown field"),
            std::string::npos);
  EXPECT_LT(loadError("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: " +
                      std::string(1000000, 'x') + "}]}\n")
                .size(),
            400u);

  // Documents per file.
  std::string many;
  for (size_t i = 0; i <= kMaxDocumentsPerFile; ++i)
    many += "---\n";
  EXPECT_EQ(loadError(many),
            "test.yaml: document 1001, line 1001: more than 1000 documents, the limit per file");

  // File size.
  const std::string huge(kMaxFileBytes + 1, '#');
  EXPECT_EQ(loadError(huge), "test.yaml: 4194305 bytes, larger than the 4194304 byte limit");
}

class LoadPath : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           fmt::format("manifest-{}-{}", ::getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, std::string_view text) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }

  fs::path dir_;
};

TEST_F(LoadPath, OneFile) {
  const std::string f = write("svc.yaml", kService);
  auto r = loadPath(f);
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ(r->front().metadata.name, "api");
}

TEST_F(LoadPath, DirectoryReadsYamlFilesInNameOrderNotRecursively) {
  write("b.yml", serviceNamed("second"));
  write("a.yaml", serviceNamed("first") + "---\n" + serviceNamed("first-2"));
  write("c.yaml.bak", serviceNamed("ignored-backup"));
  write("notes.txt", "not yaml at all: [");
  fs::create_directories(dir_ / "sub.yaml");
  write("sub.yaml/inner.yaml", serviceNamed("ignored-nested"));
  auto r = loadPath(dir_.string());
  ASSERT_TRUE(r.ok()) << r.error().message();
  std::vector<std::string> names;
  for (const Resource& res : *r)
    names.push_back(res.metadata.name);
  EXPECT_EQ(names, (std::vector<std::string>{"first", "first-2", "second"}));
}

TEST_F(LoadPath, ErrorsNameTheFile) {
  write("a.yaml", serviceNamed("ok"));
  const std::string bad = write("b.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n"
                                          "spec: {ports: [{port: 80, protocol: UDP}]}\n");
  auto r = loadPath(dir_.string());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), bad + ": document 1 (Service \"x\"): spec.ports[0].protocol: "
                                       "UDP is not supported: the mesh carries TCP only");
}

TEST_F(LoadPath, DuplicateAcrossFiles) {
  const std::string a = write("a.yaml", serviceNamed("api"));
  const std::string b = write("b.yaml", serviceNamed("other") + "---\n" + serviceNamed("api"));
  auto r = loadPath(dir_.string());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), b +
                                     ": document 2 (Service \"api\"): Service default/api is "
                                     "also defined by " +
                                     a + " document 1");
}

TEST_F(LoadPath, MissingPath) {
  auto r = loadPath((dir_ / "nope.yaml").string());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kIo);
  EXPECT_NE(r.error().message().find("nope.yaml: cannot open"), std::string::npos);
}

TEST_F(LoadPath, FileTooLarge) {
  const std::string f = write("big.yaml", std::string(kMaxFileBytes + 10, '#'));
  auto r = loadPath(f);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), f + ": larger than the 4194304 byte limit");
}

TEST_F(LoadPath, ResourcesPerDirectoryLimit) {
  // 6 files of 1000 services (each file within its own limit), 6000 in all.
  for (int f = 0; f < 6; ++f) {
    std::string text;
    for (int i = 0; i < 1000; ++i)
      text += (i ? "---\n" : "") + serviceNamed(fmt::format("s{}-{}", f, i));
    write(fmt::format("f{}.yaml", f), text);
  }
  auto r = loadPath(dir_.string());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("more than 5000 resources, the limit per directory "
                                     "(reached in "),
            std::string::npos)
      << r.error().message();
}

TEST(Kinds, ParseAsKubectlDoes) {
  EXPECT_EQ(parseKind("HTTPRoute"), Kind::kHttpRoute);
  EXPECT_EQ(parseKind("httproutes"), Kind::kHttpRoute);
  EXPECT_EQ(parseKind("routes"), Kind::kHttpRoute);
  EXPECT_EQ(parseKind("TrafficPolicy"), Kind::kTrafficPolicy);
  EXPECT_EQ(parseKind("tp"), Kind::kTrafficPolicy);
  EXPECT_EQ(parseKind("svc"), Kind::kService);
  EXPECT_EQ(parseKind("Services"), Kind::kService);
  EXPECT_FALSE(parseKind("deployment"));
  EXPECT_FALSE(parseKind(""));
  for (Kind k : {Kind::kHttpRoute, Kind::kTrafficPolicy, Kind::kService})
    EXPECT_EQ(parseKind(kindName(k)), k);
}

TEST(Json, CanonicalForm) {
  const Resource r = loadOne("apiVersion: v1\nkind: Service\nmetadata: {name: api}\n"
                             "spec: {selector: {app: api}, ports: [{name: http, port: 80}]}\n");
  EXPECT_EQ(toJson(r), json::parse(R"({
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "api", "namespace": "default"},
    "spec": {"selector": {"app": "api"},
             "ports": [{"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"}]}
  })"));
  const Resource route = loadOne(R"(apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{kind: Service, group: "", name: api}]
  rules: [{backendRefs: [{name: api, port: 80}], timeouts: {request: 90s}}]
)");
  EXPECT_EQ(toJson(route)["spec"], json::parse(R"({
    "parentRefs": [{"group": "", "kind": "Service", "namespace": "default", "name": "api"}],
    "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
               "backendRefs": [{"group": "", "kind": "Service", "name": "api", "port": 80,
                                "weight": 1}],
               "timeouts": {"request": "1m30s"}}]
  })"));
}

TEST(Json, FromJsonValidatesLikeYaml) {
  json doc = json::parse(R"({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
    "metadata": {"name": "checkout"},
    "spec": {"parentRefs": [{"name": "edge"}],
             "rules": [{"backendRefs": [{"name": "a", "port": 80, "weight": -3}]}]}})");
  auto r = fromJson(doc);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "HTTPRoute \"checkout\": spec.rules[0].backendRefs[0].weight: "
                                 "must be 0..1000000, got -3");
  doc["spec"]["rules"][0]["backendRefs"][0]["weight"] = 5;
  auto ok = fromJson(doc);
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  EXPECT_EQ(std::get<HttpRoute>(ok->spec).rules[0].backend_refs[0].weight, 5u);

  auto notObject = fromJson(json::array());
  ASSERT_FALSE(notObject.ok());
  EXPECT_EQ(notObject.error().message(), "expected a mapping with apiVersion, kind, metadata and "
                                         "spec, got a list");
  auto floaty = fromJson(json::parse(R"({"apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "s"}, "spec": {"ports": [{"port": 80.5}]}})"));
  ASSERT_FALSE(floaty.ok());
  EXPECT_EQ(floaty.error().message(),
            "Service \"s\": spec.ports[0].port: expected an integer, got 80.5");
  auto big = fromJson(json::parse(R"({"apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "s"}, "spec": {"ports": [{"port": 18446744073709551615}]}})"));
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.error().message().find("must be 1..65535, got 18446744073709551615"),
            std::string::npos);
}

} // namespace
} // namespace trellis::manifest
