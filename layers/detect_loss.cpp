// Detection loss: config and argument checks, workspace sizing, backend dispatch (see
// detect_loss.h).
#include "layers/detect_loss.h"

#include <cstdint>
#include <string>

#include "layers/op.h"

namespace vt {

namespace {

std::string strides_text(const std::vector<int>& strides) {
  std::string s = "(";
  for (size_t i = 0; i < strides.size(); ++i) s += (i ? ", " : "") + std::to_string(strides[i]);
  return s + ")";
}

}  // namespace

DetectLossDims detect_loss_dims(const DetectLossConfig& cfg, int64_t batch, int64_t max_boxes) {
  using D = DetectLossDims;
  const char* op = "detect_loss";
  VT_CHECK(cfg.nc >= 1, op, ": nc ", cfg.nc, " must be >= 1");
  VT_CHECK(cfg.reg_max >= 2 && cfg.reg_max <= D::kMaxBins, op, ": reg_max ", cfg.reg_max, " must be in [2, ",
           D::kMaxBins, "]");
  const int levels = static_cast<int>(cfg.strides.size());
  VT_CHECK(levels >= 1 && levels <= D::kMaxLevels, op, ": ", levels, " strides ", strides_text(cfg.strides),
           "; 1 to ", D::kMaxLevels, " levels are supported");
  VT_CHECK(cfg.topk >= 1 && cfg.topk <= D::kMaxTopk, op, ": topk ", cfg.topk, " must be in [1, ", D::kMaxTopk,
           "]");
  VT_CHECK(batch >= 1, op, ": batch ", batch, " must be >= 1");
  VT_CHECK(max_boxes >= 0, op, ": max boxes ", max_boxes, " must be >= 0");
  VT_CHECK(cfg.alpha >= 0 && cfg.beta >= 0 && cfg.eps >= 0, op, ": alpha ", cfg.alpha, ", beta ", cfg.beta,
           " and eps ", cfg.eps, " must be >= 0");
  D d;
  d.batch = batch;
  d.max_boxes = max_boxes;
  d.levels = levels;
  for (int l = 0; l < levels; ++l) {
    const int s = cfg.strides[l];
    VT_CHECK(s >= 1 && cfg.imgsz >= s && cfg.imgsz % s == 0, op, ": imgsz ", cfg.imgsz,
             " is not a positive multiple of stride ", s, " (strides ", strides_text(cfg.strides), ")");
    d.level_stride[l] = s;
    d.level_w[l] = cfg.imgsz / s;
    d.level_begin[l + 1] = d.level_begin[l] + d.level_w[l] * d.level_w[l];
  }
  d.anchors = d.level_begin[levels];
  VT_CHECK(d.anchors >= cfg.topk, op, ": topk ", cfg.topk, " exceeds the ", d.anchors, " anchors of imgsz ",
           cfg.imgsz);
  d.nc = cfg.nc;
  d.reg_max = cfg.reg_max;
  d.channels = 4 * cfg.reg_max + cfg.nc;
  d.topk = cfg.topk;
  d.box_gain = cfg.box_gain;
  d.cls_gain = cfg.cls_gain;
  d.dfl_gain = cfg.dfl_gain;
  d.alpha = cfg.alpha;
  d.beta = cfg.beta;
  d.eps = cfg.eps;
  return d;
}

DetectLossDims check_detect_loss_args(const char* op, const DetectLossConfig& cfg,
                                      const std::vector<Tensor>& preds, const Tensor& targets,
                                      const std::vector<Tensor>* dpreds, const Tensor* loss) {
  VT_CHECK(!preds.empty(), op, ": no prediction levels");
  VT_CHECK(preds.size() == cfg.strides.size(), op, ": ", preds.size(), " prediction levels for ",
           cfg.strides.size(), " strides ", strides_text(cfg.strides));
  VT_CHECK(!dpreds || dpreds->size() == preds.size(), op, ": ", dpreds->size(), " gradient levels for ",
           preds.size(), " prediction levels");
  for (size_t l = 0; l < preds.size(); ++l) {
    const std::string name = "preds[" + std::to_string(l) + "]";
    check_types(op, {{name.c_str(), preds[l]}, {"preds[0]", preds[0]}}, {});
    check_nhwc(op, {name.c_str(), preds[l]});
  }
  const DetectLossDims d = detect_loss_dims(cfg, preds[0].dim(0), targets.rank() == 3 ? targets.dim(1) : 0);
  for (int l = 0; l < d.levels; ++l) {
    const std::string name = "preds[" + std::to_string(l) + "]";
    const Tensor& p = preds[l];
    op_check(p.dim(3) == d.channels, op,
             cat(name, " has ", p.dim(3), " channels, expected 4 reg_max + nc = 4 * ", d.reg_max, " + ", d.nc,
                 " = ", d.channels),
             {{name.c_str(), p}});
    check_shape(op, {name.c_str(), p}, Shape{d.batch, d.level_w[l], d.level_w[l], d.channels});
    if (dpreds) {
      const std::string gname = "dpreds[" + std::to_string(l) + "]";
      check_types(op, {{name.c_str(), p}, {gname.c_str(), (*dpreds)[l]}}, {});
      check_shape(op, {gname.c_str(), (*dpreds)[l]}, p.shape());
    }
  }
  op_check(targets.rank() == 3 && targets.dim(0) == d.batch && targets.dim(2) == 5, op,
           cat("targets must have shape (B, M, 5) with B = ", d.batch, " rows (cls, x1, y1, x2, y2)"),
           {{"targets", targets}, {"preds[0]", preds[0]}});
  op_check(targets.dtype() == DType::kF32 && targets.device() == preds[0].device(), op,
           cat("targets must be f32 on ", device_name(preds[0].device())), {{"targets", targets}});
  op_check(targets.raw() != nullptr || targets.numel() == 0, op, "targets has no storage",
           {{"targets", targets}});
  if (loss) {
    check_types(op, {{"preds[0]", preds[0]}}, {{"loss", *loss}});
    check_shape(op, {"loss", *loss}, Shape{4});
    op_check(loss->raw() != nullptr, op, "loss has no storage", {{"loss", *loss}});
  }
  return d;
}

size_t detect_loss_workspace_bytes(const DetectLossConfig& cfg, int64_t batch, int64_t max_boxes, DType act,
                                   Device dev) {
  const DetectLossDims d = detect_loss_dims(cfg, batch, max_boxes);
  if (dev == Device::kCPU) return cpu::detect_loss_workspace_bytes(d, act);
  size_t bytes = 0;
  VT_CUDA_CALL("detect_loss_workspace_bytes", bytes = cuda::detect_loss_workspace_bytes(d));
  return bytes;
}

void detect_loss(const DetectLossConfig& cfg, const std::vector<Tensor>& preds, const Tensor& targets,
                 const std::vector<Tensor>& dpreds, const Tensor& loss, const Tensor& workspace, Stream s) {
  const char* op = "detect_loss";
  const DetectLossDims d = check_detect_loss_args(op, cfg, preds, targets, &dpreds, &loss);
  const Tensor& p0 = preds[0];
  const size_t need = p0.is_cuda()
                          ? detect_loss_workspace_bytes(cfg, d.batch, d.max_boxes, p0.dtype(), p0.device())
                          : cpu::detect_loss_workspace_bytes(d, p0.dtype());
  op_check(workspace.raw() != nullptr && workspace.device() == p0.device() && workspace.nbytes() >= need &&
               reinterpret_cast<uintptr_t>(workspace.raw()) % 8 == 0,
           op,
           cat("workspace must be at least ", need, " bytes on ", device_name(p0.device()),
               ", 8-byte aligned (detect_loss_workspace_bytes), got ", workspace.nbytes()),
           {{"preds[0]", p0}, {"workspace", workspace}});
  if (p0.is_cuda())
    VT_CUDA_CALL(op, cuda::detect_loss(d, preds, targets, dpreds, loss, workspace, s));
  else
    cpu::detect_loss(d, preds, targets, dpreds, loss, workspace);
}

}  // namespace vt
