// COCO box mAP as pycocotools computes it (see coco_eval.h). The structure follows COCOeval:
// evaluate (rank, match per image and class for each area range) then accumulate (pool over
// images, precision/recall curves, 101-point sampling), then the summary means. Every step
// reproduces pycocotools' order of operations and tie-breaking, since a one-ulp difference at
// an IoU threshold or a different order among equal scores changes a match.
#include "trainer/coco_eval.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "layers/check.h"

// pycocotools' wheels round every product and sum separately; a fused multiply-add (which
// compilers may form on FMA hardware) would move IoUs and thresholds by an ulp and could flip
// a match that sits exactly on a threshold.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace vt {
namespace {

constexpr int kNumIou = 10;
constexpr int kNumRecall = 101;
constexpr int kNumAreas = 4;
// Area ranges in pixels^2, both ends inclusive (a 32x32 box is small and medium).
enum Area { kAll, kSmall, kMedium, kLarge };
constexpr double kAreaRange[kNumAreas][2] = {{0, 1e10}, {0, 32 * 32}, {32 * 32, 96 * 96}, {96 * 96, 1e10}};
constexpr const char* kAreaName[kNumAreas] = {"all", "small", "medium", "large"};
// The max-detections cut-offs the summary reports; the last is evaluate_coco's max_dets.
constexpr int kNumMaxDets = 3;

struct CocoBox {
  double x, y, w, h;
  double area() const { return w * h; }
};

CocoBox to_coco(float x1, float y1, float x2, float y2) {
  const auto b = coco_xywh(x1, y1, x2, y2);
  return {b[0], b[1], b[2], b[3]};
}

// maskApi's bbIou. For a crowd GT the "union" is the detection's own area, so a detection
// lying inside a crowd region has IoU 1 with it.
double box_iou(const CocoBox& d, const CocoBox& g, bool crowd) {
  const double w = std::min(d.x + d.w, g.x + g.w) - std::max(d.x, g.x);
  if (w <= 0) return 0;
  const double h = std::min(d.y + d.h, g.y + g.h) - std::max(d.y, g.y);
  if (h <= 0) return 0;
  const double inter = w * h;
  const double da = d.w * d.h;
  const double ga = g.w * g.h;
  return inter / (crowd ? da : da + ga - inter);
}

std::vector<double> linspace(double start, double stop, int num) {
  // np.linspace: i * ((stop - start) / (num - 1)) + start, the last value set to stop.
  std::vector<double> v(num);
  const double step = (stop - start) / (num - 1);
  for (int i = 0; i < num; ++i) v[i] = i * step + start;
  v[num - 1] = stop;
  return v;
}

// Items bucketed by key in [0, num_buckets), each bucket keeping input order (counting sort):
// bucket b is index[start[b] .. start[b + 1]).
struct Buckets {
  std::vector<size_t> start, index;
  size_t size(size_t b) const { return start[b + 1] - start[b]; }
  const size_t* begin(size_t b) const { return index.data() + start[b]; }
};

Buckets make_buckets(const std::vector<size_t>& key, size_t num_buckets) {
  Buckets bk;
  bk.start.assign(num_buckets + 1, 0);
  for (size_t k : key) ++bk.start[k + 1];
  std::partial_sum(bk.start.begin(), bk.start.end(), bk.start.begin());
  std::vector<size_t> fill(bk.start.begin(), bk.start.end() - 1);
  bk.index.resize(key.size());
  for (size_t i = 0; i < key.size(); ++i) bk.index[fill[key[i]]++] = i;
  return bk;
}

// One (image, class) for one area range after matching at every IoU threshold. Detections
// are in rank order (score descending, ties in input order), at most max_dets of them.
struct ImageEval {
  std::vector<float> scores;     // (D)
  std::vector<uint8_t> matched;  // (T, D): matched some GT (ignored or not)
  std::vector<uint8_t> ignored;  // (T, D): matched an ignored GT, or unmatched and out of range
  int64_t num_gt = 0;            // GT that are not ignored
};

// pycocotools' evaluateImg. `ious` is (D, G) for the ranked detections and the GT in input
// order; `crowd` and `gt_area` are (G), `dt_area` is (D).
ImageEval match_image(const std::vector<float>& scores, const std::vector<double>& ious,
                      const std::vector<uint8_t>& crowd, const std::vector<double>& gt_area,
                      const std::vector<double>& dt_area, const double range[2],
                      const std::vector<double>& iou_thr) {
  const size_t G = crowd.size(), D = scores.size();
  ImageEval e;
  e.scores = scores;
  std::vector<uint8_t> g_ignored(G);
  for (size_t g = 0; g < G; ++g) {
    g_ignored[g] = crowd[g] || gt_area[g] < range[0] || gt_area[g] > range[1];
    e.num_gt += !g_ignored[g];
  }
  // GT visited not-ignored first, each group in input order (a stable argsort).
  std::vector<size_t> order(G);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_partition(order.begin(), order.end(), [&](size_t g) { return !g_ignored[g]; });

  e.matched.assign(kNumIou * D, 0);
  e.ignored.assign(kNumIou * D, 0);
  std::vector<uint8_t> taken(G);
  for (int t = 0; t < kNumIou; ++t) {
    std::fill(taken.begin(), taken.end(), 0);
    for (size_t d = 0; d < D; ++d) {
      // The best GT at IoU >= threshold (a later GT wins a tie); a crowd GT can take any
      // number of detections; once a regular GT is matched, ignored ones cannot replace it.
      double best = std::min(iou_thr[t], 1 - 1e-10);
      ptrdiff_t m = -1;
      for (size_t g : order) {
        if (taken[g] && !crowd[g]) continue;
        if (m >= 0 && !g_ignored[m] && g_ignored[g]) break;
        if (ious[d * G + g] < best) continue;
        best = ious[d * G + g];
        m = static_cast<ptrdiff_t>(g);
      }
      if (m < 0) continue;
      e.matched[t * D + d] = 1;
      e.ignored[t * D + d] = g_ignored[m];
      taken[m] = 1;
    }
    for (size_t d = 0; d < D; ++d)
      if (!e.matched[t * D + d] && (dt_area[d] < range[0] || dt_area[d] > range[1])) e.ignored[t * D + d] = 1;
  }
  return e;
}

// One (class, area range, max dets) pooled over images: AP (precision averaged over the 101
// recall points) and final recall per IoU threshold. Not valid when no GT is un-ignored:
// pycocotools' -1, left out of every mean.
struct Curve {
  bool valid = false;
  std::array<double, kNumIou> ap{}, recall{};
};

// pycocotools' accumulate for one (class, area, max dets). `evals` are in ascending image id.
Curve accumulate(const std::vector<ImageEval>& evals, int max_det, const std::vector<double>& rec_thr) {
  Curve c;
  int64_t num_gt = 0;
  struct Ranked {
    float score;
    uint32_t image, det;
  };
  std::vector<Ranked> ranked;
  for (size_t i = 0; i < evals.size(); ++i) {
    num_gt += evals[i].num_gt;
    const size_t n = std::min(evals[i].scores.size(), static_cast<size_t>(max_det));
    for (size_t d = 0; d < n; ++d)
      ranked.push_back({evals[i].scores[d], static_cast<uint32_t>(i), static_cast<uint32_t>(d)});
  }
  if (num_gt == 0) return c;
  c.valid = true;
  // np.argsort(-scores, kind='mergesort'): stable, so ties keep image order, then rank order.
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const Ranked& a, const Ranked& b) { return a.score > b.score; });

  const size_t n = ranked.size();
  std::vector<double> rc(n), pr(n);
  for (int t = 0; t < kNumIou; ++t) {
    int64_t tp = 0, fp = 0;
    for (size_t j = 0; j < n; ++j) {
      const ImageEval& e = evals[ranked[j].image];
      const size_t at = t * e.scores.size() + ranked[j].det;
      if (!e.ignored[at]) (e.matched[at] ? tp : fp) += 1;
      rc[j] = static_cast<double>(tp) / static_cast<double>(num_gt);
      // np.spacing(1) == DBL_EPSILON keeps 0/0 (only ignored detections so far) at 0.
      pr[j] = static_cast<double>(tp) / (static_cast<double>(fp) + static_cast<double>(tp) + DBL_EPSILON);
    }
    c.recall[t] = n ? rc[n - 1] : 0;
    for (size_t j = n; j-- > 1;) pr[j - 1] = std::max(pr[j - 1], pr[j]);  // monotone from the right
    // Precision at the first rank whose recall reaches each point (searchsorted, side
    // 'left'); points beyond the final recall get 0.
    double sum = 0;
    for (double r : rec_thr) {
      const size_t j = static_cast<size_t>(std::lower_bound(rc.begin(), rc.end(), r) - rc.begin());
      sum += j < n ? pr[j] : 0.0;
    }
    c.ap[t] = sum / kNumRecall;
  }
  return c;
}

