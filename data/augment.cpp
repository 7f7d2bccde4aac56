// YOLOv8 augmentation and the evaluation letterbox (see augment.h).
#include "data/augment.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "data/hsv.h"
#include "data/resize.h"
#include "data/warp.h"
#include "layers/check.h"

namespace vt::data {
namespace {

// YOLOv8's box_candidates thresholds (wh_thr, area_thr, ar_thr).
constexpr float kMinSide = 2.f, kMinAreaKept = 0.1f, kMaxAspect = 100.f;
constexpr uint8_t kFill = 114;

// Every random parameter of one training sample, drawn in a fixed order so that changing
// one probability in the config never shifts the others.
struct Draws {
  bool mosaic, flip;
  float cx, cy;          // mosaic centre on the 2S x 2S canvas
  float scale, tx, ty;   // out = scale * (canvas - canvas centre) + (tx, ty)
  float gain_h, gain_s, gain_v;
};

Draws draw_params(const SampleKey& key, const AugmentConfig& cfg) {
  SampleRng rng(key, Stream::augment);
  const float s = float(cfg.imgsz);
  Draws d;
  d.mosaic = rng.uniform() < cfg.mosaic;
  d.cx = rng.uniform(0.5f * s, 1.5f * s);
  d.cy = rng.uniform(0.5f * s, 1.5f * s);
  d.scale = rng.uniform(1 - cfg.scale, 1 + cfg.scale);
  d.tx = rng.uniform(0.5f - cfg.translate, 0.5f + cfg.translate) * s;
  d.ty = rng.uniform(0.5f - cfg.translate, 0.5f + cfg.translate) * s;
  d.gain_h = 1 + cfg.hsv_h * rng.uniform(-1, 1);
  d.gain_s = 1 + cfg.hsv_s * rng.uniform(-1, 1);
  d.gain_v = 1 + cfg.hsv_v * rng.uniform(-1, 1);
  d.flip = rng.uniform() < cfg.fliplr;
  return d;
}

void check_config(const AugmentConfig& c) {
  auto unit = [](float x) { return x >= 0 && x <= 1; };
  VT_CHECK(c.imgsz > 0 && unit(c.mosaic) && unit(c.translate) && c.scale >= 0 && c.scale < 1 && unit(c.fliplr) &&
               unit(c.hsv_h) && unit(c.hsv_s) && unit(c.hsv_v),
           "augment: bad config (imgsz ", c.imgsz, ", mosaic ", c.mosaic, ", translate ", c.translate, ", scale ",
           c.scale, ", fliplr ", c.fliplr, ", hsv ", c.hsv_h, "/", c.hsv_s, "/", c.hsv_v,
           "): imgsz must be positive, scale in [0, 1), the others in [0, 1]");
}

Labeled load_checked(const SampleSource& src, int64_t index) {
  VT_CHECK(index >= 0 && index < src.size(), "augment: sample ", index, " out of range [0, ", src.size(), ")");
  Labeled s = src.load(index);
  VT_CHECK(s.image.h > 0 && s.image.w > 0 && s.image.rgb.size() == size_t(s.image.h) * s.image.w * 3, "augment: sample ",
           index, " has an empty or inconsistent image (", s.image.h, "x", s.image.w, ", ", s.image.rgb.size(),
           " bytes)");
  return s;
}

// One source image on the pre-affine canvas: canvas = to_canvas(original pixels), shown only
// inside `visible` (canvas coordinates).
struct Part {
  Labeled sample;
  AxisAffine to_canvas;
  Rect visible;
};

Rect image_rect(const Image& im) { return {0, 0, float(im.w), float(im.h)}; }

// Ultralytics' mosaic4: image k's corner touches the centre (top-left, top-right,
// bottom-left, bottom-right), each fitted to longer side S, all clipped to the canvas.
std::vector<Part> mosaic_parts(const SampleSource& src, int64_t index, const SampleKey& key, const Draws& d, int size) {
  SampleRng pick(key, Stream::mosaic);
  std::array<int64_t, 4> ids = {index, 0, 0, 0};
  for (int k = 1; k < 4; ++k) ids[k] = pick.below(static_cast<uint32_t>(src.size()));
  const float s = float(size);
  const Rect canvas{0, 0, 2 * s, 2 * s};
  std::vector<Part> parts(4);
  for (int k = 0; k < 4; ++k) {
    Part& p = parts[k];
    p.sample = load_checked(src, ids[k]);
    const Image& im = p.sample.image;
    const float r = s / std::max(im.h, im.w);
    const float left = (k % 2 == 0) ? d.cx - r * im.w : d.cx, top = (k < 2) ? d.cy - r * im.h : d.cy;
    p.to_canvas = {r, left, r, top};
    p.visible = p.to_canvas.apply(image_rect(im)).intersect(canvas);
  }
  return parts;
}

// Letterbox onto an S x S canvas: longer side S, centred.
Part letterbox_part(const SampleSource& src, int64_t index, int size) {
  Part p;
  p.sample = load_checked(src, index);
  const Image& im = p.sample.image;
  const float r = float(size) / std::max(im.h, im.w);
  p.to_canvas = {r, (size - r * im.w) / 2, r, (size - r * im.h) / 2};
  p.visible = p.to_canvas.apply(image_rect(im));
  return p;
}

// Maps a part's boxes to the output (to_out: canvas -> output, scale: its zoom), clips them,
// and keeps the candidates; appends the kept ones to `out`.
void place_boxes(const Part& part, const AxisAffine& to_out, float scale, int size, std::vector<Box>& out,
                 BoxStats& st) {
  const Rect frame{0, 0, float(size), float(size)};
  for (const Box& b : part.sample.boxes) {
    const bool finite = std::isfinite(b.x1) && std::isfinite(b.y1) && std::isfinite(b.x2) && std::isfinite(b.y2);
    if (!finite || b.x2 < b.x1 || b.y2 < b.y1) {
      ++st.invalid;
      continue;
    }
    const Rect on_canvas = part.to_canvas.apply({b.x1, b.y1, b.x2, b.y2});
    const Rect shown = on_canvas.intersect(part.visible);
    const Rect mapped = to_out.apply(shown), fin = mapped.intersect(frame);
    const float w = fin.width(), h = fin.height();
    const float area_before = std::max(0.f, shown.width()) * std::max(0.f, shown.height()) * scale * scale;
    if (!(w >= kMinSide && h >= kMinSide) || w * h < kMinAreaKept * area_before ||
        std::max(w / h, h / w) > kMaxAspect) {
      ++st.dropped;
      continue;
    }
    ++st.kept;
    if (shown != on_canvas || fin != mapped) ++st.clipped;
    out.push_back({fin.x1, fin.y1, fin.x2, fin.y2, b.cls});
  }
}

Labeled train_sample(const SampleSource& src, int64_t index, const SampleKey& key, const AugmentConfig& cfg,
                     BoxStats& st) {
  const int size = cfg.imgsz;
  const Draws d = draw_params(key, cfg);
  const std::vector<Part> parts =
      d.mosaic ? mosaic_parts(src, index, key, d, size) : std::vector<Part>{letterbox_part(src, index, size)};
  const float centre = d.mosaic ? float(size) : size / 2.f;  // of the canvas
  AxisAffine to_out{d.scale, d.tx - d.scale * centre, d.scale, d.ty - d.scale * centre};
  if (d.flip) to_out = to_out.then({-1, float(size), 1, 0});

  Labeled out;
  out.image = Image(size, size);
  std::fill(out.image.rgb.begin(), out.image.rgb.end(), kFill);
  for (const Part& p : parts) {
    draw({&p.sample.image, p.to_canvas.then(to_out), to_out.apply(p.visible)}, out.image);
    place_boxes(p, to_out, d.scale, size, out.boxes, st);
  }
  if (cfg.hsv_h > 0 || cfg.hsv_s > 0 || cfg.hsv_v > 0) hsv_jitter(out.image, d.gain_h, d.gain_s, d.gain_v);
  return out;
}

Labeled eval_sample(const SampleSource& src, int64_t index, int size, BoxStats& st) {
  Labeled in = load_checked(src, index);
  Letterbox lb;
  Labeled out;
  out.image = letterbox(in.image, size, &lb, kFill);
  out.boxes.reserve(in.boxes.size());
  for (const Box& b : in.boxes) out.boxes.push_back(lb.apply(b));
  st += clip_boxes(out.boxes, size, size);
  return out;
}

}  // namespace

Labeled make_sample(const SampleSource& src, int64_t index, const SampleKey& key, const AugmentConfig& cfg,
                    BoxStats* stats) {
  check_config(cfg);
  BoxStats st;
  Labeled out = cfg.train ? train_sample(src, index, key, cfg, st) : eval_sample(src, index, cfg.imgsz, st);
  if (stats) *stats += st;
  return out;
}

}  // namespace vt::data
