// Detection loss on the CPU: plain loops templated on float/double, the oracle for the
// CUDA kernels and the CPU training path.
//
// The assignment is evaluated the way Ultralytics writes it: per image, dense (M, A) tables
// of the candidate flags, CIoU overlaps and align metrics; a top-k per GT by partial sort
// over all A anchors in the order (align descending, anchor index ascending); the multi-GT
// resolution and the normalisation as table reductions. The CUDA backend reaches the same
// assignment by another route (per-GT candidate lists), so the parity tests compare two
// independent derivations. Sums accumulate in double in index order.
#include <algorithm>
#include <numeric>

#include "layers/detect_loss.h"
#include "layers/detect_loss_box.h"
#include "layers/op.h"

namespace vt::cpu {
namespace {

using D = DetectLossDims;
namespace bm = boxmath;

constexpr uint8_t kIn = 1;        // the anchor point is inside the GT (and the GT is valid)
constexpr uint8_t kPos = 2;       // positive for the GT: in its top-k and inside it
constexpr double kIouEps = 1e-7;  // bbox_iou's default eps

// Where anchor a lives: its level, its index in the level's grid, its point in grid units.
template <class T>
struct AnchorPoint {
  int level;
  int64_t local;
  T x, y, stride;
};

template <class T>
AnchorPoint<T> anchor_point(const D& d, int64_t a) {
  int l = 0;
  while (l + 1 < d.levels && a >= d.level_begin[l + 1]) ++l;
  const int64_t local = a - d.level_begin[l];
  const int64_t w = d.level_w[l];
  return {l, local, static_cast<T>(local % w) + T(0.5), static_cast<T>(local / w) + T(0.5),
          static_cast<T>(d.level_stride[l])};
}

// The C channels of anchor a of image b in its level's tensor (B, H, W, C).
template <class T>
T* anchor_row(const std::vector<Tensor>& t, const D& d, int64_t b, const AnchorPoint<T>& ap) {
  const int64_t hw = d.level_w[ap.level] * d.level_w[ap.level];
  return t[ap.level].template data<T>() + (b * hw + ap.local) * d.channels;
}

// One targets row.
template <class T>
struct Gt {
  bool valid;
  int cls;   // truncated; 0 for padding (Ultralytics pads labels with 0; their score is 0)
  T box[4];  // pixels
};

template <class T>
Gt<T> read_gt(const D& d, const float* targets, int64_t b, int64_t j) {
  const float* r = targets + (b * d.max_boxes + j) * 5;
  Gt<T> g;
  g.valid = r[0] >= 0.f && r[1] + r[2] + r[3] + r[4] > 0.f;
  VT_CHECK(!g.valid || r[0] < static_cast<float>(d.nc), "detect_loss: targets row (", b, ", ", j,
           ") has class ", r[0], ", outside [0, nc = ", d.nc, ")");
  g.cls = g.valid ? static_cast<int>(r[0]) : 0;
  for (int k = 0; k < 4; ++k) g.box[k] = static_cast<T>(r[1 + k]);
  return g;
}

// Decodes anchor a: distances (l, t, r, b), the box in grid units, and, when p is not null,
// the four softmaxes (4, reg_max).
template <class T>
void decode(const D& d, const T* row, const AnchorPoint<T>& ap, T* dist, T* box, T* p) {
  for (int side = 0; side < 4; ++side)
    dist[side] =
        bm::softmax_expectation(row + side * d.reg_max, d.reg_max, p ? p + side * d.reg_max : nullptr);
  bm::dist_to_box(ap.x, ap.y, dist, box);
}

// The scratch arrays inside the workspace.
template <class T>
struct Scratch {
  int32_t* assigned;  // (B, A): assigned targets row, -1 for background
  T* score;           // (B, A): target score
  T* pbox;            // (A, 4): predicted boxes of the image being assigned, grid units
  T* ov;              // (M, A): CIoU overlaps, zero off the candidates
  T* align;           // (M, A): align metrics, zero off the candidates
  uint8_t* flags;     // (M, A): kIn | kPos
  int32_t* order;     // (A): anchor indices, for the partial sort
  T* pos_align;       // (M): max align over each GT's positives
  T* pos_ov;          // (M): max overlap over each GT's positives
};

template <class T>
size_t carve(const D& d, void* base, Scratch<T>* s) {
  ScratchCarver c(base);
  const int64_t ba = d.batch * d.anchors, ma = d.max_boxes * d.anchors;
  s->assigned = c.take<int32_t>(ba);
  s->score = c.take<T>(ba);
  s->pbox = c.take<T>(d.anchors * 4);
  s->ov = c.take<T>(ma);
  s->align = c.take<T>(ma);
  s->flags = c.take<uint8_t>(ma);
  s->order = c.take<int32_t>(d.anchors);
  s->pos_align = c.take<T>(d.max_boxes);
  s->pos_ov = c.take<T>(d.max_boxes);
  return c.bytes();
}

// TaskAlignedAssigner.forward for image b: fills assigned[b, :] and score[b, :].
template <class T>
void assign_image(const D& d, const std::vector<Tensor>& preds, const float* targets, int64_t b,
                  const Scratch<T>& s) {
  const int64_t A = d.anchors, M = d.max_boxes;
  const int R = d.reg_max;
  for (int64_t a = 0; a < A; ++a) {
    const AnchorPoint<T> ap = anchor_point<T>(d, a);
    T dist[4];
    decode(d, anchor_row(preds, d, b, ap), ap, dist, s.pbox + a * 4, static_cast<T*>(nullptr));
  }
  // get_box_metrics over the candidates, then select_topk_candidates.
  for (int64_t j = 0; j < M; ++j) {
    const Gt<T> g = read_gt<T>(d, targets, b, j);
    for (int64_t a = 0; a < A; ++a) {
      const int64_t i = j * A + a;
      s.flags[i] = 0;
      s.ov[i] = 0;
      s.align[i] = 0;
      if (!g.valid) continue;
      const AnchorPoint<T> ap = anchor_point<T>(d, a);
      if (!bm::point_in_box(ap.x * ap.stride, ap.y * ap.stride, g.box, static_cast<T>(d.eps))) continue;
      T pd[4];
      for (int k = 0; k < 4; ++k) pd[k] = s.pbox[a * 4 + k] * ap.stride;
      const T o = bm::m_max(bm::ciou(g.box, pd, static_cast<T>(kIouEps), static_cast<T*>(nullptr)), T(0));
      const T score = bm::sigmoid(anchor_row(preds, d, b, ap)[4 * R + g.cls]);
      s.flags[i] = kIn;
      s.ov[i] = o;
      s.align[i] = bm::m_pow(score, static_cast<T>(d.alpha)) * bm::m_pow(o, static_cast<T>(d.beta));
    }
    if (!g.valid) continue;
    const T* al = s.align + j * A;
    std::iota(s.order, s.order + A, 0);
    std::partial_sort(s.order, s.order + d.topk, s.order + A,
                      [al](int32_t x, int32_t y) { return al[x] > al[y] || (al[x] == al[y] && x < y); });
    for (int k = 0; k < d.topk; ++k) {
      uint8_t& f = s.flags[j * A + s.order[k]];
      if (f & kIn) f |= kPos;
    }
  }
  // select_highest_overlaps: an anchor positive for several GTs keeps argmax_j ov(j, a).
  int32_t* assigned = s.assigned + b * A;
  for (int64_t a = 0; a < A; ++a) {
    int count = 0;
    int64_t last = -1;
    for (int64_t j = 0; j < M; ++j)
      if (s.flags[j * A + a] & kPos) ++count, last = j;
    if (count > 1) {
      last = 0;
      for (int64_t j = 1; j < M; ++j)
        if (s.ov[j * A + a] > s.ov[last * A + a]) last = j;
    }
    assigned[a] = static_cast<int32_t>(last);
  }
  // Normalise: score = align * max_pos(ov of the GT) / (max_pos(align of the GT) + eps).
  std::fill(s.pos_align, s.pos_align + M, T(0));
  std::fill(s.pos_ov, s.pos_ov + M, T(0));
  for (int64_t a = 0; a < A; ++a) {
    const int64_t j = assigned[a];
    if (j < 0) continue;
    s.pos_align[j] = bm::m_max(s.pos_align[j], s.align[j * A + a]);
    s.pos_ov[j] = bm::m_max(s.pos_ov[j], s.ov[j * A + a]);
  }
  T* score = s.score + b * A;
  for (int64_t a = 0; a < A; ++a) {
    const int64_t j = assigned[a];
    score[a] = j < 0 ? T(0) : s.align[j * A + a] * s.pos_ov[j] / (s.pos_align[j] + static_cast<T>(d.eps));
  }
}

// The loss for a given assignment, and its gradient accumulated into dpreds.
template <class T>
void loss_given_assignment(const D& d, const std::vector<Tensor>& preds, const float* targets,
                           const int32_t* assigned, const T* score, const std::vector<Tensor>& dpreds,
                           T* loss) {
  const int64_t A = d.anchors;
  const int R = d.reg_max;
  double score_sum = 0;
  for (int64_t i = 0; i < d.batch * A; ++i) score_sum += static_cast<double>(score[i]);
  const T tss = bm::m_max(static_cast<T>(score_sum), T(1));
  const T batch = static_cast<T>(d.batch);
  // d total / d (per-term sums): B * gain / tss.
  const T g_cls = batch * static_cast<T>(d.cls_gain) / tss;
  const T g_box = batch * static_cast<T>(d.box_gain) / tss;
  const T g_dfl = batch * static_cast<T>(d.dfl_gain) / tss;
  const T dfl_hi = static_cast<T>(R - 1 - 0.01);
  const T coord_sign[4] = {-1, -1, 1, 1};  // d(x1, y1, x2, y2) / d(l, t, r, b)
  double cls_sum = 0, box_sum = 0, dfl_sum = 0;
  for (int64_t b = 0; b < d.batch; ++b) {
    for (int64_t a = 0; a < A; ++a) {
      const AnchorPoint<T> ap = anchor_point<T>(d, a);
      const T* row = anchor_row(preds, d, b, ap);
      T* drow = anchor_row(dpreds, d, b, ap);
      const int64_t j = assigned[b * A + a];
      const T sc = score[b * A + a];
      Gt<T> g{};
      if (j >= 0) g = read_gt<T>(d, targets, b, j);
      // Classification: BCE against the one-hot target score, every anchor and class.
      for (int c = 0; c < d.nc; ++c) {
        const T x = row[4 * R + c];
        const T t = (j >= 0 && c == g.cls) ? sc : T(0);
        cls_sum += static_cast<double>(bm::bce_with_logits(x, t));
        drow[4 * R + c] += g_cls * (bm::sigmoid(x) - t);
      }
      if (j < 0) continue;
      // Box: CIoU of the decoded box against the GT in grid units, through the softmax
      // expectations; DFL on the bins around the target distances.
      T dist[4], box[4], p[4 * D::kMaxBins], tb[4], dci[4], td[4];
      decode(d, row, ap, dist, box, p);
      for (int k = 0; k < 4; ++k) tb[k] = g.box[k] / ap.stride;
      const T ci = bm::ciou(box, tb, static_cast<T>(kIouEps), dci);
      box_sum += static_cast<double>((T(1) - ci) * sc);
      for (int side = 0; side < 4; ++side) {
        const T dd = -g_box * sc * dci[side] * coord_sign[side];  // d total / d distance
        for (int i = 0; i < R; ++i)
          drow[side * R + i] += dd * p[side * R + i] * (static_cast<T>(i) - dist[side]);
      }
      bm::box_to_dist(ap.x, ap.y, tb, dfl_hi, td);
      T dfl = 0;
      for (int side = 0; side < 4; ++side)
        dfl += bm::dfl_side(row + side * R, R, td[side], drow + side * R, g_dfl * sc / T(4));
      dfl_sum += static_cast<double>(dfl / T(4) * sc);
    }
  }
  const T box = static_cast<T>(box_sum) / tss * static_cast<T>(d.box_gain);
  const T cls = static_cast<T>(cls_sum) / tss * static_cast<T>(d.cls_gain);
  const T dfl = static_cast<T>(dfl_sum) / tss * static_cast<T>(d.dfl_gain);
  loss[0] = box * batch + cls * batch + dfl * batch;
  loss[1] = box;
  loss[2] = cls;
  loss[3] = dfl;
}

void require_cpu(const char* op, const std::vector<Tensor>& preds) {
  VT_CHECK(!preds[0].is_cuda(), op, ": CPU tensors only; ", preds[0].str("preds[0]"));
}

}  // namespace

size_t detect_loss_workspace_bytes(const DetectLossDims& d, DType act) {
  size_t bytes = 0;
  dispatch_cpu("detect_loss_workspace_bytes", act, [&](auto tag) {
    using T = decltype(tag);
    Scratch<T> s;
    bytes = carve<T>(d, nullptr, &s);
  });
  return bytes;
}

void detect_loss(const DetectLossDims& d, const std::vector<Tensor>& preds, const Tensor& targets,
                 const std::vector<Tensor>& dpreds, const Tensor& loss, const Tensor& workspace) {
  dispatch_cpu("detect_loss", preds[0].dtype(), [&](auto tag) {
    using T = decltype(tag);
    Scratch<T> s;
    carve<T>(d, workspace.raw(), &s);
    for (int64_t b = 0; b < d.batch; ++b) assign_image<T>(d, preds, targets.data<float>(), b, s);
    loss_given_assignment<T>(d, preds, targets.data<float>(), s.assigned, s.score, dpreds, loss.data<T>());
  });
}

DetectAssignment detect_assign(const DetectLossConfig& cfg, const std::vector<Tensor>& preds,
                               const Tensor& targets) {
  const char* op = "detect_assign";
  const DetectLossDims d = check_detect_loss_args(op, cfg, preds, targets, nullptr, nullptr);
  require_cpu(op, preds);
  DetectAssignment out;
  dispatch_cpu(op, preds[0].dtype(), [&](auto tag) {
    using T = decltype(tag);
    Scratch<T> s;
    const Tensor ws =
        Tensor::empty({static_cast<int64_t>(carve<T>(d, nullptr, &s))}, DType::kU8, Device::kCPU);
    carve<T>(d, ws.raw(), &s);
    for (int64_t b = 0; b < d.batch; ++b) assign_image<T>(d, preds, targets.data<float>(), b, s);
    const int64_t n = d.batch * d.anchors;
    out.gt.assign(s.assigned, s.assigned + n);
    out.score.assign(s.score, s.score + n);
  });
  return out;
}

void detect_loss_assigned(const DetectLossConfig& cfg, const std::vector<Tensor>& preds,
                          const Tensor& targets, const DetectAssignment& assignment,
                          const std::vector<Tensor>& dpreds, const Tensor& loss) {
  const char* op = "detect_loss_assigned";
  const DetectLossDims d = check_detect_loss_args(op, cfg, preds, targets, &dpreds, &loss);
  require_cpu(op, preds);
  const size_t n = static_cast<size_t>(d.batch * d.anchors);
  VT_CHECK(assignment.gt.size() == n && assignment.score.size() == n, op, ": the assignment holds ",
           assignment.gt.size(), " anchors and ", assignment.score.size(), " scores, expected B * A = ", n);
  for (int32_t j : assignment.gt)
    VT_CHECK(j >= -1 && j < d.max_boxes, op, ": assigned row ", j, " out of range");
  dispatch_cpu(op, preds[0].dtype(), [&](auto tag) {
    using T = decltype(tag);
    const std::vector<T> score(assignment.score.begin(), assignment.score.end());
    loss_given_assignment<T>(d, preds, targets.data<float>(), assignment.gt.data(), score.data(), dpreds,
                             loss.data<T>());
  });
}

}  // namespace vt::cpu
