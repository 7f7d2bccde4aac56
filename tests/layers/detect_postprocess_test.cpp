// Detect post-processing on the CPU: decode by hand (one-hot DFL bins give exact distances),
// NMS rules one at a time by hand, the whole NMS against an independent brute-force
// reference on random data, and bad arguments. GPU parity is in detect_postprocess_gpu_test.
#include "layers/detect_postprocess.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "layers/check.h"
#include "tests/layers/detect_postprocess_ref.h"
#include "tests/test_util.h"

namespace vt {
namespace {

using test::from_values;
using test::values;

// Logits of one side whose softmax puts all its mass on `bin`: exp(-200) is 0 in f32 and
// 1e-87 in f64, so the expectation is `bin` to the last bit in f32, within 1e-84 in f64.
void one_hot_side(std::vector<double>& cell, int side, int bin) {
  for (int i = 0; i < kDecodeBins; ++i) cell[side * kDecodeBins + i] = i == bin ? 0.0 : -200.0;
}

struct Decoded {
  Tensor boxes, scores;
};

Decoded decode(const std::vector<Tensor>& outputs, const std::vector<int>& strides) {
  const int64_t b = outputs[0].dim(0), a = detect_num_anchors(outputs),
                nc = outputs[0].dim(3) - 4 * kDecodeBins;
  Decoded d{Tensor::empty({b, a, 4}, DType::kF32, Device::kCPU),
            Tensor::empty({b, a, nc}, DType::kF32, Device::kCPU)};
  detect_decode(outputs, strides, d.boxes, d.scores);
  return d;
}

// ------------------------------------------------------------------------------ decode

// One level, 1 x 2 x 3 cells, stride 8, nc 2. Cell (y, x) gets the distances
// (left, top, right, bottom) = (x + 1, y + 2, 3, 2 x + y) bins and class logits (0, ln 3).
TEST(DetectDecode, OneHotBinsGiveExactBoxes) {
  for (DType dt : {DType::kF32, DType::kF64}) {
    SCOPED_TRACE(dtype_name(dt));
    const int h = 2, w = 3, nc = 2, c = 4 * kDecodeBins + nc;
    std::vector<double> v(h * w * c);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        std::vector<double> cell(c);
        one_hot_side(cell, 0, x + 1);
        one_hot_side(cell, 1, y + 2);
        one_hot_side(cell, 2, 3);
        one_hot_side(cell, 3, 2 * x + y);
        cell[4 * kDecodeBins] = 0.0;
        cell[4 * kDecodeBins + 1] = std::log(3.0);
        std::copy(cell.begin(), cell.end(), v.begin() + (y * w + x) * c);
      }
    const Decoded d = decode({from_values({1, h, w, c}, v, dt)}, {8});
    // Box = (x + .5 - l, y + .5 - t, x + .5 + r, y + .5 + b) * 8, e.g. cell (0, 0):
    // (0.5 - 1, 0.5 - 2, 0.5 + 3, 0.5 + 0) * 8 = (-4, -12, 28, 4).
    std::vector<double> want;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const double ax = x + 0.5, ay = y + 0.5;
        for (double q : {ax - (x + 1), ay - (y + 2), ax + 3, ay + (2 * x + y)}) want.push_back(q * 8);
      }
    EXPECT_EQ(values(d.boxes), want);
    EXPECT_EQ(want[0], -4);
    EXPECT_EQ(want[3], 4);
    // sigmoid(0) = 1/2, sigmoid(ln 3) = 3 / (3 + 1).
    std::vector<double> want_scores;
    for (int i = 0; i < h * w; ++i) want_scores.insert(want_scores.end(), {0.5, 0.75});
    test::expect_close(d.scores, from_values({1, h * w, nc}, want_scores), 2e-7, 0, "scores");
  }
}

