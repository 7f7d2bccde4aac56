// Writing a dataset directory: N samples made in parallel, written in index order to shards
// of shard_size images, then the manifest. Shared by every converter and by synth.
//
// Output is identical for any thread count: samples are produced by index on worker threads
// and consumed strictly in index order by the one thread that writes the shards.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/image.h"
#include "data/manifest.h"
#include "data/shard.h"

namespace vt::data {

// What a producer makes of sample i: a record with its payload, or a skip with its reason.
struct Sample {
  bool skipped = false;
  Issue skip;  // when skipped: the source file and why
  Record record;
  std::vector<uint8_t> payload;  // encoded bytes, or imgsz * imgsz * 3 RGB for raw storage
  BoxStats stats;                // what clip_boxes did to this image's boxes
  int64_t invalid_boxes = 0;     // rejected before clipping (malformed labels); stats.invalid adds to it
  int64_t crowd_boxes = 0;
  std::vector<Issue> box_issues;
};

struct WriteOptions {
  std::string out_dir;         // the dataset directory (created if needed)
  std::string split = "data";  // shard prefix and manifest "split"
  Storage storage = Storage::kEncoded;
  int imgsz = 0;           // raw storage: side of the stored square
  int shard_size = 1000;   // images per shard
  int threads = 0;         // producer threads; 0: one per hardware thread
  bool overwrite = false;  // replace a dataset already in out_dir (else refuse)
  std::function<void(int64_t done, int64_t total)> progress;  // called from the writing thread
};

// Produces and writes samples [0, n); `report` arrives with format, source and anything the
// caller rejected before (its counts are added to). Throws vt::Error when no image is left,
// and leaves no manifest behind then. Returns the manifest it wrote.
Manifest write_dataset(int64_t n, const std::vector<std::string>& class_names,
                       const std::function<Sample(int64_t)>& produce, ConvertReport report,
                       const WriteOptions& opt);

// Number of producer threads that `threads` (0 = automatic) means on this machine.
int resolve_threads(int threads);

}  // namespace vt::data