// Mean over valid classes of the AP (iou < 0: averaged over thresholds) or of the recall.
double mean_over_classes(const std::vector<Curve>& curves, int num_classes, int area, int md, bool recall,
                         int iou) {
  double sum = 0;
  int count = 0;
  for (int k = 0; k < num_classes; ++k) {
    const Curve& c = curves[(static_cast<size_t>(k) * kNumAreas + area) * kNumMaxDets + md];
    if (!c.valid) continue;
    const auto& v = recall ? c.recall : c.ap;
    sum += iou < 0 ? std::accumulate(v.begin(), v.end(), 0.0) / kNumIou : v[iou];
    ++count;
  }
  return count ? sum / count : -1;
}

void check_box(const char* what, size_t i, int64_t image_id, int cls, int num_classes, float x1, float y1,
               float x2, float y2) {
  VT_CHECK(cls >= 0 && cls < num_classes, "evaluate_coco: ", what, " ", i, " (image ", image_id,
           ") has class ", cls, ", expected 0..", num_classes - 1);
  VT_CHECK(std::isfinite(x1) && std::isfinite(y1) && std::isfinite(x2) && std::isfinite(y2) && x2 >= x1 &&
               y2 >= y1,
           "evaluate_coco: ", what, " ", i, " (image ", image_id, ") has box (", x1, ", ", y1, ", ", x2, ", ",
           y2, "), expected finite corners with x2 >= x1 and y2 >= y1");
}

}  // namespace

