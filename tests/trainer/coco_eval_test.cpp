// COCO mAP (trainer/coco_eval.h). Hand-computed cases pin the rules one at a time (the
// 101-point interpolation, crowd regions, classes without GT, max_dets); the agreement tests
// write seeded random scenarios as COCO JSON, run pycocotools on them
// (tests/trainer/coco_map_ref.py, in the venv scripts/test.sh makes) and demand the same
// 12 summary numbers and per-class APs. They skip, saying why, when that Python is missing.
#include "trainer/coco_eval.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "layers/check.h"
#include "tests/test_util.h"

namespace vt {
namespace {

using nlohmann::json;

// Both sides compute the same doubles (same boxes, thresholds and operation order); only the
// order of summation in the final means differs, which moves results by ~1e-16. The issue
// asks for 1e-4; 1e-9 still leaves a wide margin while any rule that differs shows up.
constexpr double kTol = 1e-9;
// A hand-computed AP: precision is tp / (tp + fp + eps), so a perfect score is 1 - 2.2e-16.
constexpr double kHandTol = 1e-12;

// ---------------------------------------------------------------- hand-computed cases

TEST(CocoEval, PerfectDetectionScoresOne) {
  // One 50x50 box (area 2500: medium) found exactly.
  const auto r = evaluate_coco({{1, 0, 10, 10, 60, 60}}, {{1, 0, 10, 10, 60, 60, 0.9f}}, 1, {1});
  const std::array<double, 12> want = {1, 1, 1, -1, 1, -1, 1, 1, 1, -1, 1, -1};
  for (int i = 0; i < 12; ++i) EXPECT_NEAR(r.stats()[i], want[i], kHandTol) << "stat " << i;
  EXPECT_NEAR(r.ap_per_class[0], 1, kHandTol);
  EXPECT_EQ(r.gt_per_class[0], 1);
}

TEST(CocoEval, FalsePositiveRankedAboveTruePositive) {
  // Ranked FP then TP: recall (0, 1), precision (0, 1/2), made monotone (1/2, 1/2). Every
  // recall point reads 1/2. At maxDets=1 only the FP is kept, so AR@1 is 0.
  const auto r = evaluate_coco({{1, 0, 0, 0, 20, 20}},
                               {{1, 0, 100, 100, 120, 120, 0.9f}, {1, 0, 0, 0, 20, 20, 0.8f}}, 1, {1});
  EXPECT_NEAR(r.map, 0.5, kHandTol);
  EXPECT_NEAR(r.map50, 0.5, kHandTol);
  EXPECT_NEAR(r.ar1, 0, kHandTol);
  EXPECT_NEAR(r.ar10, 1, kHandTol);
}

TEST(CocoEval, FalsePositiveBetweenTwoTruePositives) {
  // Two GT; ranked TP, FP, TP: recall (1/2, 1/2, 1), precision (1, 1/2, 2/3), monotone
  // (1, 2/3, 2/3). Recall points 0.00..0.50 (51 of them) find rank 0 -> 1; the 50 points
  // 0.51..1.00 find rank 2 -> 2/3.
  const auto r = evaluate_coco(
      {{1, 0, 0, 0, 20, 20}, {1, 0, 50, 50, 90, 90}},
      {{1, 0, 0, 0, 20, 20, 0.9f}, {1, 0, 200, 200, 220, 220, 0.8f}, {1, 0, 50, 50, 90, 90, 0.7f}}, 1, {1});
  const double want = (51 * 1.0 + 50 * (2.0 / 3.0)) / 101;
  EXPECT_NEAR(r.map, want, kHandTol);
  EXPECT_NEAR(r.ap50_per_class[0], want, kHandTol);
  EXPECT_NEAR(r.ar100, 1, kHandTol);
}

TEST(CocoEval, ClassWithoutGroundTruthIsExcluded) {
  // Class 1 has no GT: its confident detection on class 0's object neither counts as a class
  // 0 false positive nor pulls the mean down; its AP is -1. Image 2 has no GT at all.
  const auto r = evaluate_coco({{1, 0, 10, 10, 60, 60}},
                               {{1, 1, 10, 10, 60, 60, 0.99f}, {1, 0, 10, 10, 60, 60, 0.5f}}, 2, {1, 2});
  EXPECT_NEAR(r.map, 1, kHandTol);
  EXPECT_EQ(r.ap_per_class[1], -1);
  EXPECT_EQ(r.ap50_per_class[1], -1);
  EXPECT_EQ(r.gt_per_class, (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(r.num_images, 2);
}

TEST(CocoEval, DetectionInsideCrowdRegionIsIgnored) {
  // The detection inside the crowd box has IoU 1 with it (crowd IoU divides by the
  // detection's own area; plain IoU would be 0.01), so it is ignored and the TP ranks first.
  std::vector<GroundTruth> gt = {{1, 0, 0, 0, 20, 20}, {1, 0, 100, 100, 300, 300, true}};
  const auto r = evaluate_coco(gt, {{1, 0, 150, 150, 170, 170, 0.95f}, {1, 0, 0, 0, 20, 20, 0.5f}}, 1, {1});
  EXPECT_NEAR(r.map, 1, kHandTol);
  EXPECT_EQ(r.gt_per_class[0], 1);
}

TEST(CocoEval, MaxDetsCutsPerImageAndClass) {
  // 100 confident FPs of class 0 push its TP (lowest score) out of the top 100; class 1's
  // detections do not count towards class 0's limit. With max_dets 101 the TP is kept at
  // rank 101: precision 1/101 at full recall, so AP = 1/101.
  std::vector<GroundTruth> gt = {{1, 0, 0, 0, 20, 20}, {1, 1, 0, 0, 20, 20}};
  std::vector<Detection> dets;
  for (int i = 0; i < 100; ++i) dets.push_back({1, 0, 100.f + i, 100, 101.f + i, 101, 0.9f});
  dets.push_back({1, 0, 0, 0, 20, 20, 0.1f});
  dets.push_back({1, 1, 0, 0, 20, 20, 0.1f});
  const auto cut = evaluate_coco(gt, dets, 2, {1}, 100);
  EXPECT_NEAR(cut.ap_per_class[0], 0, kHandTol);
  EXPECT_NEAR(cut.ap_per_class[1], 1, kHandTol);
  const auto kept = evaluate_coco(gt, dets, 2, {1}, 101);
  EXPECT_NEAR(kept.ap_per_class[0], 1.0 / 101, kHandTol);
  EXPECT_NEAR(kept.ar100, 1, kHandTol);
}

TEST(CocoEval, ThresholdsAreNumpyLinspace) {
  // The agreement tests compare these with pycocotools' bit for bit; here the values the
  // summary relies on: AP75 reads index 5, and recall 0.5 is exactly point 50.
  const auto iou = coco_iou_thresholds();
  const auto rec = coco_recall_thresholds();
  ASSERT_EQ(iou.size(), 10u);
  ASSERT_EQ(rec.size(), 101u);
  EXPECT_EQ(iou[0], 0.5);
  EXPECT_EQ(iou[5], 0.75);
  EXPECT_EQ(iou[9], 0.95);
  EXPECT_EQ(rec[50], 0.5);
  EXPECT_EQ(rec[100], 1.0);
}

TEST(CocoEval, RejectsBadInput) {
  const std::vector<GroundTruth> gt = {{1, 0, 0, 0, 20, 20}};
  test::expect_error(
      [&] {
        evaluate_coco(gt, {{7, 0, 0, 0, 1, 1, 0.5f}}, 2, {1});
      },
      {"detection 0", "image_id 7", "not among the 1 evaluated images"});
  test::expect_error(
      [&] {
        evaluate_coco(gt, {{1, 3, 0, 0, 1, 1, 0.5f}}, 2, {1});
      },
      {"detection 0", "class 3", "expected 0..1"});
  test::expect_error(
      [&] {
        evaluate_coco({{1, 0, 5, 0, 4, 20}}, {}, 2, {1});
      },
      {"ground-truth box 0", "x2 >= x1"});
  test::expect_error([&] { evaluate_coco(gt, {{1, 0, 0, 0, 1, 1, NAN}}, 2, {1}); }, {"detection 0", "score"});
  test::expect_error([&] { evaluate_coco(gt, {}, 2, {1}, 5); }, {"max_dets is 5"});
}

TEST(CocoEval, FormatsSummaryAndClassTable) {
  const auto r = evaluate_coco({{1, 0, 10, 10, 60, 60}, {1, 0, 0, 0, 5, 5, true}},
                               {{1, 0, 10, 10, 60, 60, 0.9f}}, 2, {1});
  const std::string summary = format_coco_summary(r);
  EXPECT_NE(summary.find(" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000\n"),
            std::string::npos)
      << summary;
  EXPECT_NE(
      summary.find(" Average Recall     (AR) @[ IoU=0.50:0.95 | area= small | maxDets=100 ] = -1.000\n"),
      std::string::npos)
      << summary;
  const std::string table = format_class_table(r, {"person", "bicycle"});
  EXPECT_NE(table.find("class    instances     AP50  AP50-95\n"), std::string::npos) << table;
  EXPECT_NE(table.find("all              1    1.000    1.000\n"), std::string::npos) << table;
  EXPECT_NE(table.find("bicycle          0        -        -\n"), std::string::npos) << table;
  test::expect_error([&] { format_class_table(r, {"person"}); }, {"1 class names for 2 classes"});
}

// ---------------------------------------------------------------- scenarios for pycocotools

struct Scenario {
  std::vector<GroundTruth> gt;
  std::vector<Detection> dets;
  std::vector<int64_t> image_ids;
  int num_classes = 0;
  int max_dets = 100;
};

// What a random scenario contains. Of the classes, the last two never have GT: the one
// before last has nothing at all, the last only (wrong) detections.
struct ScenarioShape {
  int images = 60;
  int classes = 6;
  int max_gt = 8;             // GT boxes per image, 1..max_gt
  double empty_image = 0.15;  // share of images without GT
  double crowd = 0.05;        // share of GT that are crowd regions
  int score_levels = 0;       // > 0: scores rounded to k / levels, so many tie
  int crowded_every = 0;      // > 0: every n-th image gets 120-240 extra detections
  int max_dets = 100;
};

class Rng {
 public:
  explicit Rng(uint64_t seed) : g_(seed) {}
  double uniform(double lo, double hi) {
    return lo + (hi - lo) * (static_cast<double>(g_() >> 11) * 0x1p-53);
  }
  int below(int n) { return static_cast<int>(g_() % static_cast<uint64_t>(n)); }
  bool chance(double p) { return uniform(0, 1) < p; }

 private:
  std::mt19937_64 g_;
};

constexpr double kImageSize = 640;

// A box in a 640x640 image with a size from each COCO area range, or exactly on a range
// boundary (32x32, 96x96: integer corners, so the area is exact).
std::array<float, 4> random_box(Rng& rng) {
  double w, h;
  switch (rng.below(5)) {
    case 0:
      w = rng.uniform(1, 31), h = rng.uniform(1, 31);
      break;
    case 1:
      w = rng.uniform(33, 95), h = rng.uniform(33, 95);
      break;
    case 2:
      w = rng.uniform(97, 400), h = rng.uniform(97, 400);
      break;
    default: {
      const float side = rng.chance(0.5) ? 32 : 96;
      const float x = std::floor(static_cast<float>(rng.uniform(0, kImageSize - side)));
      const float y = std::floor(static_cast<float>(rng.uniform(0, kImageSize - side)));
      return {x, y, x + side, y + side};
    }
  }
  const double x = rng.uniform(0, kImageSize - w), y = rng.uniform(0, kImageSize - h);
  return {static_cast<float>(x), static_cast<float>(y), static_cast<float>(x + w), static_cast<float>(y + h)};
}

// A detection of `g` with each corner moved by up to sigma times the box size: sigma 0.02
// keeps IoU near 1, 0.45 spreads it over all thresholds and below.
Detection jittered(const GroundTruth& g, double sigma, int cls, float score, Rng& rng) {
  const double w = g.x2 - g.x1, h = g.y2 - g.y1;
  auto move = [&](float v, double size) { return static_cast<float>(v + sigma * size * rng.uniform(-1, 1)); };
  float x1 = move(g.x1, w), y1 = move(g.y1, h), x2 = move(g.x2, w), y2 = move(g.y2, h);
  if (x2 < x1) std::swap(x1, x2);
  if (y2 < y1) std::swap(y1, y2);
  return {g.image_id, cls, x1, y1, x2, y2, score};
}

Scenario random_scenario(uint64_t seed, const ScenarioShape& sh) {
  Rng rng(seed);
  Scenario s;
  s.num_classes = sh.classes;
  s.max_dets = sh.max_dets;
  const int gt_classes = sh.classes - 2, dets_only = sh.classes - 1;
  auto score = [&] {
    double u = rng.uniform(0.01, 1);
    if (sh.score_levels > 0) u = std::round(u * sh.score_levels) / sh.score_levels;
    return static_cast<float>(u);
  };
  auto det_class = [&] { return rng.chance(0.25) ? dets_only : rng.below(gt_classes); };
  for (int i = 0; i < sh.images; ++i) {
    // Sparse ids, listed out of order: the evaluator must rank images as pycocotools does.
    const int64_t id = 1000 + 37 * ((static_cast<int64_t>(i) * 7919) % sh.images);
    s.image_ids.push_back(id);
    std::vector<GroundTruth> here;
    if (!rng.chance(sh.empty_image)) {
      for (int n = 1 + rng.below(sh.max_gt); n > 0; --n) {
        const auto b = random_box(rng);
        here.push_back({id, rng.below(gt_classes), b[0], b[1], b[2], b[3], rng.chance(sh.crowd)});
      }
    }
    for (const GroundTruth& g : here) {
      s.gt.push_back(g);
      for (int n = rng.below(4); n > 0; --n) {
        if (g.crowd) {  // a detection somewhere inside the crowd region
          const float w = static_cast<float>(rng.uniform(0, g.x2 - g.x1)),
                      h = static_cast<float>(rng.uniform(0, g.y2 - g.y1));
          const float x = static_cast<float>(rng.uniform(g.x1, g.x2 - w)),
                      y = static_cast<float>(rng.uniform(g.y1, g.y2 - h));
          s.dets.push_back({id, g.cls, x, y, x + w, y + h, score()});
          continue;
        }
        const double sigma[] = {0.02, 0.08, 0.2, 0.45};
        s.dets.push_back(
            jittered(g, sigma[rng.below(4)], rng.chance(0.9) ? g.cls : det_class(), score(), rng));
        if (rng.chance(0.1)) s.dets.push_back(s.dets.back());  // an exact duplicate
      }
    }
    for (int n = rng.below(4); n > 0; --n) {  // background false positives
      const auto b = random_box(rng);
      s.dets.push_back({id, det_class(), b[0], b[1], b[2], b[3], score()});
    }
    if (sh.crowded_every > 0 && i % sh.crowded_every == 0) {
      for (int n = 120 + rng.below(120); n > 0; --n) {
        if (!here.empty() && rng.chance(0.5)) {
          const GroundTruth& g = here[rng.below(static_cast<int>(here.size()))];
          s.dets.push_back(jittered(g, 0.3, g.cls, score(), rng));
        } else {
          const auto b = random_box(rng);
          s.dets.push_back({id, rng.chance(0.8) ? 0 : det_class(), b[0], b[1], b[2], b[3], score()});
        }
      }
    }
  }
  return s;
}

// Cases on the exact edges of the rules, which random data rarely hits.
Scenario edge_scenario() {
  Scenario s;
  s.num_classes = 3;
  auto image = [&](int64_t id) {
    s.image_ids.push_back(id);
    return id;
  };
  // IoU exactly at each threshold (and just below 0.5): GT 10x10, detection 10f x 10 at the
  // same corner, IoU = 100f / 100. All scores tie across images.
  const float widths[] = {4.99f, 5, 5.5f, 6, 6.5f, 7, 7.5f, 8, 8.5f, 9, 9.5f, 10};
  for (int j = 0; j < 12; ++j) {
    const int64_t id = image(10 + j);
    s.gt.push_back({id, 0, 0, 0, 10, 10});
    s.dets.push_back({id, 0, 0, 0, widths[j], 10, 0.5f});
  }
  // Areas on the range boundaries: 32x32 and 96x96 GT found exactly; an unmatched 32x32
  // detection and a 96x96 one (counted in both neighbouring ranges).
  int64_t id = image(30);
  s.gt.push_back({id, 1, 0, 0, 32, 32});
  s.gt.push_back({id, 1, 100, 100, 196, 196});
  s.dets.push_back({id, 1, 0, 0, 32, 32, 0.8f});
  s.dets.push_back({id, 1, 100, 100, 196, 196, 0.6f});
  s.dets.push_back({id, 1, 300, 300, 332, 332, 0.7f});
  s.dets.push_back({id, 1, 400, 400, 496, 496, 0.65f});
  // Crowd: a detection inside (IoU 1 by the crowd rule), one straddling its edge (IoU 0.25),
  // one covering both the crowd and a regular GT.
  id = image(40);
  s.gt.push_back({id, 1, 0, 0, 100, 100, true});
  s.gt.push_back({id, 1, 200, 200, 250, 250});
  s.dets.push_back({id, 1, 10, 10, 20, 20, 0.9f});
  s.dets.push_back({id, 1, 95, 95, 105, 105, 0.85f});
  s.dets.push_back({id, 1, 90, 90, 250, 250, 0.75f});
  s.dets.push_back({id, 1, 200, 200, 250, 250, 0.7f});
  // IoU tie between two GT (0.6 each): the later GT takes the first detection, so the
  // second detection (exactly on that GT) finds only IoU 1/3 with the other: a false positive.
  id = image(50);
  s.gt.push_back({id, 0, 0, 0, 10, 10});
  s.gt.push_back({id, 0, 5, 0, 15, 10});
  s.dets.push_back({id, 0, 2.5f, 0, 12.5f, 10, 0.9f});
  s.dets.push_back({id, 0, 5, 0, 15, 10, 0.8f});
  // An image listed with nothing in it, and a class-2 detection with no class-2 GT anywhere.
  image(60);
  s.dets.push_back({image(70), 2, 0, 0, 10, 10, 0.99f});
  return s;
}

// ---------------------------------------------------------------- running pycocotools

using test::TempDir;

json box_json(float x1, float y1, float x2, float y2) {
  const auto b = coco_xywh(x1, y1, x2, y2);
  return json::array({b[0], b[1], b[2], b[3]});
}

// COCO GT (images, annotations with ids from 1, categories = class + 1) and a results list.
void write_coco(const Scenario& s, const std::string& gt_path, const std::string& dt_path) {
  json images = json::array(), anns = json::array(), cats = json::array(), dets = json::array();
  for (int64_t id : s.image_ids) images.push_back({{"id", id}, {"width", 640}, {"height", 640}});
  for (size_t i = 0; i < s.gt.size(); ++i) {
    const GroundTruth& g = s.gt[i];
    const auto b = coco_xywh(g.x1, g.y1, g.x2, g.y2);
    anns.push_back({{"id", i + 1},
                    {"image_id", g.image_id},
                    {"category_id", g.cls + 1},
                    {"bbox", box_json(g.x1, g.y1, g.x2, g.y2)},
                    {"area", b[2] * b[3]},
                    {"iscrowd", g.crowd ? 1 : 0}});
  }
  for (int k = 0; k < s.num_classes; ++k)
    cats.push_back({{"id", k + 1}, {"name", "class" + std::to_string(k)}});
  for (const Detection& d : s.dets)
    dets.push_back({{"image_id", d.image_id},
                    {"category_id", d.cls + 1},
                    {"bbox", box_json(d.x1, d.y1, d.x2, d.y2)},
                    {"score", static_cast<double>(d.score)}});
  std::ofstream(gt_path) << json{{"images", images}, {"annotations", anns}, {"categories", cats}};
  std::ofstream(dt_path) << dets;
}

class PycocotoolsAgreement : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(VT_PYTHON))
      GTEST_SKIP() << "no Python at " << VT_PYTHON << " (scripts/test.sh creates it with pycocotools)";
    if (std::system(
            ("'" + std::string(VT_PYTHON) + "' -c 'import pycocotools.cocoeval' 2>/dev/null").c_str()) != 0)
      GTEST_SKIP() << VT_PYTHON << " cannot import pycocotools (pip install -r tests/requirements.txt)";
  }

