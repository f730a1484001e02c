// `trellis apply`, `trellis get`, `trellis delete`: mesh resources (HTTPRoute, TrafficPolicy,
// v1 Service) stored by the server. Files are validated here first, so errors name the file,
// the document and the field before anything is sent; the server validates again.
#include <cstdio>
#include <cstdlib>
#include <optional>

#include <nlohmann/json.hpp>

#include "base/dispatcher.h"
#include "base/time.h"
#include "cli/command.h"
#include "http/client.h"
#include "manifest/manifest.h"
#include "net/address.h"

namespace trellis::cli {
namespace {

constexpr const char* kDefaultServer = "127.0.0.1:8500";
constexpr auto kRequestTimeout = std::chrono::seconds(30);

// The server's HTTP API address: --server, else $TRELLIS_SERVER, else the default.
std::string serverAddress(const std::string& flag) {
  if (!flag.empty())
    return flag;
  if (const char* env = std::getenv("TRELLIS_SERVER"); env && *env)
    return env;
  return kDefaultServer;
}

// One request to the server, run to completion on a private event loop.
Result<http::ClientResponse> call(const std::string& server, const std::string& method,
                                  const std::string& target, const std::string& body,
                                  const std::string& content_type) {
  auto addr = net::parseSocketAddress(server);
  if (!addr.ok())
    return makeError(ErrorCode::kInvalidArgument, "--server {}: {}", server,
                     addr.error().message());
  RealTimeSource time;
  Dispatcher loop("cli", time);
  http::Client client(loop);
  http::HeaderMap headers;
  if (!content_type.empty())
    headers.add("content-type", content_type);
  std::optional<Result<http::ClientResponse>> out;
  client.request(*addr, method, target, std::move(headers), body, kRequestTimeout,
                 [&](Result<http::ClientResponse> r) {
                   out.emplace(std::move(r));
                   loop.exit();
                 });
  loop.run();
  if (!out)
    return makeError(ErrorCode::kInternal, "the request to {} did not complete", server);
  if (!out->ok())
    return makeError(out->error().code(), "server {}: {}", server, out->error().message());
  return std::move(*out);
}

// Prints a non-2xx answer's body (the server's error) and returns the exit code.
int failed(const char* verb, const http::ClientResponse& r) {
  std::string msg = r.body;
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == '\r'))
    msg.pop_back();
  std::fprintf(stderr, "trellis %s: server answered %u: %s\n", verb, r.status, msg.c_str());
  return r.status >= 400 && r.status < 500 ? kExitUsage : kExitRuntime;
}

std::string resourcePath(manifest::Kind kind, const std::string& name, const std::string& ns) {
  std::string p = std::string("/v1/mesh/resources/") + manifest::kindName(kind);
  if (!name.empty())
    p += "/" + name;
  if (!ns.empty())
    p += "?namespace=" + ns;
  return p;
}

struct ApplyOptions {
  std::vector<std::string> files;
  std::string server;
  bool dry_run = false;
};

int runApply(const ApplyOptions& o) {
  std::vector<manifest::Resource> all;
  for (const auto& f : o.files) {
    auto rs = manifest::loadPath(f);
    if (!rs.ok()) {
      std::fprintf(stderr, "trellis apply: %s\n", rs.error().message().c_str());
      return rs.error().code() == ErrorCode::kInvalidArgument ? kExitUsage : kExitRuntime;
    }
    for (auto& r : *rs)
      all.push_back(std::move(r));
  }
  if (all.empty()) {
    std::fprintf(stderr, "trellis apply: no resources in %zu path(s)\n", o.files.size());
    return kExitUsage;
  }
  // The canonical JSON of each, as YAML documents (JSON is YAML): all or nothing.
  std::string body;
  for (const auto& r : all) {
    if (!body.empty())
      body += "\n---\n";
    body += manifest::toJson(r).dump();
  }
  if (o.dry_run) {
    for (const auto& r : all)
      std::printf("%s valid (dry run)\n", r.id().toString().c_str());
    return kExitOk;
  }
  auto r = call(serverAddress(o.server), "PUT", "/v1/mesh/resources", body, "application/yaml");
  if (!r.ok()) {
    std::fprintf(stderr, "trellis apply: %s\n", r.error().message().c_str());
    return kExitRuntime;
  }
  if (r->status / 100 != 2)
    return failed("apply", *r);
  for (const auto& res : all)
    std::printf("%s applied\n", res.id().toString().c_str());
  return kExitOk;
}

struct GetOptions {
  std::string kind;
  std::string name;
  std::string ns;
  std::string output = "table";
  std::string server;
};

std::string field(const nlohmann::json& j, const char* a, const char* b) {
  if (j.contains(a) && j[a].is_object() && j[a].contains(b) && j[a][b].is_string())
    return j[a][b].get<std::string>();
  return "";
}

