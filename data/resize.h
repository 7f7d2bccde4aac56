// Resizing for the data pipeline: bilinear resize, and the letterbox that fits an image into
// a square canvas keeping its aspect ratio (the YOLO convention: pad with grey 114, image
// centred). Letterbox records its mapping so boxes can follow the pixels.
#pragma once

#include "data/image.h"

namespace vt::data {

// Bilinear with pixel centres aligned (the half-pixel convention of OpenCV's INTER_LINEAR).
Image resize_bilinear(const Image& src, int out_h, int out_w);

// new_pixel = old_pixel * scale + (pad_x, pad_y)
struct Letterbox {
  float scale = 1, pad_x = 0, pad_y = 0;
  Box apply(const Box& b) const { return {b.x1 * scale + pad_x, b.y1 * scale + pad_y, b.x2 * scale + pad_x, b.y2 * scale + pad_y, b.cls}; }
};

// The mapping letterbox() uses for an h x w image: detections on the canvas map back to the
// image through it (x = (x' - pad_x) / scale).
Letterbox letterbox_mapping(int h, int w, int size);

// Fits src into a size x size canvas filled with `fill`; returns the canvas and the mapping.
Image letterbox(const Image& src, int size, Letterbox* mapping, uint8_t fill = 114);

}  // namespace vt::data
