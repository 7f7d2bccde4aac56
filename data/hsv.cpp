// HSV colour jitter (see hsv.h).
//
// Per pixel, with v = max, m = min, c = v - m:
//   hue h = round(256 * num / c) in [0, 1536), num = g - b, 2c + b - r or 4c + r - g as r, g
//   or b is the max (plus 1536 when negative); saturation s = round(255 c / v);
//   h' = round(h * gain_h) mod 1536, s' = min(255, round(s * gain_s)), v' likewise;
//   back: c' = round(s' v' / 255), and each channel n (r, g, b = 5, 3, 1) is
//   v' - round(c' * clamp(min(k, 1024 - k), 0, 256) / 256) with k = (256 n + h') mod 1536.
// Ultralytics applies the gains through 256-entry tables; the same products are computed
// here in 16.16 fixed point, because table lookups would keep the loop from vectorising.
//
// The two divisions are done in float, and still round exactly: 256 num / c and 255 c / v
// lie at least 1 / (2c) >= 1/510 from a half-integer (their numerators are integers and c,
// v <= 255), far beyond float's error at these magnitudes (below 3e-4 after the offset
// that keeps the hue positive); likewise s' v' / 255.
//
// The pixel loop is written branch-free over planar chunks so compilers vectorise it; on
// x86-64 it is also compiled for AVX2 and picked at load time, since the baseline SSE2 has
// no 32-bit integer multiply, min or max and runs it several times slower.
#include "data/hsv.h"

#include <algorithm>
#include <cmath>

#include "layers/check.h"

#if defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define VT_HSV_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef VT_HSV_CLONES
#define VT_HSV_CLONES
#endif

namespace vt::data {
namespace {

constexpr int kSector = 256, kCircle = 6 * kSector;

// One channel of the HSV -> RGB step (n = 5, 3, 1 for r, g, b).
inline int channel(int n, int h, int v, int c) {
  int k = n * kSector + h;
  k -= k >= kCircle ? kCircle : 0;
  int t = k < 4 * kSector - k ? k : 4 * kSector - k;
  t = t < 0 ? 0 : t;
  t = t > kSector ? kSector : t;
  return v - ((c * t + kSector / 2) >> 8);
}

// gh, gs, gv: the gains in 16.16 fixed point.
VT_HSV_CLONES void jitter_pixels(uint8_t* rgb, size_t pixels, int gh, int gs, int gv) {
  constexpr int kChunk = 512;
  alignas(64) int r_[kChunk], g_[kChunk], b_[kChunk];
  for (size_t start = 0; start < pixels; start += kChunk) {
    const int n = static_cast<int>(std::min<size_t>(kChunk, pixels - start));
    uint8_t* p = rgb + start * 3;
    for (int i = 0; i < n; ++i) r_[i] = p[3 * i], g_[i] = p[3 * i + 1], b_[i] = p[3 * i + 2];
    for (int i = 0; i < n; ++i) {
      const int r = r_[i], g = g_[i], b = b_[i];
      const int hi = r > g ? r : g, v = hi > b ? hi : b;
      const int lo = r < g ? r : g, m = lo < b ? lo : b;
      const int c = v - m;
      int num = 4 * c + r - g;
      num = v == g ? 2 * c + b - r : num;
      num = v == r ? g - b : num;
      // A grey pixel (c = 0) gets hue 0 and saturation 0, which keeps it grey.
      int h = static_cast<int>(float(num * kSector) / float(c > 1 ? c : 1) + (kCircle + 0.5f)) - kCircle;
      h += h < 0 ? kCircle : 0;
      const int s = static_cast<int>(255.f * float(c) / float(v > 1 ? v : 1) + 0.5f);

      int h2 = (h * gh + 32768) >> 16;
      h2 -= h2 >= kCircle ? kCircle : 0;
      int s2 = (s * gs + 32768) >> 16, v2 = (v * gv + 32768) >> 16;
      s2 = s2 < 255 ? s2 : 255;
      v2 = v2 < 255 ? v2 : 255;
      const int c2 = static_cast<int>(float(s2 * v2) * (1.f / 255.f) + 0.5f);
      r_[i] = channel(5, h2, v2, c2), g_[i] = channel(3, h2, v2, c2), b_[i] = channel(1, h2, v2, c2);
    }
    for (int i = 0; i < n; ++i)
      p[3 * i] = static_cast<uint8_t>(r_[i]), p[3 * i + 1] = static_cast<uint8_t>(g_[i]),
      p[3 * i + 2] = static_cast<uint8_t>(b_[i]);
  }
}

}  // namespace

void hsv_jitter(Image& img, float gain_h, float gain_s, float gain_v) {
  auto ok = [](float g) { return g >= 0 && g <= 2; };
  VT_CHECK(ok(gain_h) && ok(gain_s) && ok(gain_v), "hsv_jitter: gains (", gain_h, ", ", gain_s, ", ", gain_v,
           ") outside [0, 2]");
  auto fixed = [](float g) { return static_cast<int>(std::lround(g * 65536.0)); };
  jitter_pixels(img.rgb.data(), img.rgb.size() / 3, fixed(gain_h), fixed(gain_s), fixed(gain_v));
}

}  // namespace vt::data
