// Detection loss tests: CIoU and DFL by hand, the assigner on hand-made scenes, a
// double-precision finite-difference check against an independent reference of the loss,
// invariances (no GT, padding rows, row order), CPU f32 vs f64, GPU parity (f32, bf16) and
// bad arguments.
#include "layers/detect_loss.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "layers/check.h"
#include "layers/detect_loss_box.h"
#include "tests/test_util.h"

namespace vt {
namespace {

using test::from_values;
using test::values;
namespace bm = boxmath;

constexpr double kPi = 3.14159265358979323846;

DetectLossConfig make_cfg(int nc, int imgsz) {
  DetectLossConfig c;
  c.nc = nc;
  c.imgsz = imgsz;
  return c;
}

int channels(const DetectLossConfig& c) {
  return 4 * c.reg_max + c.nc;
}

// Anchor a's level, row and column (level-major, then row-major).
struct AnchorPos {
  int level;
  int64_t y, x;
};

int64_t num_anchors(const DetectLossConfig& c) {
  int64_t n = 0;
  for (int s : c.strides) n += (c.imgsz / s) * (c.imgsz / s);
  return n;
}

AnchorPos anchor_pos(const DetectLossConfig& c, int64_t a) {
  for (int l = 0; l < static_cast<int>(c.strides.size()); ++l) {
    const int64_t w = c.imgsz / c.strides[l];
    if (a < w * w) return {l, a / w, a % w};
    a -= w * w;
  }
  return {-1, 0, 0};
}

// The C channels of anchor a of image b in f64 CPU preds.
double* anchor_channels(const std::vector<Tensor>& preds, const DetectLossConfig& c, int64_t b, int64_t a) {
  const AnchorPos p = anchor_pos(c, a);
  const int64_t w = c.imgsz / c.strides[p.level];
  return preds[p.level].data<double>() + ((b * w + p.y) * w + p.x) * channels(c);
}

std::vector<Tensor> make_preds(const DetectLossConfig& c, int64_t batch, DType dt = DType::kF64) {
  std::vector<Tensor> p;
  for (int s : c.strides)
    p.push_back(Tensor::empty({batch, c.imgsz / s, c.imgsz / s, channels(c)}, dt, Device::kCPU));
  return p;
}

std::vector<Tensor> convert(const std::vector<Tensor>& t, Device dev, DType dt) {
  std::vector<Tensor> out;
  for (const Tensor& x : t) out.push_back(x.to(dev, dt));
  return out;
}

// Random predictions shaped like a trained head's: box logits that favour the low bins
// (distances of about 1.5, 1 and 0.6 grid units on the three levels, so that boxes of 24 to
// 40 px meet the GTs), class logits mostly negative.
std::vector<Tensor> random_preds(const DetectLossConfig& c, int64_t batch, uint64_t seed) {
  std::vector<Tensor> preds = make_preds(c, batch);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1.5, 1.5), ucls(-4.0, 1.0);
  for (size_t l = 0; l < preds.size(); ++l) {
    const double slope = 0.5 + 0.25 * static_cast<double>(l);
    double* v = preds[l].data<double>();
    for (int64_t i = 0; i < preds[l].numel(); ++i) {
      const int ch = static_cast<int>(i % channels(c));
      v[i] = ch < 4 * c.reg_max ? u(rng) - slope * (ch % c.reg_max) : ucls(rng);
    }
  }
  return preds;
}

// (B, M, 5) targets: image b gets gts[b] random boxes inside the image, the other rows are
// padding (cls -1, zero box).
Tensor random_targets(const DetectLossConfig& c, const std::vector<int>& gts, int64_t max_boxes,
                      uint64_t seed) {
  const int64_t batch = static_cast<int64_t>(gts.size());
  std::vector<double> v(batch * max_boxes * 5, 0.0);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const double s = c.imgsz;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t j = 0; j < max_boxes; ++j) {
      double* r = &v[(b * max_boxes + j) * 5];
      if (j >= gts[b]) {
        r[0] = -1;
        continue;
      }
      const double w = 6 + u(rng) * 0.7 * s, h = 6 + u(rng) * 0.7 * s;
      const double cx = u(rng) * s, cy = u(rng) * s;
      r[0] = std::floor(u(rng) * c.nc);
      r[1] = std::max(0.0, cx - w / 2);
      r[2] = std::max(0.0, cy - h / 2);
      r[3] = std::min(s, cx + w / 2);
      r[4] = std::min(s, cy + h / 2);
    }
  return from_values({batch, max_boxes, 5}, v, DType::kF32);
}

struct LossResult {
  std::vector<double> loss;   // total, box, cls, dfl
  std::vector<Tensor> grads;  // on the CPU, f64
};

// Runs detect_loss on the preds' device and type, gradients starting from `start` (zeros
// when empty).
LossResult run_loss(const DetectLossConfig& c, const std::vector<Tensor>& preds, const Tensor& targets,
                    const std::vector<Tensor>& start = {}) {
  const Tensor& p0 = preds[0];
  std::vector<Tensor> dpreds;
  for (size_t l = 0; l < preds.size(); ++l)
    dpreds.push_back(start.empty() ? Tensor::empty(preds[l].shape(), p0.dtype(), p0.device())
                                   : start[l].to(p0.device(), p0.dtype()));
  const DType ldt = p0.dtype() == DType::kF64 ? DType::kF64 : DType::kF32;
  const Tensor loss = Tensor::empty({4}, ldt, p0.device());
  const size_t bytes = detect_loss_workspace_bytes(c, p0.dim(0), targets.dim(1), p0.dtype(), p0.device());
  const Tensor ws = Tensor::empty({static_cast<int64_t>(bytes)}, DType::kU8, p0.device());
  detect_loss(c, preds, targets.to(p0.device()), dpreds, loss, ws);
  synchronize();
  LossResult r{values(loss), {}};
  for (const Tensor& g : dpreds) r.grads.push_back(g.to(Device::kCPU, DType::kF64));
  return r;
}

// ---------------------------------------------------------------------------------------
// An independent reference of the loss for a given assignment, written from the formulas
// of detect_loss.h as directly as possible, in double. CIoU's alpha can be held at given
// values: Ultralytics computes it under no_grad, so finite differences of the loss with
// the alphas (and the assignment) frozen are what its gradient must match.

