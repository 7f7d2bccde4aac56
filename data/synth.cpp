// Synthetic shapes dataset (see synth.h).
#include "data/synth.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "data/codec.h"
#include "data/dataset_writer.h"
#include "layers/check.h"

namespace vt::data {
namespace {

// SplitMix64: a counter-based generator; one stream per (seed, split, image).
class Rng {
 public:
  explicit Rng(uint64_t key) : s_(key) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return double(next() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  int uniform_int(int lo, int hi) {
    return lo + static_cast<int>(next() % uint64_t(hi - lo + 1));
  }  // [lo, hi]

 private:
  uint64_t s_;
};

uint64_t mix(uint64_t x) {
  return Rng(x).next();
}

constexpr double kPi = 3.14159265358979323846;

uint8_t to_byte(double v) {
  return static_cast<uint8_t>(std::clamp(std::lround(v), 0l, 255l));
}

// A smooth two-colour gradient, optional stripes and soft blobs, and per-pixel noise.
void draw_background(Image& img, Rng& rng) {
  const int S = img.w;
  double c0[3], c1[3];
  for (int c = 0; c < 3; ++c) c0[c] = rng.uniform(0, 255), c1[c] = rng.uniform(0, 255);
  const double theta = rng.uniform(0, 2 * kPi), gx = std::cos(theta) / S, gy = std::sin(theta) / S;
  const double t_off = -std::min(0.0, gx * S) - std::min(0.0, gy * S);  // keeps t in [0, ~1.4]

  const bool stripes = rng.uniform() < 0.5;
  const double s_theta = rng.uniform(0, kPi), s_freq = rng.uniform(2, 12) * 2 * kPi / S,
               s_amp = stripes ? rng.uniform(10, 40) : 0.0, s_phase = rng.uniform(0, 2 * kPi);
  double s_col[3];
  for (double& v : s_col) v = rng.uniform(-1, 1);

  struct Blob {
    double x, y, r2, col[3];
  };
  std::vector<Blob> blobs(static_cast<size_t>(rng.uniform() < 0.6 ? rng.uniform_int(2, 6) : 0));
  for (Blob& b : blobs) {
    const double r = rng.uniform(0.1, 0.3) * S;
    b = {rng.uniform(0, S),
         rng.uniform(0, S),
         2 * r * r,
         {rng.uniform(-60, 60), rng.uniform(-60, 60), rng.uniform(-60, 60)}};
  }
  const double noise = rng.uniform(4, 16);

  for (int y = 0; y < S; ++y)
    for (int x = 0; x < S; ++x) {
      const double t = std::min(1.0, (x * gx + y * gy + t_off) / 1.42);
      const double stripe =
          s_amp * std::sin((x * std::cos(s_theta) + y * std::sin(s_theta)) * s_freq + s_phase);
      double add[3] = {0, 0, 0};
      for (const Blob& b : blobs) {
        const double w = std::exp(-((x - b.x) * (x - b.x) + (y - b.y) * (y - b.y)) / b.r2);
        for (int c = 0; c < 3; ++c) add[c] += w * b.col[c];
      }
      uint8_t* p = img.px(y, x);
      for (int c = 0; c < 3; ++c)
        p[c] = to_byte(c0[c] + (c1[c] - c0[c]) * t + stripe * s_col[c] + add[c] + rng.uniform(-noise, noise));
    }
}

// Whether the pixel centre at local coordinates (u, v) in [0, 1]^2 of the shape's box is inside.
bool inside(int shape, double u, double v) {
  if (u < 0 || u > 1 || v < 0 || v > 1) return false;
  const double du = u - 0.5, dv = v - 0.5, r2 = du * du + dv * dv;
  switch (shape) {
    case 0:  // circle
      return r2 <= 0.25;
    case 1:  // rectangle
      return true;
    case 2:  // triangle, apex up
      return std::abs(du) <= v / 2;
    case 3:  // cross
      return std::abs(du) <= 1.0 / 6 || std::abs(dv) <= 1.0 / 6;
    case 4:  // diamond
      return std::abs(du) + std::abs(dv) <= 0.5;
    default:  // ring
      return r2 <= 0.25 && r2 >= 0.09;
  }
}

// Mean colour of the canvas under a box.
void mean_colour(const Image& img, int x0, int y0, int x1, int y1, double out[3]) {
  double sum[3] = {0, 0, 0};
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x)
      for (int c = 0; c < 3; ++c) sum[c] += img.px(y, x)[c];
  const double n = std::max(1, (x1 - x0) * (y1 - y0));
  for (int c = 0; c < 3; ++c) out[c] = sum[c] / n;
}

// A colour at least 120 away (RGB distance) from `bg`; failing that, black or white-ish.
void contrasting_colour(Rng& rng, const double bg[3], double out[3]) {
  for (int attempt = 0; attempt < 24; ++attempt) {
    double d2 = 0;
    for (int c = 0; c < 3; ++c) {
      out[c] = rng.uniform(0, 255);
      d2 += (out[c] - bg[c]) * (out[c] - bg[c]);
    }
    if (d2 >= 120.0 * 120.0) return;
  }
  const bool light_bg = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2] > 127;
  for (int c = 0; c < 3; ++c) out[c] = light_bg ? rng.uniform(0, 50) : rng.uniform(205, 255);
}

}  // namespace

const std::vector<std::string>& synth_shape_names() {
  static const std::vector<std::string> names = {"circle", "rectangle", "triangle",
                                                 "cross",  "diamond",   "ring"};
  return names;
}

