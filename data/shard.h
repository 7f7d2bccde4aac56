// One shard: an HDF5 file holding about a thousand images with their boxes and metadata.
// The schema (every dataset, type, shape and attribute) is in docs/formats/shards.md.
//
// ShardWriter builds one shard (converters and synth, one writer thread per split).
// ShardReader opens one shard, validates it against the manifest, keeps all the small
// metadata in memory, and serves image payloads with plain pread on a file descriptor: the
// payload datasets are contiguous and allocated at creation, so their file offset is read
// once at open and no HDF5 call (and no HDF5 global lock) is on the per-image path.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/fileio.h"
#include "data/image.h"
#include "data/manifest.h"
#include "data/resize.h"

namespace vt::data {

// One image's metadata.
struct Record {
  std::string file_name;  // as named by the source (relative path)
  int64_t image_id = 0;
  int orig_h = 0, orig_w = 0;  // size of the source image
  Letterbox letterbox;         // source pixels -> stored pixels; identity for encoded storage
  std::vector<Box> boxes;      // pixels of the stored image
};

// Every dataset of a shard except the image payload, as stored (n images, nb boxes).
struct ShardArrays {
  std::vector<int64_t> image_offsets;  // encoded: (n + 1,) byte offsets into /image_bytes
  std::vector<float> letterbox;        // raw: (n, 3) scale, pad_x, pad_y
  std::vector<int64_t> box_offsets;    // (n + 1,) boxes of image i: [box_offsets[i], box_offsets[i+1])
  std::vector<float> boxes;            // (nb, 4) x1, y1, x2, y2
  std::vector<int32_t> classes;        // (nb,)
  std::vector<int32_t> orig_size;      // (n, 2) h, w
  std::vector<int64_t> image_id;       // (n,)
  std::vector<std::string> file_name;  // (n,)

  int64_t size() const { return static_cast<int64_t>(image_id.size()); }
};

// content_crc32c continues the payload's checksum over the arrays in the documented order:
// image_offsets (encoded) or letterbox (raw), box_offsets, boxes, classes, orig_size,
// image_id, then each file name's bytes followed by one NUL byte; numbers little-endian.
uint32_t extend_crc_with_arrays(uint32_t payload_crc, const ShardArrays& a, Storage storage);

// "<split>-<index, 5 digits>.h5"
std::string shard_file_name(const std::string& split, int index);

class ShardWriter {
 public:
  // Writes to `path` + ".tmp" and renames to `path` in finish(); the payload is spooled to
  // an unlinked temporary file meanwhile, so memory stays small whatever the shard size.
  ShardWriter(std::string path, Schema schema);
  ~ShardWriter();  // removes the temporary files of an unfinished shard
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // payload: the encoded file bytes, or imgsz * imgsz * 3 RGB bytes for raw storage.
  // Boxes must already be clipped to the stored image and have valid class ids.
  void add(const Record& rec, const uint8_t* payload, size_t n);
  int64_t size() const { return arrays_.size(); }
  // Writes the HDF5 file, syncs it, commits it by rename; returns its manifest entry.
  ShardEntry finish();

 private:
  std::string path_;
  Schema schema_;
  ShardArrays arrays_;
  int spool_fd_ = -1;
  int64_t payload_bytes_ = 0;
  uint32_t payload_crc_ = 0;
  bool finished_ = false;
};

class ShardReader {
 public:
  // Opens dir/entry.file and checks it against the manifest entry and the dataset schema:
  // presence, size, HDF5 readability, every dataset's type and shape, offsets, attributes.
  // Errors name the shard file (and dataset or attribute); `manifest` names the manifest.
  ShardReader(const std::string& dir, const ShardEntry& entry, const Schema& schema,
              const std::string& manifest);

  int64_t size() const { return arrays_.size(); }
  int64_t num_boxes() const { return static_cast<int64_t>(arrays_.classes.size()); }
  const std::string& path() const { return file_.path(); }
  const ShardArrays& arrays() const { return arrays_; }

  Record meta(int64_t i) const;
  int64_t payload_size(int64_t i) const;  // bytes of image i's payload
  // Thread-safe: pread only. read_encoded resizes `out` to the image's bytes.
  void read_encoded(int64_t i, std::vector<uint8_t>& out) const;
  void read_raw(int64_t i, uint8_t* dst) const;  // imgsz * imgsz * 3 bytes

  // Recomputes content_crc32c from the file (payload) and the arrays read at open.
  uint32_t compute_crc32c() const;
  uint32_t stored_crc32c() const { return stored_crc_; }

 private:
  Schema schema_;
  ShardArrays arrays_;
  ReadOnlyFile file_;
  int64_t payload_offset_ = 0;  // file offset of /image_bytes or /images
  int64_t payload_total_ = 0;   // its size in bytes
  uint32_t stored_crc_ = 0;
};

}  // namespace vt::data
