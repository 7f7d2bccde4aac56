// Axis-aligned warping: drawing source images into an output image through maps of the form
// out = a * in + b per axis (scale, translation, mirror), by inverse mapping with bilinear
// sampling. Every geometric step of augmentation (letterbox, mosaic placement, random scale
// and translation, horizontal flip) is such a map, so their composition is one too and each
// output pixel is interpolated once, from the original pixels, whatever the number of steps.
//
// Coordinates are continuous: pixel (row i, column j) covers [j, j+1) x [i, i+1), its centre
// is (j + 0.5, i + 0.5), and boxes live in the same space, so a box follows its pixels exactly.
// Rotation and shear are not supported (YOLOv8 trains detectors with both off by default);
// they would make the map non-separable.
#pragma once

#include "data/image.h"

namespace vt::data {

struct Rect {
  float x1 = 0, y1 = 0, x2 = 0, y2 = 0;
  float width() const { return x2 - x1; }
  float height() const { return y2 - y1; }
  bool empty() const { return !(x2 > x1 && y2 > y1); }
  Rect intersect(const Rect& o) const;  // may be empty
  bool operator==(const Rect& o) const { return x1 == o.x1 && y1 == o.y1 && x2 == o.x2 && y2 == o.y2; }
  bool operator!=(const Rect& o) const { return !(*this == o); }
};

// out_x = ax * x + bx, out_y = ay * y + by; ax, ay non-zero (negative mirrors that axis).
struct AxisAffine {
  float ax = 1, bx = 0, ay = 1, by = 0;
  AxisAffine then(const AxisAffine& next) const {  // this map, followed by `next`
    return {next.ax * ax, next.ax * bx + next.bx, next.ay * ay, next.ay * by + next.by};
  }
  Rect apply(const Rect& r) const;  // corners re-sorted after a mirror
};

// A source image seen in the output through `map`, visible only in `region` (output
// coordinates): the pixels whose centres lie in [x1, x2) x [y1, y2) are drawn.
struct Placement {
  const Image* src = nullptr;
  AxisAffine map;  // source -> output
  Rect region;
};

// Draws `p` into `out`, leaving the pixels outside its region as they are. Each drawn pixel
// is the bilinear interpolation of the source at the inverse-mapped centre, clamped to the
// source's border, in 8-bit fixed point (1/256 pixel): a map that puts pixel centres on
// pixel centres copies the pixels exactly.
void draw(const Placement& p, Image& out);

}  // namespace vt::data
