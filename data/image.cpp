// Box clipping and its statistics (see image.h).
#include "data/image.h"

#include <algorithm>
#include <cmath>

namespace vt::data {

BoxStats& BoxStats::operator+=(const BoxStats& o) {
  kept += o.kept;
  clipped += o.clipped;
  dropped += o.dropped;
  invalid += o.invalid;
  return *this;
}

BoxStats clip_boxes(std::vector<Box>& boxes, int w, int h, float min_side) {
  BoxStats st;
  size_t out = 0;
  for (Box b : boxes) {
    const bool finite = std::isfinite(b.x1) && std::isfinite(b.y1) && std::isfinite(b.x2) && std::isfinite(b.y2);
    if (!finite || b.x2 < b.x1 || b.y2 < b.y1) {
      ++st.invalid;
      continue;
    }
    const Box c{std::clamp(b.x1, 0.f, float(w)), std::clamp(b.y1, 0.f, float(h)), std::clamp(b.x2, 0.f, float(w)),
                std::clamp(b.y2, 0.f, float(h)), b.cls};
    if (c.x2 - c.x1 < min_side || c.y2 - c.y1 < min_side) {
      ++st.dropped;
      continue;
    }
    if (c.x1 != b.x1 || c.y1 != b.y1 || c.x2 != b.x2 || c.y2 != b.y2) ++st.clipped;
    boxes[out++] = c;
    ++st.kept;
  }
  boxes.resize(out);
  return st;
}

}  // namespace vt::data
