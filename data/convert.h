// Conversion of detection datasets in the formats users have (YOLO txt, COCO JSON, Pascal
// VOC XML) into shards. A Source lists the images and knows their labels; convert() decodes
// every image (to validate it and learn its size), clips the boxes, and writes the shards.
//
// Bad source data never stops a conversion: an image that cannot be read or decoded is
// skipped, an invalid box (malformed line, unknown class, NaN, x2 < x1) is left out, a box
// partly outside its image is clipped, a zero-area one dropped; each is counted and reported
// with its file in the manifest. The conversion fails only when no valid image is left.
// Source files are opened read-only and never modified.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "data/dataset_writer.h"
#include "data/image.h"
#include "data/manifest.h"

namespace vt::data {

struct SourceImage {
  std::string path;       // the file to read
  std::string file_name;  // the name recorded in the shard (relative to the source's root)
  int64_t image_id = 0;
};

// One image's labels in its own pixels, before clipping.
struct Labels {
  std::vector<Box> boxes;
  int64_t invalid = 0;  // labels rejected while parsing
  int64_t crowd = 0;    // COCO iscrowd annotations left out
  std::vector<Issue> issues;
};

class Source {
 public:
  virtual ~Source() = default;
  // The labels of image i once its decoded size (w, h) is known. Called from worker
  // threads, so it must be thread-safe; throws vt::Error to skip the image with a reason.
  virtual Labels labels(int64_t i, int w, int h) const = 0;

  std::string format;       // yolo | coco | voc
  std::string description;  // the source paths, for the report
  std::vector<std::string> class_names;
  std::vector<SourceImage> images;
  // Found while listing: files that cannot be converted (counted as skipped images), and
  // labels whose image does not exist (YOLO label files without an image, COCO annotations
  // with an unknown image_id), counted as orphaned boxes.
  std::vector<Issue> skipped;
  std::vector<Issue> orphans;
  int64_t orphan_boxes = 0;
};

// Decodes, validates and writes every image of `src` (storage, letterbox size, shards,
// threads from opt). Returns the manifest written to opt.out_dir.
Manifest convert(const Source& src, const WriteOptions& opt);

// --- sources ---------------------------------------------------------------------------
// YOLO (Ultralytics): data.yaml with path, train, val (and test), names as a list or map.
// Each split may be a directory (searched recursively), a .txt list of images, or a list of
// either. Labels live where "/images/" becomes "/labels/" and the extension ".txt".
// Returns one source per split present, in the order train, val, test.
std::vector<std::pair<std::string, std::unique_ptr<Source>>> yolo_from_data_yaml(
    const std::string& yaml_path);
// YOLO from an image directory, a label directory mirroring it, and the class names.
std::unique_ptr<Source> yolo_from_dirs(const std::string& images, const std::string& labels,
                                       const std::vector<std::string>& class_names);

// COCO: instances JSON and the image directory its file_name entries are relative to.
std::unique_ptr<Source> coco_source(const std::string& annotations, const std::string& images);

// Pascal VOC: <root>/ImageSets/Main/<split>.txt, Annotations/<id>.xml, JPEGImages/<id>.jpg.
// Empty class_names means the 20 standard VOC classes.
std::unique_ptr<Source> voc_from_root(const std::string& root, const std::string& split,
                                      std::vector<std::string> class_names);
// Pascal VOC from a directory of XML files and the image directory.
std::unique_ptr<Source> voc_from_dirs(const std::string& images, const std::string& annotations,
                                      std::vector<std::string> class_names);
const std::vector<std::string>& voc_class_names();

// Class names from a file: a YAML file with `names:` (list or map), or one name per line.
std::vector<std::string> read_class_names(const std::string& path);

// --- shared by the sources -------------------------------------------------------------
// True for .jpg/.jpeg/.png (any case); `other_image` is set for image types we cannot decode.
bool is_supported_image(const std::string& path, bool* other_image = nullptr);
// The number a file stem spells ("000000000009" -> 9), or `fallback` when it is not digits.
int64_t image_id_from_stem(const std::string& path, int64_t fallback);

}  // namespace vt::data