double ref_ciou(const double* p, const double* g, const double* frozen_alpha, double* alpha_out) {
  const double eps = 1e-7;
  const double w1 = p[2] - p[0], h1 = p[3] - p[1] + eps, w2 = g[2] - g[0], h2 = g[3] - g[1] + eps;
  const double inter = std::max(std::min(p[2], g[2]) - std::max(p[0], g[0]), 0.0) *
                       std::max(std::min(p[3], g[3]) - std::max(p[1], g[1]), 0.0);
  const double iou = inter / (w1 * h1 + w2 * h2 - inter + eps);
  const double cw = std::max(p[2], g[2]) - std::min(p[0], g[0]),
               ch = std::max(p[3], g[3]) - std::min(p[1], g[1]);
  const double rho2 = (std::pow(g[0] + g[2] - p[0] - p[2], 2) + std::pow(g[1] + g[3] - p[1] - p[3], 2)) / 4;
  const double v = 4 / (kPi * kPi) * std::pow(std::atan(w2 / h2) - std::atan(w1 / h1), 2);
  const double alpha = frozen_alpha ? *frozen_alpha : v / (v - iou + (1 + eps));
  if (alpha_out) *alpha_out = alpha;
  return iou - (rho2 / (cw * cw + ch * ch + eps) + v * alpha);
}

double log_sum_exp(const double* x, int n) {
  double m = x[0], s = 0;
  for (int i = 1; i < n; ++i) m = std::max(m, x[i]);
  for (int i = 0; i < n; ++i) s += std::exp(x[i] - m);
  return m + std::log(s);
}

struct RefLoss {
  double total, box, cls, dfl;
};

// alphas: per (b, a), read when `freeze`, written otherwise.
RefLoss reference_loss(const DetectLossConfig& c, const std::vector<Tensor>& preds, const Tensor& targets,
                       const cpu::DetectAssignment& asg, std::vector<double>& alphas, bool freeze) {
  const int R = c.reg_max;
  const int64_t B = preds[0].dim(0), A = num_anchors(c), M = targets.dim(1);
  const std::vector<double> tg = values(targets);
  if (!freeze) alphas.assign(B * A, 0.0);
  double tss = 0;
  for (double s : asg.score) tss += s;
  tss = std::max(tss, 1.0);
  double box = 0, cls = 0, dfl = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t a = 0; a < A; ++a) {
      const double* x = anchor_channels(preds, c, b, a);
      const int64_t j = asg.gt[b * A + a];
      const double sc = asg.score[b * A + a];
      const double* row = j >= 0 ? &tg[(b * M + j) * 5] : nullptr;
      for (int k = 0; k < c.nc; ++k) {
        const double t = (row && k == static_cast<int>(std::max(row[0], 0.0))) ? sc : 0.0;
        const double z = x[4 * R + k];
        cls += std::max(z, 0.0) - z * t + std::log1p(std::exp(-std::abs(z)));
      }
      if (!row) continue;
      const AnchorPos ap = anchor_pos(c, a);
      const double s = c.strides[ap.level], ax = ap.x + 0.5, ay = ap.y + 0.5;
      double d[4];
      for (int side = 0; side < 4; ++side) {
        const double lse = log_sum_exp(x + side * R, R);
        d[side] = 0;
        for (int i = 0; i < R; ++i) d[side] += std::exp(x[side * R + i] - lse) * i;
      }
      const double pb[4] = {ax - d[0], ay - d[1], ax + d[2], ay + d[3]};
      const double gb[4] = {row[1] / s, row[2] / s, row[3] / s, row[4] / s};
      box += (1 - ref_ciou(pb, gb, freeze ? &alphas[b * A + a] : nullptr, &alphas[b * A + a])) * sc;
      const double target[4] = {ax - gb[0], ay - gb[1], gb[2] - ax, gb[3] - ay};
      double side_sum = 0;
      for (int side = 0; side < 4; ++side) {
        const double t = std::min(std::max(target[side], 0.0), R - 1 - 0.01);
        const int tl = static_cast<int>(std::floor(t));
        const double lse = log_sum_exp(x + side * R, R);
        const double wl = tl + 1 - t;
        side_sum += (lse - x[side * R + tl]) * wl + (lse - x[side * R + tl + 1]) * (1 - wl);
      }
      dfl += side_sum / 4 * sc;
    }
  RefLoss r{0, c.box_gain * box / tss, c.cls_gain * cls / tss, c.dfl_gain * dfl / tss};
  r.total = B * (r.box + r.cls + r.dfl);
  return r;
}

// ---------------------------------------------------------------------------------------

// b1 = (0, 0, 2, 2), b2 = (1, 0, 3, 4), eps = 0:
//   inter = (2 - 1) * (2 - 0) = 2, union = 4 + 8 - 2 = 10, iou = 0.2;
//   enclosing box 3 x 4: c2 = 25; centres (1, 1) and (2, 2): rho2 = (2^2 + 2^2) / 4 = 2;
//   v = 4 / pi^2 (atan(2 / 4) - atan(2 / 2))^2 = 0.0419564615, alpha = v / (v - 0.2 + 1);
//   ciou = 0.2 - 2 / 25 - v alpha = 0.1179092213.
TEST(DetectLoss, CiouByHand) {
  const double b1[4] = {0, 0, 2, 2}, b2[4] = {1, 0, 3, 4};
  const double v = 4 / (kPi * kPi) * std::pow(std::atan(0.5) - kPi / 4, 2);
  const double expected = 0.2 - 0.08 - v * v / (v + 0.8);
  EXPECT_NEAR(expected, 0.1179092213, 1e-10);
  EXPECT_NEAR(bm::ciou(b1, b2, 0.0, static_cast<double*>(nullptr)), expected, 1e-15);
  EXPECT_NEAR(bm::ciou(b2, b1, 0.0, static_cast<double*>(nullptr)), expected, 1e-15);  // symmetric
  EXPECT_NEAR(bm::ciou(b1, b2, 1e-7, static_cast<double*>(nullptr)), expected, 1e-7);  // Ultralytics' eps
  const float f1[4] = {0, 0, 2, 2}, f2[4] = {1, 0, 3, 4};
  EXPECT_NEAR(bm::ciou(f1, f2, 1e-7f, static_cast<float*>(nullptr)), expected, 1e-6);
  // Identical boxes: 1 up to the eps (iou = 4 / (4 + 5 eps) here); far apart boxes: negative
  // (the distance term).
  EXPECT_NEAR(bm::ciou(b1, b1, 1e-7, static_cast<double*>(nullptr)), 4 / (4 + 5e-7), 1e-15);
  const double far[4] = {10, 10, 12, 12};
  EXPECT_LT(bm::ciou(b1, far, 1e-7, static_cast<double*>(nullptr)), -0.3);

  // d ciou / d x2 of b1 = (0, 0, 2, 2) against (1, 1, 3, 3) (equal aspects: v = 0, dv = 0):
  //   inter = 1, union = 7, iou = 1/7; d inter / d x2 = 1, d (w1 h1) / d x2 = h1 = 2, so
  //   d iou = (1 - iou (2 - 1)) / 7 = 6/49; rho2 = (2^2 + 2^2) / 4 = 2, c2 = 9 + 9 = 18,
  //   d rho2 / d x2 = -(1 + 3 - 0 - 2) / 2 = -1, d c2 / d x2 = 0 (x2 < X2): d (rho2 / c2) = -1/18;
  //   d ciou / d x2 = 6/49 + 1/18 = 0.1780045351.
  const double c1[4] = {0, 0, 2, 2}, c2[4] = {1, 1, 3, 3};
  double g[4];
  bm::ciou(c1, c2, 0.0, g);
  EXPECT_NEAR(g[2], 6.0 / 49 + 1.0 / 18, 1e-15);

  // Every component of the gradient against central differences of the reference CIoU with
  // alpha held (as autograd does), over overlapping, nested, disjoint and touching pairs.
  const double pairs[][8] = {{0, 0, 2, 2, 1, 0, 3, 4},
                             {0.3, 0.2, 5.1, 2.7, 1.1, -0.4, 3.3, 4.2},
                             {1, 1, 9, 7, 2, 3, 4, 5},
                             {0, 0, 1, 3, 4, 5, 6, 6.5},
                             {2.5, 1.5, 3.7, 8.1, 0.2, 0.9, 5.5, 2.2}};
  for (const auto& pr : pairs) {
    const double* p = pr;
    const double* q = pr + 4;
    double grad[4], alpha;
    bm::ciou(p, q, 1e-7, grad);
    ref_ciou(p, q, nullptr, &alpha);
    for (int k = 0; k < 4; ++k) {
      double pp[4], pm[4];
      std::copy(p, p + 4, pp);
      std::copy(p, p + 4, pm);
      pp[k] += 1e-6;
      pm[k] -= 1e-6;
      const double numeric = (ref_ciou(pp, q, &alpha, nullptr) - ref_ciou(pm, q, &alpha, nullptr)) / 2e-6;
      EXPECT_NEAR(grad[k], numeric, 1e-7) << "pair starting " << p[0] << ", coordinate " << k;
    }
  }
}

