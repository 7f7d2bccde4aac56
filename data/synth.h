// A synthetic detection dataset: solid shapes of a few classes on textured backgrounds.
// The built-in default of the quickstart and the tests: it needs no download, and a tiny
// detector learns it in minutes on a CPU.
//
// Every image is a pure function of (seed, split, index): the shards are byte-identical for
// the same options whatever the thread count. (Backgrounds use libm's sin/exp, so another
// libm may round a few pixels differently.)
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/image.h"
#include "data/manifest.h"

namespace vt::data {

// Shape names in class-id order; a dataset of K classes uses the first K.
const std::vector<std::string>& synth_shape_names();

struct SynthOptions {
  int64_t train = 1024, val = 256;  // images per split (a split of 0 images is not written)
  int imgsz = 256;                  // images are imgsz x imgsz
  int classes = 4;                  // 2 .. synth_shape_names().size()
  uint64_t seed = 0;
  Storage storage = Storage::kEncoded;  // encoded: JPEG at jpeg_quality; raw: the pixels
  int jpeg_quality = 90;
  int shard_size = 1000;
  int threads = 0;  // 0: one per hardware thread
  bool overwrite = false;
  std::function<void(const std::string& split, int64_t done, int64_t total)> progress;
};

struct SynthImage {
  Image image;
  std::vector<Box> boxes;  // tight boxes of the drawn shapes, pixels
};

// Image `index` of split `split_id` (0 train, 1 val): 1..6 shapes of sizes 8%..40% of the
// side, overlapping little, coloured to stand out from the background under them.
SynthImage synth_image(uint64_t seed, int split_id, int64_t index, int imgsz, int classes);

// Writes out_dir/train and out_dir/val; returns their manifests.
std::vector<Manifest> write_synth(const std::string& out_dir, const SynthOptions& opt);

}  // namespace vt::data
