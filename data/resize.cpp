// Bilinear resize and letterbox (see resize.h).
#include "data/resize.h"

#include <algorithm>
#include <cmath>

#include "layers/check.h"

namespace vt::data {

Image resize_bilinear(const Image& src, int out_h, int out_w) {
  VT_CHECK(src.h > 0 && src.w > 0 && out_h > 0 && out_w > 0, "resize_bilinear: ", src.h, "x", src.w, " -> ", out_h,
           "x", out_w);
  Image dst(out_h, out_w);
  const float sy = float(src.h) / out_h, sx = float(src.w) / out_w;
  // Per output column: the two source columns and the weight of the right one.
  std::vector<int> x0(out_w), x1(out_w);
  std::vector<float> fx(out_w);
  for (int x = 0; x < out_w; ++x) {
    const float s = std::max(0.f, (x + 0.5f) * sx - 0.5f);
    x0[x] = std::min(static_cast<int>(s), src.w - 1);
    x1[x] = std::min(x0[x] + 1, src.w - 1);
    fx[x] = s - x0[x];
  }
  for (int y = 0; y < out_h; ++y) {
    const float s = std::max(0.f, (y + 0.5f) * sy - 0.5f);
    const int y0 = std::min(static_cast<int>(s), src.h - 1), y1 = std::min(y0 + 1, src.h - 1);
    const float fy = s - y0;
    uint8_t* out = dst.px(y, 0);
    for (int x = 0; x < out_w; ++x) {
      const uint8_t *a = src.px(y0, x0[x]), *b = src.px(y0, x1[x]), *c = src.px(y1, x0[x]), *d = src.px(y1, x1[x]);
      for (int ch = 0; ch < 3; ++ch) {
        const float top = a[ch] + (b[ch] - a[ch]) * fx[x], bottom = c[ch] + (d[ch] - c[ch]) * fx[x];
        out[x * 3 + ch] = static_cast<uint8_t>(std::lround(top + (bottom - top) * fy));
      }
    }
  }
  return dst;
}

namespace {
// The resized image's size inside the canvas.
void fitted_size(int h, int w, int size, int* fh, int* fw) {
  const float scale = std::min(float(size) / h, float(size) / w);
  *fh = std::max(1, std::min(size, static_cast<int>(std::lround(h * scale))));
  *fw = std::max(1, std::min(size, static_cast<int>(std::lround(w * scale))));
}
}  // namespace

Letterbox letterbox_mapping(int h, int w, int size) {
  VT_CHECK(size > 0 && h > 0 && w > 0, "letterbox: ", h, "x", w, " into ", size);
  int fh, fw;
  fitted_size(h, w, size, &fh, &fw);
  // The actual resized width sets the scale, so box edges land on the image's edges.
  return {float(fw) / w, float((size - fw) / 2), float((size - fh) / 2)};
}

Image letterbox(const Image& src, int size, Letterbox* mapping, uint8_t fill) {
  const Letterbox m = letterbox_mapping(src.h, src.w, size);
  int h, w;
  fitted_size(src.h, src.w, size, &h, &w);
  const Image resized = (h == src.h && w == src.w) ? src : resize_bilinear(src, h, w);
  Image canvas(size, size);
  std::fill(canvas.rgb.begin(), canvas.rgb.end(), fill);
  const int top = static_cast<int>(m.pad_y), left = static_cast<int>(m.pad_x);
  for (int y = 0; y < h; ++y) std::copy_n(resized.px(y, 0), static_cast<size_t>(w) * 3, canvas.px(top + y, left));
  if (mapping) *mapping = m;
  return canvas;
}

}  // namespace vt::data