// Logits (0, ln 2, ln 3, 0): p = (1, 2, 3, 1) / 7, expectation (0 + 2 + 6 + 3) / 7 = 11/7.
// DFL at t = 1.25: tl = 1, tr = 2, wl = 0.75, wr = 0.25:
//   loss = 0.75 (-ln 2/7) + 0.25 (-ln 3/7) = 0.75 ln 3.5 + 0.25 ln (7/3) = 1.1513966915,
//   d loss / d x = p - 0.75 e_1 - 0.25 e_2 = (1/7, 2/7 - 3/4, 3/7 - 1/4, 1/7).
TEST(DetectLoss, DflByHand) {
  const double x[4] = {0, std::log(2.0), std::log(3.0), 0};
  EXPECT_NEAR(bm::dfl_expectation(x, 4), 11.0 / 7, 1e-15);
  double dx[4] = {1, 1, 1, 1};  // accumulates
  EXPECT_NEAR(bm::dfl_side(x, 4, 1.25, dx, 1.0), 0.75 * std::log(3.5) + 0.25 * std::log(7.0 / 3), 1e-15);
  EXPECT_NEAR(1.1513966915, 0.75 * std::log(3.5) + 0.25 * std::log(7.0 / 3), 1e-10);
  const double expected[4] = {1 + 1.0 / 7, 1 + 2.0 / 7 - 0.75, 1 + 3.0 / 7 - 0.25, 1 + 1.0 / 7};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(dx[i], expected[i], 1e-15) << i;
  // On a bin: all the weight left (wl = 1, wr = 0); the scale multiplies the gradient.
  double dy[4] = {0, 0, 0, 0};
  EXPECT_NEAR(bm::dfl_side(x, 4, 2.0, dy, 2.0), std::log(7.0 / 3), 1e-15);
  EXPECT_NEAR(dy[2], 2 * (3.0 / 7 - 1), 1e-15);
  EXPECT_NEAR(dy[3], 2 * (1.0 / 7), 1e-15);
  // bbox2dist clamps to [0, 14.99] for 16 bins; dist2bbox inverts it inside the range.
  const double box[4] = {-30, 3.25, 8, 4}, hi = 16 - 1 - 0.01;
  double d[4], back[4];
  bm::box_to_dist(5.5, 3.5, box, hi, d);
  EXPECT_DOUBLE_EQ(d[0], 14.99);
  EXPECT_DOUBLE_EQ(d[1], 0.25);
  EXPECT_DOUBLE_EQ(d[2], 2.5);
  EXPECT_DOUBLE_EQ(d[3], 0.5);
  bm::dist_to_box(5.5, 3.5, d, back);
  EXPECT_DOUBLE_EQ(back[1], 3.25);
  EXPECT_DOUBLE_EQ(back[2], 8);
}

// ---------------------------------------------------------------------------------------
// The assigner by hand. imgsz 32, strides 8/16/32: anchors 0-15 (4x4, centres 4, 12, 20,
// 28 px), 16-19 (2x2, centres 8, 24), 20 (1x1, centre 16). nc = 2.
// Every anchor predicts the box (0, 0, 32, 32) exactly: each side's distance is x + 0.5 or
// 3.5 - x (grid units), put as half the mass on two neighbouring bins.
// Class 1 scores: anchor a < 16: (a + 1) / 100 except anchor 11: 0.11 (ties anchor 10);
//   16-19: 0.3, 0.4, 0.5, 0.6; 20: 0.9.
// Class 0 scores: anchors 0-7: 0.2 + 0.1 a; 16, 17: 0.95; others 0.99 (high, so reading
//   the wrong class would reorder everything).
std::vector<Tensor> hand_preds(const DetectLossConfig& c) {
  std::vector<Tensor> preds = make_preds(c, 1);
  const int R = c.reg_max;
  auto logit = [](double s) { return std::log(s / (1 - s)); };
  for (int64_t a = 0; a < num_anchors(c); ++a) {
    double* ch = anchor_channels(preds, c, 0, a);
    const AnchorPos p = anchor_pos(c, a);
    const int64_t w = c.imgsz / c.strides[p.level];
    const double dist[4] = {p.x + 0.5, p.y + 0.5, w - p.x - 0.5, w - p.y - 0.5};
    for (int side = 0; side < 4; ++side) {
      const int k = static_cast<int>(std::floor(dist[side]));
      for (int i = 0; i < R; ++i) ch[side * R + i] = (i == k || i == k + 1) ? 0.0 : -200.0;
    }
    double s1 = 0.9;
    if (a < 16)
      s1 = a == 11 ? 0.11 : (a + 1) / 100.0;
    else if (a < 20)
      s1 = 0.3 + 0.1 * (a - 16);
    double s0 = 0.99;
    if (a < 8)
      s0 = 0.2 + 0.1 * a;
    else if (a == 16 || a == 17)
      s0 = 0.95;
    ch[4 * R] = logit(s0);
    ch[4 * R + 1] = logit(s1);
  }
  return preds;
}