std::array<double, 4> coco_xywh(float x1, float y1, float x2, float y2) {
  const double x = x1, y = y1;
  return {x, y, static_cast<double>(x2) - x, static_cast<double>(y2) - y};
}

std::vector<double> coco_iou_thresholds() {
  return linspace(0.5, 0.95, kNumIou);
}
std::vector<double> coco_recall_thresholds() {
  return linspace(0.0, 1.0, kNumRecall);
}

std::array<double, 12> MapResult::stats() const {
  return {map, map50, map75, map_small, map_medium, map_large,
          ar1, ar10,  ar100, ar_small,  ar_medium,  ar_large};
}

MapResult evaluate_coco(const std::vector<GroundTruth>& gt, const std::vector<Detection>& dets,
                        int num_classes, const std::vector<int64_t>& image_ids, int max_dets) {
  VT_CHECK(num_classes > 0, "evaluate_coco: num_classes is ", num_classes);
  VT_CHECK(max_dets >= 10, "evaluate_coco: max_dets is ", max_dets,
           ", expected >= 10 (AR is reported at 1 and 10)");
  std::vector<int64_t> images = image_ids;  // ascending, as pycocotools orders them
  std::sort(images.begin(), images.end());
  images.erase(std::unique(images.begin(), images.end()), images.end());
  const size_t I = images.size(), K = static_cast<size_t>(num_classes);
  auto image_pos = [&](int64_t id, const char* what, size_t i) {
    const auto it = std::lower_bound(images.begin(), images.end(), id);
    VT_CHECK(it != images.end() && *it == id, "evaluate_coco: ", what, " ", i, " has image_id ", id,
             ", which is not among the ", I, " evaluated images");
    return static_cast<size_t>(it - images.begin());
  };

  // Bucket GT and detections by (class, image), input order kept within a bucket.
  std::vector<size_t> gt_key(gt.size()), dt_key(dets.size());
  std::vector<CocoBox> gt_box(gt.size()), dt_box(dets.size());
  MapResult res;
  res.max_dets = max_dets;
  res.num_images = static_cast<int64_t>(I);
  res.gt_per_class.assign(K, 0);
  for (size_t i = 0; i < gt.size(); ++i) {
    const GroundTruth& g = gt[i];
    check_box("ground-truth box", i, g.image_id, g.cls, num_classes, g.x1, g.y1, g.x2, g.y2);
    gt_key[i] = static_cast<size_t>(g.cls) * I + image_pos(g.image_id, "ground-truth box", i);
    gt_box[i] = to_coco(g.x1, g.y1, g.x2, g.y2);
    res.gt_per_class[g.cls] += !g.crowd;
  }
  for (size_t i = 0; i < dets.size(); ++i) {
    const Detection& d = dets[i];
    check_box("detection", i, d.image_id, d.cls, num_classes, d.x1, d.y1, d.x2, d.y2);
    VT_CHECK(std::isfinite(d.score), "evaluate_coco: detection ", i, " (image ", d.image_id, ") has score ",
             d.score);
    dt_key[i] = static_cast<size_t>(d.cls) * I + image_pos(d.image_id, "detection", i);
    dt_box[i] = to_coco(d.x1, d.y1, d.x2, d.y2);
  }
  const Buckets gt_at = make_buckets(gt_key, K * I);
  const Buckets dt_at = make_buckets(dt_key, K * I);

  const std::vector<double> iou_thr = coco_iou_thresholds();
  const std::vector<double> rec_thr = coco_recall_thresholds();
  const int max_det_list[kNumMaxDets] = {1, 10, max_dets};
  std::vector<Curve> curves(K * kNumAreas * kNumMaxDets);
  for (size_t k = 0; k < K; ++k) {
    std::vector<ImageEval> evals[kNumAreas];  // per area: the images with GT or detections
    for (size_t i = 0; i < I; ++i) {
      const size_t b = k * I + i;
      const size_t G = gt_at.size(b);
      std::vector<size_t> dt(dt_at.begin(b), dt_at.begin(b) + dt_at.size(b));
      if (G == 0 && dt.empty()) continue;
      std::stable_sort(dt.begin(), dt.end(),
                       [&](size_t a, size_t c) { return dets[a].score > dets[c].score; });
      if (dt.size() > static_cast<size_t>(max_dets)) dt.resize(max_dets);
      const size_t D = dt.size();

      std::vector<float> scores(D);
      std::vector<double> dt_area(D), gt_area(G), ious(D * G);
      std::vector<uint8_t> crowd(G);
      for (size_t g = 0; g < G; ++g) {
        const size_t gi = gt_at.begin(b)[g];
        crowd[g] = gt[gi].crowd;
        gt_area[g] = gt_box[gi].area();
      }
      for (size_t d = 0; d < D; ++d) {
        scores[d] = dets[dt[d]].score;
        dt_area[d] = dt_box[dt[d]].area();
        for (size_t g = 0; g < G; ++g)
          ious[d * G + g] = box_iou(dt_box[dt[d]], gt_box[gt_at.begin(b)[g]], crowd[g]);
      }
      for (int a = 0; a < kNumAreas; ++a)
        evals[a].push_back(match_image(scores, ious, crowd, gt_area, dt_area, kAreaRange[a], iou_thr));
    }
    for (int a = 0; a < kNumAreas; ++a)
      for (int m = 0; m < kNumMaxDets; ++m)
        curves[(k * kNumAreas + a) * kNumMaxDets + m] = accumulate(evals[a], max_det_list[m], rec_thr);
  }

  const int last = kNumMaxDets - 1;
  auto ap = [&](int area, int iou) { return mean_over_classes(curves, num_classes, area, last, false, iou); };
  auto ar = [&](int area, int md) { return mean_over_classes(curves, num_classes, area, md, true, -1); };
  res.map = ap(kAll, -1);
  res.map50 = ap(kAll, 0);
  res.map75 = ap(kAll, 5);  // iou_thr[5] == 0.75 exactly
  res.map_small = ap(kSmall, -1);
  res.map_medium = ap(kMedium, -1);
  res.map_large = ap(kLarge, -1);
  res.ar1 = ar(kAll, 0);
  res.ar10 = ar(kAll, 1);
  res.ar100 = ar(kAll, last);
  res.ar_small = ar(kSmall, last);
  res.ar_medium = ar(kMedium, last);
  res.ar_large = ar(kLarge, last);
  res.ap_per_class.assign(K, -1);
  res.ap50_per_class.assign(K, -1);
  for (size_t k = 0; k < K; ++k) {
    const Curve& c = curves[(k * kNumAreas + kAll) * kNumMaxDets + last];
    if (!c.valid) continue;
    res.ap_per_class[k] = std::accumulate(c.ap.begin(), c.ap.end(), 0.0) / kNumIou;
    res.ap50_per_class[k] = c.ap[0];
  }
  return res;
}

