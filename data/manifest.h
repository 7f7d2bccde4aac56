// The manifest of a dataset directory (manifest.json): what the shards hold and what the
// conversion that produced them found. Readers trust nothing in a shard that disagrees with
// it. The JSON layout is documented in docs/formats/shards.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vt::data {

constexpr int kSchemaVersion = 1;
constexpr const char* kManifestName = "manifest.json";

// How image pixels are stored: the source's own JPEG/PNG bytes, or uint8 RGB letterboxed
// to imgsz x imgsz.
enum class Storage { kEncoded, kRaw };
const char* storage_name(Storage s);  // "encoded" | "raw"
// Accepts "encoded", its alias "jpeg", and "raw"; throws on anything else.
Storage parse_storage(const std::string& s);

// What every shard of a dataset shares.
struct Schema {
  Storage storage = Storage::kEncoded;
  int imgsz = 0;  // raw: the side of the stored square; encoded: 0
  std::vector<std::string> class_names;
};

struct ShardEntry {
  std::string file;  // name inside the dataset directory
  int64_t images = 0, boxes = 0;
  int64_t bytes = 0;    // file size
  uint32_t crc32c = 0;  // the shard's content_crc32c attribute
};

// One problem found in the source data: the file, the line (0 = the whole file, or not a
// line-based format), and what was wrong.
struct Issue {
  std::string file;
  int64_t line = 0;
  std::string reason;
};

// What a conversion read, kept, and rejected.
struct ConvertReport {
  std::string format;  // yolo | coco | voc | synth
  std::string source;  // where it came from (a path, or the synth parameters)
  int64_t images_seen = 0;
  int64_t images_skipped = 0;     // == skipped.size()
  int64_t boxes_invalid = 0;      // malformed lines, unknown classes, NaN, x2 < x1
  int64_t boxes_clipped = 0;      // partly outside the image, moved inside
  int64_t boxes_dropped = 0;      // zero area after clipping
  int64_t boxes_crowd = 0;        // COCO iscrowd annotations, left out
  int64_t boxes_orphaned = 0;     // labels of images that do not exist, left out
  std::vector<Issue> skipped;     // one per skipped image, with the reason
  std::vector<Issue> box_issues;  // invalid, dropped and orphaned boxes, by file (capped at kMaxIssues)
  int64_t box_issues_omitted = 0;

  static constexpr size_t kMaxIssues = 10000;
  void add_box_issue(Issue issue);
};

struct Manifest {
  int schema_version = kSchemaVersion;
  std::string split;  // also the shard file prefix: <split>-00000.h5
  Schema schema;
  std::vector<ShardEntry> shards;
  int64_t total_images = 0, total_boxes = 0;
  std::vector<int64_t> per_class;  // boxes of each class id
  ConvertReport report;
  std::string created_by;

  // Reads and checks dir/manifest.json; errors name the file and the key.
  static Manifest load(const std::string& dir);
  // Writes dir/manifest.json through a temporary file and a rename, so that a manifest is
  // either absent or complete (it is written last: its presence marks a finished dataset).
  void save(const std::string& dir) const;
};

// "visiontrain <version>": the created_by of everything this build writes.
std::string program_version();

}  // namespace vt::data
