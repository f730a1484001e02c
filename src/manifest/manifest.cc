#include "manifest/manifest.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "manifest/kinds.h"
#include "manifest/reader.h"
#include "manifest/yaml.h"

namespace trellis::manifest {

using nlohmann::json;

const char* kindName(Kind k) {
  switch (k) {
  case Kind::kHttpRoute:
    return "HTTPRoute";
  case Kind::kTrafficPolicy:
    return "TrafficPolicy";
  case Kind::kService:
    return "Service";
  }
  return "HTTPRoute";
}

const char* apiVersion(Kind k) {
  switch (k) {
  case Kind::kHttpRoute:
    return "gateway.networking.k8s.io/v1";
  case Kind::kTrafficPolicy:
    return "trellis.dev/v1alpha1";
  case Kind::kService:
    return "v1";
  }
  return "v1";
}

const char* pathMatchTypeName(PathMatchType t) {
  switch (t) {
  case PathMatchType::kExact:
    return "Exact";
  case PathMatchType::kPathPrefix:
    return "PathPrefix";
  case PathMatchType::kRegularExpression:
    return "RegularExpression";
  }
  return "PathPrefix";
}

const char* valueMatchTypeName(ValueMatchType t) {
  return t == ValueMatchType::kRegularExpression ? "RegularExpression" : "Exact";
}

std::optional<Kind> parseKind(std::string_view text) {
  static constexpr std::pair<std::string_view, Kind> kNames[] = {
      {"httproute", Kind::kHttpRoute},
      {"httproutes", Kind::kHttpRoute},
      {"route", Kind::kHttpRoute},
      {"routes", Kind::kHttpRoute},
      {"trafficpolicy", Kind::kTrafficPolicy},
      {"trafficpolicies", Kind::kTrafficPolicy},
      {"policy", Kind::kTrafficPolicy},
      {"policies", Kind::kTrafficPolicy},
      {"tp", Kind::kTrafficPolicy},
      {"service", Kind::kService},
      {"services", Kind::kService},
      {"svc", Kind::kService},
  };
  const std::string lower = detail::toLower(text);
  for (const auto& [name, kind] : kNames) {
    if (lower == name)
      return kind;
  }
  return std::nullopt;
}

std::string ResourceId::toString() const {
  return fmt::format("{} {}/{}", kindName(kind), namespace_name, name);
}

namespace {

using namespace detail;

constexpr Kind kKinds[] = {Kind::kHttpRoute, Kind::kTrafficPolicy, Kind::kService};

// What a document calls itself, for error context, read before validating anything.
std::string documentLabel(const json& doc) {
  if (!doc.is_object())
    return "";
  auto kind = doc.find("kind");
  if (kind == doc.end() || !kind->is_string())
    return "";
  std::string k = kind->get<std::string>();
  if (k.empty() || k.size() > 63 || !isHttpToken(k))
    return "";
  auto meta = doc.find("metadata");
  if (meta != doc.end() && meta->is_object()) {
    auto name = meta->find("name");
    if (name != meta->end() && name->is_string()) {
      const std::string& n = name->get_ref<const std::string&>();
      if (!n.empty() && n.size() <= 253 && !hasControlChar(n))
        return fmt::format("{} \"{}\"", k, n);
    }
  }
  return k;
}

Status parseMetadata(const json& j, Kind kind, ObjectMeta& out) {
  TRELLIS_RETURN_IF_ERROR(checkKeys(j, "metadata", {"name", "namespace", "labels", "annotations"}));
  const json* name = find(j, "name");
  if (!name)
    return missing("metadata", "name");
  auto n = readString(*name, "metadata.name", 253);
  if (!n.ok())
    return n.error();
  if (kind == Kind::kService) {
    // Kubernetes: a Service name is a DNS-1035 label (it becomes a DNS name).
    if (!isDns1035Label(*n))
      return fieldError("metadata.name",
                        fmt::format("invalid Service name \"{}\" (1 to 63 lowercase letters, "
                                    "digits and '-', starting with a letter, ending with a "
                                    "letter or digit)",
                                    *n));
  } else if (!isDnsSubdomain(*n)) {
    return fieldError("metadata.name",
                      fmt::format("invalid name \"{}\" (lowercase letters, digits, '-' and "
                                  "'.', starting and ending with a letter or digit, at most "
                                  "253 characters)",
                                  *n));
  }
  out.name = *n;
  if (const json* ns = find(j, "namespace")) {
    auto s = readString(*ns, "metadata.namespace", 63);
    if (!s.ok())
      return s.error();
    if (!isDnsLabel(*s))
      return fieldError("metadata.namespace",
                        fmt::format("invalid namespace \"{}\" (1 to 63 lowercase letters, digits "
                                    "and '-', starting and ending with a letter or digit)",
                                    *s));
    out.namespace_name = *s;
  }
  if (const json* labels = find(j, "labels")) {
    auto m = readStringMap(*labels, "metadata.labels");
    if (!m.ok())
      return m.error();
    for (const auto& [k, v] : *m) {
      const std::string p = joinPath("metadata.labels", k);
      if (std::string why = qualifiedNameError(k); !why.empty())
        return fieldError(p, why);
      if (!isLabelValue(v))
        return fieldError(p, fmt::format("invalid label value \"{}\" (at most 63 letters, "
                                         "digits, '-', '_' or '.', starting and ending with a "
                                         "letter or digit)",
                                         printable(v)));
    }
    out.labels = std::move(*m);
  }
  if (const json* annotations = find(j, "annotations")) {
    auto m = readStringMap(*annotations, "metadata.annotations");
    if (!m.ok())
      return m.error();
    size_t bytes = 0;
    for (const auto& [k, v] : *m) {
      if (std::string why = qualifiedNameError(k); !why.empty())
        return fieldError(joinPath("metadata.annotations", k), why);
      bytes += k.size() + v.size();
    }
    if (bytes > kMaxAnnotationBytes)
      return fieldError("metadata.annotations", fmt::format("{} bytes in all, at most {} allowed",
                                                            bytes, kMaxAnnotationBytes));
    out.annotations = std::move(*m);
  }
  return okStatus();
}

std::string supportedKinds() {
  std::string out;
  for (Kind k : kKinds)
    out += fmt::format("{}{} (apiVersion {})", out.empty() ? "" : ", ", kindName(k), apiVersion(k));
  return out;
}

// Validates one document; errors carry the field path only.
Result<Resource> parseDocument(const json& doc) {
  if (!doc.is_object())
    return fieldError("", fmt::format("expected a mapping with apiVersion, kind, metadata and "
                                      "spec, got {}",
                                      typeName(doc)));
  const json* kind_field = find(doc, "kind");
  if (!kind_field)
    return fieldError("kind",
                      fmt::format("required field is missing (supported: {})", supportedKinds()));
  auto kind_name = readString(*kind_field, "kind", 63);
  if (!kind_name.ok())
    return kind_name.error();
  const Kind* kind = std::find_if(std::begin(kKinds), std::end(kKinds),
                                  [&](Kind k) { return *kind_name == kindName(k); });
  if (kind == std::end(kKinds))
    return fieldError(
        "kind", fmt::format("unknown kind \"{}\" (supported: {})", *kind_name, supportedKinds()));
  const json* version = find(doc, "apiVersion");
  if (!version)
    return fieldError("apiVersion", fmt::format("required field is missing ({} is {})",
                                                kindName(*kind), apiVersion(*kind)));
  auto v = readString(*version, "apiVersion", 253);
  if (!v.ok())
    return v.error();
  if (*v != apiVersion(*kind))
    return fieldError("apiVersion", fmt::format("unsupported apiVersion \"{}\" for {} (supported: "
                                                "{})",
                                                *v, kindName(*kind), supportedKinds()));
  TRELLIS_RETURN_IF_ERROR(checkKeys(doc, "", {"apiVersion", "kind", "metadata", "spec"}));

  Resource out;
  const json* meta = find(doc, "metadata");
  if (!meta)
    return missing("", "metadata");
  TRELLIS_RETURN_IF_ERROR(parseMetadata(*meta, *kind, out.metadata));
  const json* spec = find(doc, "spec");
  if (!spec)
    return missing("", "spec");
  switch (*kind) {
  case Kind::kHttpRoute: {
    auto r = parseHttpRoute(*spec, out.metadata);
    if (!r.ok())
      return r.error();
    out.spec = std::move(*r);
    break;
  }
  case Kind::kTrafficPolicy: {
    auto r = parseTrafficPolicy(*spec, out.metadata);
    if (!r.ok())
      return r.error();
    out.spec = std::move(*r);
    break;
  }
  case Kind::kService: {
    auto r = parseService(*spec, out.metadata);
    if (!r.ok())
      return r.error();
    out.spec = std::move(*r);
    break;
  }
  }
  return out;
}

// Where a resource came from, to name both places when an identity is defined twice.
struct Loaded {
  Resource resource;
  std::string file;
  size_t document = 0;
};

Status loadText(std::string_view text, const std::string& source, std::vector<Loaded>& out) {
  if (text.size() > kMaxFileBytes)
    return makeError(ErrorCode::kInvalidArgument, "{}: {} bytes, larger than the {} byte limit",
                     source, text.size(), kMaxFileBytes);
  auto docs = yamlDocuments(text);
  if (!docs.ok())
    return docs.error().withContext(source);
  for (size_t i = 0; i < docs->size(); ++i) {
    const json& doc = (*docs)[i];
    if (doc.is_null())
      continue; // an empty document (a trailing `---`, comments only)
    Result<Resource> r = makeError(ErrorCode::kInternal, "not parsed");
    try {
      r = parseDocument(doc);
    } catch (const std::exception& e) {
      // The readers check types before reading; reaching here is a bug, not bad input.
      r = makeError(ErrorCode::kInternal, "internal error: {}", e.what());
    }
    const std::string label = documentLabel(doc);
    const std::string where = label.empty()
                                  ? fmt::format("{}: document {}", source, i + 1)
                                  : fmt::format("{}: document {} ({})", source, i + 1, label);
    if (!r.ok())
      return r.error().withContext(where);
    out.push_back({std::move(*r), source, i + 1});
  }
  return okStatus();
}

Result<std::string> readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return makeError(ErrorCode::kIo, "{}: cannot open: {}", path, std::strerror(errno));
  std::string text;
  char buf[65536];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxFileBytes)
      return makeError(ErrorCode::kInvalidArgument, "{}: larger than the {} byte limit", path,
                       kMaxFileBytes);
  }
  if (in.bad())
    return makeError(ErrorCode::kIo, "{}: read failed: {}", path, std::strerror(errno));
  return text;
}

