// Training augmentation as in Ultralytics YOLOv8, and the evaluation letterbox: from a
// source of decoded, labelled images to one imgsz x imgsz sample with its boxes.
//
// Train: with probability `mosaic`, four images (this one and three partners drawn from the
// whole source) are placed around a random centre of a 2S x 2S canvas, each fitted to
// longer side S; otherwise the image is letterboxed into an S x S canvas. Then a random
// scale and translation about the canvas centre brings the canvas to S x S (fill 114), HSV
// gains jitter the colours, and the result is flipped horizontally with probability
// `fliplr`. The geometric steps compose into one axis-aligned map per source image (see
// warp.h), so every output pixel is interpolated once from the original pixels.
//
// Boxes follow the same maps. A box is clipped to the part of its image the canvas shows,
// then to the output; it is dropped (YOLOv8's box_candidates) when the result is under 2 px
// wide or high, keeps under 10% of the area it had on the canvas (scaled by the affine), or
// is more than 100 times longer than wide. Every random draw comes from SampleRng keyed by
// the SampleKey, so a sample is a pure function of (source, index, key, config).
#pragma once

#include <cstdint>
#include <vector>

#include "data/image.h"
#include "data/rng.h"

namespace vt::data {

// A decoded image with its boxes, in the image's own pixels.
struct Labeled {
  Image image;
  std::vector<Box> boxes;
};

// Where augmentation reads its images from (the loader wraps the shard reader in it).
// load() must be safe to call from several threads at once and return the same sample for
// the same index every time; it throws vt::Error naming the record when it cannot.
struct SampleSource {
  virtual ~SampleSource() = default;
  virtual int64_t size() const = 0;
  virtual Labeled load(int64_t index) const = 0;
};

// The defaults are YOLOv8's. Rotation, shear and perspective are not implemented (YOLOv8's
// defaults for them are 0).
struct AugmentConfig {
  int imgsz = 640;         // S: output is S x S
  float mosaic = 1.0f;     // probability of a 4-image mosaic
  float translate = 0.1f;  // shift of the canvas centre, in [-translate, translate] * S per axis
  float scale = 0.5f;      // zoom in [1 - scale, 1 + scale]
  float fliplr = 0.5f;     // probability of a horizontal flip
  float hsv_h = 0.015f, hsv_s = 0.7f, hsv_v = 0.4f;  // gains drawn in [1 - g, 1 + g]
  bool train = true;       // false: letterbox only, no randomness
};

// The sample at `index` of `src`, augmented (cfg.train) or letterboxed (eval, which drops
// only degenerate boxes, see clip_boxes). Box outcomes
// (kept, clipped, dropped, invalid), over all images a mosaic uses, are added to *stats when
// stats is not null. Throws vt::Error for a bad config, an index out of range, or an empty
// image.
Labeled make_sample(const SampleSource& src, int64_t index, const SampleKey& key, const AugmentConfig& cfg,
                    BoxStats* stats);

}  // namespace vt::data
