// manifest.json reading and writing (see manifest.h).
#include "data/manifest.h"

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "data/fileio.h"
#include "layers/check.h"

namespace vt::data {
namespace {

using nlohmann::json;

std::string hex32(uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof(buf), "%08x", v);
  return buf;
}

// Typed access that names the manifest and the key on any mismatch.
template <class T>
T get(const json& j, const char* key, const std::string& where) {
  if (!j.is_object() || !j.contains(key)) throw Error(cat(where, ": missing key \"", key, "\""));
  try {
    return j.at(key).get<T>();
  } catch (const json::exception& e) {
    throw Error(cat(where, ": key \"", key, "\" has the wrong type (", e.what(), ")"));
  }
}

json issues_json(const std::vector<Issue>& v) {
  json a = json::array();
  for (const Issue& i : v) a.push_back({{"file", i.file}, {"line", i.line}, {"reason", i.reason}});
  return a;
}

std::vector<Issue> issues_from(const json& a, const std::string& where) {
  std::vector<Issue> v;
  if (!a.is_array()) throw Error(cat(where, ": expected a list of issues"));
  for (const json& i : a)
    v.push_back({get<std::string>(i, "file", where), get<int64_t>(i, "line", where),
                 get<std::string>(i, "reason", where)});
  return v;
}

json report_json(const ConvertReport& r) {
  return {{"format", r.format},
          {"source", r.source},
          {"images_seen", r.images_seen},
          {"images_skipped", r.images_skipped},
          {"boxes_invalid", r.boxes_invalid},
          {"boxes_clipped", r.boxes_clipped},
          {"boxes_dropped", r.boxes_dropped},
          {"boxes_crowd", r.boxes_crowd},
          {"boxes_orphaned", r.boxes_orphaned},
          {"skipped", issues_json(r.skipped)},
          {"box_issues", issues_json(r.box_issues)},
          {"box_issues_omitted", r.box_issues_omitted}};
}

ConvertReport report_from(const json& j, const std::string& where) {
  ConvertReport r;
  r.format = get<std::string>(j, "format", where);
  r.source = get<std::string>(j, "source", where);
  r.images_seen = get<int64_t>(j, "images_seen", where);
  r.images_skipped = get<int64_t>(j, "images_skipped", where);
  r.boxes_invalid = get<int64_t>(j, "boxes_invalid", where);
  r.boxes_clipped = get<int64_t>(j, "boxes_clipped", where);
  r.boxes_dropped = get<int64_t>(j, "boxes_dropped", where);
  r.boxes_crowd = get<int64_t>(j, "boxes_crowd", where);
  r.boxes_orphaned = get<int64_t>(j, "boxes_orphaned", where);
  r.skipped = issues_from(get<json>(j, "skipped", where), where);
  r.box_issues = issues_from(get<json>(j, "box_issues", where), where);
  r.box_issues_omitted = get<int64_t>(j, "box_issues_omitted", where);
  return r;
}

}  // namespace

const char* storage_name(Storage s) {
  return s == Storage::kRaw ? "raw" : "encoded";
}

Storage parse_storage(const std::string& s) {
  if (s == "encoded" || s == "jpeg") return Storage::kEncoded;
  if (s == "raw") return Storage::kRaw;
  throw Error(cat("unknown storage \"", s, "\" (expected encoded, jpeg or raw)"));
}

void ConvertReport::add_box_issue(Issue issue) {
  if (box_issues.size() < kMaxIssues)
    box_issues.push_back(std::move(issue));
  else
    ++box_issues_omitted;
}

std::string program_version() {
  return cat("visiontrain ", VT_VERSION);
}

