// Axis-aligned warping (see warp.h).
//
// Bilinear sampling is separable: each output row first blends its two source rows over the
// columns this placement reads (a contiguous, vectorisable pass), then gathers the two
// neighbouring columns of every output pixel from that blended row. Weights are 8-bit, so the
// row blend fits in uint16 (255 * 256) and the column blend in uint32.
#include "data/warp.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "layers/check.h"

namespace vt::data {
namespace {

constexpr int kBits = 8, kOne = 1 << kBits;

// Where the output pixel centre `c` reads along one axis of a source of n pixels: the two
// neighbouring source pixels and the weight of the second, in 1/256.
struct Tap {
  int i0, i1, w;
};

Tap tap(float c, float a, float b, int n) {
  const float s = std::clamp((c - b) / a - 0.5f, 0.f, float(n - 1));
  const int fixed = static_cast<int>(s * kOne + 0.5f);
  const int i0 = std::min(fixed >> kBits, n - 1);
  return {i0, std::min(i0 + 1, n - 1), i0 == n - 1 ? 0 : fixed & (kOne - 1)};
}

// The output pixels along an axis of n pixels whose centres lie in [lo, hi).
std::pair<int, int> pixel_span(float lo, float hi, int n) {
  lo = std::clamp(lo, -1.f, n + 1.f), hi = std::clamp(hi, -1.f, n + 1.f);  // also maps NaN off
  return {std::max(0, static_cast<int>(std::ceil(lo - 0.5f))), std::min(n, static_cast<int>(std::ceil(hi - 0.5f)))};
}

}  // namespace

Rect Rect::intersect(const Rect& o) const {
  return {std::max(x1, o.x1), std::max(y1, o.y1), std::min(x2, o.x2), std::min(y2, o.y2)};
}

Rect AxisAffine::apply(const Rect& r) const {
  const float xa = ax * r.x1 + bx, xb = ax * r.x2 + bx, ya = ay * r.y1 + by, yb = ay * r.y2 + by;
  return {std::min(xa, xb), std::min(ya, yb), std::max(xa, xb), std::max(ya, yb)};
}

void draw(const Placement& p, Image& out) {
  VT_CHECK(p.src && p.src->h > 0 && p.src->w > 0 && p.src->rgb.size() == size_t(p.src->h) * p.src->w * 3,
           "warp: empty or inconsistent source image");
  VT_CHECK(std::isfinite(p.map.ax) && std::isfinite(p.map.bx) && std::isfinite(p.map.ay) && std::isfinite(p.map.by) &&
               p.map.ax != 0 && p.map.ay != 0,
           "warp: degenerate map (", p.map.ax, ", ", p.map.bx, ", ", p.map.ay, ", ", p.map.by, ")");
  const Image& src = *p.src;
  const auto [x_lo, x_hi] = pixel_span(p.region.x1, p.region.x2, out.w);
  const auto [y_lo, y_hi] = pixel_span(p.region.y1, p.region.y2, out.h);
  if (x_lo >= x_hi || y_lo >= y_hi) return;

  std::vector<Tap> cols(static_cast<size_t>(x_hi - x_lo));
  int c_lo = src.w - 1, c_hi = 0;  // the source columns read
  for (int x = x_lo; x < x_hi; ++x) {
    const Tap t = tap(x + 0.5f, p.map.ax, p.map.bx, src.w);
    cols[x - x_lo] = t;
    c_lo = std::min(c_lo, t.i0), c_hi = std::max(c_hi, t.i1);
  }
  for (Tap& t : cols) t.i0 = (t.i0 - c_lo) * 3, t.i1 = (t.i1 - c_lo) * 3;  // offsets into `row`

  const int n = (c_hi - c_lo + 1) * 3;
  std::vector<uint16_t> row(static_cast<size_t>(n));  // the two source rows blended, x 256
  for (int y = y_lo; y < y_hi; ++y) {
    const Tap ty = tap(y + 0.5f, p.map.ay, p.map.by, src.h);
    const uint8_t *a = src.px(ty.i0, c_lo), *b = src.px(ty.i1, c_lo);
    const uint16_t wb = static_cast<uint16_t>(ty.w), wa = static_cast<uint16_t>(kOne - ty.w);
    for (int k = 0; k < n; ++k) row[k] = static_cast<uint16_t>(a[k] * wa + b[k] * wb);
    uint8_t* o = out.px(y, x_lo);
    for (const Tap& t : cols) {
      const uint32_t w1 = t.w, w0 = kOne - t.w;
      for (int ch = 0; ch < 3; ++ch)
        o[ch] = static_cast<uint8_t>((row[t.i0 + ch] * w0 + row[t.i1 + ch] * w1 + (1u << (2 * kBits - 1))) >> (2 * kBits));
      o += 3;
    }
  }
}

}  // namespace vt::data
