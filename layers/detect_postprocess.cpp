// Detect post-processing: contract checks and backend dispatch (see detect_postprocess.h).
#include "layers/detect_postprocess.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "layers/op.h"

namespace vt {
namespace {

constexpr const char* kDecodeOp = "detect_decode";
constexpr const char* kNmsOp = "detect_nms";

// CUDA keeps each image's suppressed-box bitmask in shared memory (8 bytes per 64 boxes,
// 48 KiB) and each candidate's index in 31 bits of its sort key.
constexpr int64_t kMaxNmsCandidates = 48 * 1024 * 8;
constexpr int64_t kMaxCandidateIndex = (int64_t(1) << 31) - 1;

struct LevelDims {
  int64_t batch = 0, nc = 0, anchors = 0;
};

LevelDims check_levels(const char* op, const std::vector<Tensor>& outputs) {
  VT_CHECK(!outputs.empty(), op, ": no level outputs");
  const Tensor& first = outputs[0];
  LevelDims d;
  for (size_t l = 0; l < outputs.size(); ++l) {
    const std::string name = cat("outputs[", l, "]");
    const Arg a{name.c_str(), outputs[l]};
    check_types(op, {{"outputs[0]", first}, a}, {});
    check_nhwc(op, a);
    const Tensor& t = outputs[l];
    op_check(t.dim(3) > 4 * kDecodeBins, op,
             cat(name, " must have 4 * ", kDecodeBins, " box channels and at least one class channel"), {a});
    op_check(t.dim(0) == first.dim(0) && t.dim(3) == first.dim(3), op,
             "levels must share the batch size and the channel count", {{"outputs[0]", first}, a});
    op_check(t.dim(0) >= 1 && t.dim(1) >= 1 && t.dim(2) >= 1, op, cat(name, " is empty"), {a});
    d.anchors += t.dim(1) * t.dim(2);
  }
  d.batch = first.dim(0);
  d.nc = first.dim(3) - 4 * kDecodeBins;
  return d;
}

// boxes (B, A, 4) f32 and scores (B, A, nc) f32 on one device.
void check_decoded(const char* op, const Tensor& boxes, const Tensor& scores) {
  const std::initializer_list<Arg> both = {{"boxes", boxes}, {"scores", scores}};
  op_check(boxes.dtype() == DType::kF32 && scores.dtype() == DType::kF32, op, "boxes and scores must be f32",
           both);
  op_check(boxes.device() == scores.device(), op, "boxes and scores on different devices", both);
  op_check(boxes.rank() == 3 && boxes.dim(2) == 4, op, "boxes must have shape (B, A, 4)", both);
  op_check(scores.rank() == 3 && scores.dim(0) == boxes.dim(0) && scores.dim(1) == boxes.dim(1) &&
               scores.dim(2) >= 1,
           op, "scores must have shape (B, A, nc) with nc >= 1", both);
  op_check((boxes.raw() != nullptr || boxes.numel() == 0) && (scores.raw() != nullptr || scores.numel() == 0),
           op, "boxes or scores have no storage", both);
}

void check_params(const NmsParams& p, int64_t anchors, int64_t nc) {
  VT_CHECK(p.conf >= 0 && p.conf <= 1, kNmsOp, ": conf ", p.conf, " is outside [0, 1]");
  VT_CHECK(p.iou >= 0 && p.iou <= 1, kNmsOp, ": iou ", p.iou, " is outside [0, 1]");
  VT_CHECK(p.max_det >= 1, kNmsOp, ": max_det ", p.max_det, " must be >= 1");
  VT_CHECK(p.max_nms >= 1 && p.max_nms <= kMaxNmsCandidates, kNmsOp, ": max_nms ", p.max_nms,
           " must be in [1, ", kMaxNmsCandidates, "]");
  VT_CHECK(anchors * nc <= kMaxCandidateIndex, kNmsOp, ": ", anchors, " anchors x ", nc,
           " classes exceed the ", kMaxCandidateIndex, " candidates an image may have");
}

}  // namespace

int64_t detect_num_anchors(const std::vector<Tensor>& outputs) {
  return check_levels("detect_num_anchors", outputs).anchors;
}

void detect_decode(const std::vector<Tensor>& outputs, const std::vector<int>& strides, const Tensor& boxes,
                   const Tensor& scores, Stream s) {
  const LevelDims d = check_levels(kDecodeOp, outputs);
  VT_CHECK(strides.size() == outputs.size(), kDecodeOp, ": ", outputs.size(), " levels but ", strides.size(),
           " strides");
  for (size_t l = 0; l < strides.size(); ++l)
    VT_CHECK(strides[l] > 0, kDecodeOp, ": strides[", l, "] = ", strides[l], " must be positive");
  check_shape(kDecodeOp, {"boxes", boxes}, {d.batch, d.anchors, 4});
  check_shape(kDecodeOp, {"scores", scores}, {d.batch, d.anchors, d.nc});
  check_decoded(kDecodeOp, boxes, scores);
  op_check(boxes.device() == outputs[0].device(), kDecodeOp, "outputs and boxes on different devices",
           {{"outputs[0]", outputs[0]}, {"boxes", boxes}});
  if (boxes.is_cuda())
    VT_CUDA_CALL(kDecodeOp, cuda::detect_decode(outputs, strides, boxes, scores, s));
  else
    cpu::detect_decode(outputs, strides, boxes, scores);
}

size_t detect_nms_workspace_bytes(int64_t batch, int64_t anchors, int64_t nc, const NmsParams& p,
                                  Device dev) {
  VT_CHECK(batch >= 0 && anchors >= 0 && nc >= 1, "detect_nms_workspace_bytes: bad sizes batch ", batch,
           ", anchors ", anchors, ", nc ", nc);
  check_params(p, anchors, nc);
  if (dev == Device::kCPU) return 0;
#ifdef VT_WITH_CUDA
  return cuda::detect_nms_workspace_bytes(batch, anchors, nc, p);
#else
  VT_CHECK(false, "detect_nms_workspace_bytes: this build has no CUDA support");
#endif
}

std::vector<std::vector<DetectedBox>> detect_nms(const Tensor& boxes, const Tensor& scores,
                                                 const NmsParams& p, const std::vector<ImageMap>& maps,
                                                 const Tensor& workspace, Stream s) {
  check_decoded(kNmsOp, boxes, scores);
  const int64_t batch = boxes.dim(0), anchors = boxes.dim(1), nc = scores.dim(2);
  check_params(p, anchors, nc);
  VT_CHECK(static_cast<int64_t>(maps.size()) == batch, kNmsOp, ": ", maps.size(),
           " image maps for a batch of ", batch);
  for (size_t i = 0; i < maps.size(); ++i) {
    const ImageMap& m = maps[i];
    VT_CHECK(std::isfinite(m.scale) && m.scale > 0 && std::isfinite(m.pad_x) && std::isfinite(m.pad_y) &&
                 m.width > 0 && m.height > 0,
             kNmsOp, ": maps[", i, "] = {scale ", m.scale, ", pad ", m.pad_x, ", ", m.pad_y, ", size ",
             m.width, "x", m.height, "} is not a valid mapping");
  }
  if (!boxes.is_cuda()) return cpu::detect_nms(boxes, scores, p, maps);
#ifdef VT_WITH_CUDA
  const size_t need = cuda::detect_nms_workspace_bytes(batch, anchors, nc, p);
  op_check(workspace.is_cuda() && workspace.nbytes() >= need && (workspace.raw() != nullptr || need == 0),
           kNmsOp, cat("workspace must be a CUDA tensor of at least ", need, " bytes"),
           {{"boxes", boxes}, {"workspace", workspace}});
  return cuda::detect_nms(boxes, scores, p, maps, workspace, s);
#else
  VT_CHECK(false, kNmsOp, ": this build has no CUDA support");
#endif
}

DetectedBox map_detection(float x1, float y1, float x2, float y2, float score, int cls, const ImageMap& m) {
  const float w = static_cast<float>(m.width), h = static_cast<float>(m.height);
  auto clip = [](float v, float hi) { return std::min(std::max(v, 0.f), hi); };
  return {clip((x1 - m.pad_x) / m.scale, w),
          clip((y1 - m.pad_y) / m.scale, h),
          clip((x2 - m.pad_x) / m.scale, w),
          clip((y2 - m.pad_y) / m.scale, h),
          score,
          cls};
}

}  // namespace vt