double hand_class1_score(int64_t a) {
  if (a < 16) return a == 11 ? 0.11 : (a + 1) / 100.0;
  return a < 20 ? 0.3 + 0.1 * (a - 16) : 0.9;
}

// One GT, class 1, (0, 0, 32, 32): every anchor centre is inside (4 px or more from each
// edge). Every predicted box equals the GT, so CIoU = iou = 1 - 6.3e-9 (the eps) for all,
// and align = sqrt(score) iou^6 orders the anchors by score. The top 10: 20 (0.9), 19, 18,
// 17, 16 (0.6 .. 0.3), 15, 14, 13, 12 (0.16 .. 0.13), then anchors 10 and 11 tie at 0.11
// and the lower index, 10, wins. Target score = align / max align * max iou
// = sqrt(s / 0.9) (to 1e-8): anchor 20: 1, 19: sqrt(2/3) = 0.8165, ..., 10: 0.3496.
// The loss: box = 7.5 sum (1 - iou) w / tss < 1e-6 (the eps, on boxes of 1 to 4 grid
// units); each side's distribution is exactly the DFL target (half on each bin around
// x.5), so every DFL term is ln 2 and dfl = 1.5 ln 2 sum w / tss = 1.5 ln 2 = 1.0397
// (tss = sum w, which is > 1).
TEST(DetectLoss, AssignerByHandOneGt) {
  const DetectLossConfig c = make_cfg(2, 32);
  ASSERT_EQ(num_anchors(c), 21);
  for (DType dt : {DType::kF64, DType::kF32}) {
    SCOPED_TRACE(dtype_name(dt));
    const std::vector<Tensor> preds = convert(hand_preds(c), Device::kCPU, dt);
    const Tensor targets = from_values({1, 1, 5}, {1, 0, 0, 32, 32});
    const cpu::DetectAssignment asg = cpu::detect_assign(c, preds, targets);
    const std::vector<int64_t> positives = {10, 12, 13, 14, 15, 16, 17, 18, 19, 20};
    double wsum = 0;
    for (int64_t a = 0; a < 21; ++a) {
      const bool pos = std::find(positives.begin(), positives.end(), a) != positives.end();
      EXPECT_EQ(asg.gt[a], pos ? 0 : -1) << "anchor " << a;
      const double expected = pos ? std::sqrt(hand_class1_score(a) / 0.9) : 0.0;
      EXPECT_NEAR(asg.score[a], expected, 1e-6) << "anchor " << a;
      wsum += expected;
    }
    const LossResult r = run_loss(c, preds, targets);
    EXPECT_NEAR(r.loss[1], 0.0, 1e-6);                  // box
    EXPECT_NEAR(r.loss[3], 1.5 * std::log(2.0), 1e-6);  // dfl
    double cls = 0;                                     // 0.5 sum BCE / tss, with the targets above
    const std::vector<Tensor> h64 = hand_preds(c);
    for (int64_t a = 0; a < 21; ++a) {
      const double* ch = anchor_channels(h64, c, 0, a);
      for (int k = 0; k < 2; ++k) {
        const double t = (k == 1 && asg.gt[a] == 0) ? std::sqrt(hand_class1_score(a) / 0.9) : 0.0;
        const double x = ch[4 * c.reg_max + k];
        cls += std::log1p(std::exp(-std::abs(x))) + std::max(x, 0.0) - x * t;
      }
    }
    EXPECT_NEAR(r.loss[2], 0.5 * cls / wsum, 1e-5);
    EXPECT_NEAR(r.loss[0], r.loss[1] + r.loss[2] + r.loss[3], 1e-6);  // B = 1

    // The same GT twice (duplicate labels happen): both rows pick the same ten anchors, so
    // each is positive for two rows with equal overlaps, and the argmax takes the first.
    const Tensor dup = from_values({1, 3, 5}, {-1, 0, 0, 0, 0, 1, 0, 0, 32, 32, 1, 0, 0, 32, 32});
    const cpu::DetectAssignment asg2 = cpu::detect_assign(c, preds, dup);
    for (int64_t a = 0; a < 21; ++a) {
      EXPECT_EQ(asg2.gt[a], asg.gt[a] < 0 ? -1 : 1) << "anchor " << a;
      EXPECT_EQ(asg2.score[a], asg.score[a]) << "anchor " << a;
    }
  }
}

// Add GT row 1 = class 0, (0, 0, 32, 16) (the top half). Its candidates are the centres
// with y < 16: anchors 0-7 and 16, 17 (anchor 20's centre y = 16 is on the edge, not in).
// Its CIoU with every prediction (0, 0, 32, 32) is the same:
//   iou = 512 / 1024 = 0.5, rho2 / c2 = ((32 - 32)^2 + (16 - 32)^2) / 4 / (32^2 + 32^2) = 1/32,
//   v = 4 / pi^2 (atan 2 - atan 1)^2 = 0.0419565, alpha = v / (v + 0.5) = 0.0774167,
//   ov = 0.5 - 1/32 - v alpha = 0.4655019 (CIoU is symmetric in its boxes).
// All ten have align > 0, so all ten are in its top 10 and positive. Anchors 16 and 17 are
// also positive for row 0, with ov ~ 1 > 0.4655: they stay with row 0. Row 1 keeps 0-7;
// its max align is anchor 7's (class 0 score 0.9), so anchor a scores
// sqrt((0.2 + 0.1 a) / 0.9) * 0.4655019. Row 0's targets are those of the first test.
// A third row, class 1, (2, 2, 6, 6), holds only anchor 0's centre (4, 4); its CIoU with
// (0, 0, 32, 32) is negative (iou 1/64, rho2 / c2 = 288 / 2048), so every align is 0 and
// torch.topk picks the first ten anchors by index: anchor 0 is positive for it (score 0).
// Anchor 0 is also positive for row 1, so select_highest_overlaps takes the argmax of its
// overlaps over ALL rows: row 0 (ov ~ 1), for which it was not positive at all. That is
// Ultralytics' behaviour, reproduced: anchor 0 becomes row 0's, with score
// align / max align = sqrt(0.01 / 0.9), and row 1 keeps anchors 1-7.
TEST(DetectLoss, AssignerByHandOverlappingGts) {
  const DetectLossConfig c = make_cfg(2, 32);
  const std::vector<Tensor> preds = hand_preds(c);
  const double v = 4 / (kPi * kPi) * std::pow(std::atan(2.0) - kPi / 4, 2);
  const double ov1 = 0.5 - 1.0 / 32 - v * v / (v + 0.5);
  EXPECT_NEAR(ov1, 0.4655019, 1e-7);
  const Tensor targets = from_values({1, 3, 5}, {1, 0, 0, 32, 32, 0, 0, 0, 32, 16, 1, 2, 2, 6, 6});
  const cpu::DetectAssignment asg = cpu::detect_assign(c, preds, targets);
  for (int64_t a = 0; a < 21; ++a) {
    SCOPED_TRACE("anchor " + std::to_string(a));
    if (a == 0) {
      EXPECT_EQ(asg.gt[a], 0);
      EXPECT_NEAR(asg.score[a], std::sqrt(0.01 / 0.9), 1e-6);
    } else if (a < 8) {
      EXPECT_EQ(asg.gt[a], 1);
      EXPECT_NEAR(asg.score[a], std::sqrt((0.2 + 0.1 * a) / 0.9) * ov1, 1e-6);
    } else if (a == 10 || a >= 12) {
      EXPECT_EQ(asg.gt[a], 0);
      EXPECT_NEAR(asg.score[a], std::sqrt(hand_class1_score(a) / 0.9), 1e-6);
    } else {
      EXPECT_EQ(asg.gt[a], -1);
    }
  }
  // Without row 1, anchor 0 is positive for row 2 alone: a foreground anchor with score 0,
  // which adds nothing to the loss.
  const Tensor two = from_values({1, 2, 5}, {1, 0, 0, 32, 32, 1, 2, 2, 6, 6});
  const cpu::DetectAssignment asg2 = cpu::detect_assign(c, preds, two);
  EXPECT_EQ(asg2.gt[0], 1);
  EXPECT_EQ(asg2.score[0], 0.0);
  EXPECT_EQ(asg2.gt[1], -1);
}