  // Runs the reference on `s` and returns its JSON output.
  json reference(const Scenario& s) {
    const std::string gt_path = dir_.path() + "/gt.json", dt_path = dir_.path() + "/dt.json";
    write_coco(s, gt_path, dt_path);
    const std::string cmd = "'" + std::string(VT_PYTHON) +
                            "' '" VT_SOURCE_DIR "/tests/trainer/coco_map_ref.py' '" + gt_path + "' '" +
                            dt_path + "' --max-dets " + std::to_string(s.max_dets);
    FILE* p = popen(cmd.c_str(), "r");
    VT_CHECK(p != nullptr, "popen failed: ", cmd);
    std::string out;
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
    const int rc = pclose(p);
    VT_CHECK(rc == 0, "reference failed (status ", rc, "): ", cmd);
    return json::parse(out);
  }

  // Evaluates `s` both ways and compares everything; returns our result for further checks.
  MapResult expect_agreement(const Scenario& s) {
    const MapResult r = evaluate_coco(s.gt, s.dets, s.num_classes, s.image_ids, s.max_dets);
    const json ref = reference(s);
    EXPECT_EQ(ref["iou_thrs"].get<std::vector<double>>(), coco_iou_thresholds());
    EXPECT_EQ(ref["rec_thrs"].get<std::vector<double>>(), coco_recall_thresholds());
    const char* names[12] = {"AP",  "AP50", "AP75",   "AP_small", "AP_medium", "AP_large",
                             "AR1", "AR10", "AR_max", "AR_small", "AR_medium", "AR_large"};
    for (int i = 0; i < 12; ++i) EXPECT_NEAR(r.stats()[i], ref["stats"][i].get<double>(), kTol) << names[i];
    for (int k = 0; k < s.num_classes; ++k) {
      const json& c = ref["per_category"][std::to_string(k + 1)];
      EXPECT_NEAR(r.ap_per_class[k], c["ap"].get<double>(), kTol) << "AP of class " << k;
      EXPECT_NEAR(r.ap50_per_class[k], c["ap50"].get<double>(), kTol) << "AP50 of class " << k;
    }
    return r;
  }