SynthImage synth_image(uint64_t seed, int split_id, int64_t index, int imgsz, int classes) {
  VT_CHECK(imgsz >= 32, "synth: imgsz ", imgsz, " is below 32");
  VT_CHECK(classes >= 2 && classes <= int(synth_shape_names().size()), "synth: classes ", classes,
           " outside 2..", synth_shape_names().size());
  Rng rng(mix(mix(seed) ^ (uint64_t(split_id) + 1) * 0xD1B54A32D192ED03ull) ^ mix(uint64_t(index)));
  SynthImage out;
  out.image = Image(imgsz, imgsz);
  draw_background(out.image, rng);
  const double S = imgsz, lo = 0.08 * S, hi = 0.40 * S;
  const int objects = rng.uniform_int(1, 6);
  for (int k = 0; k < objects; ++k) {
    const int cls = rng.uniform_int(0, classes - 1);
    const double w = rng.uniform(lo, hi);
    // Circles and rings are round; the others get an aspect ratio within the size range.
    const double h = (cls == 0 || cls == 5) ? w : std::clamp(w * rng.uniform(0.6, 1.6), lo, hi);
    // Up to 30 placements; a box may cover at most 20% of the smaller of it and another box.
    bool placed = false;
    double x0 = 0, y0 = 0;
    for (int attempt = 0; attempt < 30 && !placed; ++attempt) {
      x0 = rng.uniform(0, S - w), y0 = rng.uniform(0, S - h);
      placed = std::all_of(out.boxes.begin(), out.boxes.end(), [&](const Box& b) {
        const double iw = std::min(x0 + w, double(b.x2)) - std::max(x0, double(b.x1));
        const double ih = std::min(y0 + h, double(b.y2)) - std::max(y0, double(b.y1));
        const double inter = std::max(0.0, iw) * std::max(0.0, ih);
        return inter <= 0.2 * std::min(w * h, double(b.x2 - b.x1) * (b.y2 - b.y1));
      });
    }
    if (!placed) continue;
    const int px0 = static_cast<int>(x0), py0 = static_cast<int>(y0);
    const int px1 = std::min(imgsz, static_cast<int>(std::ceil(x0 + w))),
              py1 = std::min(imgsz, static_cast<int>(std::ceil(y0 + h)));
    double bg[3], col[3];
    mean_colour(out.image, px0, py0, px1, py1, bg);
    contrasting_colour(rng, bg, col);
    const double noise = rng.uniform(2, 8);
    int minx = imgsz, miny = imgsz, maxx = -1, maxy = -1;
    for (int y = py0; y < py1; ++y)
      for (int x = px0; x < px1; ++x) {
        if (!inside(cls, (x + 0.5 - x0) / w, (y + 0.5 - y0) / h)) continue;
        uint8_t* p = out.image.px(y, x);
        for (int c = 0; c < 3; ++c) p[c] = to_byte(col[c] + rng.uniform(-noise, noise));
        minx = std::min(minx, x), maxx = std::max(maxx, x), miny = std::min(miny, y),
        maxy = std::max(maxy, y);
      }
    // The tight box of the pixels actually drawn, as pixel edges.
    if (maxx >= 0) out.boxes.push_back({float(minx), float(miny), float(maxx + 1), float(maxy + 1), cls});
  }
  return out;
}

std::vector<Manifest> write_synth(const std::string& out_dir, const SynthOptions& opt) {
  VT_CHECK(opt.train >= 0 && opt.val >= 0 && opt.train + opt.val > 0, "synth: nothing to write (train ",
           opt.train, ", val ", opt.val, ")");
  VT_CHECK(opt.classes >= 2 && opt.classes <= int(synth_shape_names().size()), "synth: classes ", opt.classes,
           " outside 2..", synth_shape_names().size());
  VT_CHECK(opt.imgsz >= 32, "synth: imgsz ", opt.imgsz, " is below 32");
  const std::vector<std::string> names(synth_shape_names().begin(),
                                       synth_shape_names().begin() + opt.classes);
  std::vector<Manifest> out;
  const std::pair<const char*, int64_t> splits[] = {{"train", opt.train}, {"val", opt.val}};
  for (int split_id = 0; split_id < 2; ++split_id) {
    const auto [split, n] = splits[split_id];
    if (n == 0) continue;
    WriteOptions w;
    w.out_dir = (std::filesystem::path(out_dir) / split).string();
    w.split = split;
    w.storage = opt.storage;
    w.imgsz = opt.storage == Storage::kRaw ? opt.imgsz : 0;
    w.shard_size = opt.shard_size;
    w.threads = opt.threads;
    w.overwrite = opt.overwrite;
    if (opt.progress)
      w.progress = [&, split = split](int64_t done, int64_t total) { opt.progress(split, done, total); };
    ConvertReport report;
    report.format = "synth";
    report.source = cat("synth seed=", opt.seed, " imgsz=", opt.imgsz, " classes=", opt.classes);
    auto produce = [&, split_id = split_id, split = split](int64_t i) {
      SynthImage im = synth_image(opt.seed, split_id, i, opt.imgsz, opt.classes);
      Sample s;
      char name[32];
      std::snprintf(name, sizeof(name), "%s/%06lld", split, static_cast<long long>(i));
      s.record.file_name = name;
      s.record.image_id = i;
      s.record.orig_h = s.record.orig_w = opt.imgsz;
      s.record.boxes = std::move(im.boxes);
      s.stats.kept = static_cast<int64_t>(s.record.boxes.size());
      s.payload =
          opt.storage == Storage::kRaw ? std::move(im.image.rgb) : encode_jpeg(im.image, opt.jpeg_quality);
      return s;
    };
    out.push_back(write_dataset(n, names, produce, std::move(report), w));
  }
  return out;
}

}  // namespace vt::data
