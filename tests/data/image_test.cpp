// Box clipping: what is kept, clipped, dropped and rejected.
#include "data/image.h"
#include "data/resize.h"

#include <gtest/gtest.h>

#include <limits>

namespace vt::data {
namespace {

TEST(ClipBoxes, KeepsClipsDropsAndRejects) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<Box> b = {
      {10, 10, 20, 30, 1},    // inside: kept as is
      {-5, 90, 15, 120, 2},   // crosses the left and bottom edges: clipped to (0, 90, 15, 100)
      {150, 10, 170, 20, 3},  // entirely right of the image: zero width after clipping, dropped
      {5, 5, 5, 40, 4},       // zero width: dropped
      {30, 30, 20, 40, 5},    // x2 < x1: invalid
      {nan, 0, 10, 10, 6},    // not finite: invalid
  };
  const BoxStats st = clip_boxes(b, 100, 100);
  EXPECT_EQ(st.kept, 2);
  EXPECT_EQ(st.clipped, 1);
  EXPECT_EQ(st.dropped, 2);
  EXPECT_EQ(st.invalid, 2);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].cls, 1);
  EXPECT_FLOAT_EQ(b[1].x1, 0);
  EXPECT_FLOAT_EQ(b[1].y2, 100);
  EXPECT_EQ(b[1].cls, 2);
}

TEST(Resize, BilinearHalvesAndKeepsConstants) {
  // A 2x4 image whose columns are 0, 100, 200, 250: halving the width averages pairs
  // (centres at 0.5 and 2.5 in source pixels) -> 50 and 225.
  Image src(2, 4);
  const uint8_t cols[] = {0, 100, 200, 250};
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 4; ++x)
      for (int c = 0; c < 3; ++c) src.px(y, x)[c] = cols[x];
  const Image half = resize_bilinear(src, 2, 2);
  EXPECT_EQ(half.px(0, 0)[0], 50);
  EXPECT_EQ(half.px(1, 1)[2], 225);
}

TEST(Resize, LetterboxMapsBoxesWithTheImage) {
  // 100 high, 200 wide into 100x100: scale 0.5, image 50 high, centred: pad_y = 25.
  Image src(100, 200);
  std::fill(src.rgb.begin(), src.rgb.end(), 7);
  Letterbox lb;
  const Image out = letterbox(src, 100, &lb);
  EXPECT_FLOAT_EQ(lb.scale, 0.5f);
  EXPECT_FLOAT_EQ(lb.pad_x, 0);
  EXPECT_FLOAT_EQ(lb.pad_y, 25);
  EXPECT_EQ(out.px(10, 50)[0], 114);  // padding
  EXPECT_EQ(out.px(50, 50)[0], 7);    // image
  const Box b = lb.apply({0, 0, 200, 100, 3});
  EXPECT_FLOAT_EQ(b.y1, 25);
  EXPECT_FLOAT_EQ(b.x2, 100);
  EXPECT_FLOAT_EQ(b.y2, 75);
}

}  // namespace
}  // namespace vt::data
