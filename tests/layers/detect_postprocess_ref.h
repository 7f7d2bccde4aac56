// Test helpers for detect post-processing: random scenes with clustered, overlapping boxes
// and tied scores, and a brute-force NMS written independently of the library's (no sort:
// it repeatedly picks the best live candidate; IoU in double).
#pragma once

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "layers/detect_postprocess.h"
#include "tests/test_util.h"

namespace vt::test {

struct RandomScene {
  Tensor boxes, scores;  // (B, A, 4), (B, A, nc) f32 on the CPU
  std::vector<ImageMap> maps;
};

// Boxes gather around a few centres so that many overlap; a quarter of the scores are
// multiples of 1/8, so ties (of scores and of best classes) are common.
inline RandomScene random_scene(std::mt19937& rng, int64_t batch, int64_t anchors, int64_t nc) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> bv, sv;
  for (int64_t b = 0; b < batch; ++b) {
    double centres[6][2];
    for (auto& c : centres) c[0] = 96 * u(rng), c[1] = 96 * u(rng);
    for (int64_t a = 0; a < anchors; ++a) {
      const double* c = centres[static_cast<int>(6 * u(rng))];
      const double cx = c[0] + 12 * (u(rng) - 0.5), cy = c[1] + 12 * (u(rng) - 0.5);
      const double w = 6 + 24 * u(rng), h = 6 + 24 * u(rng);
      bv.insert(bv.end(), {cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2});
      for (int64_t k = 0; k < nc; ++k) sv.push_back(u(rng) < 0.25 ? std::floor(8 * u(rng)) / 8 : u(rng));
    }
  }
  RandomScene s{from_values({batch, anchors, 4}, bv), from_values({batch, anchors, nc}, sv), {}};
  for (int64_t b = 0; b < batch; ++b)
    s.maps.push_back({static_cast<float>(0.5 + 1.5 * u(rng)), static_cast<float>(10 * u(rng)),
                      static_cast<float>(10 * u(rng)), 60 + static_cast<int>(60 * u(rng)),
                      60 + static_cast<int>(60 * u(rng))});
  return s;
}

inline std::vector<std::vector<DetectedBox>> brute_force_nms(const Tensor& boxes, const Tensor& scores,
                                                             const NmsParams& p,
                                                             const std::vector<ImageMap>& maps) {
  struct Cand {
    float score;
    int64_t index, anchor;
    int cls;
  };
  // x before y in rank order
  auto better = [](const Cand& x, const Cand& y) {
    return x.score > y.score || (x.score == y.score && x.index < y.index);
  };
  const int64_t batch = boxes.dim(0), anchors = boxes.dim(1), nc = scores.dim(2);
  std::vector<std::vector<DetectedBox>> out(batch);
  for (int64_t b = 0; b < batch; ++b) {
    const float* bx = boxes.data<float>() + b * anchors * 4;
    const float* sc = scores.data<float>() + b * anchors * nc;
    std::vector<Cand> cands;
    for (int64_t a = 0; a < anchors; ++a) {
      const float* s = sc + a * nc;
      if (p.multi_label && nc > 1) {
        for (int64_t c = 0; c < nc; ++c)
          if (s[c] > p.conf) cands.push_back({s[c], a * nc + c, a, static_cast<int>(c)});
      } else {
        const int64_t best = std::max_element(s, s + nc) - s;  // the first maximum
        if (s[best] > p.conf) cands.push_back({s[best], a, a, static_cast<int>(best)});
      }
    }
    // A candidate enters NMS when fewer than max_nms others rank above it.
    std::vector<char> live(cands.size());
    for (size_t i = 0; i < cands.size(); ++i) {
      int64_t above = 0;
      for (const Cand& o : cands) above += better(o, cands[i]);
      live[i] = above < p.max_nms;
    }
    auto iou = [&](int64_t a, int64_t c) {
      const float* x = bx + a * 4;
      const float* y = bx + c * 4;
      const double iw = std::max(0.0, double(std::min(x[2], y[2])) - std::max(x[0], y[0]));
      const double ih = std::max(0.0, double(std::min(x[3], y[3])) - std::max(x[1], y[1]));
      const double inter = iw * ih;
      return inter / ((double(x[2]) - x[0]) * (double(x[3]) - x[1]) +
                      (double(y[2]) - y[0]) * (double(y[3]) - y[1]) - inter);
    };
    while (static_cast<int>(out[b].size()) < p.max_det) {
      int64_t best = -1;
      for (size_t i = 0; i < cands.size(); ++i)
        if (live[i] && (best < 0 || better(cands[i], cands[best]))) best = static_cast<int64_t>(i);
      if (best < 0) break;
      const Cand k = cands[best];
      live[best] = 0;
      for (size_t j = 0; j < cands.size(); ++j)
        if (live[j] && (p.agnostic || cands[j].cls == k.cls) && iou(k.anchor, cands[j].anchor) > p.iou)
          live[j] = 0;
      const float* kb = bx + k.anchor * 4;
      const ImageMap& m = maps[b];
      auto clip = [](float v, int hi) { return std::min(std::max(v, 0.f), static_cast<float>(hi)); };
      out[b].push_back({clip((kb[0] - m.pad_x) / m.scale, m.width),
                        clip((kb[1] - m.pad_y) / m.scale, m.height),
                        clip((kb[2] - m.pad_x) / m.scale, m.width),
                        clip((kb[3] - m.pad_y) / m.scale, m.height), k.score, k.cls});
    }
  }
  return out;
}

}  // namespace vt::test
