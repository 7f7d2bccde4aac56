// A dataset directory (manifest.json plus its shards), opened for reading and validated up
// front, so that bad data fails before training starts, with the file and dataset named.
//
// Images are addressed by a global index 0..size()-1 running through the shards in
// manifest order. All accessors are const and thread-safe; image reads are plain preads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/manifest.h"
#include "data/shard.h"

namespace vt::data {

enum class Verify {
  kStructure,  // manifest, presence and size of every shard, datasets, shapes, offsets, attributes
  kFull,       // kStructure, plus every shard's CRC32C recomputed from its bytes
};

// One shard's recomputed checksum against the one recorded at conversion.
struct ShardCheck {
  std::string path;
  uint32_t expected = 0, actual = 0;
  bool ok() const { return expected == actual; }
};

class Dataset {
 public:
  // Throws vt::Error naming the manifest, shard file and dataset at the first problem.
  // `threads` parallelises the checksums of kFull (0: one per hardware thread).
  static Dataset open(const std::string& dir, Verify verify = Verify::kStructure, int threads = 0);

  const std::string& dir() const { return dir_; }
  const Manifest& manifest() const { return manifest_; }
  const std::vector<std::string>& class_names() const { return manifest_.schema.class_names; }
  Storage storage() const { return manifest_.schema.storage; }
  int imgsz() const { return manifest_.schema.imgsz; }  // 0 for encoded storage

  int64_t size() const { return offsets_.back(); }
  const std::vector<ShardReader>& shards() const { return shards_; }

  Record meta(int64_t index) const;
  // Encoded storage: the image's JPEG/PNG bytes (out is resized).
  void read_encoded(int64_t index, std::vector<uint8_t>& out) const;
  // Raw storage: imgsz * imgsz * 3 RGB bytes into dst.
  void read_raw(int64_t index, uint8_t* dst) const;
  // Either storage, as pixels: decoded (encoded) or copied (raw; the letterboxed image).
  // A payload that does not decode throws vt::Error naming the shard and the source file.
  Image read_image(int64_t index) const;

  // Recomputes every shard's checksum, `threads` at a time (0: hardware threads).
  std::vector<ShardCheck> verify_checksums(int threads = 0) const;

 private:
  // (shard, index inside it) of a global index.
  std::pair<const ShardReader*, int64_t> locate(int64_t index) const;

  std::string dir_;
  Manifest manifest_;
  std::vector<ShardReader> shards_;
  std::vector<int64_t> offsets_{0};  // global index of each shard's first image; back() == size()
};

}  // namespace vt::data
