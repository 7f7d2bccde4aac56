// Augmentation: the warp and the HSV jitter on hand-computed cases, each geometric step of
// make_sample alone, boxes that follow their pixels through mosaic + affine + flip, box
// statistics, determinism across threads, and the evaluation letterbox.
#include "data/augment.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "data/hsv.h"
#include "data/resize.h"
#include "data/warp.h"

namespace vt::data {
namespace {

// In-memory source that records which samples were loaded.
struct MemorySource : SampleSource {
  std::vector<Labeled> samples;
  mutable std::mutex mu;
  mutable std::vector<int64_t> loads;

  int64_t size() const override { return int64_t(samples.size()); }
  Labeled load(int64_t i) const override {
    std::lock_guard<std::mutex> lock(mu);
    loads.push_back(i);
    return samples.at(size_t(i));
  }
  std::vector<int64_t> take_loads() {
    std::lock_guard<std::mutex> lock(mu);
    return std::exchange(loads, {});
  }
};

Image noise_image(int h, int w, uint32_t seed) {
  Image im(h, w);
  for (auto& v : im.rgb) v = static_cast<uint8_t>((seed = seed * 1664525u + 1013904223u) >> 24);
  return im;
}

AugmentConfig all_off(int imgsz) {
  AugmentConfig c;
  c.imgsz = imgsz;
  c.mosaic = c.translate = c.scale = c.fliplr = c.hsv_h = c.hsv_s = c.hsv_v = 0;
  return c;
}

std::array<uint8_t, 3> rgb_at(const Image& im, int y, int x) { return {im.px(y, x)[0], im.px(y, x)[1], im.px(y, x)[2]}; }

void expect_box(const Box& b, float x1, float y1, float x2, float y2, int cls) {
  EXPECT_FLOAT_EQ(b.x1, x1);
  EXPECT_FLOAT_EQ(b.y1, y1);
  EXPECT_FLOAT_EQ(b.x2, x2);
  EXPECT_FLOAT_EQ(b.y2, y2);
  EXPECT_EQ(b.cls, cls);
}

TEST(Warp, UpscaleMirrorAndRegion) {
  // A 1x2 image [0, 200] stretched to 4 columns: centres 0.5..3.5 read source x = -0.25
  // (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1): 0, 50, 150, 200.
  Image src(1, 2);
  std::fill(src.rgb.begin(), src.rgb.begin() + 3, 0);
  std::fill(src.rgb.begin() + 3, src.rgb.end(), 200);
  Image out(1, 4);
  draw({&src, {2, 0, 1, 0}, {0, 0, 4, 1}}, out);
  EXPECT_EQ(out.px(0, 0)[0], 0);
  EXPECT_EQ(out.px(0, 1)[1], 50);
  EXPECT_EQ(out.px(0, 2)[2], 150);
  EXPECT_EQ(out.px(0, 3)[0], 200);
  // Mirrored (x' = 4 - 2x) and restricted to [1, 4): column 0 keeps its old value.
  std::fill(out.rgb.begin(), out.rgb.end(), 7);
  draw({&src, {-2, 4, 1, 0}, {1, 0, 4, 1}}, out);
  EXPECT_EQ(out.px(0, 0)[0], 7);
  EXPECT_EQ(out.px(0, 1)[0], 150);
  EXPECT_EQ(out.px(0, 3)[0], 0);
  // A shift by whole pixels copies exactly.
  const Image noise = noise_image(9, 11, 3);
  Image shifted(9, 11);
  draw({&noise, {1, 2, 1, -3}, {0, 0, 11, 9}}, shifted);
  EXPECT_EQ(rgb_at(shifted, 2, 5), rgb_at(noise, 5, 3));
  EXPECT_EQ(rgb_at(shifted, 0, 2), rgb_at(noise, 3, 0));
  EXPECT_THROW(draw({&noise, {0, 0, 1, 0}, {0, 0, 11, 9}}, shifted), Error);
}

TEST(Hsv, UnitGainsKeepEveryColour) {
  Image all(4096, 4096);
  for (uint32_t i = 0; i < (1u << 24); ++i)
    all.rgb[3 * i] = uint8_t(i >> 16), all.rgb[3 * i + 1] = uint8_t(i >> 8), all.rgb[3 * i + 2] = uint8_t(i);
  Image out = all;
  hsv_jitter(out, 1, 1, 1);
  EXPECT_TRUE(out.rgb == all.rgb);
}

TEST(Hsv, HandComputedGains) {
  auto jitter = [](std::array<uint8_t, 3> c, float gh, float gs, float gv) {
    Image im(1, 1);
    std::copy(c.begin(), c.end(), im.rgb.begin());
    hsv_jitter(im, gh, gs, gv);
    return rgb_at(im, 0, 0);
  };
  using C = std::array<uint8_t, 3>;
  // (200, 100, 50): v 200, s round(255 * 150 / 200) = 191, hue 85/256 of the red sector.
  EXPECT_EQ(jitter({200, 100, 50}, 1, 1, 0.5f), (C{100, 50, 25}));  // value halved, same hue and s
  EXPECT_EQ(jitter({200, 100, 50}, 1, 0, 1), (C{200, 200, 200}));   // saturation 0: grey of value v
  // Value x2 clips at 255; c' = 191, g = 255 - round(191 * 171 / 256) = 127, b = 255 - 191.
  EXPECT_EQ(jitter({200, 100, 50}, 1, 1, 2), (C{255, 127, 64}));
  EXPECT_EQ(jitter({0, 255, 0}, 1.5f, 1, 1), (C{0, 255, 255}));   // 120 degrees x 1.5: cyan
  EXPECT_EQ(jitter({0, 0, 255}, 1.5f, 1, 1), (C{255, 0, 0}));     // 240 x 1.5 wraps to 0: red
  EXPECT_EQ(jitter({114, 114, 114}, 1.5f, 2, 1.2f), (C{137, 137, 137}));  // grey stays grey
  EXPECT_THROW(jitter({1, 2, 3}, 1, -1, 1), Error);
}

TEST(Augment, EverythingOffIsTheIdentity) {
  MemorySource src;
  src.samples.push_back({noise_image(100, 100, 1), {{10, 20, 30, 40, 3}}});
  const Labeled out = make_sample(src, 0, {1, 0, 0}, all_off(100), nullptr);
  EXPECT_TRUE(out.image.rgb == src.samples[0].image.rgb);
  ASSERT_EQ(out.boxes.size(), 1u);
  expect_box(out.boxes[0], 10, 20, 30, 40, 3);
}

TEST(Augment, FlipMirrorsPixelsAndBoxes) {
  MemorySource src;
  src.samples.push_back({noise_image(100, 100, 2), {{10, 20, 30, 40, 3}}});
  AugmentConfig cfg = all_off(100);
  cfg.fliplr = 1;
  const Labeled out = make_sample(src, 0, {1, 0, 0}, cfg, nullptr);
  ASSERT_EQ(out.boxes.size(), 1u);
  expect_box(out.boxes[0], 70, 20, 90, 40, 3);
  for (int y : {0, 37, 99})
    for (int x : {0, 12, 99}) EXPECT_EQ(rgb_at(out.image, y, x), rgb_at(src.samples[0].image, y, 99 - x));
}

TEST(Augment, LetterboxMapsBoxes) {
  // 50 x 100 into 100: scale 1, 25 rows of fill above and below. 200 x 100: scale 0.5,
  // 25 columns of fill left and right.
  MemorySource src;
  src.samples.push_back({noise_image(50, 100, 3), {{10, 10, 20, 30, 1}}});
  src.samples.push_back({noise_image(200, 100, 4), {{20, 40, 60, 80, 2}}});
  const AugmentConfig cfg = all_off(100);
  const Labeled wide = make_sample(src, 0, {1, 0, 0}, cfg, nullptr);
  ASSERT_EQ(wide.boxes.size(), 1u);
  expect_box(wide.boxes[0], 10, 35, 20, 55, 1);
  EXPECT_EQ(rgb_at(wide.image, 24, 50), (std::array<uint8_t, 3>{114, 114, 114}));
  EXPECT_EQ(rgb_at(wide.image, 25, 50), rgb_at(src.samples[0].image, 0, 50));
  EXPECT_EQ(rgb_at(wide.image, 74, 3), rgb_at(src.samples[0].image, 49, 3));
  EXPECT_EQ(rgb_at(wide.image, 75, 50), (std::array<uint8_t, 3>{114, 114, 114}));
  const Labeled tall = make_sample(src, 1, {1, 0, 0}, cfg, nullptr);
  ASSERT_EQ(tall.boxes.size(), 1u);
  expect_box(tall.boxes[0], 35, 20, 55, 40, 2);
  EXPECT_EQ(rgb_at(tall.image, 50, 24), (std::array<uint8_t, 3>{114, 114, 114}));
  EXPECT_EQ(rgb_at(tall.image, 50, 75), (std::array<uint8_t, 3>{114, 114, 114}));
}

// Adds 12 images of 160..300 pixels (so fitting them to imgsz 160 never enlarges them), grey 40,
// each with two solid rectangles of colours unique in the source; box class = colour id.
std::array<uint8_t, 3> colour(int k) {
  return {uint8_t(50 + 8 * k), uint8_t(230 - 7 * k), uint8_t(20 + (37 * k) % 200)};
}

void add_rectangles(MemorySource& src) {
  const int sizes[][2] = {{160, 200}, {240, 160}, {160, 160}, {180, 300}, {200, 200}, {300, 170},
                          {170, 170}, {220, 180}, {160, 250}, {260, 260}, {190, 210}, {200, 160}};
  for (int i = 0; i < 12; ++i) {
    Labeled s;
    s.image = Image(sizes[i][0], sizes[i][1]);
    std::fill(s.image.rgb.begin(), s.image.rgb.end(), 40);
    for (int j = 0; j < 2; ++j) {
      const int k = 2 * i + j;
      const int x1 = 10 + 70 * j + (i * 7) % 20, y1 = 15 + 60 * j + (i * 11) % 25, x2 = x1 + 30 + 5 * j, y2 = y1 + 40;
      for (int y = y1; y < y2; ++y)
        for (int x = x1; x < x2; ++x) std::copy_n(colour(k).data(), 3, s.image.px(y, x));
      s.boxes.push_back({float(x1), float(y1), float(x2), float(y2), k});
    }
    src.samples.push_back(std::move(s));
  }
}

// Boxes follow their pixels: inside a box (1.5 px in from each edge) is its colour; 1.5 px
// outside an edge is not, unless that edge lies on the output's border. With imgsz 160,
// zoom <= 1.5 and sources never enlarged, 1.5 output pixels are >= 1 source pixel, beyond
// the reach of bilinear sampling.
void check_boxes_follow_pixels(const Labeled& out, int size, bool check_outside) {
  for (const Box& b : out.boxes) {
    ASSERT_TRUE(b.x1 >= 0 && b.y1 >= 0 && b.x2 <= size && b.y2 <= size) << b.x1 << " " << b.y1 << " " << b.x2;
    ASSERT_TRUE(b.x2 - b.x1 >= 2 && b.y2 - b.y1 >= 2);
    if (b.x2 - b.x1 < 5 || b.y2 - b.y1 < 5) continue;
    const auto c = colour(b.cls);
    const int cy = int((b.y1 + b.y2) / 2), cx = int((b.x1 + b.x2) / 2);
    const int left = int(std::ceil(b.x1 + 1)), right = int(std::floor(b.x2 - 2)), top = int(std::ceil(b.y1 + 1)),
              bottom = int(std::floor(b.y2 - 2));
    EXPECT_EQ(rgb_at(out.image, cy, cx), c) << "cls " << b.cls;
    EXPECT_EQ(rgb_at(out.image, cy, left), c) << "cls " << b.cls;
    EXPECT_EQ(rgb_at(out.image, cy, right), c) << "cls " << b.cls;
    EXPECT_EQ(rgb_at(out.image, top, cx), c) << "cls " << b.cls;
    EXPECT_EQ(rgb_at(out.image, bottom, cx), c) << "cls " << b.cls;
    if (!check_outside) continue;
    const int out_left = int(std::floor(b.x1 - 2)), out_right = int(std::ceil(b.x2 + 1));
    const int out_top = int(std::floor(b.y1 - 2)), out_bottom = int(std::ceil(b.y2 + 1));
    if (out_left >= 0) { EXPECT_NE(rgb_at(out.image, cy, out_left), c) << "cls " << b.cls; }
    if (out_right < size) { EXPECT_NE(rgb_at(out.image, cy, out_right), c) << "cls " << b.cls; }
    if (out_top >= 0) { EXPECT_NE(rgb_at(out.image, out_top, cx), c) << "cls " << b.cls; }
    if (out_bottom < size) { EXPECT_NE(rgb_at(out.image, out_bottom, cx), c) << "cls " << b.cls; }
  }
}

TEST(Augment, BoxesFollowPixelsWithoutMosaic) {
  MemorySource src;
  add_rectangles(src);
  AugmentConfig cfg = all_off(160);
  cfg.scale = 0.5f, cfg.translate = 0.1f, cfg.fliplr = 0.5f;
  int boxes = 0;
  for (int pos = 0; pos < 48; ++pos) {
    const Labeled out = make_sample(src, pos % 12, {5, 1, pos}, cfg, nullptr);
    check_boxes_follow_pixels(out, 160, true);
    boxes += int(out.boxes.size());
  }
  EXPECT_GT(boxes, 60);
}

TEST(Augment, MosaicBoxesFollowPixelsAndPartnersAreDeterministic) {
  MemorySource src;
  add_rectangles(src);
  AugmentConfig cfg = all_off(160);
  cfg.mosaic = 1, cfg.scale = 0.5f, cfg.translate = 0.1f, cfg.fliplr = 0.5f;
  std::set<int64_t> partners;
  int boxes = 0, distinct = 0;
  for (int pos = 0; pos < 60; ++pos) {
    const SampleKey key{5, 2, pos};
    const Labeled out = make_sample(src, pos % 12, key, cfg, nullptr);
    const auto loads = src.take_loads();
    ASSERT_EQ(loads.size(), 4u);
    EXPECT_EQ(loads[0], pos % 12);
    partners.insert(loads.begin() + 1, loads.end());
    // A repeated image could put a box's own colour just outside it: check outsides only
    // when the four images differ.
    const bool all_differ = std::set<int64_t>(loads.begin(), loads.end()).size() == 4;
    distinct += all_differ;
    check_boxes_follow_pixels(out, 160, all_differ);
    boxes += int(out.boxes.size());

    const Labeled again = make_sample(src, pos % 12, key, cfg, nullptr);
    EXPECT_EQ(src.take_loads(), loads);
    EXPECT_TRUE(again.image.rgb == out.image.rgb);
  }
  EXPECT_EQ(partners.size(), 12u);  // partners come from the whole source
  EXPECT_GT(distinct, 15);
  EXPECT_GT(boxes, 150);
}

TEST(Augment, MosaicLayoutIsYolov8s) {
  // Recomputes the layout from the documented draws (augment.cpp, Draws): image k of the
  // mosaic, fitted to longer side S, has its inner corner at the centre (cx, cy) of the
  // 2S x 2S canvas and is clipped to the canvas; then out = s * (canvas - S) + t, clipped
  // to S x S, and a box that keeps under 10% of its canvas area (times s^2) is dropped.
  // Solid images, each with one box covering it all, so every box is a whole quadrant.
  const int size = 100;
  MemorySource src;
  const int dims[][2] = {{100, 100}, {100, 100}, {60, 100}, {100, 40}};
  for (int i = 0; i < 4; ++i) {
    Image im(dims[i][0], dims[i][1]);
    for (size_t p = 0; p < im.rgb.size(); p += 3) std::copy_n(colour(i).data(), 3, &im.rgb[p]);
    src.samples.push_back({im, {{0, 0, float(dims[i][1]), float(dims[i][0]), i}}});
  }
  AugmentConfig cfg = all_off(size);
  cfg.mosaic = 1, cfg.scale = 0.5f, cfg.translate = 0.1f;
  int compared = 0, grey = 0;
  for (int pos = 0; pos < 40; ++pos) {
    const SampleKey key{11, 0, pos};
    SampleRng rng(key, Stream::augment);
    rng.uniform();  // the mosaic decision
    const float cx = rng.uniform(50, 150), cy = rng.uniform(50, 150), s = rng.uniform(0.5f, 1.5f);
    const float tx = rng.uniform(0.4f, 0.6f) * size, ty = rng.uniform(0.4f, 0.6f) * size;
    SampleRng pick(key, Stream::mosaic);
    const int ids[4] = {pos % 4, int(pick.below(4)), int(pick.below(4)), int(pick.below(4))};
    std::vector<Box> want, shown;  // kept boxes; every quadrant in view, dropped or not
    for (int k = 0; k < 4; ++k) {
      const float h = float(dims[ids[k]][0]), w = float(dims[ids[k]][1]), r = size / std::max(h, w);
      const float x0 = k % 2 == 0 ? cx - r * w : cx, y0 = k < 2 ? cy - r * h : cy;
      const float c[4] = {std::max(x0, 0.f), std::max(y0, 0.f), std::min(x0 + r * w, 200.f),
                          std::min(y0 + r * h, 200.f)};
      const float o[4] = {std::clamp(s * (c[0] - size) + tx, 0.f, 100.f), std::clamp(s * (c[1] - size) + ty, 0.f, 100.f),
                          std::clamp(s * (c[2] - size) + tx, 0.f, 100.f), std::clamp(s * (c[3] - size) + ty, 0.f, 100.f)};
      const float ow = o[2] - o[0], oh = o[3] - o[1];
      shown.push_back({o[0], o[1], o[2], o[3], ids[k]});
      if (ow >= 2 && oh >= 2 && ow * oh >= 0.1f * s * s * (c[2] - c[0]) * (c[3] - c[1]))
        want.push_back({o[0], o[1], o[2], o[3], ids[k]});
    }
    const Labeled out = make_sample(src, pos % 4, key, cfg, nullptr);
    ASSERT_EQ(out.boxes.size(), want.size()) << "position " << pos;
    for (size_t j = 0; j < want.size(); ++j) {
      const Box &g = out.boxes[j], &e = want[j];
      EXPECT_EQ(g.cls, e.cls);
      EXPECT_NEAR(g.x1, e.x1, 1e-3);
      EXPECT_NEAR(g.y1, e.y1, 1e-3);
      EXPECT_NEAR(g.x2, e.x2, 1e-3);
      EXPECT_NEAR(g.y2, e.y2, 1e-3);
      if (e.x2 - e.x1 >= 3 && e.y2 - e.y1 >= 3) {
        EXPECT_EQ(rgb_at(out.image, int((e.y1 + e.y2) / 2), int((e.x1 + e.x2) / 2)), colour(e.cls));
      }
      ++compared;
    }
    // Canvas that no image covers (beyond the canvas included) is grey 114.
    for (int y : {0, 99})
      for (int x : {0, 99}) {
        const bool covered = std::any_of(shown.begin(), shown.end(), [&](const Box& b) {
          return x + 0.5f > b.x1 - 1 && x + 0.5f < b.x2 + 1 && y + 0.5f > b.y1 - 1 && y + 0.5f < b.y2 + 1;
        });
        if (!covered) {
          EXPECT_EQ(rgb_at(out.image, y, x), (std::array<uint8_t, 3>{114, 114, 114})) << pos;
          ++grey;
        }
      }
  }
  EXPECT_GT(compared, 100);
  EXPECT_GT(grey, 5);
}

TEST(Augment, ProbabilitiesAreHonoured) {
  // mosaic 0.5 over 400 samples: 200 expected, standard deviation 10.
  MemorySource src;
  for (int i = 0; i < 4; ++i) src.samples.push_back({noise_image(32, 32, i), {}});
  AugmentConfig cfg;
  cfg.imgsz = 32, cfg.mosaic = 0.5f;
  int mosaics = 0;
  for (int pos = 0; pos < 400; ++pos) {
    make_sample(src, pos % 4, {9, 0, pos}, cfg, nullptr);
    mosaics += src.take_loads().size() == 4;
  }
  EXPECT_NEAR(mosaics, 200, 50);
}

TEST(Augment, BoxStatsCountWhatLeavesTheImage) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  MemorySource src;
  src.samples.push_back({noise_image(100, 100, 5),
                         {
                             {10, 10, 50, 50, 0},    // kept as is
                             {-20, 10, 30, 50, 1},   // crosses the left edge: clipped to x1 = 0
                             {150, 10, 170, 20, 2},  // outside the image: dropped
                             {10, 10, 11.5f, 50, 3}, // 1.5 px wide: dropped
                             {nan, 10, 30, 50, 4},   // invalid
                             {30, 10, 20, 50, 5},    // x2 < x1: invalid
                         }});
  BoxStats st;
  const Labeled out = make_sample(src, 0, {1, 0, 0}, all_off(100), &st);
  EXPECT_EQ(st.kept, 2);
  EXPECT_EQ(st.clipped, 1);
  EXPECT_EQ(st.dropped, 2);
  EXPECT_EQ(st.invalid, 2);
  ASSERT_EQ(out.boxes.size(), 2u);
  expect_box(out.boxes[1], 0, 10, 30, 50, 1);

