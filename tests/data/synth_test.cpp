// Synthetic dataset: determinism over thread counts, seeds that matter, and sane labels
// (boxes inside the image, within the size range, class ids below K, tight to the shapes).
#include "data/synth.h"

#include <gtest/gtest.h>

#include <array>
#include <cmath>

#include "data/dataset.h"
#include "tests/data/data_fixtures.h"

namespace vt::data {
namespace {

using testing::TempDir;

SynthOptions small(int threads, Storage storage = Storage::kEncoded) {
  SynthOptions o;
  o.train = 24;
  o.val = 8;
  o.imgsz = 64;
  o.classes = 3;
  o.seed = 42;
  o.storage = storage;
  o.shard_size = 10;
  o.threads = threads;
  return o;
}

TEST(Synth, ByteIdenticalForAnyThreadCount) {
  TempDir a, b;
  write_synth(a.path(), small(1));
  write_synth(b.path(), small(3));
  const auto sa = testing::snapshot(a.path());
  EXPECT_EQ(sa.size(), 3u + 1u + 2u);  // train: 3 shards + manifest; val: 1 shard + manifest
  EXPECT_EQ(sa, testing::snapshot(b.path()));
}

TEST(Synth, SeedAndSplitChangeTheImages) {
  const SynthImage a = synth_image(1, 0, 5, 64, 4), b = synth_image(2, 0, 5, 64, 4),
                   c = synth_image(1, 1, 5, 64, 4);
  EXPECT_NE(a.image.rgb, b.image.rgb);
  EXPECT_NE(a.image.rgb, c.image.rgb);
  EXPECT_EQ(a.image.rgb, synth_image(1, 0, 5, 64, 4).image.rgb);
}

TEST(Synth, LabelsAreSane) {
  TempDir out;
  const std::vector<Manifest> m = write_synth(out.path(), small(2));
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].schema.class_names, (std::vector<std::string>{"circle", "rectangle", "triangle"}));
  for (const char* split : {"train", "val"}) {
    const Dataset ds = Dataset::open(out / split, Verify::kFull);
    EXPECT_EQ(ds.size(), std::string(split) == "train" ? 24 : 8);
    for (int64_t i = 0; i < ds.size(); ++i) {
      const Record r = ds.meta(i);
      ASSERT_GE(r.boxes.size(), 1u);
      ASSERT_LE(r.boxes.size(), 6u);
      EXPECT_EQ(r.orig_w, 64);
      for (const Box& b : r.boxes) {
        EXPECT_GE(b.cls, 0);
        EXPECT_LT(b.cls, 3);
        EXPECT_GE(b.x1, 0);
        EXPECT_GE(b.y1, 0);
        EXPECT_LE(b.x2, 64);
        EXPECT_LE(b.y2, 64);
        // Drawn extents: 8%..40% of 64 px, less up to a pixel lost to pixel-centre sampling.
        EXPECT_GE(b.x2 - b.x1, 0.08f * 64 - 2);
        EXPECT_LE(b.x2 - b.x1, 0.40f * 64 + 1);
        EXPECT_GE(b.y2 - b.y1, 0.08f * 64 - 2);
        EXPECT_LE(b.y2 - b.y1, 0.40f * 64 + 1);
      }
    }
  }
}

TEST(Synth, RawStorageHoldsTheDrawnPixels) {
  TempDir out;
  write_synth(out.path(), small(2, Storage::kRaw));
  const Dataset ds = Dataset::open(out / "val", Verify::kFull);
  EXPECT_EQ(ds.imgsz(), 64);
  const SynthImage want = synth_image(42, 1, 3, 64, 3);
  std::vector<uint8_t> got(64 * 64 * 3);
  ds.read_raw(3, got.data());
  EXPECT_EQ(got, want.image.rgb);
  ASSERT_EQ(ds.meta(3).boxes.size(), want.boxes.size());
}

// Mean colour of the pixels (x, y) for x in [x0, x1), y in [y0, y1).
std::array<double, 3> mean(const Image& img, int x0, int y0, int x1, int y1) {
  std::array<double, 3> m{0, 0, 0};
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x)
      for (int c = 0; c < 3; ++c) m[c] += img.px(y, x)[c];
  for (double& v : m) v /= double(x1 - x0) * (y1 - y0);
  return m;
}

double distance(const std::array<double, 3>& a, const std::array<double, 3>& b) {
  return std::sqrt((a[0] - b[0]) * (a[0] - b[0]) + (a[1] - b[1]) * (a[1] - b[1]) +
                   (a[2] - b[2]) * (a[2] - b[2]));
}

TEST(Synth, BoxesAreTight) {
  // A lone rectangle fills its box exactly. On each side, the box's outermost pixel line is
  // the shape's colour and the line just outside is background, chosen at least 120 away in
  // RGB (noise aside). A side one pixel too far out puts background on the inner line; one
  // pixel too far in puts shape on the outer line; either makes the two lines alike.
  int checked = 0;
  for (int64_t i = 0; i < 400 && checked < 5; ++i) {
    const SynthImage s = synth_image(7, 0, i, 96, 2);
    if (s.boxes.size() != 1 || s.boxes[0].cls != 1) continue;
    const int x1 = int(s.boxes[0].x1), y1 = int(s.boxes[0].y1), x2 = int(s.boxes[0].x2),
              y2 = int(s.boxes[0].y2);
    if (x1 == 0 || y1 == 0 || x2 == 96 || y2 == 96) continue;
    const Image& im = s.image;
    EXPECT_GT(distance(mean(im, x1, y1, x1 + 1, y2), mean(im, x1 - 1, y1, x1, y2)), 60)
        << "left, image " << i;
    EXPECT_GT(distance(mean(im, x2 - 1, y1, x2, y2), mean(im, x2, y1, x2 + 1, y2)), 60)
        << "right, image " << i;
    EXPECT_GT(distance(mean(im, x1, y1, x2, y1 + 1), mean(im, x1, y1 - 1, x2, y1)), 60) << "top, image " << i;
    EXPECT_GT(distance(mean(im, x1, y2 - 1, x2, y2), mean(im, x1, y2, x2, y2 + 1)), 60)
        << "bottom, image " << i;
    ++checked;
  }
  EXPECT_EQ(checked, 5);
}

}  // namespace
}  // namespace vt::data
