#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "base/result.h"
#include "manifest/resource.h"

// Loading and validating resource documents (YAML, several per file) and their canonical JSON
// form. Nothing here does I/O besides reading the files it is given; nothing throws. Every
// error is kInvalidArgument (or kIo for a file that cannot be read) and reads
//   routes.yaml: document 2 (HTTPRoute "checkout"): spec.rules[0].backendRefs[1].weight:
//   must be 0..1000000, got -3
// The schema is docs/resources.md.

namespace trellis::manifest {

// Limits on input, so a wrong path or a hostile file fails fast with bounded memory.
constexpr size_t kMaxFileBytes = 4 * 1024 * 1024;  // one file, or one loadString text
constexpr size_t kMaxDocumentsPerFile = 1000;      // `---`-separated documents
constexpr size_t kMaxResourcesPerDirectory = 5000; // across all files of a directory
constexpr size_t kMaxFilesPerDirectory = 1000;     // *.yaml / *.yml files read
constexpr size_t kMaxNestingDepth = 32;            // mappings and lists inside each other
constexpr size_t kMaxNodesPerFile = 500000;        // YAML nodes after expanding aliases
constexpr size_t kMaxExpandedBytesPerFile = 2 * kMaxFileBytes; // scalar bytes, aliases expanded

// Loads a YAML file, or every *.yaml and *.yml file of a directory (sorted by name, not
// recursive; other files are ignored). Empty documents are skipped. Fails on the first
// invalid document, and when two documents define the same resource identity.
Result<std::vector<Resource>> loadPath(const std::string& file_or_dir);

// As loadPath for one file's text; `name_for_errors` stands for the file name in errors.
Result<std::vector<Resource>> loadString(std::string_view text, std::string_view name_for_errors);

// The canonical form: apiVersion, kind, metadata and spec with every default filled in. What
// the server stores and `trellis get` prints; fromJson(toJson(r)) == r.
nlohmann::json toJson(const Resource& resource);

// Validates a resource in the canonical form (or as written in YAML, converted to JSON) exactly
// as loadString does. Errors start with `KIND "NAME": ` when those are known.
Result<Resource> fromJson(const nlohmann::json& document);

// A Service port's mesh protocol, as Istio selects it: appProtocol `http` or
// `kubernetes.io/ws` -> http; `tcp`, `https`, `tls`, `kubernetes.io/wss` or any other value
// -> tcp; HTTP/2 ones (`kubernetes.io/h2c`, `h2c`, `http2`, `grpc`, `grpc-web`) -> error (not
// supported yet). Without appProtocol, by the port name: `http` or `http-*` -> http, else tcp.
// Both comparisons ignore case.
Result<proxy::Protocol> selectProtocol(std::string_view port_name, std::string_view app_protocol);

} // namespace trellis::manifest
