// Inference post-processing of the Detect head: decode (DFL expectation + sigmoid), then
// class-aware non-maximum suppression with Ultralytics' non_max_suppression semantics.
//
// decode
//   outputs[l]: (B, H_l, W_l, 4 * kDecodeBins + nc)  activation type (f32/f64 on the CPU,
//               f32/bf16 on CUDA), the raw Detect outputs of level l (model.h): channels
//               [side * 16 + bin] for side in (left, top, right, bottom), then nc class logits.
//   strides[l]: the level's stride in input pixels (8, 16, 32 for YOLOv8).
//   boxes:  (B, A, 4)  f32, OVERWRITTEN, xyxy in input pixels.  A = sum_l H_l W_l, anchors
//           level-major, then row-major (y, x).
//   scores: (B, A, nc) f32, OVERWRITTEN, sigmoid of the class logits.
// Anchor a of level l at grid cell (y, x) has the point (x + 0.5, y + 0.5) in grid units;
// each side's distance is the expectation of the softmax over the 16 bins (sum p_i * i), and
// box = (x + 0.5 - left, y + 0.5 - top, x + 0.5 + right, y + 0.5 + bottom) * stride.
//
// nms (per image, on decoded boxes and scores of either device)
//   1. Candidates, enumerated in (anchor, class) order: with multi_label (and nc > 1) every
//      (anchor, class) whose score > conf; otherwise each anchor's best class (lowest class
//      index on ties) when its score > conf.
//   2. Sorted by descending score, ties by the lower candidate index, and cut to the first
//      max_nms (Ultralytics keeps the max_nms best before NMS).
//   3. Greedy NMS in that order: a candidate is kept unless a kept one of the same class
//      (any class when agnostic) overlaps it with IoU > iou. IoU = inter / (area_a + area_b -
//      inter), no +1. Stops at max_det kept. Ultralytics separates classes by offsetting the
//      boxes by cls * 7680; comparing class ids is the same rule without the rounding the
//      offset brings.
//   4. Each kept box is mapped through its image's ImageMap, (v - pad) / scale, and clipped
//      to [0, width] x [0, height] (Ultralytics' scale_boxes), in descending score order.
// The CUDA path returns exactly the CPU path's detections (same boxes, scores, classes and
// order) for the same boxes and scores: both compute IoU with the same operations in the
// same order, and the final mapping runs on the host for both.
//
// Workspace: CUDA scratch of at least detect_nms_workspace_bytes() bytes on the boxes'
// device, planned once (a tensor of any storage type; only its byte size is checked). The
// CPU needs none (pass Tensor{}). The CUDA path synchronises `s` once, to return the
// detections to the host.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "layers/tensor.h"

namespace vt {

// DFL bins per box side (Ultralytics' reg_max).
constexpr int kDecodeBins = 16;

// One detection, in the pixels of the image its ImageMap describes.
struct DetectedBox {
  float x1, y1, x2, y2;
  float score;
  int cls;
};

struct NmsParams {
  float conf = 0.25f;        // keep scores > conf (Ultralytics predicts with 0.25, validates with 0.001)
  float iou = 0.7f;          // suppress IoU > iou
  int max_det = 300;         // detections per image
  int max_nms = 30000;       // candidates per image that enter NMS
  bool multi_label = false;  // one candidate per (anchor, class) above conf (validation)
  bool agnostic = false;     // classes suppress each other
};

// How an image's boxes leave the network input: original = (input - pad) / scale, clipped to
// [0, width] x [0, height]. For boxes in input pixels: {1, 0, 0, input_w, input_h}. A
// letterbox that mapped original -> original * scale + pad gives its own scale and pads.
struct ImageMap {
  float scale = 1, pad_x = 0, pad_y = 0;
  int width = 0, height = 0;
};

// A = sum_l H_l W_l of the level outputs; throws when they do not fit the contract.
int64_t detect_num_anchors(const std::vector<Tensor>& outputs);

void detect_decode(const std::vector<Tensor>& outputs, const std::vector<int>& strides, const Tensor& boxes,
                   const Tensor& scores, Stream s = {});

size_t detect_nms_workspace_bytes(int64_t batch, int64_t anchors, int64_t nc, const NmsParams& p, Device dev);

// boxes (B, A, 4) f32, scores (B, A, nc) f32, maps: B entries. Returns B lists.
std::vector<std::vector<DetectedBox>> detect_nms(const Tensor& boxes, const Tensor& scores,
                                                 const NmsParams& p, const std::vector<ImageMap>& maps,
                                                 const Tensor& workspace, Stream s = {});

// Step 4 for one box in input pixels (shared by both backends).
DetectedBox map_detection(float x1, float y1, float x2, float y2, float score, int cls, const ImageMap& m);

namespace cpu {
void detect_decode(const std::vector<Tensor>& outputs, const std::vector<int>& strides, const Tensor& boxes,
                   const Tensor& scores);
std::vector<std::vector<DetectedBox>> detect_nms(const Tensor& boxes, const Tensor& scores,
                                                 const NmsParams& p, const std::vector<ImageMap>& maps);
}  // namespace cpu
namespace cuda {
size_t detect_nms_workspace_bytes(int64_t batch, int64_t anchors, int64_t nc, const NmsParams& p);
void detect_decode(const std::vector<Tensor>& outputs, const std::vector<int>& strides, const Tensor& boxes,
                   const Tensor& scores, Stream s);
std::vector<std::vector<DetectedBox>> detect_nms(const Tensor& boxes, const Tensor& scores,
                                                 const NmsParams& p, const std::vector<ImageMap>& maps,
                                                 const Tensor& workspace, Stream s);
}  // namespace cuda

}  // namespace vt
