// Detect post-processing, CUDA against the CPU: decode within a tolerance (f32 and bf16
// storage, awkward level sizes, batch 1 and 3), and NMS returning exactly the CPU's
// detections on the same boxes and scores, from small random scenes up to a full YOLOv8
// 640 x 640 output with 80 classes in validation mode (672,000 candidates per image).
// Skipped without a device.
#include <random>
#include <vector>

#include "layers/detect_postprocess.h"
#include "tests/layers/detect_postprocess_ref.h"
#include "tests/test_util.h"

namespace vt {
namespace {

Tensor nms_workspace(const Tensor& scores, const NmsParams& p) {
  const size_t bytes =
      detect_nms_workspace_bytes(scores.dim(0), scores.dim(1), scores.dim(2), p, Device::kCUDA);
  return Tensor::empty({static_cast<int64_t>((bytes + 3) / 4)}, DType::kF32, Device::kCUDA);
}

struct Decoded {
  Tensor boxes, scores;
};

Decoded decode_on(const std::vector<Tensor>& outputs, const std::vector<int>& strides, Device dev) {
  const int64_t b = outputs[0].dim(0), a = detect_num_anchors(outputs),
                nc = outputs[0].dim(3) - 4 * kDecodeBins;
  Decoded d{Tensor::empty({b, a, 4}, DType::kF32, dev), Tensor::empty({b, a, nc}, DType::kF32, dev)};
  detect_decode(outputs, strides, d.boxes, d.scores);
  synchronize();
  return d;
}

// Random raw head outputs for `levels` (h, w) pairs, logits in [lo, hi).
std::vector<Tensor> random_outputs(int64_t batch, const std::vector<std::pair<int64_t, int64_t>>& levels,
                                   int64_t nc, uint64_t seed, double lo, double hi) {
  std::vector<Tensor> out;
  for (const auto& [h, w] : levels)
    out.push_back(test::random_tensor({batch, h, w, 4 * kDecodeBins + nc}, DType::kF32, seed++, lo, hi));
  return out;
}

void expect_same_detections(const std::vector<std::vector<DetectedBox>>& got,
                            const std::vector<std::vector<DetectedBox>>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t b = 0; b < got.size(); ++b) {
    ASSERT_EQ(got[b].size(), want[b].size()) << "image " << b;
    for (size_t k = 0; k < got[b].size(); ++k) {
      const DetectedBox& g = got[b][k];
      const DetectedBox& w = want[b][k];
      EXPECT_TRUE(g.x1 == w.x1 && g.y1 == w.y1 && g.x2 == w.x2 && g.y2 == w.y2 && g.score == w.score &&
                  g.cls == w.cls)
          << "image " << b << " detection " << k << ": gpu (" << g.x1 << ", " << g.y1 << ", " << g.x2 << ", "
          << g.y2 << ", " << g.score << ", " << g.cls << ") cpu (" << w.x1 << ", " << w.y1 << ", " << w.x2
          << ", " << w.y2 << ", " << w.score << ", " << w.cls << ")";
    }
  }
}

std::vector<std::vector<DetectedBox>> gpu_nms(const Tensor& boxes, const Tensor& scores, const NmsParams& p,
                                              const std::vector<ImageMap>& maps) {
  const Tensor ws = nms_workspace(scores, p);
  const Tensor bg = boxes.to(Device::kCUDA), sg = scores.to(Device::kCUDA);
  const int64_t allocations = allocation_count();
  auto r = detect_nms(bg, sg, p, maps, ws);
  EXPECT_EQ(allocation_count(), allocations) << "detect_nms allocated device memory";
  return r;
}

TEST(DetectPostprocessGpu, DecodeMatchesCpu) {
  VT_REQUIRE_GPU();
  const std::vector<std::pair<int64_t, int64_t>> levels = {{13, 17}, {7, 9}, {4, 5}};
  for (DType dt : {DType::kF32, DType::kBF16})
    for (int64_t batch : {1, 3}) {
      SCOPED_TRACE(testing::Message() << dtype_name(dt) << " batch " << batch);
      std::vector<Tensor> cpu_out = random_outputs(batch, levels, 7, 11, -6, 6), gpu_out;
      for (Tensor& t : cpu_out) {
        // The CPU decodes exactly the values the GPU reads (bf16-rounded in bf16 runs).
        if (dt == DType::kBF16) t = test::round_to_bf16(t);
        gpu_out.push_back(t.to(Device::kCUDA, dt));
      }
      const Decoded want = decode_on(cpu_out, {8, 16, 32}, Device::kCPU);
      const Decoded got = decode_on(gpu_out, {8, 16, 32}, Device::kCUDA);
      // Both sides compute in fp32 from the same inputs and differ only in exp (a few ulp):
      // a distance (<= 15 bins) moves by ~1e-6 bins, i.e. <1e-4 px at stride 32, against
      // boxes of up to ~1000 px. A wrong bin, anchor or stride moves a box by >= 1 px.
      test::expect_close(got.boxes, want.boxes, 1e-3, 1e-5, "boxes");
      test::expect_close(got.scores, want.scores, 1e-6, 1e-5, "scores");
    }
}

TEST(DetectPostprocessGpu, NmsMatchesCpuOnRandomScenes) {
  VT_REQUIRE_GPU();
  std::mt19937 rng(3);
  for (int scene = 0; scene < 12; ++scene) {
    const test::RandomScene rs = test::random_scene(rng, scene % 2 ? 3 : 1, 157 + scene, 5);
    for (int variant = 0; variant < 8; ++variant) {
      NmsParams p;
      p.conf = variant % 2 ? 0.3f : 0.02f;
      p.iou = variant % 4 < 2 ? 0.45f : 0.7f;
      p.multi_label = variant >= 4;
      p.agnostic = scene % 3 == 0;
      p.max_det = scene % 2 ? 300 : 9;
      p.max_nms = scene % 4 == 1 ? 70 : 30000;  // 70: a cut inside the candidates, not at a 64 boundary
      SCOPED_TRACE(testing::Message() << "scene " << scene << " variant " << variant);
      expect_same_detections(gpu_nms(rs.boxes, rs.scores, p, rs.maps),
                             detect_nms(rs.boxes, rs.scores, p, rs.maps, Tensor{}));
    }
  }
}

// Decoded random outputs of three levels and seven classes, batch 3.
TEST(DetectPostprocessGpu, NmsMatchesCpuOnDecodedOutputs) {
  VT_REQUIRE_GPU();
  const std::vector<Tensor> out = random_outputs(3, {{13, 17}, {7, 9}, {4, 5}}, 7, 21, -5, 5);
  const Decoded d = decode_on(out, {8, 16, 32}, Device::kCPU);
  const std::vector<ImageMap> maps = {{1, 0, 0, 136, 104}, {0.8f, 3, 5, 160, 120}, {1.25f, 0, 12, 100, 70}};
  for (bool multi_label : {false, true})
    for (float iou : {0.3f, 0.7f}) {
      NmsParams p;
      p.conf = 0.05f;
      p.iou = iou;
      p.multi_label = multi_label;
      SCOPED_TRACE(testing::Message() << "multi_label " << multi_label << " iou " << iou);
      expect_same_detections(gpu_nms(d.boxes, d.scores, p, maps),
                             detect_nms(d.boxes, d.scores, p, maps, Tensor{}));
    }
}

// YOLOv8 at 640 with 80 classes, validated as Ultralytics does (conf .001, multi_label):
// nearly all 672,000 (anchor, class) pairs are candidates, the sort spans 2^20 keys, and
// max_nms cuts them to 30,000.
TEST(DetectPostprocessGpu, NmsMatchesCpuAtFullScale) {
  VT_REQUIRE_GPU();
  const std::vector<Tensor> out = random_outputs(2, {{80, 80}, {40, 40}, {20, 20}}, 80, 31, -4, 4);
  const Decoded d = decode_on(out, {8, 16, 32}, Device::kCPU);
  const std::vector<ImageMap> maps(2, ImageMap{1, 0, 0, 640, 640});
  NmsParams p;
  p.conf = 0.001f;
  p.iou = 0.7f;
  p.multi_label = true;
  expect_same_detections(gpu_nms(d.boxes, d.scores, p, maps),
                         detect_nms(d.boxes, d.scores, p, maps, Tensor{}));
  p.multi_label = false;
  p.conf = 0.25f;
  expect_same_detections(gpu_nms(d.boxes, d.scores, p, maps),
                         detect_nms(d.boxes, d.scores, p, maps, Tensor{}));
}

TEST(DetectPostprocessGpu, SmallWorkspaceIsRefused) {
  VT_REQUIRE_GPU();
  const Tensor boxes = Tensor::empty({1, 10, 4}, DType::kF32, Device::kCUDA);
  const Tensor scores = Tensor::empty({1, 10, 3}, DType::kF32, Device::kCUDA);
  const Tensor small = Tensor::empty({4}, DType::kF32, Device::kCUDA);
  test::expect_error(
      [&] {
        detect_nms(boxes, scores, {}, {ImageMap{1, 0, 0, 8, 8}}, small);
      },
      {"detect_nms", "workspace must be a CUDA tensor of at least"});
}

}  // namespace
}  // namespace vt
