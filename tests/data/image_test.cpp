// Box clipping: what is kept, clipped, dropped and rejected.
#include "data/image.h"

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

}  // namespace
}  // namespace vt::data