// ---------------------------------------------------------------------------------------

// The gradient of the whole loss against central differences of the independent reference
// with the detached quantities frozen (the assignment and CIoU's alpha). The probes reach
// every level's box and class channels. Freezing is not only a convenience: the target
// scores depend continuously on the predictions, and Ultralytics does not differentiate
// through them, so differences of the live loss would not match its gradient. The
// assignment's discrete part is also shown to be stable under perturbations ten times
// larger than the step.
void check_whole_loss_gradient(const DetectLossConfig& c, int64_t batch, int64_t max_boxes,
                               const std::vector<double>& rows, uint64_t seed, bool expect_clamp) {
  std::vector<Tensor> preds = random_preds(c, batch, seed);
  const Tensor targets = from_values({batch, max_boxes, 5}, rows, DType::kF32);
  const cpu::DetectAssignment asg = cpu::detect_assign(c, preds, targets);
  const int64_t A = num_anchors(c);
  for (int l = 0; l < 3; ++l) {  // positives with real weight on every level
    int n = 0;
    for (int64_t i = 0; i < batch * A; ++i) n += asg.score[i] > 0.05 && anchor_pos(c, i % A).level == l;
    EXPECT_GT(n, 0) << "level " << l;
  }
  int clamped = 0;  // weighty positives with a DFL target beyond reg_max - 1 - 0.01
  for (int64_t i = 0; i < batch * A; ++i) {
    if (asg.score[i] <= 0.05) continue;
    const AnchorPos ap = anchor_pos(c, i % A);
    const double* r = &rows[((i / A) * max_boxes + asg.gt[i]) * 5];
    const double s = c.strides[ap.level], ax = (ap.x + 0.5) * s, ay = (ap.y + 0.5) * s;
    const double far = std::max(std::max(ax - r[1], ay - r[2]), std::max(r[3] - ax, r[4] - ay)) / s;
    clamped += far > c.reg_max - 1 - 0.01;
  }
  EXPECT_EQ(clamped > 0, expect_clamp) << clamped << " positives with clamped DFL targets";

  const LossResult lib = run_loss(c, preds, targets);
  // The frozen-assignment entry point is the same computation.
  {
    std::vector<Tensor> g;
    for (const Tensor& p : preds) g.push_back(Tensor::empty(p.shape(), DType::kF64, Device::kCPU));
    const Tensor loss = Tensor::empty({4}, DType::kF64, Device::kCPU);
    cpu::detect_loss_assigned(c, preds, targets, asg, g, loss);
    EXPECT_EQ(values(loss), lib.loss);
    for (int l = 0; l < 3; ++l) EXPECT_EQ(values(g[l]), values(lib.grads[l]));
  }
  std::vector<double> alphas;
  const RefLoss ref = reference_loss(c, preds, targets, asg, alphas, false);
  EXPECT_NEAR(lib.loss[0], ref.total, 1e-12 * ref.total);
  EXPECT_NEAR(lib.loss[1], ref.box, 1e-12 * ref.box);
  EXPECT_NEAR(lib.loss[2], ref.cls, 1e-12 * ref.cls);
  EXPECT_NEAR(lib.loss[3], ref.dfl, 1e-12 * ref.dfl);
  EXPECT_GT(ref.box, 0.1);
  EXPECT_GT(ref.dfl, 0.1);

  for (uint64_t k = 0; k < 3; ++k) {
    std::vector<Tensor> moved;
    for (size_t l = 0; l < preds.size(); ++l) {
      const Tensor d = test::random_tensor(preds[l].shape(), DType::kF64, seed + 10 * k + l, -1e-5, 1e-5);
      Tensor m = Tensor::empty(preds[l].shape(), DType::kF64, Device::kCPU);
      for (int64_t i = 0; i < m.numel(); ++i)
        m.data<double>()[i] = preds[l].data<double>()[i] + d.data<double>()[i];
      moved.push_back(m);
    }
    EXPECT_EQ(cpu::detect_assign(c, moved, targets).gt, asg.gt)
        << "assignment moved under a 1e-5 perturbation";
  }

  test::GradCheckOptions opt;
  opt.max_probes_per_input = 400;
  test::check_gradients(
      preds, {"preds[0]", "preds[1]", "preds[2]"},
      [&] {
        const RefLoss r = reference_loss(c, preds, targets, asg, alphas, true);
        return std::vector<Tensor>{from_values({1}, {r.total}, DType::kF64)};
      },
      [&](const std::vector<Tensor>& dys, std::vector<Tensor>& grads) {
        const double dy = dys[0].data<double>()[0];
        for (size_t l = 0; l < grads.size(); ++l)
          for (int64_t i = 0; i < grads[l].numel(); ++i)
            grads[l].data<double>()[i] += dy * lib.grads[l].data<double>()[i];
      },
      opt);
}

