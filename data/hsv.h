// HSV colour jitter, the YOLO augmentation: per image, hue, saturation and value are each
// multiplied by a gain in HSV space (hue wraps around the circle, saturation and value clip
// at 255).
//
// Hue is held at 1/256 of a 60-degree sector (1536 steps around the circle, against
// OpenCV's 180), saturation and value in 0..255, all rounded to nearest; at that resolution
// RGB -> HSV -> RGB is exact, so unit gains leave every colour unchanged.
#pragma once

#include "data/image.h"

namespace vt::data {

// Gains in [0, 2]: hue' = hue * gain_h (mod 360 degrees), s' = min(255, s * gain_s), v' likewise.
void hsv_jitter(Image& img, float gain_h, float gain_s, float gain_v);

}  // namespace vt::data
