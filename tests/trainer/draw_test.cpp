// Detection drawing (trainer/draw.h) and its font: glyphs for all of
// printable ASCII, text rendered pixel for pixel, outlines and label tags where they belong,
// nothing drawn or crashing past the borders, and images saved as PNG/JPEG.
#include "trainer/draw.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "data/codec.h"
#include "data/fileio.h"
#include "layers/check.h"
#include "tests/test_util.h"

namespace vt {
namespace {

Rgb pixel(const data::Image& img, int x, int y) {
  const uint8_t* p = img.px(y, x);
  return {p[0], p[1], p[2]};
}

int count_color(const data::Image& img, int x0, int y0, int x1, int y1, Rgb c) {
  int n = 0;
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) n += pixel(img, x, y) == c;
  return n;
}

const Rgb kBlack{0, 0, 0};

TEST(Font, CoversPrintableAsciiWithDistinctGlyphs) {
  std::set<std::vector<uint8_t>> seen;
  for (int c = 32; c <= 126; ++c) {
    const uint8_t* rows = glyph_rows(static_cast<char>(c));
    std::vector<uint8_t> g(rows, rows + kGlyphHeight);
    int ink = 0;
    for (uint8_t r : g) {
      EXPECT_LT(r, 1 << kGlyphWidth) << "'" << char(c) << "' is wider than 5 pixels";
      ink += __builtin_popcount(r);
    }
    EXPECT_EQ(ink == 0, c == ' ') << "'" << char(c) << "'";
    EXPECT_TRUE(seen.insert(g).second) << "'" << char(c) << "' looks like another glyph";
  }
  // Anything else draws as '?'.
  EXPECT_EQ(glyph_rows('\n'), glyph_rows('?'));
  EXPECT_EQ(glyph_rows(static_cast<char>(200)), glyph_rows('?'));
}

TEST(Draw, TextIsTheGlyphScaled) {
  for (int scale : {1, 2, 3}) {
    data::Image img(30, 40);
    draw_text(img, 1, 2, "T7", scale, {255, 255, 255});
    for (int ch = 0; ch < 2; ++ch) {
      const uint8_t* rows = glyph_rows("T7"[ch]);
      for (int y = 0; y < kGlyphHeight * scale; ++y)
        for (int x = 0; x < kGlyphWidth * scale; ++x) {
          const bool ink = rows[y / scale] & (1u << (kGlyphWidth - 1 - x / scale));
          const int px = 1 + ch * 6 * scale + x, py = 2 + y;
          if (px >= img.w) continue;
          EXPECT_EQ(pixel(img, px, py)[0], ink ? 255 : 0)
              << "scale " << scale << " char " << ch << " at " << x << ", " << y;
        }
    }
  }
  EXPECT_EQ(text_width("ab 1", 2), (4 * 6 - 1) * 2);
  EXPECT_EQ(text_height(2), 14);
}

TEST(Draw, OutlineFollowsTheBox) {
  data::Image img(80, 100);
  draw_detections(img, {{10, 20, 60, 70, 0.9f, 3}}, {}, {2, 2, false});
  const Rgb c = class_color(3);
  for (int y : {22, 45, 67}) {  // left and right edges, 2 px each, inside [10, 60)
    EXPECT_EQ(pixel(img, 10, y), c);
    EXPECT_EQ(pixel(img, 11, y), c);
    EXPECT_EQ(pixel(img, 12, y), kBlack);
    EXPECT_EQ(pixel(img, 59, y), c);
    EXPECT_EQ(pixel(img, 58, y), c);
    EXPECT_EQ(pixel(img, 57, y), kBlack);
    EXPECT_EQ(pixel(img, 9, y), kBlack);
    EXPECT_EQ(pixel(img, 60, y), kBlack);
  }
  for (int x : {12, 35, 57}) {  // top and bottom edges
    EXPECT_EQ(pixel(img, x, 20), c);
    EXPECT_EQ(pixel(img, x, 21), c);
    EXPECT_EQ(pixel(img, x, 22), kBlack);
    EXPECT_EQ(pixel(img, x, 69), c);
    EXPECT_EQ(pixel(img, x, 19), kBlack);
  }
  // Nothing else is coloured: the 50 x 50 box less its 46 x 46 inside.
  EXPECT_EQ(count_color(img, 0, 0, 100, 80, c), 50 * 50 - 46 * 46);
}

TEST(Draw, LabelTagSitsAboveTheBoxWithText) {
  data::Image img(80, 120);
  const DetectedBox d{10, 40, 100, 70, 0.871f, 1};
  EXPECT_EQ(detection_label(d, {"person", "car"}), "car 0.87");
  EXPECT_EQ(detection_label(d, {"person"}), "1 0.87");
  draw_detections(img, {d}, {"person", "car"});
  // Tag: text "car 0.87" at scale 2 (8 chars: 94 px) plus 2 px of padding on each side, so
  // [10, 108) x [40 - 18, 40).
  const Rgb c = class_color(1), text = Rgb{255, 255, 255};  // a dark green tag: white text
  const int tag_x0 = 10, tag_x1 = 10 + 94 + 4, tag_y0 = 40 - 18, tag_y1 = 40;
  const int bg = count_color(img, tag_x0, tag_y0, tag_x1, tag_y1, c);
  const int ink = count_color(img, tag_x0, tag_y0, tag_x1, tag_y1, text);
  EXPECT_EQ(bg + ink, (tag_x1 - tag_x0) * (tag_y1 - tag_y0));
  EXPECT_GT(ink, 100);  // 8 glyphs of several 2 x 2 dots
  EXPECT_GT(bg, ink);
  EXPECT_EQ(pixel(img, tag_x0, tag_y0), c);              // the padding
  EXPECT_EQ(pixel(img, tag_x1, tag_y0 + 5), kBlack);     // nothing right of the tag
  EXPECT_EQ(count_color(img, 0, 0, 120, tag_y0, c), 0);  // nor above it
  // 'c' (first glyph, row 2 = .###.) at (tag_x0 + 2, tag_y0 + 2): ink at font column 1.
  EXPECT_EQ(pixel(img, tag_x0 + 2 + 2, tag_y0 + 2 + 4), text);
  EXPECT_EQ(pixel(img, tag_x0 + 2, tag_y0 + 2 + 4), c);
}

TEST(Draw, TagGoesInsideAtTheTopAndLeftOfTheRightBorder) {
  data::Image img(60, 80);
  draw_detections(img, {{70, 3, 79, 50, 0.5f, 0}}, {"dog"});
  const Rgb c = class_color(0);
  // No room above (3 < 18): the tag starts at the box's top; "dog 0.50" is 98 px wide, wider
  // than the image, so it starts at x = 0.
  EXPECT_EQ(pixel(img, 0, 3), c);
  EXPECT_EQ(pixel(img, 0, 2), kBlack);
  EXPECT_EQ(pixel(img, 0, 3 + 17), c);
  EXPECT_EQ(pixel(img, 0, 3 + 18), kBlack);
}

TEST(Draw, BoxesAtAndPastTheBordersAreClipped) {
  data::Image img(5, 7);
  const std::vector<DetectedBox> dets = {
      {-10, -10, 3, 3, 0.9f, 0},     {5, 2, 20, 30, 0.8f, 1},      {-50, -50, -40, -40, 0.7f, 2},
      {100, 100, 200, 200, 0.6f, 3}, {2, 2, 2, 2, 0.5f, 4},        {-1e30f, -1e30f, 1e30f, 1e30f, 0.4f, 5},
      {0, 0, 7, 5, 0.3f, -1},        {NAN, NAN, NAN, NAN, 0.2f, 6}};
  for (int lw : {1, 3, 10}) draw_detections(img, dets, {"a"}, {lw, 2, true});
  EXPECT_EQ(img.w, 7);
  EXPECT_EQ(img.h, 5);
  EXPECT_EQ(img.rgb.size(), 7u * 5u * 3u);
  // The first box's visible part [0, 3) x [0, 3) is drawn (under later tags, some colour).
  EXPECT_NE(pixel(img, 0, 0), kBlack);
}

TEST(Draw, SavesPngAndJpeg) {
  char tmpl[] = "/tmp/vt_draw_test_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  data::Image img(30, 40);
  draw_detections(img, {{5, 12, 35, 28, 0.66f, 2}}, {"cat"});
  save_image(dir + "/out.png", img);
  const std::vector<uint8_t> png = data::read_file(dir + "/out.png");
  const data::Image back = data::decode_image(png.data(), png.size(), "out.png");
  EXPECT_EQ(back.rgb, img.rgb);
  save_image(dir + "/out.JPG", img);
  const std::vector<uint8_t> jpg = data::read_file(dir + "/out.JPG");
  EXPECT_EQ(data::sniff_format(jpg.data(), jpg.size()), data::ImageFormat::kJpeg);
  test::expect_error([&] { save_image(dir + "/out.bmp", img); }, {"out.bmp", "unknown image extension"});
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace vt