Result<std::vector<Resource>> finish(std::vector<Loaded> loaded) {
  std::map<ResourceId, size_t> seen;
  std::vector<Resource> out;
  out.reserve(loaded.size());
  for (size_t i = 0; i < loaded.size(); ++i) {
    const Loaded& l = loaded[i];
    auto [it, fresh] = seen.emplace(l.resource.id(), i);
    if (!fresh) {
      const Loaded& first = loaded[it->second];
      const std::string first_where =
          first.file == l.file ? fmt::format("document {}", first.document)
                               : fmt::format("{} document {}", first.file, first.document);
      return makeError(ErrorCode::kInvalidArgument,
                       "{}: document {} ({} \"{}\"): {} is also defined by {}", l.file, l.document,
                       kindName(l.resource.kind()), l.resource.metadata.name,
                       l.resource.id().toString(), first_where);
    }
    out.push_back(l.resource);
  }
  return out;
}

} // namespace

Result<std::vector<Resource>> loadString(std::string_view text, std::string_view name_for_errors) {
  std::vector<Loaded> loaded;
  TRELLIS_RETURN_IF_ERROR(loadText(text, std::string(name_for_errors), loaded));
  return finish(std::move(loaded));
}

Result<std::vector<Resource>> loadPath(const std::string& file_or_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(file_or_dir, ec);
  if (ec || !fs::exists(st))
    return makeError(ErrorCode::kIo, "{}: cannot open: {}", file_or_dir,
                     ec ? ec.message() : std::strerror(ENOENT));
  std::vector<Loaded> loaded;
  if (!fs::is_directory(st)) {
    auto text = readFile(file_or_dir);
    if (!text.ok())
      return text.error();
    TRELLIS_RETURN_IF_ERROR(loadText(*text, file_or_dir, loaded));
    return finish(std::move(loaded));
  }

  std::vector<std::string> files;
  for (fs::directory_iterator it(file_or_dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    const std::string ext = p.extension().string();
    if (ext != ".yaml" && ext != ".yml")
      continue;
    std::error_code fec;
    if (!fs::is_regular_file(it->status(fec)) || fec)
      continue; // a directory or dangling link named *.yaml
    if (files.size() == kMaxFilesPerDirectory)
      return makeError(ErrorCode::kInvalidArgument,
                       "{}: more than {} *.yaml / *.yml files, the limit per directory",
                       file_or_dir, kMaxFilesPerDirectory);
    files.push_back(p.string());
  }
  if (ec)
    return makeError(ErrorCode::kIo, "{}: cannot list: {}", file_or_dir, ec.message());
  std::sort(files.begin(), files.end());
  for (const std::string& f : files) {
    auto text = readFile(f);
    if (!text.ok())
      return text.error();
    TRELLIS_RETURN_IF_ERROR(loadText(*text, f, loaded));
    if (loaded.size() > kMaxResourcesPerDirectory)
      return makeError(ErrorCode::kInvalidArgument,
                       "{}: more than {} resources, the limit per directory (reached in {})",
                       file_or_dir, kMaxResourcesPerDirectory, f);
  }
  return finish(std::move(loaded));
}

json toJson(const Resource& r) {
  json meta = {{"name", r.metadata.name}, {"namespace", r.metadata.namespace_name}};
  if (!r.metadata.labels.empty())
    meta["labels"] = r.metadata.labels;
  if (!r.metadata.annotations.empty())
    meta["annotations"] = r.metadata.annotations;
  json spec;
  switch (r.kind()) {
  case Kind::kHttpRoute:
    spec = httpRouteJson(std::get<HttpRoute>(r.spec));
    break;
  case Kind::kTrafficPolicy:
    spec = trafficPolicyJson(std::get<TrafficPolicy>(r.spec));
    break;
  case Kind::kService:
    spec = serviceJson(std::get<Service>(r.spec));
    break;
  }
  return {{"apiVersion", apiVersion(r.kind())},
          {"kind", kindName(r.kind())},
          {"metadata", meta},
          {"spec", spec}};
}

Result<Resource> fromJson(const json& document) {
  Result<Resource> r = makeError(ErrorCode::kInternal, "not parsed");
  try {
    r = parseDocument(document);
  } catch (const std::exception& e) {
    r = makeError(ErrorCode::kInternal, "internal error: {}", e.what());
  }
  if (r.ok())
    return r;
  const std::string label = documentLabel(document);
  return label.empty() ? r.error() : r.error().withContext(label);
}

} // namespace trellis::manifest
