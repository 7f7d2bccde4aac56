// The data pipeline's vocabulary: an RGB image in host memory and its labelled boxes.
//
// Boxes are (x1, y1, x2, y2) in pixels of the image they belong to, with a class id. Every
// stage (converters, shards, augmentation, the loader) speaks in these types; the loader
// turns them into Tensors only when a batch is assembled.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace vt::data {

struct Box {
  float x1 = 0, y1 = 0, x2 = 0, y2 = 0;  // pixels, x2 >= x1 and y2 >= y1 after clip_boxes
  int32_t cls = 0;
};

// Interleaved RGB, row-major: rgb[(y * w + x) * 3 + channel], size h * w * 3.
struct Image {
  int h = 0, w = 0;
  std::vector<uint8_t> rgb;

  Image() = default;
  Image(int height, int width) : h(height), w(width), rgb(static_cast<size_t>(height) * width * 3) {}
  uint8_t* px(int y, int x) { return rgb.data() + (static_cast<size_t>(y) * w + x) * 3; }
  const uint8_t* px(int y, int x) const { return rgb.data() + (static_cast<size_t>(y) * w + x) * 3; }
};

// Counts of what clip_boxes removed, so converters and the loader can report them.
struct BoxStats {
  int64_t kept = 0;
  int64_t clipped = 0;    // moved inside the image
  int64_t dropped = 0;    // zero area (or below min_side) after clipping
  int64_t invalid = 0;    // NaN/Inf coordinates, or x2 < x1 / y2 < y1 before clipping
  BoxStats& operator+=(const BoxStats& o);
};

// Clips every box to [0, w] x [0, h]; removes boxes that are invalid or whose width or
// height is below min_side pixels after clipping. Keeps the order of the rest.
BoxStats clip_boxes(std::vector<Box>& boxes, int w, int h, float min_side = 1e-3f);

}  // namespace vt::data
