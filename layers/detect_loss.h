// The YOLOv8 detection loss: Ultralytics' v8DetectionLoss (utils/loss.py) with its
// task-aligned assigner (utils/tal.py), on the CPU and in CUDA, forward and gradient in one
// call.
//
// Shapes and types (B images, M target rows per image, L levels, S = imgsz):
//   preds[l]:  (B, H_l, W_l, C), H_l = W_l = S / stride_l, C = 4 reg_max + nc. The raw
//              Detect outputs: channels [0, 4 reg_max) are the box-distribution logits
//              ordered (side, bin), side in (left, top, right, bottom); channels
//              [4 reg_max, C) the class logits. Activation type: f32/f64 on the CPU,
//              f32/bf16 on CUDA, one type for all levels.
//   dpreds[l]: like preds[l]; d(total) / d(preds[l]) is ACCUMULATED (+=) into it.
//   targets:   (B, M, 5) f32 on the preds' device, rows (cls, x1, y1, x2, y2) in input
//              pixels. A row is a ground truth (GT) when cls >= 0 and x1 + y1 + x2 + y2 > 0
//              (the second is Ultralytics' mask_gt); other rows are padding, anywhere.
//              GT classes must be in [0, nc) (truncated to integers); the CPU throws on
//              one that is not, CUDA (which cannot look without a host sync) treats it as
//              padding. M may be 0.
//   loss:      (4) param_dtype(act) (f32; f64 in the CPU f64 mode), on the preds' device,
//              OVERWRITTEN with (total, box, cls, dfl): the components as Ultralytics
//              reports them (after their gains, before the * B) and
//              total = box B + cls B + dfl B, the value whose gradient is accumulated.
//   workspace: scratch of at least detect_loss_workspace_bytes() bytes on the preds'
//              device, any storage type (only its byte size is checked), 8-byte aligned;
//              planned once. The CPU holds the dense (M, A) tables of one image, about
//              M A (2 sizeof(act) + 1) + B A (4 + sizeof(act)) bytes; CUDA about
//              4 (13 B A + (topk + 3) B M) bytes.
//
// The computation, per image (all of it is Ultralytics 8.x to the letter; numbers in [] are
// the config fields below):
//   Anchors: level-major, then row-major (y, x); anchor a of level l has the point
//     (x + 0.5, y + 0.5) in grid units and stride s_a = stride_l. A = sum_l H_l W_l.
//   Decode: per side, p = softmax over the reg_max bins, distance = sum_i p_i i; the
//     predicted box (grid units) = (ax - l, ay - t, ax + r, ay + b).
//   Assignment (TAL, no gradient), with pixel boxes pd = box * s_a, anchor points
//     (ax s_a, ay s_a), and sigmoid scores sc:
//     in(j, a)    = min(ax s - x1, ay s - y1, x2 - ax s, y2 - ay s) > [eps] and GT j valid
//     ov(j, a)    = in ? max(CIoU(gt_j, pd_a), 0) : 0          (CIoU eps 1e-7)
//     align(j, a) = in ? sc[a, cls_j]^[alpha] * ov^[beta] : 0
//     topk(j)     = the [topk] anchors of largest align(j, .) over all A anchors, ties
//                   (zeros included) to the lower anchor index, as torch.topk on CUDA
//                   picks them;
//     pos(j, a)   = a in topk(j) and in(j, a);
//     an anchor positive for several GTs keeps only j* = argmax_j ov(j, a) over all M
//                   rows (the first on ties; Ultralytics' select_highest_overlaps, which
//                   may pick a row the anchor was not positive for);
//     fg(a)       = the anchor has a GT g(a) left;
//     score(a)    = align(g, a) * max_{a' of g} ov(g, a') / (max_{a' of g} align(g, a') + [eps])
//                   for fg anchors (the maxima over the anchors assigned to g), 0 otherwise;
//     target t[a, c] = score(a) [c == cls_g]; tss = max(sum over the batch of t, 1).
//   cls = [cls_gain] sum_{b, a, c} BCEWithLogits(x[a, 4 reg_max + c], t[a, c]) / tss
//   box = [box_gain] sum_{fg a} (1 - CIoU(box_a, gt_g / s_a)) score(a) / tss
//   dfl = [dfl_gain] sum_{fg a} score(a) / 4 sum_sides DFL(side logits, d) / tss, with
//     d = bbox2dist of gt_g / s_a from the anchor point, clamped to [0, reg_max - 1 - 0.01],
//     DFL(x, d) = CE(x, floor d) (floor d + 1 - d) + CE(x, floor d + 1) (1 - (floor d + 1 - d)).
//   The gradient flows through the class logits (sigmoid(x) - t) and through the box logits
//   via the CIoU (alpha of CIoU held constant, as Ultralytics computes it under no_grad)
//   and the DFL; t, score and tss are constants (the assigner is detached).
//   tss is the sum over this call's batch: in data-parallel training each rank normalises
//   by its own, as Ultralytics under DDP does, and the gradient all-reduce averages.
//
// Version notes. Matched: the assigner and loss of Ultralytics 8.1-8.3 (YOLOv8/YOLO11
//   training). DFL's target clamp reads reg_max - 0.01 with reg_max - 1 passed in (8.0
//   bbox2dist) or reg_max - 1 - 0.01 (later DFLoss): both are 14.99 for 16 bins. Not
//   matched: 8.0.x's early assigner, which fed CIoU over all anchors (not only the
//   candidates) into the multi-GT argmax; and the later assigner released with YOLO26,
//   which widens GTs narrower than stride_0 to stride_1 before the candidate test and adds
//   a second top-k.
//
// Determinism: both backends are bit-reproducible run to run. The CPU evaluates the
// assignment densely, like Ultralytics (an (M, A) table per image), and sums in double;
// CUDA works per GT and per anchor, with a block-wide deterministic top-k per GT, integer
// atomics only for counting, and fixed-order reductions (reduce_sum) in fp32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "layers/tensor.h"