TEST(DetectLoss, GradientCheckDouble) {
  {
    SCOPED_TRACE("imgsz 64, 16 bins, 3 classes, 2 images");
    // Large, medium and small GTs, so that every level has weighty positives.
    check_whole_loss_gradient(make_cfg(3, 64), 2, 4,
                              {0, 2,  2,  62, 60, 2, 4, 30, 30, 58, 1, 34, 4,  60, 28, -1, 0, 0, 0, 0,  //
                               1, 10, 10, 50, 54, 0, 0, 20, 20, 40, 2, 40, 40, 56, 62, -1, 0, 0, 0, 0},
                              11, false);
  }
  {
    SCOPED_TRACE("imgsz 96, 6 bins, 2 classes, 1 image");
    // With 6 bins the DFL targets clamp at 4.99 grid units (40 px at stride 8): the wide,
    // flat GT (88 x 16 px) has its positives on level 0, 44 px from its ends.
    DetectLossConfig c = make_cfg(2, 96);
    c.reg_max = 6;
    check_whole_loss_gradient(
        c, 1, 5, {1, 4, 6, 90, 92, 0, 4, 40, 92, 56, 1, 60, 8, 82, 30, 0, 10, 50, 44, 94, -1, 0, 0, 0, 0}, 13,
        true);
  }
}

// ---------------------------------------------------------------------------------------

// No GT anywhere (all padding, or M = 0): every anchor is a negative, tss = 1, and
//   cls = 0.5 sum_{a, c} ln(1 + e^x),  d total / d x = B 0.5 sigmoid(x) on class channels,
// zero box and DFL terms and zero gradient on the box channels.
TEST(DetectLoss, NoGroundTruth) {
  const DetectLossConfig c = make_cfg(3, 64);
  const int64_t B = 2;
  const std::vector<Tensor> preds = random_preds(c, B, 21);
  for (int64_t m : {0, 4}) {
    SCOPED_TRACE("M = " + std::to_string(m));
    const Tensor targets = random_targets(c, {0, 0}, m, 22);
    const LossResult r = run_loss(c, preds, targets);
    double cls = 0;
    for (int l = 0; l < 3; ++l) {
      const std::vector<double> x = values(preds[l]), g = values(r.grads[l]);
      for (size_t i = 0; i < x.size(); ++i) {
        const int ch = static_cast<int>(i % channels(c));
        if (ch < 4 * c.reg_max) {
          EXPECT_EQ(g[i], 0.0);
          continue;
        }
        cls += std::log1p(std::exp(x[i]));
        EXPECT_NEAR(g[i], B * 0.5 / (1 + std::exp(-x[i])), 1e-14);
      }
    }
    EXPECT_EQ(r.loss[1], 0.0);
    EXPECT_EQ(r.loss[3], 0.0);
    EXPECT_NEAR(r.loss[2], 0.5 * cls, 1e-12 * cls);
    EXPECT_NEAR(r.loss[0], B * r.loss[2], 1e-12 * cls);
  }
}

// Padding anywhere, GT rows in any order, and rows the assigner ignores (a zero-sum box
// with a class, an inverted box) leave the loss and the gradient unchanged.
TEST(DetectLoss, PaddingAndRowOrderDoNotMatter) {
  const DetectLossConfig c = make_cfg(3, 64);
  const std::vector<Tensor> preds = random_preds(c, 2, 31);
  const Tensor base = random_targets(c, {3, 2}, 3, 32);
  const LossResult want = run_loss(c, preds, base);
  ASSERT_GT(want.loss[1], 0.0);

  const std::vector<double> t = values(base);
  auto row = [&](int64_t b, int64_t j) {
    return std::vector<double>(t.begin() + (b * 3 + j) * 5, t.begin() + (b * 3 + j + 1) * 5);
  };
  const std::vector<double> pad = {-1, 0, 0, 0, 0}, pad_box = {-1, 3, 4, 40, 50}, zero_box = {2, 0, 0, 0, 0},
                            inverted = {1, 40, 40, 10, 10};
  // Image 0: its three GTs reversed with padding and ignored rows between them; image 1:
  // its two GTs swapped, then padding.
  const std::vector<std::vector<double>> rows0 = {pad,      row(0, 2), pad_box,  row(0, 1),
                                                  zero_box, inverted,  row(0, 0)};
  const std::vector<std::vector<double>> rows1 = {row(1, 1), row(1, 0), pad, pad, pad, pad, pad};
  std::vector<double> v;
  for (const auto& r : rows0) v.insert(v.end(), r.begin(), r.end());
  for (const auto& r : rows1) v.insert(v.end(), r.begin(), r.end());
  const LossResult got = run_loss(c, preds, from_values({2, 7, 5}, v));
  for (int k = 0; k < 4; ++k) EXPECT_NEAR(got.loss[k], want.loss[k], 1e-13 * std::abs(want.loss[k])) << k;
  for (int l = 0; l < 3; ++l) test::expect_close(got.grads[l], want.grads[l], 1e-15, 1e-12, "grads");
}

// Gradients accumulate; the CPU step allocates nothing; f32 agrees with f64.
TEST(DetectLoss, AccumulatesAllocatesNothingAndF32MatchesF64) {
  const DetectLossConfig c = make_cfg(3, 96);
  const std::vector<Tensor> p64 =
      convert(convert(random_preds(c, 3, 41), Device::kCPU, DType::kF32), Device::kCPU,
              DType::kF64);  // values exact in f32
  const Tensor targets = random_targets(c, {5, 0, 2}, 8, 42);
  const LossResult zero = run_loss(c, p64, targets);
  std::vector<Tensor> start;
  for (size_t l = 0; l < p64.size(); ++l)
    start.push_back(test::random_tensor(p64[l].shape(), DType::kF64, 43 + l));
  const LossResult acc = run_loss(c, p64, targets, start);
  for (size_t l = 0; l < p64.size(); ++l) {
    const std::vector<double> s = values(start[l]), z = values(zero.grads[l]), a = values(acc.grads[l]);
    for (size_t i = 0; i < s.size(); ++i)
      ASSERT_NEAR(a[i], s[i] + z[i], 1e-14) << "level " << l << " element " << i;
  }

  // A step with everything planned up front makes no allocation.
  const std::vector<Tensor> p32 = convert(p64, Device::kCPU, DType::kF32);
  std::vector<Tensor> d32;
  for (const Tensor& p : p32) d32.push_back(Tensor::empty(p.shape(), DType::kF32, Device::kCPU));
  const Tensor loss = Tensor::empty({4}, DType::kF32, Device::kCPU);
  const Tensor ws =
      Tensor::empty({static_cast<int64_t>(detect_loss_workspace_bytes(c, 3, 8, DType::kF32, Device::kCPU))},
                    DType::kU8, Device::kCPU);
  const int64_t before = allocation_count();
  detect_loss(c, p32, targets, d32, loss, ws);
  EXPECT_EQ(allocation_count(), before);

  const std::vector<double> l32 = values(loss);
  for (int k = 0; k < 4; ++k) EXPECT_NEAR(l32[k], zero.loss[k], 1e-5 * std::abs(zero.loss[k])) << k;
  for (size_t l = 0; l < p32.size(); ++l) {
    const std::vector<double> g = values(zero.grads[l]);
    double gmax = 0;
    for (double x : g) gmax = std::max(gmax, std::abs(x));
    test::expect_close(d32[l], zero.grads[l], 1e-5 * gmax, 1e-4, "f32 grads");
  }
}

