// The distinct convolutions of a model at a batch and image size, each with how many times
// the model uses it: what bench/kernel_bench times and bench/igemm_plan plans.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "layers/check.h"
#include "layers/conv2d.h"
#include "layers/model_graph.h"
#include "layers/model_spec.h"

namespace vt::bench {

struct ConvShape {
  Shape x, w;  // (N, H, W, Cin), (Cout, KH, KW, Cin / groups)
  Conv2dParams p;
  int count = 0;
  std::string key() const { return cat(x.str(), " ", w.str(), " s", p.stride_h, " p", p.pad_h); }
};

// In the model's forward order of first use; 80 classes (COCO).
inline std::vector<ConvShape> conv_shapes(const std::string& yaml, int64_t batch, int64_t imgsz) {
  const ModelGraph g = build_model_graph(load_model_spec(yaml, 80), batch, imgsz);
  std::map<std::string, size_t> seen;
  std::vector<ConvShape> out;
  for (const GraphOp& op : g.ops) {
    if (op.kind != OpKind::kConv) continue;
    ConvShape c{g.acts[op.inputs[0]].shape, g.params[op.weight].shape, op.conv, 1};
    const auto [it, fresh] = seen.emplace(c.key(), out.size());
    if (fresh)
      out.push_back(c);
    else
      ++out[it->second].count;
  }
  return out;
}

}  // namespace vt::bench
