// Export of a detector as an ONNX model (opset 17) that computes what the native inference
// path computes: the network, then the Detect decode of layers/detect_postprocess.h, and
// optionally class-aware NonMaxSuppression. The ModelProto is built with the classes that
// Debian's libonnx-dev generates from onnx.proto (onnx_proto + libprotobuf).
//
// Interface of the exported graph (S = the image size it was exported for; B = 1, or the
// symbolic "batch" with dynamic_batch):
//   input   images            (B, 3, S, S) float32, RGB in [0, 1]: the letterboxed u8 image
//                             divided by 255 (the native path's image_to_activation), NCHW
//   output  boxes             (B, A, 4) float32, (x1, y1, x2, y2) in pixels of the S x S input
//   output  scores            (B, A, nc) float32, sigmoid class scores
//   output  selected_indices  (K, 3) int64, with_nms only: ONNX NonMaxSuppression's rows
//                             (image b, class c, anchor a); detection = boxes[b, a],
//                             scores[b, a, c], class c
// A = sum over levels of (S / stride)^2, anchors level-major then row-major (y, x), exactly
// the native decode's order. One intermediate value has a stable name, for verification
// (export --verify adds it as an output): "detect.raw" (B, 4 reg_max + nc, A), the head's
// raw outputs before the decode (box-bin logits, then class logits), anchors in that order.
//
// Graph (NCHW throughout): Conv (OIHW weights, groups, pads), BatchNormalization (inference,
// epsilon kModelBatchNorm.eps; kept as its own node, see docs/DESIGN.md), SiLU as
// Sigmoid + Mul, MaxPool (SPPF: 5x5, stride 1, pads 2), Resize (nearest, asymmetric, floor:
// y[i] = x[floor(i / 2)], our upsample), Concat and Split on channels, Add. Detect's decode:
// per level Reshape (B, 64 + nc, H W), Concat -> "detect.raw" (B, 64 + nc, A), Split 64 | nc; boxes:
// Reshape (B, 4, 16, A), Transpose -> (B, 16, 4, A), Softmax over the bins, the DFL conv
// (weights 0..15: the expectation), anchor points (x + 0.5, y + 0.5) minus (left, top) and
// plus (right, bottom), times the level's stride, Transpose -> (B, A, 4); scores: Sigmoid,
// Transpose -> (B, A, nc). Initializers carry Ultralytics' parameter names.
//
// with_nms reproduces detect_nms with multi_label off and agnostic off: each anchor keeps
// only its best class (ArgMax, lowest class on ties; other classes' scores set to 0, which
// never passes score > conf), then NonMaxSuppression per (image, class) keeps scores > conf
// and suppresses IoU > iou, at most max_det per class. The boxes are fed as (x1, y1, x2,
// y2) with center_point_box 0: ONNX reads them as (y1, x1, y2, x2), and IoU is the same
// under that swap. To get detect's list per image, take the rows of image b, sort them by
// descending score, ties by lower anchor, and keep the first max_det (docs/serving.md).
#pragma once

#include <map>
#include <string>

#include "layers/detect_postprocess.h"
#include "layers/model.h"
#include "layers/model_graph.h"

namespace vt::ckpt {

constexpr int kOnnxOpset = 17;

struct OnnxExportOptions {
  bool dynamic_batch = false;                   // batch dimension "batch" instead of 1
  bool with_nms = false;                        // add NonMaxSuppression and the selected_indices output
  NmsParams nms;                                // conf (>= 0), iou (in [0, 1]) and max_det of the NMS node
  std::map<std::string, std::string> metadata;  // the model's metadata_props
};

// The serialized ModelProto for `graph` (any batch; its image size is the export's) with the
// weights `values` (Model::state() layout). Throws vt::Error naming `source` and the tensor
// for missing or non-finite weights (torch_state.h), and for invalid NMS settings.
std::string onnx_model_bytes(const ModelGraph& graph, const NamedValues& values, const std::string& source,
                             const OnnxExportOptions& options);

// Writes onnx_model_bytes() to `path` atomically; errors name the file.
void export_onnx(const std::string& path, const ModelGraph& graph, const NamedValues& values,
                 const std::string& source, const OnnxExportOptions& options);

}  // namespace vt::ckpt