int runGet(const GetOptions& o) {
  auto kind = manifest::parseKind(o.kind);
  if (!kind) {
    std::fprintf(stderr,
                 "trellis get: unknown kind \"%s\" (try httproutes, trafficpolicies, services)\n",
                 o.kind.c_str());
    return kExitUsage;
  }
  if (o.output != "table" && o.output != "json" && o.output != "yaml") {
    std::fprintf(stderr, "trellis get: -o must be table, json or yaml, got \"%s\"\n",
                 o.output.c_str());
    return kExitUsage;
  }
  auto r = call(serverAddress(o.server), "GET", resourcePath(*kind, o.name, o.ns), "", "");
  if (!r.ok()) {
    std::fprintf(stderr, "trellis get: %s\n", r.error().message().c_str());
    return kExitRuntime;
  }
  if (r->status / 100 != 2)
    return failed("get", *r);
  auto j = nlohmann::json::parse(r->body, nullptr, false);
  if (j.is_discarded()) {
    std::fprintf(stderr, "trellis get: the server's answer is not JSON\n");
    return kExitRuntime;
  }
  if (o.output == "json") {
    std::printf("%s\n", j.dump(2).c_str());
    return kExitOk;
  }
  nlohmann::json items = j.is_array() ? j : nlohmann::json::array({j});
  if (o.output == "yaml") {
    // JSON documents are YAML documents; one per resource, as `trellis apply` takes them.
    bool first = true;
    for (const auto& it : items) {
      std::printf("%s%s\n", first ? "" : "---\n", it.dump(2).c_str());
      first = false;
    }
    return kExitOk;
  }
  std::printf("%-16s %-32s %-16s\n", "KIND", "NAME", "NAMESPACE");
  for (const auto& it : items) {
    std::string k = it.contains("kind") && it["kind"].is_string() ? it["kind"].get<std::string>()
                                                                  : "";
    std::printf("%-16s %-32s %-16s\n", k.c_str(), field(it, "metadata", "name").c_str(),
                field(it, "metadata", "namespace").c_str());
  }
  return kExitOk;
}

int runDelete(const GetOptions& o, const std::vector<std::string>& files) {
  std::vector<manifest::ResourceId> ids;
  if (!files.empty()) {
    for (const auto& f : files) {
      auto rs = manifest::loadPath(f);
      if (!rs.ok()) {
        std::fprintf(stderr, "trellis delete: %s\n", rs.error().message().c_str());
        return kExitUsage;
      }
      for (const auto& r : *rs)
        ids.push_back(r.id());
    }
  } else {
    auto kind = manifest::parseKind(o.kind);
    if (!kind || o.name.empty()) {
      std::fprintf(stderr, "trellis delete: give KIND NAME (e.g. `trellis delete httproute "
                           "checkout`) or -f FILE\n");
      return kExitUsage;
    }
    ids.push_back({*kind, o.ns.empty() ? "default" : o.ns, o.name});
  }
  int rc = kExitOk;
  for (const auto& id : ids) {
    auto r = call(serverAddress(o.server), "DELETE",
                  resourcePath(id.kind, id.name, id.namespace_name), "", "");
    if (!r.ok()) {
      std::fprintf(stderr, "trellis delete: %s\n", r.error().message().c_str());
      return kExitRuntime;
    }
    if (r->status / 100 != 2) {
      rc = failed("delete", *r);
      continue;
    }
    std::printf("%s deleted\n", id.toString().c_str());
  }
  return rc;
}

} // namespace

void addApplyCommand(CLI::App& app, const GlobalOptions&, Action& action) {
  auto o = std::make_shared<ApplyOptions>();
  auto* cmd = app.add_subcommand("apply", "Validate resources from YAML files and store them "
                                          "in the server (HTTPRoute, TrafficPolicy, Service)");
  cmd->add_option("-f,--filename", o->files, "a YAML file or a directory of them (repeatable)")
      ->required();
  cmd->add_option("--server", o->server,
                  "the server's HTTP API host:port (default $TRELLIS_SERVER, else 127.0.0.1:8500)");
  cmd->add_flag("--dry-run", o->dry_run, "validate only; send nothing");
  cmd->callback([&action, o] { action = [o] { return runApply(*o); }; });
}

void addGetCommand(CLI::App& app, const GlobalOptions&, Action& action) {
  auto o = std::make_shared<GetOptions>();
  auto* cmd = app.add_subcommand("get", "Show stored resources of a kind");
  cmd->add_option("kind", o->kind, "httproutes, trafficpolicies or services")->required();
  cmd->add_option("name", o->name, "one resource's name");
  cmd->add_option("-n,--namespace", o->ns, "namespace (default: all for a list, else default)");
  cmd->add_option("-o,--output", o->output, "table, json or yaml");
  cmd->add_option("--server", o->server,
                  "the server's HTTP API host:port (default $TRELLIS_SERVER, else 127.0.0.1:8500)");
  cmd->callback([&action, o] { action = [o] { return runGet(*o); }; });
}

void addDeleteCommand(CLI::App& app, const GlobalOptions&, Action& action) {
  auto o = std::make_shared<GetOptions>();
  auto files = std::make_shared<std::vector<std::string>>();
  auto* cmd = app.add_subcommand("delete", "Delete stored resources (KIND NAME, or -f FILE)");
  cmd->add_option("kind", o->kind, "httproute, trafficpolicy or service");
  cmd->add_option("name", o->name, "the resource's name");
  cmd->add_option("-f,--filename", *files, "delete the resources a file or directory defines");
  cmd->add_option("-n,--namespace", o->ns, "namespace (default: default)");
  cmd->add_option("--server", o->server,
                  "the server's HTTP API host:port (default $TRELLIS_SERVER, else 127.0.0.1:8500)");
  cmd->callback([&action, o, files] { action = [o, files] { return runDelete(*o, *files); }; });
}

} // namespace trellis::cli