std::string format_coco_summary(const MapResult& r) {
  struct Line {
    bool ap;
    const char* iou;
    int area, max_det;
    double value;
  };
  const Line lines[12] = {
      {true, "0.50:0.95", kAll, r.max_dets, r.map},
      {true, "0.50", kAll, r.max_dets, r.map50},
      {true, "0.75", kAll, r.max_dets, r.map75},
      {true, "0.50:0.95", kSmall, r.max_dets, r.map_small},
      {true, "0.50:0.95", kMedium, r.max_dets, r.map_medium},
      {true, "0.50:0.95", kLarge, r.max_dets, r.map_large},
      {false, "0.50:0.95", kAll, 1, r.ar1},
      {false, "0.50:0.95", kAll, 10, r.ar10},
      {false, "0.50:0.95", kAll, r.max_dets, r.ar100},
      {false, "0.50:0.95", kSmall, r.max_dets, r.ar_small},
      {false, "0.50:0.95", kMedium, r.max_dets, r.ar_medium},
      {false, "0.50:0.95", kLarge, r.max_dets, r.ar_large},
  };
  std::string out;
  char buf[160];
  for (const Line& l : lines) {
    std::snprintf(buf, sizeof buf, " %-18s %s @[ IoU=%-9s | area=%6s | maxDets=%3d ] = %0.3f\n",
                  l.ap ? "Average Precision" : "Average Recall", l.ap ? "(AP)" : "(AR)", l.iou,
                  kAreaName[l.area], l.max_det, l.value);
    out += buf;
  }
  return out;
}