namespace vt {

struct DetectLossConfig {
  int nc = 80;
  int reg_max = 16;  // bins per side, 2..32
  std::vector<int> strides = {8, 16, 32};
  int imgsz = 640;  // S: a multiple of every stride
  double box_gain = 7.5, cls_gain = 0.5, dfl_gain = 1.5;
  int topk = 10;                   // 1..32, at most the number of anchors
  double alpha = 0.5, beta = 6.0;  // align = score^alpha * CIoU^beta
  double eps = 1e-9;               // TAL's eps (candidate margin, normalisation)
};

// Every size the backends need, from a checked config (plain data, passed to kernels by value).
struct DetectLossDims {
  static constexpr int kMaxLevels = 8;
  static constexpr int kMaxBins = 32;
  static constexpr int kMaxTopk = 32;
  int64_t batch = 0, max_boxes = 0, anchors = 0;  // B, M, A
  int levels = 0;
  int64_t level_begin[kMaxLevels + 1] = {};  // first anchor of each level; [levels] = A
  int64_t level_w[kMaxLevels] = {};          // grid width (= height) of each level
  int level_stride[kMaxLevels] = {};
  int nc = 0, reg_max = 0, channels = 0, topk = 0;
  double box_gain = 0, cls_gain = 0, dfl_gain = 0, alpha = 0, beta = 0, eps = 0;
};
// Throws (naming detect_loss) when the config is out of range.
DetectLossDims detect_loss_dims(const DetectLossConfig& cfg, int64_t batch, int64_t max_boxes);

// The contract checks of detect_loss and its CPU halves, naming `op` and the shapes;
// returns the dims. dpreds and loss may be null (not part of that call).
DetectLossDims check_detect_loss_args(const char* op, const DetectLossConfig& cfg,
                                      const std::vector<Tensor>& preds, const Tensor& targets,
                                      const std::vector<Tensor>* dpreds, const Tensor* loss);

// Bytes of scratch for B images of M target rows, with activations of type `act` on `dev`.
size_t detect_loss_workspace_bytes(const DetectLossConfig& cfg, int64_t batch, int64_t max_boxes, DType act,
                                   Device dev);

// loss = (total, box, cls, dfl); dpreds[l] += d total / d preds[l].
void detect_loss(const DetectLossConfig& cfg, const std::vector<Tensor>& preds, const Tensor& targets,
                 const std::vector<Tensor>& dpreds, const Tensor& loss, const Tensor& workspace,
                 Stream s = {});

namespace cpu {
void detect_loss(const DetectLossDims& d, const std::vector<Tensor>& preds, const Tensor& targets,
                 const std::vector<Tensor>& dpreds, const Tensor& loss, const Tensor& workspace);
size_t detect_loss_workspace_bytes(const DetectLossDims& d, DType act);

// The two halves of the loss on their own, for tests and diagnostics (CPU tensors, checked
// like detect_loss; they allocate their own scratch). The assignment: gt[b A + a] is the
// targets row assigned to anchor a of image b, or -1; score[b A + a] its target score.
struct DetectAssignment {
  std::vector<int32_t> gt;
  std::vector<double> score;
};
DetectAssignment detect_assign(const DetectLossConfig& cfg, const std::vector<Tensor>& preds,
                               const Tensor& targets);
// The loss and gradient of detect_loss for a given assignment, held fixed (the gradient
// treats it as constant anyway, as it does CIoU's alpha).
void detect_loss_assigned(const DetectLossConfig& cfg, const std::vector<Tensor>& preds,
                          const Tensor& targets, const DetectAssignment& assignment,
                          const std::vector<Tensor>& dpreds, const Tensor& loss);
}  // namespace cpu
namespace cuda {
void detect_loss(const DetectLossDims& d, const std::vector<Tensor>& preds, const Tensor& targets,
                 const std::vector<Tensor>& dpreds, const Tensor& loss, const Tensor& workspace, Stream s);
size_t detect_loss_workspace_bytes(const DetectLossDims& d);
}  // namespace cuda

// Hands out 256-byte aligned arrays from one scratch buffer; with a null base it only
// counts the bytes (the backends size and carve their workspace with the same code).
class ScratchCarver {
 public:
  explicit ScratchCarver(void* base) : base_(static_cast<char*>(base)) {}
  template <class U>
  U* take(int64_t n) {
    offset_ = (offset_ + 255) / 256 * 256;
    U* p = base_ ? reinterpret_cast<U*>(base_ + offset_) : nullptr;
    offset_ += static_cast<size_t>(n) * sizeof(U);
    return p;
  }
  size_t bytes() const { return offset_; }

 private:
  char* base_;
  size_t offset_ = 0;
};

}  // namespace vt