// Two bins of equal weight average: bins 2 and 5 -> 3.5; a uniform softmax -> 7.5.
TEST(DetectDecode, DistanceIsTheSoftmaxExpectation) {
  const int c = 4 * kDecodeBins + 1;
  std::vector<double> cell(c, 0.0);  // side 0: uniform over 0..15
  one_hot_side(cell, 1, 0);
  one_hot_side(cell, 2, 0);
  one_hot_side(cell, 3, 0);
  cell[kDecodeBins + 2] = cell[kDecodeBins + 5] = 0.0;  // side 1: bins 2 and 5
  cell[kDecodeBins + 0] = -200.0;
  const Decoded d = decode({from_values({1, 1, 1, c}, cell)}, {16});
  // (0.5 - 7.5, 0.5 - 3.5, 0.5 + 0, 0.5 + 0) * 16
  test::expect_close(d.boxes, from_values({1, 1, 4}, {-112, -48, 8, 8}), 1e-4, 1e-6, "boxes");
}

// Anchors are level-major, then row-major; each level uses its own stride; images do not mix.
TEST(DetectDecode, AnchorOrderAcrossLevelsAndImages) {
  const int c = 4 * kDecodeBins + 1;
  // Level 0: 2 x 2 at stride 8, level 1: 1 x 1 at stride 32; all distances bin 1, and the
  // class logit encodes (image, level, cell) so the scores show where each anchor came from.
  auto level = [&](int h, int w, int lvl) {
    std::vector<double> v;
    for (int b = 0; b < 2; ++b)
      for (int i = 0; i < h * w; ++i) {
        std::vector<double> cell(c);
        for (int s = 0; s < 4; ++s) one_hot_side(cell, s, 1);
        cell[4 * kDecodeBins] = -(b * 10 + lvl * 5 + i) * 0.1;
        v.insert(v.end(), cell.begin(), cell.end());
      }
    return from_values({2, h, w, c}, v);
  };
  const Decoded d = decode({level(2, 2, 0), level(1, 1, 1)}, {8, 32});
  ASSERT_EQ(d.boxes.shape(), Shape({2, 5, 4}));
  const std::vector<double> bx = values(d.boxes), sc = values(d.scores);
  // Anchor 2 of image 1 is level 0 cell (y 1, x 0): (0.5 - 1, 1.5 - 1, 0.5 + 1, 1.5 + 1) * 8.
  EXPECT_EQ(std::vector<double>(bx.begin() + 28, bx.begin() + 32), (std::vector<double>{-4, 4, 12, 20}));
  // Anchor 4 is level 1's only cell: (-0.5, -0.5, 1.5, 1.5) * 32.
  EXPECT_EQ(std::vector<double>(bx.begin() + 16, bx.begin() + 20), (std::vector<double>{-16, -16, 48, 48}));
  for (int b = 0; b < 2; ++b)
    for (int a = 0; a < 5; ++a) {
      const int code = b * 10 + (a < 4 ? a : 5);
      EXPECT_NEAR(sc[b * 5 + a], 1 / (1 + std::exp(code * 0.1)), 1e-7) << "image " << b << " anchor " << a;
    }
}

// ------------------------------------------------------------------------ NMS by hand

// Per anchor a box and the scores of its classes; one image.
struct Scene {
  std::vector<std::vector<double>> boxes;
  std::vector<std::vector<double>> scores;
  std::vector<std::vector<DetectedBox>> run(const NmsParams& p, ImageMap m = {1, 0, 0, 100, 100}) const {
    std::vector<double> bv, sv;
    for (const auto& b : boxes) bv.insert(bv.end(), b.begin(), b.end());
    for (const auto& s : scores) sv.insert(sv.end(), s.begin(), s.end());
    const int64_t a = static_cast<int64_t>(boxes.size()), nc = static_cast<int64_t>(scores[0].size());
    return detect_nms(from_values({1, a, 4}, bv), from_values({1, a, nc}, sv), p, {m}, Tensor{});
  }
};

// (x1, y1, x2, y2, score, cls) of an image's detections.
std::vector<std::vector<double>> rows(const std::vector<DetectedBox>& dets) {
  std::vector<std::vector<double>> r;
  for (const DetectedBox& d : dets) r.push_back({d.x1, d.y1, d.x2, d.y2, d.score, double(d.cls)});
  return r;
}