Manifest Manifest::load(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / kManifestName).string();
  if (!file_exists(path))
    throw Error(cat(dir, ": no ", kManifestName,
                    " (not a dataset directory, or its conversion did not finish; ",
                    "make one with `visiontrain convert` or `visiontrain synth`)"));
  json j;
  try {
    j = json::parse(read_text_file(path));
  } catch (const json::exception& e) {
    throw Error(cat(path, ": not valid JSON (", e.what(), ")"));
  }
  Manifest m;
  m.schema_version = get<int>(j, "schema_version", path);
  if (m.schema_version != kSchemaVersion)
    throw Error(
        cat(path, ": schema_version ", m.schema_version, ", this program reads version ", kSchemaVersion));
  m.split = get<std::string>(j, "split", path);
  try {
    m.schema.storage = parse_storage(get<std::string>(j, "storage", path));
  } catch (const Error& e) {
    throw Error(cat(path, ": ", e.what()));
  }
  m.schema.imgsz = get<int>(j, "imgsz", path);
  m.schema.class_names = get<std::vector<std::string>>(j, "class_names", path);
  for (const json& s : get<json>(j, "shards", path)) {
    ShardEntry e;
    e.file = get<std::string>(s, "file", path);
    e.images = get<int64_t>(s, "images", path);
    e.boxes = get<int64_t>(s, "boxes", path);
    e.bytes = get<int64_t>(s, "bytes", path);
    const std::string crc = get<std::string>(s, "crc32c", path);
    char* end = nullptr;
    e.crc32c = static_cast<uint32_t>(std::strtoul(crc.c_str(), &end, 16));
    if (crc.size() != 8 || *end != '\0')
      throw Error(cat(path, ": shard ", e.file, ": crc32c \"", crc, "\" is not 8 hex digits"));
    if (e.file.empty() || e.file.find('/') != std::string::npos)
      throw Error(cat(path, ": shard file name \"", e.file, "\" must be a plain name inside the directory"));
    m.shards.push_back(e);
  }
  const json totals = get<json>(j, "totals", path);
  m.total_images = get<int64_t>(totals, "images", path);
  m.total_boxes = get<int64_t>(totals, "boxes", path);
  m.per_class = get<std::vector<int64_t>>(totals, "per_class", path);
  m.report = report_from(get<json>(j, "report", path), path);
  m.created_by = get<std::string>(j, "created_by", path);

  // Internal consistency, so a hand-edited manifest fails here rather than in training.
  int64_t images = 0, boxes = 0, per_class = 0;
  for (const ShardEntry& e : m.shards) {
    images += e.images;
    boxes += e.boxes;
  }
  for (int64_t c : m.per_class) per_class += c;
  VT_CHECK(!m.schema.class_names.empty(), path, ": class_names is empty");
  VT_CHECK(!m.shards.empty() && m.total_images > 0, path, ": the dataset has no images");
  VT_CHECK(images == m.total_images && boxes == m.total_boxes, path, ": totals (", m.total_images,
           " images, ", m.total_boxes, " boxes) disagree with the shard list (", images, ", ", boxes, ")");
  VT_CHECK(m.per_class.size() == m.schema.class_names.size() && per_class == m.total_boxes, path,
           ": totals.per_class does not match class_names and totals.boxes");
  VT_CHECK((m.schema.storage == Storage::kRaw) == (m.schema.imgsz > 0), path, ": imgsz ", m.schema.imgsz,
           " does not fit storage ", storage_name(m.schema.storage));
  return m;
}

void Manifest::save(const std::string& dir) const {
  json shard_list = json::array();
  for (const ShardEntry& e : shards)
    shard_list.push_back({{"file", e.file},
                          {"images", e.images},
                          {"boxes", e.boxes},
                          {"bytes", e.bytes},
                          {"crc32c", hex32(e.crc32c)}});
  const json j = {{"schema_version", schema_version},
                  {"split", split},
                  {"storage", storage_name(schema.storage)},
                  {"imgsz", schema.imgsz},
                  {"class_names", schema.class_names},
                  {"shards", shard_list},
                  {"totals", {{"images", total_images}, {"boxes", total_boxes}, {"per_class", per_class}}},
                  {"report", report_json(report)},
                  {"created_by", created_by}};
  write_file_atomic((std::filesystem::path(dir) / kManifestName).string(), j.dump(2) + "\n");
}

}  // namespace vt::data
