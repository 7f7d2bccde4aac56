// Detection drawing (see draw.h).
#include "trainer/draw.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>

#include "data/codec.h"
#include "data/fileio.h"
#include "layers/check.h"
#include "trainer/font.h"

namespace vt {
namespace {

// Saturated, well separated hues first, then lighter and darker variants.
constexpr Rgb kPalette[] = {
    {230, 25, 75},  {60, 180, 75},  {255, 225, 25}, {0, 130, 200},   {245, 130, 48},
    {145, 30, 180}, {70, 240, 240}, {240, 50, 230}, {210, 245, 60},  {250, 190, 212},
    {0, 128, 128},  {220, 190, 255}, {170, 110, 40}, {255, 250, 200}, {128, 0, 0},
    {170, 255, 195}, {128, 128, 0}, {255, 215, 180}, {0, 0, 128},    {128, 128, 128},
};
constexpr int kPaletteSize = sizeof(kPalette) / sizeof(kPalette[0]);

// Readable text on a tag: black on light colours, white on dark ones (ITU-R BT.601 luma).
Rgb text_color_on(Rgb bg) {
  const int luma = (299 * bg[0] + 587 * bg[1] + 114 * bg[2]) / 1000;
  return luma > 150 ? Rgb{0, 0, 0} : Rgb{255, 255, 255};
}

int to_pixel(float v) {
  // Far-away coordinates are clamped before conversion so that the int cast is defined.
  if (!(v > -1e6f)) return -1000000;
  if (v > 1e6f) return 1000000;
  return static_cast<int>(std::lround(v));
}

}  // namespace

Rgb class_color(int cls) {
  const int i = cls % kPaletteSize;
  return kPalette[i < 0 ? i + kPaletteSize : i];
}

void fill_rect(data::Image& img, int x0, int y0, int x1, int y1, Rgb color) {
  x0 = std::max(x0, 0), y0 = std::max(y0, 0);
  x1 = std::min(x1, img.w), y1 = std::min(y1, img.h);
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) {
      uint8_t* p = img.px(y, x);
      p[0] = color[0], p[1] = color[1], p[2] = color[2];
    }
}

void draw_rect(data::Image& img, int x0, int y0, int x1, int y1, int thickness, Rgb color) {
  if (x1 <= x0 || y1 <= y0 || thickness <= 0) return;
  const int t = std::min({thickness, x1 - x0, y1 - y0});
  fill_rect(img, x0, y0, x1, y0 + t, color);  // top
  fill_rect(img, x0, y1 - t, x1, y1, color);  // bottom
  fill_rect(img, x0, y0, x0 + t, y1, color);  // left
  fill_rect(img, x1 - t, y0, x1, y1, color);  // right
}

int text_width(const std::string& text, int scale) {
  if (text.empty()) return 0;
  return (static_cast<int>(text.size()) * (kGlyphWidth + 1) - 1) * scale;
}

int text_height(int scale) { return kGlyphHeight * scale; }

void draw_text(data::Image& img, int x, int y, const std::string& text, int scale, Rgb color) {
  for (size_t i = 0; i < text.size(); ++i) {
    const uint8_t* rows = glyph_rows(text[i]);
    const int gx = x + static_cast<int>(i) * (kGlyphWidth + 1) * scale;
    for (int r = 0; r < kGlyphHeight; ++r)
      for (int c = 0; c < kGlyphWidth; ++c)
        if (rows[r] & (1u << (kGlyphWidth - 1 - c)))
          fill_rect(img, gx + c * scale, y + r * scale, gx + (c + 1) * scale, y + (r + 1) * scale, color);
  }
}

std::string detection_label(const DetectedBox& d, const std::vector<std::string>& names) {
  const bool named = d.cls >= 0 && d.cls < static_cast<int>(names.size());
  char score[32];
  std::snprintf(score, sizeof(score), "%.2f", d.score);
  return (named ? names[d.cls] : std::to_string(d.cls)) + " " + score;
}

void draw_detections(data::Image& img, const std::vector<DetectedBox>& dets, const std::vector<std::string>& names,
                     const DrawStyle& style) {
  VT_CHECK(style.line_width >= 1 && style.font_scale >= 1, "draw_detections: line width ", style.line_width,
           " and font scale ", style.font_scale, " must be >= 1");
  std::vector<size_t> order(dets.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return dets[a].score < dets[b].score; });
  for (size_t i : order) {
    const DetectedBox& d = dets[i];
    const Rgb color = class_color(d.cls);
    const int x0 = to_pixel(d.x1), y0 = to_pixel(d.y1);
    const int x1 = std::max(to_pixel(d.x2), x0 + 1), y1 = std::max(to_pixel(d.y2), y0 + 1);
    draw_rect(img, x0, y0, x1, y1, style.line_width, color);
    if (!style.labels) continue;
    const std::string label = detection_label(d, names);
    const int pad = style.font_scale;
    const int tag_w = text_width(label, style.font_scale) + 2 * pad, tag_h = text_height(style.font_scale) + 2 * pad;
    const int tx = std::max(0, std::min(x0, img.w - tag_w));
    const int ty = y0 - tag_h >= 0 ? y0 - tag_h : y0;
    fill_rect(img, tx, ty, tx + tag_w, ty + tag_h, color);
    draw_text(img, tx + pad, ty + pad, label, style.font_scale, text_color_on(color));
  }
}

void save_image(const std::string& path, const data::Image& img) {
  const size_t dot = path.rfind('.');
  std::string ext = dot == std::string::npos ? "" : path.substr(dot);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  std::vector<uint8_t> bytes;
  if (ext == ".png") bytes = data::encode_png(img);
  else if (ext == ".jpg" || ext == ".jpeg") bytes = data::encode_jpeg(img, 95);
  else VT_CHECK(false, "save_image: ", path, ": unknown image extension (use .png, .jpg or .jpeg)");
  data::write_file_atomic(path, std::string(bytes.begin(), bytes.end()));
}

}  // namespace vt