NmsParams params(float conf, float iou) {
  NmsParams p;
  p.conf = conf;
  p.iou = iou;
  return p;
}

// A (0,0,10,10) c0 .9; B (1,0,11,10) c0 .8: IoU 90/110 = .82; C = A's box, c1 .7;
// D (0,5,10,15) c0 .6: IoU(A, D) = 50/150 = .33.
const Scene kOverlaps{{{0, 0, 10, 10}, {1, 0, 11, 10}, {0, 0, 10, 10}, {0, 5, 10, 15}},
                      {{0.9, 0.1}, {0.8, 0.2}, {0.1, 0.7}, {0.6, 0.0}}};

TEST(DetectNms, SameClassOverlapsAreSuppressedOtherClassesKept) {
  const auto r = kOverlaps.run(params(0.25f, 0.7f));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(rows(r[0]), (std::vector<std::vector<double>>{
                            {0, 0, 10, 10, 0.9f, 0}, {0, 0, 10, 10, 0.7f, 1}, {0, 5, 10, 15, 0.6f, 0}}));
  // At iou .3, D goes too (.33 > .3); C stays, being of another class.
  EXPECT_EQ(rows(kOverlaps.run(params(0.25f, 0.3f))[0]),
            (std::vector<std::vector<double>>{{0, 0, 10, 10, 0.9f, 0}, {0, 0, 10, 10, 0.7f, 1}}));
}

TEST(DetectNms, AgnosticSuppressesAcrossClasses) {
  NmsParams p = params(0.25f, 0.7f);
  p.agnostic = true;
  EXPECT_EQ(rows(kOverlaps.run(p)[0]),
            (std::vector<std::vector<double>>{{0, 0, 10, 10, 0.9f, 0}, {0, 5, 10, 15, 0.6f, 0}}));
}

TEST(DetectNms, IouEqualToTheThresholdIsKept) {
  // (0,0,10,10) and (0,0,10,5): inter 50, union 100, IoU exactly .5 in float.
  const Scene s{{{0, 0, 10, 10}, {0, 0, 10, 5}}, {{0.9}, {0.8}}};
  EXPECT_EQ(s.run(params(0.25f, 0.5f))[0].size(), 2u);
  EXPECT_EQ(s.run(params(0.25f, 0.49f))[0].size(), 1u);
}

TEST(DetectNms, ConfidenceMustExceedTheThreshold) {
  const Scene s{{{0, 0, 10, 10}, {20, 20, 30, 30}, {40, 40, 50, 50}}, {{0.5}, {0.5000001}, {0.2}}};
  const auto r = s.run(params(0.5f, 0.7f));
  ASSERT_EQ(r[0].size(), 1u);
  EXPECT_EQ(r[0][0].x1, 20);
}

TEST(DetectNms, MaxDetKeepsTheBest) {
  Scene s;
  for (int i = 0; i < 6; ++i) {
    s.boxes.push_back({i * 15.0, 0, i * 15.0 + 10, 10});
    s.scores.push_back({0.3 + 0.1 * ((i * 5) % 6)});  // scores .3 .8 .7 .6 .5 .4
  }
  NmsParams p = params(0.25f, 0.7f);
  p.max_det = 3;
  const auto r = s.run(p);
  ASSERT_EQ(r[0].size(), 3u);
  EXPECT_EQ(r[0][0].x1, 15);
  EXPECT_EQ(r[0][1].x1, 30);
  EXPECT_EQ(r[0][2].x1, 45);
}

TEST(DetectNms, MaxNmsCutsCandidatesBeforeSuppression) {
  // Three disjoint boxes; only the two best enter NMS.
  const Scene s{{{0, 0, 10, 10}, {20, 20, 30, 30}, {40, 40, 50, 50}}, {{0.7}, {0.9}, {0.8}}};
  NmsParams p = params(0.25f, 0.7f);
  p.max_nms = 2;
  EXPECT_EQ(rows(s.run(p)[0]),
            (std::vector<std::vector<double>>{{20, 20, 30, 30, 0.9f, 0}, {40, 40, 50, 50, 0.8f, 0}}));
}

