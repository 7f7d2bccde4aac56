// Drawing detections on an image, for `visiontrain detect` and the quickstart's picture:
// box outlines in a colour per class, a filled label tag "name 0.87" in a built-in 5 x 7
// bitmap font (printable ASCII, drawn for this project, so no font library is needed), and
// saving as PNG or JPEG. Everything is clipped to the image, so
// boxes that reach past a border (or lie wholly outside) draw what is visible and no more.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"
#include "layers/detect_postprocess.h"

namespace vt {

using Rgb = std::array<uint8_t, 3>;

constexpr int kGlyphWidth = 5, kGlyphHeight = 7;

// The 7 rows of the glyph for `c`, top first; bit 4 of a row is its leftmost pixel. Characters
// outside 32..126 get the glyph of '?'.
const uint8_t* glyph_rows(char c);

// Class `cls`'s colour from a fixed palette of 20 distinct colours, cycled.
Rgb class_color(int cls);

// Fills the pixels [x0, x1) x [y0, y1) that lie inside the image.
void fill_rect(data::Image& img, int x0, int y0, int x1, int y1, Rgb color);
// The outline of [x0, x1) x [y0, y1), `thickness` pixels wide, drawn inside that rectangle.
void draw_rect(data::Image& img, int x0, int y0, int x1, int y1, int thickness, Rgb color);

// Text with its top-left corner at (x, y); every font pixel becomes scale x scale pixels and
// characters advance by 6 font pixels (5 + 1 of spacing). Only the ink is drawn.
void draw_text(data::Image& img, int x, int y, const std::string& text, int scale, Rgb color);
int text_width(const std::string& text, int scale);  // without the last character's spacing
int text_height(int scale);

// "person 0.87": the class name (the class number when names has none for it) and the score.
std::string detection_label(const DetectedBox& d, const std::vector<std::string>& names);

struct DrawStyle {
  int line_width = 2;
  int font_scale = 2;
  bool labels = true;
};

// Draws each detection's box (coordinates rounded to whole pixels), then its tag: on the box's
// top edge, outside above it when there is room, else inside below it; shifted left to stay
// in the image. The lowest score is drawn first, so the best detections end up on top.
void draw_detections(data::Image& img, const std::vector<DetectedBox>& dets,
                     const std::vector<std::string>& names, const DrawStyle& style = {});

// Writes img as PNG (.png) or JPEG of quality 95 (.jpg, .jpeg), chosen by the extension,
// through a temporary file and a rename. Throws vt::Error naming the path otherwise.
void save_image(const std::string& path, const data::Image& img);

}  // namespace vt