// ---------------------------------------------------------------------------------------

// CUDA against the CPU f64 oracle on the same (rounded) inputs, gradients accumulating onto
// non-zero buffers. Tolerances: the GPU computes in fp32 and sums B A nc BCE terms in an
// fp32 tree, so losses agree to about 1e-6 relative (1e-4 allowed); f32 gradients to a few
// ulps of the largest (1e-5 of it allowed, plus 1e-3 relative); bf16 gradients are stored
// in bf16 (8 bits of mantissa: 4e-3 relative per rounding of the start value plus the sum).
// Two identical runs must agree bit for bit.
void expect_gpu_matches_cpu(const DetectLossConfig& c, std::vector<Tensor> p, const Tensor& targets, DType dt,
                            uint64_t seed) {
  std::vector<Tensor> start;
  for (const Tensor& x : p) start.push_back(test::random_tensor(x.shape(), DType::kF32, seed++, -0.5, 0.5));
  if (dt == DType::kBF16) {
    for (Tensor& x : p) x = test::round_to_bf16(x);
    for (Tensor& x : start) x = test::round_to_bf16(x);
  }
  const LossResult want = run_loss(c, convert(p, Device::kCPU, DType::kF64), targets, start);
  const std::vector<Tensor> pg = convert(p, Device::kCUDA, dt);
  const LossResult got = run_loss(c, pg, targets, start);
  for (int k = 0; k < 4; ++k)
    EXPECT_NEAR(got.loss[k], want.loss[k], 1e-4 * std::abs(want.loss[k]) + 1e-6) << "loss " << k;
  for (size_t l = 0; l < p.size(); ++l) {
    double gmax = 0;
    for (double x : values(want.grads[l])) gmax = std::max(gmax, std::abs(x));
    if (dt == DType::kF32)
      test::expect_close(got.grads[l], want.grads[l], 1e-5 * gmax, 1e-3, "f32 grads");
    else
      test::expect_close(got.grads[l], want.grads[l], 1e-2 * gmax, 1e-2, "bf16 grads");
  }
  const LossResult again = run_loss(c, pg, targets, start);
  EXPECT_EQ(again.loss, got.loss);
  for (size_t l = 0; l < p.size(); ++l) EXPECT_EQ(values(again.grads[l]), values(got.grads[l]));
}

// Batch 1 and 3, nc 1, 3 and 80, imgsz 64 and 96, images without GTs, and no target rows.
TEST(DetectLoss, GpuParity) {
  VT_REQUIRE_GPU();
  uint64_t seed = 100;
  for (int nc : {1, 3, 80})
    for (int imgsz : {64, 96})
      for (int64_t B : {1, 3})
        for (DType dt : {DType::kF32, DType::kBF16})
          for (int64_t M : {0, 8}) {
            SCOPED_TRACE("nc " + std::to_string(nc) + ", imgsz " + std::to_string(imgsz) + ", B " +
                         std::to_string(B) + ", M " + std::to_string(M) + ", " + dtype_name(dt));
            const DetectLossConfig c = make_cfg(nc, imgsz);
            const std::vector<int> gts = M == 0   ? std::vector<int>(B, 0)
                                         : B == 1 ? std::vector<int>{6}
                                                  : std::vector<int>{5, 0, 2};
            const std::vector<Tensor> p = convert(random_preds(c, B, ++seed), Device::kCPU, DType::kF32);
            const Tensor targets = random_targets(c, gts, M, ++seed);
            expect_gpu_matches_cpu(c, p, targets, dt, seed * 10);
          }
}

// Random predictions for 2 images with gts[b] ground truths each in 8 target rows, CUDA
// against the CPU oracle in f32 and in bf16; each run takes the next seeds.
void expect_random_parity(const DetectLossConfig& c, const std::vector<int>& gts, uint64_t& seed) {
  for (DType dt : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(dtype_name(dt));
    const std::vector<Tensor> p = convert(random_preds(c, 2, ++seed), Device::kCPU, DType::kF32);
    const Tensor targets = random_targets(c, gts, 8, ++seed);
    expect_gpu_matches_cpu(c, p, targets, dt, seed * 10);
  }
}

// Other bin counts than 16 (the kernels' generic path, bins in local memory): 8 (16-byte
// packs in bf16 and f32 with nc 80) and 6 (packs ruled out: a side's bins would straddle them).
TEST(DetectLoss, GpuParityOtherBinCounts) {
  VT_REQUIRE_GPU();
  uint64_t seed = 500;
  for (int reg_max : {8, 6}) {
    SCOPED_TRACE("reg_max " + std::to_string(reg_max));
    DetectLossConfig c = make_cfg(80, 64);
    c.reg_max = reg_max;
    expect_random_parity(c, {4, 2}, seed);
  }
}

// imgsz 448 (4116 anchors): every thread of the per-GT top-k block holds more than topk
// candidates of a large GT, so its local lists overflow and the block merge decides; topk
// 3, 10 and 32.
TEST(DetectLoss, GpuParityManyCandidates) {
  VT_REQUIRE_GPU();
  uint64_t seed = 300;
  for (int topk : {3, 10, 32}) {
    SCOPED_TRACE("topk " + std::to_string(topk));
    DetectLossConfig c = make_cfg(5, 448);
    c.topk = topk;
    expect_random_parity(c, {8, 3}, seed);
  }
}

// The hand-made assigner scenes: exact ties in the top-k, the zero fill, the multi-GT
// argmax over all rows, duplicate GTs.
TEST(DetectLoss, GpuParityAssignerCorners) {
  VT_REQUIRE_GPU();
  const DetectLossConfig c = make_cfg(2, 32);
  const std::vector<std::vector<double>> scenes = {{1, 0, 0, 32, 32},
                                                   {1, 0, 0, 32, 32, 0, 0, 0, 32, 16, 1, 2, 2, 6, 6},
                                                   {1, 0, 0, 32, 32, 1, 2, 2, 6, 6},
                                                   {-1, 0, 0, 0, 0, 1, 0, 0, 32, 32, 1, 0, 0, 32, 32}};
  for (const auto& rows : scenes)
    for (DType dt : {DType::kF32, DType::kBF16}) {
      const int64_t m = static_cast<int64_t>(rows.size() / 5);
      SCOPED_TRACE(std::to_string(m) + " rows, " + dtype_name(dt));
      expect_gpu_matches_cpu(c, convert(hand_preds(c), Device::kCPU, DType::kF32),
                             from_values({1, m, 5}, rows), dt, 7);
    }
}

// ---------------------------------------------------------------------------------------