TEST(DetectNms, MultiLabelGivesEveryClassAboveConf) {
  const Scene s{{{0, 0, 10, 10}}, {{0.9, 0.6, 0.1}}};
  NmsParams p = params(0.5f, 0.7f);
  EXPECT_EQ(rows(s.run(p)[0]), (std::vector<std::vector<double>>{{0, 0, 10, 10, 0.9f, 0}}));
  p.multi_label = true;
  EXPECT_EQ(rows(s.run(p)[0]),
            (std::vector<std::vector<double>>{{0, 0, 10, 10, 0.9f, 0}, {0, 0, 10, 10, 0.6f, 1}}));
  p.agnostic = true;  // the same box twice: agnostic keeps one label
  EXPECT_EQ(rows(s.run(p)[0]), (std::vector<std::vector<double>>{{0, 0, 10, 10, 0.9f, 0}}));
}

TEST(DetectNms, EqualScoresKeepTheLowerIndexFirst) {
  // Anchors 0 and 1 score .6 (classes 1 and 0) and overlap with IoU 50/150; anchor 2's two
  // classes tie, and the lower class is its best.
  const Scene s{{{5, 0, 15, 10}, {0, 0, 10, 10}, {50, 50, 60, 60}}, {{0.4, 0.6}, {0.6, 0.1}, {0.7, 0.7}}};
  NmsParams p = params(0.25f, 0.5f);
  p.agnostic = true;
  EXPECT_EQ(rows(s.run(p)[0]),
            (std::vector<std::vector<double>>{
                {50, 50, 60, 60, 0.7f, 0}, {5, 0, 15, 10, 0.6f, 1}, {0, 0, 10, 10, 0.6f, 0}}));
  // When they suppress each other, the earlier anchor wins.
  p.iou = 0.3f;
  EXPECT_EQ(rows(s.run(p)[0]),
            (std::vector<std::vector<double>>{{50, 50, 60, 60, 0.7f, 0}, {5, 0, 15, 10, 0.6f, 1}}));
}

TEST(DetectNms, MapsThroughTheLetterboxAndClips) {
  // Letterbox scale .5, pads (10, 20), original 60 x 40: x = (v - 10) * 2, y = (v - 20) * 2.
  const Scene s{{{12, 22, 30, 50}, {0, 0, 20, 25}}, {{0.9}, {0.8}}};
  const auto r = s.run(params(0.25f, 0.7f), {0.5f, 10, 20, 60, 40});
  EXPECT_EQ(rows(r[0]), (std::vector<std::vector<double>>{{4, 4, 40, 40, 0.9f, 0}, {0, 0, 20, 10, 0.8f, 0}}));
}

TEST(DetectNms, ImagesAreIndependentAndEmptyImagesGiveEmptyLists) {
  const Tensor boxes = from_values({2, 2, 4}, {0, 0, 10, 10, 1, 1, 11, 11, 0, 0, 10, 10, 1, 1, 11, 11});
  const Tensor scores = from_values({2, 2, 1}, {0.9, 0.8, 0.1, 0.2});
  // IoU 81/119 = .68 > .5: the second box goes; image 1 has nothing above conf.
  const auto r =
      detect_nms(boxes, scores, params(0.25f, 0.5f), {{1, 0, 0, 64, 64}, {1, 0, 0, 64, 64}}, Tensor{});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].size(), 1u);
  EXPECT_TRUE(r[1].empty());
}

// ---------------------------------------------------------- random vs brute force

