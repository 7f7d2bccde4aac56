// Detect post-processing on the CPU: plain loops, the reference for the CUDA path.
//
// NMS must pick exactly the boxes the CUDA path picks, so IoU is computed without
// floating-point contraction: an FMA (which GCC forms for C++ by default on FMA hardware,
// e.g. aarch64) rounds differently from the separate multiply and add the kernel does.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "layers/detect_postprocess.h"
#include "layers/op.h"

namespace vt::cpu {
namespace {

template <class T>
T sigmoid(T x) {
  // Split by sign so that exp never overflows.
  if (x >= 0) return T(1) / (T(1) + std::exp(-x));
  const T e = std::exp(x);
  return e / (T(1) + e);
}

// Expectation of the softmax over one side's bins: sum_i i * softmax(logits)_i.
template <class T>
T dfl_distance(const T* logits) {
  T m = logits[0];
  for (int i = 1; i < kDecodeBins; ++i) m = std::max(m, logits[i]);
  T sum = 0, weighted = 0;
  for (int i = 0; i < kDecodeBins; ++i) {
    const T e = std::exp(logits[i] - m);
    sum += e;
    weighted += e * T(i);
  }
  return weighted / sum;
}

// IoU with the operations, and their order, that the CUDA mask kernel uses.
float box_iou(const float* a, const float* b) {
  const float iw = std::fmax(std::fmin(a[2], b[2]) - std::fmax(a[0], b[0]), 0.f);
  const float ih = std::fmax(std::fmin(a[3], b[3]) - std::fmax(a[1], b[1]), 0.f);
  const float inter = iw * ih;
  const float area_a = (a[2] - a[0]) * (a[3] - a[1]);
  const float area_b = (b[2] - b[0]) * (b[3] - b[1]);
  return inter / ((area_a + area_b) - inter);
}

struct Candidate {
  float score;
  int64_t index;  // position in the (anchor, class) enumeration, the tie-break
  int64_t anchor;
  int cls;
};

}  // namespace

void detect_decode(const std::vector<Tensor>& outputs, const std::vector<int>& strides, const Tensor& boxes,
                   const Tensor& scores) {
  dispatch_cpu("detect_decode", outputs[0].dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t batch = boxes.dim(0), anchors = boxes.dim(1), nc = scores.dim(2);
    const int64_t channels = 4 * kDecodeBins + nc;
    float* bp = boxes.data<float>();
    float* sp = scores.data<float>();
    int64_t first = 0;  // the level's first anchor
    for (size_t l = 0; l < outputs.size(); ++l) {
      const Tensor& o = outputs[l];
      const int64_t h = o.dim(1), w = o.dim(2);
      const T stride = T(strides[l]);
      const T* op = o.data<T>();
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t y = 0; y < h; ++y)
          for (int64_t x = 0; x < w; ++x) {
            const T* cell = op + ((b * h + y) * w + x) * channels;
            const int64_t a = first + y * w + x;
            const T ax = T(x) + T(0.5), ay = T(y) + T(0.5);
            const T left = dfl_distance(cell), top = dfl_distance(cell + kDecodeBins);
            const T right = dfl_distance(cell + 2 * kDecodeBins),
                    bottom = dfl_distance(cell + 3 * kDecodeBins);
            float* box = bp + (b * anchors + a) * 4;
            box[0] = static_cast<float>((ax - left) * stride);
            box[1] = static_cast<float>((ay - top) * stride);
            box[2] = static_cast<float>((ax + right) * stride);
            box[3] = static_cast<float>((ay + bottom) * stride);
            float* sc = sp + (b * anchors + a) * nc;
            for (int64_t c = 0; c < nc; ++c) sc[c] = static_cast<float>(sigmoid(cell[4 * kDecodeBins + c]));
          }
      first += h * w;
    }
  });
}

std::vector<std::vector<DetectedBox>> detect_nms(const Tensor& boxes, const Tensor& scores,
                                                 const NmsParams& p, const std::vector<ImageMap>& maps) {
  const int64_t batch = boxes.dim(0), anchors = boxes.dim(1), nc = scores.dim(2);
  const bool multi_label = p.multi_label && nc > 1;
  std::vector<std::vector<DetectedBox>> result(batch);
  std::vector<Candidate> cands;
  std::vector<char> suppressed;
  for (int64_t b = 0; b < batch; ++b) {
    const float* bx = boxes.data<float>() + b * anchors * 4;
    const float* sc = scores.data<float>() + b * anchors * nc;

    // 1. Candidates in (anchor, class) order.
    cands.clear();
    for (int64_t a = 0; a < anchors; ++a) {
      const float* s = sc + a * nc;
      if (multi_label) {
        for (int64_t c = 0; c < nc; ++c)
          if (s[c] > p.conf) cands.push_back({s[c], a * nc + c, a, static_cast<int>(c)});
      } else {
        int64_t best = 0;
        for (int64_t c = 1; c < nc; ++c)
          if (s[c] > s[best]) best = c;
        if (s[best] > p.conf) cands.push_back({s[best], a, a, static_cast<int>(best)});
      }
    }

    // 2. Best first, ties by enumeration order; at most max_nms enter NMS.
    std::sort(cands.begin(), cands.end(), [](const Candidate& x, const Candidate& y) {
      return x.score != y.score ? x.score > y.score : x.index < y.index;
    });
    const size_t m = std::min(cands.size(), static_cast<size_t>(p.max_nms));

    // 3. Greedy suppression, within a class unless agnostic.
    suppressed.assign(m, 0);
    for (size_t i = 0; i < m && static_cast<int>(result[b].size()) < p.max_det; ++i) {
      if (suppressed[i]) continue;
      const Candidate& k = cands[i];
      const float* kb = bx + k.anchor * 4;
      result[b].push_back(map_detection(kb[0], kb[1], kb[2], kb[3], k.score, k.cls, maps[b]));
      for (size_t j = i + 1; j < m; ++j) {
        if (suppressed[j] || (!p.agnostic && cands[j].cls != k.cls)) continue;
        if (box_iou(kb, bx + cands[j].anchor * 4) > p.iou) suppressed[j] = 1;
      }
    }
  }
  return result;
}

}  // namespace vt::cpu