  // With full augmentation every box of every image used is counted exactly once.
  MemorySource rects;
  add_rectangles(rects);
  AugmentConfig cfg;
  cfg.imgsz = 160;
  BoxStats total;
  int64_t outputs = 0, inputs = 0;
  for (int pos = 0; pos < 40; ++pos) {
    outputs += int64_t(make_sample(rects, pos % 12, {3, 0, pos}, cfg, &total).boxes.size());
    inputs += 2 * int64_t(rects.take_loads().size());
  }
  EXPECT_EQ(total.kept, outputs);
  EXPECT_EQ(total.kept + total.dropped + total.invalid, inputs);
  EXPECT_GT(total.dropped, 0);
  EXPECT_GT(total.clipped, 0);
}

TEST(Augment, SameKeyGivesTheSameSampleOnAnyThread) {
  MemorySource src;
  add_rectangles(src);
  AugmentConfig cfg;
  cfg.imgsz = 160;
  const int n = 16;
  std::vector<Labeled> a(n), b(n);
  std::thread ta([&] {
    for (int i = 0; i < n; ++i) a[i] = make_sample(src, i % 12, {77, 4, 1000 + i}, cfg, nullptr);
  });
  std::thread tb([&] {
    for (int i = n - 1; i >= 0; --i) b[i] = make_sample(src, i % 12, {77, 4, 1000 + i}, cfg, nullptr);
  });
  ta.join();
  tb.join();
  for (int i = 0; i < n; ++i) {
    EXPECT_TRUE(a[i].image.rgb == b[i].image.rgb) << i;
    ASSERT_EQ(a[i].boxes.size(), b[i].boxes.size()) << i;
    for (size_t j = 0; j < a[i].boxes.size(); ++j) {
      EXPECT_EQ(a[i].boxes[j].x1, b[i].boxes[j].x1);
      EXPECT_EQ(a[i].boxes[j].y2, b[i].boxes[j].y2);
      EXPECT_EQ(a[i].boxes[j].cls, b[i].boxes[j].cls);
    }
  }
  // Another position or epoch gives another sample.
  const Labeled other = make_sample(src, 0, {77, 5, 1000}, cfg, nullptr);
  EXPECT_FALSE(other.image.rgb == a[0].image.rgb);
}

TEST(Augment, EvalIsTheLetterbox) {
  MemorySource src;
  src.samples.push_back({noise_image(60, 90, 6), {{9, 6, 45, 30, 2}, {80, 50, 100, 70, 3}}});
  AugmentConfig cfg;  // training defaults, switched off by train = false
  cfg.imgsz = 64;
  cfg.train = false;
  BoxStats st;
  const Labeled a = make_sample(src, 0, {1, 0, 0}, cfg, &st), b = make_sample(src, 0, {2, 9, 5}, cfg, nullptr);
  Letterbox lb;
  const Image want = letterbox(src.samples[0].image, 64, &lb);
  EXPECT_TRUE(a.image.rgb == want.rgb);
  EXPECT_TRUE(b.image.rgb == want.rgb);
  ASSERT_EQ(a.boxes.size(), 2u);
  const Box first = lb.apply(src.samples[0].boxes[0]);
  expect_box(a.boxes[0], first.x1, first.y1, first.x2, first.y2, 2);
  EXPECT_FLOAT_EQ(a.boxes[1].x2, 64);  // 100 > 90: clipped to the image's edge
  EXPECT_EQ(st.kept, 2);
  EXPECT_EQ(st.clipped, 1);
}

TEST(Augment, RejectsBadInput) {
  MemorySource src;
  src.samples.push_back({noise_image(10, 10, 7), {}});
  src.samples.push_back({Image(), {}});
  AugmentConfig cfg;
  cfg.imgsz = 16;
  EXPECT_THROW(make_sample(src, 2, {}, cfg, nullptr), Error);
  try {
    make_sample(src, 1, {}, all_off(16), nullptr);
    ADD_FAILURE() << "empty image accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sample 1 has an empty or inconsistent image"), std::string::npos);
  }
  cfg.scale = 1.0f;
  EXPECT_THROW(make_sample(src, 0, {}, cfg, nullptr), Error);
  cfg.scale = 0.5f, cfg.imgsz = 0;
  EXPECT_THROW(make_sample(src, 0, {}, cfg, nullptr), Error);
}

}  // namespace
}  // namespace vt::data