TEST(DetectNms, MatchesBruteForceReferenceOnRandomScenes) {
  std::mt19937 rng(7);
  for (int scene = 0; scene < 24; ++scene) {
    const test::RandomScene rs = test::random_scene(rng, 3, 150, 4);
    for (int variant = 0; variant < 8; ++variant) {
      NmsParams p;
      p.conf = variant % 2 ? 0.3f : 0.05f;
      p.iou = variant % 4 < 2 ? 0.45f : 0.7f;
      p.multi_label = variant >= 4;
      p.agnostic = scene % 3 == 0;
      p.max_det = scene % 2 ? 300 : 7;
      p.max_nms = scene % 4 == 1 ? 20 : 30000;
      SCOPED_TRACE(testing::Message() << "scene " << scene << " variant " << variant);
      const auto got = detect_nms(rs.boxes, rs.scores, p, rs.maps, Tensor{});
      const auto want = test::brute_force_nms(rs.boxes, rs.scores, p, rs.maps);
      ASSERT_EQ(got.size(), want.size());
      for (size_t b = 0; b < got.size(); ++b) EXPECT_EQ(rows(got[b]), rows(want[b])) << "image " << b;
    }
  }
}

// ----------------------------------------------------------------------- bad arguments

TEST(DetectPostprocess, BadArgumentsNameTheOpAndShapes) {
  const Tensor o = Tensor::empty({2, 4, 4, 4 * kDecodeBins + 3}, DType::kF32, Device::kCPU);
  const Tensor boxes = Tensor::empty({2, 16, 4}, DType::kF32, Device::kCPU);
  const Tensor scores = Tensor::empty({2, 16, 3}, DType::kF32, Device::kCPU);
  test::expect_error([&] { detect_decode({}, {}, boxes, scores); }, {"detect_decode", "no level outputs"});
  test::expect_error(
      [&] {
        detect_decode({o}, {8, 16}, boxes, scores);
      },
      {"detect_decode", "1 levels but 2 strides"});
  test::expect_error([&] { detect_decode({o}, {0}, boxes, scores); }, {"detect_decode", "strides[0]"});
  const Tensor few = Tensor::empty({2, 4, 4, 4 * kDecodeBins}, DType::kF32, Device::kCPU);
  test::expect_error([&] { detect_decode({few}, {8}, boxes, scores); },
                     {"detect_decode", "class channel", "(2, 4, 4, 64)"});
  const Tensor other = Tensor::empty({2, 2, 2, 4 * kDecodeBins + 5}, DType::kF32, Device::kCPU);
  test::expect_error(
      [&] {
        detect_decode({o, other}, {8, 16}, boxes, scores);
      },
      {"detect_decode", "channel count", "outputs[1]: (2, 2, 2, 69)"});
  const Tensor wrong = Tensor::empty({2, 15, 4}, DType::kF32, Device::kCPU);
  test::expect_error([&] { detect_decode({o}, {8}, wrong, scores); },
                     {"detect_decode", "boxes", "(2, 16, 4)"});
  const Tensor f64 = Tensor::empty({2, 16, 3}, DType::kF64, Device::kCPU);
  test::expect_error([&] { detect_decode({o}, {8}, boxes, f64); }, {"detect_decode", "must be f32"});

  const std::vector<ImageMap> maps(2, ImageMap{1, 0, 0, 32, 32});
  auto nms = [&](NmsParams p, const std::vector<ImageMap>& m) { detect_nms(boxes, scores, p, m, Tensor{}); };
  NmsParams p;
  p.conf = 1.5f;
  test::expect_error([&] { nms(p, maps); }, {"detect_nms", "conf 1.5"});
  p = {};
  p.iou = -0.1f;
  test::expect_error([&] { nms(p, maps); }, {"detect_nms", "iou -0.1"});
  p = {};
  p.max_det = 0;
  test::expect_error([&] { nms(p, maps); }, {"detect_nms", "max_det 0"});
  p = {};
  p.max_nms = 0;
  test::expect_error([&] { nms(p, maps); }, {"detect_nms", "max_nms 0"});
  test::expect_error([&] { nms({}, {maps[0]}); }, {"detect_nms", "1 image maps for a batch of 2"});
  test::expect_error([&] { nms({}, {maps[0], ImageMap{0, 0, 0, 32, 32}}); }, {"detect_nms", "maps[1]"});
  test::expect_error([&] { detect_nms(wrong, scores, {}, maps, Tensor{}); },
                     {"detect_nms", "scores must have shape"});
}

}  // namespace
}  // namespace vt