TEST(DetectLoss, BadArgumentsNameTheOpAndShapes) {
  const DetectLossConfig c = make_cfg(3, 64);
  const DType f32 = DType::kF32;
  const Device cpu = Device::kCPU;
  const std::vector<Tensor> preds = make_preds(c, 2, f32);
  const std::vector<Tensor> dpreds = make_preds(c, 2, f32);
  const Tensor targets = random_targets(c, {1, 1}, 4, 1);
  const Tensor loss = Tensor::empty({4}, f32, cpu);
  const Tensor ws =
      Tensor::empty({static_cast<int64_t>(detect_loss_workspace_bytes(c, 2, 4, f32, cpu))}, DType::kU8, cpu);
  auto call = [&](const std::vector<Tensor>& p, const Tensor& t, const std::vector<Tensor>& dp,
                  const Tensor& l, const Tensor& w,
                  const DetectLossConfig& cfg) { detect_loss(cfg, p, t, dp, l, w); };

  // Channels: C = 4 reg_max + nc.
  std::vector<Tensor> p = preds;
  p[0] = Tensor::empty({2, 8, 8, 66}, f32, cpu);
  test::expect_error([&] { call(p, targets, dpreds, loss, ws, c); },
                     {"detect_loss", "preds[0] has 66 channels, expected 4 reg_max + nc = 4 * 16 + 3 = 67",
                      "preds[0]: (2, 8, 8, 66)"});
  // Level count and level shapes.
  test::expect_error(
      [&] {
        call({preds[0], preds[1]}, targets, dpreds, loss, ws, c);
      },
      {"detect_loss", "2 prediction levels for 3 strides (8, 16, 32)"});
  p = preds;
  p[1] = Tensor::empty({2, 5, 5, 67}, f32, cpu);
  test::expect_error([&] { call(p, targets, dpreds, loss, ws, c); },
                     {"detect_loss", "preds[1] must have shape (2, 4, 4, 67)", "preds[1]: (2, 5, 5, 67)"});
  p = preds;
  p[2] = Tensor::empty({2, 2, 67}, f32, cpu);
  test::expect_error([&] { call(p, targets, dpreds, loss, ws, c); },
                     {"detect_loss", "rank 4", "preds[2]: (2, 2, 67)"});
  std::vector<Tensor> dp = dpreds;
  dp[2] = Tensor::empty({2, 2, 2, 66}, f32, cpu);
  test::expect_error([&] { call(preds, targets, dp, loss, ws, c); },
                     {"detect_loss", "dpreds[2] must have shape (2, 2, 2, 67)", "dpreds[2]: (2, 2, 2, 66)"});
  test::expect_error([&] { call(preds, targets, {dpreds[0]}, loss, ws, c); },
                     {"detect_loss", "1 gradient levels for 3 prediction levels"});
  // Targets.
  test::expect_error(
      [&] {
        call(preds, Tensor::empty({2, 4, 4}, f32, cpu), dpreds, loss, ws, c);
      },
      {"detect_loss", "targets must have shape (B, M, 5) with B = 2", "targets: (2, 4, 4)"});
  test::expect_error(
      [&] {
        call(preds, Tensor::empty({3, 4, 5}, f32, cpu), dpreds, loss, ws, c);
      },
      {"detect_loss", "targets must have shape (B, M, 5)", "targets: (3, 4, 5)"});
  test::expect_error([&] { call(preds, targets.to(cpu, DType::kF64), dpreds, loss, ws, c); },
                     {"detect_loss", "targets must be f32", "targets: (2, 4, 5) f64"});
  const Tensor bad_cls =
      from_values({2, 4, 5}, {5, 1, 1, 9, 9, -1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 0, 0, 0, 0,
                              0, 1, 1, 9, 9, 3,  2, 2, 8, 8, -1, 0, 0, 0, 0, -1, 0, 0, 0, 0});
  test::expect_error([&] { call(preds, bad_cls, dpreds, loss, ws, c); },
                     {"detect_loss", "targets row (0, 0) has class 5, outside [0, nc = 3)"});
  std::vector<double> v2 = values(bad_cls);
  v2[0] = 0;
  test::expect_error(
      [&] {
        call(preds, from_values({2, 4, 5}, v2), dpreds, loss, ws, c);
      },
      {"detect_loss", "targets row (1, 1) has class 3"});
  // Loss and workspace.
  test::expect_error([&] { call(preds, targets, dpreds, Tensor::empty({3}, f32, cpu), ws, c); },
                     {"detect_loss", "loss must have shape (4)", "loss: (3)"});
  test::expect_error([&] { call(preds, targets, dpreds, Tensor::empty({4}, DType::kF64, cpu), ws, c); },
                     {"detect_loss", "loss must be f32"});
  test::expect_error([&] { call(preds, targets, dpreds, loss, Tensor::empty({16}, DType::kU8, cpu), c); },
                     {"detect_loss", "workspace must be at least", "workspace: (16) u8 cpu"});
  // Storage types.
  test::expect_error([&] { call(make_preds(c, 2, DType::kBF16), targets, dpreds, loss, ws, c); },
                     {"detect_loss", "unsupported storage type bf16", "preds[0]: (2, 8, 8, 67) bf16 cpu"});
  test::expect_error(
      [&] { call(preds, targets, make_preds(c, 2, DType::kF64), loss, ws, c); },
      {"detect_loss", "activations of different storage types", "dpreds[0]: (2, 8, 8, 67) f64"});
  // Config.
  DetectLossConfig bad = c;
  bad.imgsz = 100;
  test::expect_error([&] { call(preds, targets, dpreds, loss, ws, bad); },
                     {"detect_loss", "imgsz 100 is not a positive multiple of stride 8"});
  bad = c;
  bad.topk = 0;
  test::expect_error([&] { detect_loss_workspace_bytes(bad, 2, 4, f32, cpu); },
                     {"detect_loss", "topk 0 must be in [1, 32]"});
  bad = c;
  bad.reg_max = 1;
  test::expect_error([&] { detect_loss_workspace_bytes(bad, 2, 4, f32, cpu); },
                     {"detect_loss", "reg_max 1 must be in [2, 32]"});
  bad = make_cfg(3, 32);
  bad.topk = 30;
  test::expect_error([&] { detect_loss_workspace_bytes(bad, 2, 4, f32, cpu); },
                     {"detect_loss", "topk 30 exceeds the 21 anchors of imgsz 32"});
  // The CPU halves check the same contract.
  test::expect_error([&] { cpu::detect_assign(c, {preds[0]}, targets); },
                     {"detect_assign", "1 prediction levels for 3 strides"});
  test::expect_error(
      [&] { cpu::detect_loss_assigned(c, preds, targets, cpu::DetectAssignment{}, dpreds, loss); },
      {"detect_loss_assigned", "the assignment holds 0 anchors"});
}

}  // namespace
}  // namespace vt
