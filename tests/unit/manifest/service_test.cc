#include <gtest/gtest.h>

#include "manifest/helpers.h"
#include "manifest/manifest.h"

namespace trellis::manifest {
namespace {

using proxy::Protocol;
using testing::expectRoundTrip;
using testing::loadError;
using testing::loadOne;

TEST(Service, ParsesSelectorAndPorts) {
  const Resource r = loadOne(R"(apiVersion: v1
kind: Service
metadata: {name: orders, labels: {app: orders}}
spec:
  type: ClusterIP
  selector: {app: orders, app.kubernetes.io/version: "2"}
  ports:
    - {name: http, port: 80, targetPort: 8080}
    - {name: admin, port: 9000, targetPort: admin-port, appProtocol: http}
    - {name: db, port: 5432, protocol: TCP}
)");
  EXPECT_EQ(r.id().toString(), "Service default/orders");
  const auto& s = std::get<Service>(r.spec);
  EXPECT_EQ(s.selector.at("app"), "orders");
  EXPECT_EQ(s.selector.at("app.kubernetes.io/version"), "2");
  ASSERT_EQ(s.ports.size(), 3u);
  EXPECT_EQ(s.ports[0], (ServicePort{"http", 80, 8080, "", "", Protocol::kHttp}));
  EXPECT_EQ(s.ports[1], (ServicePort{"admin", 9000, 0, "admin-port", "http", Protocol::kHttp}));
  EXPECT_EQ(s.ports[2], (ServicePort{"db", 5432, 5432, "", "", Protocol::kTcp})); // default
  expectRoundTrip(r);

  // One port needs no name, and a selector is optional (instances registered by hand).
  const Resource one = loadOne(R"(apiVersion: v1
kind: Service
metadata: {name: cache, namespace: infra}
spec: {ports: [{port: 6379}]}
)");
  EXPECT_EQ(std::get<Service>(one.spec).ports[0].protocol, Protocol::kTcp);
  EXPECT_TRUE(std::get<Service>(one.spec).selector.empty());
  expectRoundTrip(one);
}

// Istio's protocol selection: appProtocol first, then the port name's prefix, else tcp.
TEST(Service, SelectsTheMeshProtocol) {
  struct Case {
    const char* name;
    const char* app_protocol;
    Protocol want;
  };
  const Case cases[] = {
      {"http", "", Protocol::kHttp},
      {"http-web", "", Protocol::kHttp},
      {"HTTP-web", "", Protocol::kHttp},
      {"https", "", Protocol::kTcp}, // not "http" nor "http-..."
      {"httpx", "", Protocol::kTcp},
      {"http2", "", Protocol::kTcp},
      {"grpc", "", Protocol::kTcp},
      {"tcp", "", Protocol::kTcp},
      {"tcp-db", "", Protocol::kTcp},
      {"", "", Protocol::kTcp},
      {"metrics", "", Protocol::kTcp},
      {"tcp-db", "http", Protocol::kHttp}, // appProtocol wins over the name
      {"http", "tcp", Protocol::kTcp},
      {"web", "HTTP", Protocol::kHttp},
      {"ws", "kubernetes.io/ws", Protocol::kHttp},
      {"secure", "kubernetes.io/wss", Protocol::kTcp},
      {"http", "https", Protocol::kTcp},
      {"db", "postgresql", Protocol::kTcp},
  };
  for (const Case& c : cases) {
    auto p = selectProtocol(c.name, c.app_protocol);
    ASSERT_TRUE(p.ok()) << c.name << " " << c.app_protocol << ": " << p.error().message();
    EXPECT_EQ(*p, c.want) << c.name << " / " << c.app_protocol;
  }
  for (const char* h2 : {"kubernetes.io/h2c", "h2c", "http2", "grpc", "grpc-web"}) {
    auto p = selectProtocol("http", h2);
    ASSERT_FALSE(p.ok()) << h2;
    EXPECT_NE(p.error().message().find("is not supported yet"), std::string::npos);
  }
  // Through a document, the error names the field.
  EXPECT_NE(loadError(R"(apiVersion: v1
kind: Service
metadata: {name: s}
spec: {ports: [{name: grpc, port: 80, appProtocol: kubernetes.io/h2c}]}
)")
                .find("spec.ports[0].appProtocol: appProtocol \"kubernetes.io/h2c\" is not "
                      "supported yet"),
            std::string::npos);
}

TEST(Service, RejectsInvalidSpecs) {
  struct Case {
    const char* spec;
    const char* expected;
  };
  const Case cases[] = {
      {"{ports: [{port: 53, protocol: UDP}]}",
       "spec.ports[0].protocol: UDP is not supported: the mesh carries TCP only"},
      {"{ports: [{port: 53, protocol: SCTP}]}", "spec.ports[0].protocol: SCTP is not supported"},
      {"{ports: [{port: 53, protocol: tcp}]}",
       "spec.ports[0].protocol: unknown protocol \"tcp\" (expected TCP)"},
      {"{ports: []}", "spec.ports: must not be empty"},
      {"{selector: {app: x}}", "spec.ports: required field is missing"},
      {"{ports: [{port: 0}]}", "spec.ports[0].port: must be 1..65535, got 0"},
      {"{ports: [{port: 65536}]}", "spec.ports[0].port: must be 1..65535, got 65536"},
      {"{ports: [{name: a, port: 80}, {port: 81}]}",
       "spec.ports[1].name: required when a Service has more than one port"},
      {"{ports: [{name: a, port: 80}, {name: b, port: 80}]}",
       "spec.ports[1].port: port 80 is also spec.ports[0]"},
      {"{ports: [{name: a, port: 80}, {name: a, port: 81}]}",
       "spec.ports[1].name: port name \"a\" is also spec.ports[0]"},
      {"{ports: [{name: Web, port: 80}]}", "spec.ports[0].name: invalid port name \"Web\""},
      {"{ports: [{port: 80, targetPort: 0}]}",
       "spec.ports[0].targetPort: expected a port number 1..65535 or a port name, got 0"},
      {"{ports: [{port: 80, targetPort: a-very-long-port-name}]}",
       "spec.ports[0].targetPort: invalid port name \"a-very-long-port-name\""},
      {"{ports: [{port: 80, nodePort: 30080}]}", "spec.ports[0].nodePort: not supported"},
      {"{ports: [{port: 80, appProtocol: \"not valid\"}]}",
       "spec.ports[0].appProtocol: invalid key \"not valid\""},
      {"{ports: [{port: 80, prot: TCP}]}",
       "spec.ports[0].prot: unknown field (did you mean \"port\"?)"},
      {"{type: LoadBalancer, ports: [{port: 80}]}",
       "spec.type: type LoadBalancer is not supported"},
      {"{clusterIP: None, ports: [{port: 80}]}",
       "spec.clusterIP: a Kubernetes field trellis does not support"},
      {"{selector: {app: \"a b\"}, ports: [{port: 80}]}",
       "spec.selector.app: invalid label value \"a b\""},
      {"{selector: {app: 1}, ports: [{port: 80}]}",
       "spec.selector.app: expected a string, got an integer 1 (quote it"},
      {"{selector: {\"-bad\": x}, ports: [{port: 80}]}", "spec.selector.-bad: invalid key"},
  };
  for (const Case& c : cases) {
    const std::string msg = loadError(fmt::format(R"(apiVersion: v1
kind: Service
metadata: {{name: s}}
spec: {}
)",
                                                  c.spec));
    EXPECT_NE(msg.find(c.expected), std::string::npos)
        << "got:      " << msg << "\nexpected: " << c.expected;
    EXPECT_EQ(msg.rfind("test.yaml: document 1 (Service \"s\"): spec", 0), 0u) << msg;
  }
}

} // namespace
} // namespace trellis::manifest