std::string format_class_table(const MapResult& r, const std::vector<std::string>& class_names) {
  VT_CHECK(class_names.size() == r.ap_per_class.size(), "format_class_table: ", class_names.size(),
           " class names for ", r.ap_per_class.size(), " classes");
  int width = 5;  // "class"
  for (const auto& n : class_names) width = std::max(width, static_cast<int>(n.size()));
  std::string out;
  char buf[64];
  auto name_column = [&](const std::string& name) { out += name + std::string(width - name.size(), ' '); };
  auto row = [&](const std::string& name, int64_t instances, double ap50, double ap) {
    char a50[16] = "-", a[16] = "-";
    if (ap50 >= 0) std::snprintf(a50, sizeof a50, "%.3f", ap50);
    if (ap >= 0) std::snprintf(a, sizeof a, "%.3f", ap);
    name_column(name);
    std::snprintf(buf, sizeof buf, " %10lld %8s %8s\n", static_cast<long long>(instances), a50, a);
    out += buf;
  };
  name_column("class");
  std::snprintf(buf, sizeof buf, " %10s %8s %8s\n", "instances", "AP50", "AP50-95");
  out += buf;
  row("all", std::accumulate(r.gt_per_class.begin(), r.gt_per_class.end(), int64_t{0}), r.map50, r.map);
  for (size_t k = 0; k < class_names.size(); ++k)
    row(class_names[k], r.gt_per_class[k], r.ap50_per_class[k], r.ap_per_class[k]);
  return out;
}

}  // namespace vt