  TempDir dir_;
};

// The scenario is not degenerate: the numbers compared are neither all 0 nor all 1.
void expect_informative(const MapResult& r) {
  EXPECT_GT(r.map, 0.05);
  EXPECT_LT(r.map, 0.95);
  EXPECT_GT(r.map50, r.map);
}

// The largest number of detections in one (image, class).
size_t most_dets_in_one_image_class(const Scenario& s) {
  std::map<std::pair<int64_t, int>, size_t> n;
  size_t most = 0;
  for (const Detection& d : s.dets) most = std::max(most, ++n[{d.image_id, d.cls}]);
  return most;
}

ScenarioShape shape(int images, int classes) {
  ScenarioShape sh;
  sh.images = images;
  sh.classes = classes;
  return sh;
}

TEST_F(PycocotoolsAgreement, MixedScenario) {
  const Scenario s = random_scenario(1, shape(80, 7));
  const MapResult r = expect_agreement(s);
  expect_informative(r);
  EXPECT_EQ(r.ap_per_class[5], -1);  // no GT, no detections
  EXPECT_EQ(r.ap_per_class[6], -1);  // no GT, detections only
}

TEST_F(PycocotoolsAgreement, TiedScoresAndDuplicates) {
  ScenarioShape sh = shape(40, 5);
  sh.score_levels = 6;
  expect_informative(expect_agreement(random_scenario(2, sh)));
}

TEST_F(PycocotoolsAgreement, CrowdedImagesBeyondMaxDets) {
  ScenarioShape sh = shape(12, 4);
  sh.max_gt = 30;
  sh.crowded_every = 2;
  const Scenario s = random_scenario(3, sh);
  ASSERT_GT(most_dets_in_one_image_class(s), 100u);
  expect_informative(expect_agreement(s));
}

TEST_F(PycocotoolsAgreement, CrowdedImagesWithMaxDets300) {
  ScenarioShape sh = shape(12, 4);
  sh.max_gt = 30;
  sh.crowded_every = 2;
  sh.max_dets = 300;
  const Scenario s = random_scenario(4, sh);
  ASSERT_GT(most_dets_in_one_image_class(s), 100u);
  expect_informative(expect_agreement(s));
}

TEST_F(PycocotoolsAgreement, ManyCrowdRegionsAndEmptyImages) {
  ScenarioShape sh = shape(50, 4);
  sh.max_gt = 5;
  sh.empty_image = 0.4;
  sh.crowd = 0.3;
  expect_informative(expect_agreement(random_scenario(5, sh)));
}

TEST_F(PycocotoolsAgreement, SeedSweep) {
  for (int seed = 10; seed < 16; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    ScenarioShape sh = shape(10 + 3 * seed, 3 + seed % 4);
    sh.score_levels = seed % 2 ? 4 : 0;
    expect_agreement(random_scenario(seed, sh));
  }
}

TEST_F(PycocotoolsAgreement, EdgesOfTheRules) {
  expect_agreement(edge_scenario());
}

}  // namespace
}  // namespace vt
