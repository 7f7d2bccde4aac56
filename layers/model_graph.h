// ModelGraph: a ModelSpec expanded into primitive ops over named activations and parameters,
// with every shape fixed by the batch and image size. The Model plans memory from it and
// runs it; nothing here touches memory.
//
// Expansion (Ultralytics' modules, ultralytics/nn/modules/{conv,block,head}.py):
//   Conv(c1, c2, k, s, p, g)   conv2d (no bias) -> BatchNorm (eps 1e-3, momentum 0.03) -> SiLU
//   Bottleneck(c1, c2, shortcut, g, (k1, k2), e)
//                              c_ = int(c2 e); cv1 = Conv(c1, c_, k1); cv2 = Conv(c_, c2, k2, g);
//                              y = x + cv2(cv1(x)) when shortcut and c1 == c2, else cv2(cv1(x))
//   C2f(c1, c2, n, shortcut, g, e)
//                              c = int(c2 e); cv1 = Conv(c1, 2c, 1) -> split into (c, c);
//                              m.j = Bottleneck(c, c, shortcut, g, (3, 3), 1.0) chained on the
//                              last part; cv2 = Conv((2 + n) c, c2, 1) over the concat of all
//   SPPF(c1, c2, k)            cv1 = Conv(c1, c1 / 2, 1); three chained k x k max pools (stride
//                              1, pad k / 2); cv2 = Conv(4 (c1 / 2), c2, 1) over the concat
//   Upsample                   nearest, integer factor
//   Concat                     channels, in `from` order
//   Detect(nc, ch)             reg_max 16, c2 = max(16, ch[0] / 4, 64), c3 = max(ch[0], min(nc, 100));
//                              per level l: cv2.l = Conv(ch_l, c2, 3), Conv(c2, c2, 3), conv2d 1x1
//                              +bias -> 64; cv3.l likewise with c3 -> nc; output l = concat(cv2.l,
//                              cv3.l): (B, H_l, W_l, 64 + nc), NHWC. The DFL conv (1x1, 16 -> 1,
//                              fixed weights 0..15) is a constant parameter: decoding applies it.
//
// Parameter names are Ultralytics' state-dict names ("model.2.m.0.cv1.conv.weight"); conv
// weights are OHWI (Cout, KH, KW, Cin / groups), where PyTorch's are OIHW. Strides are found
// as Ultralytics finds them, from the level sizes of a 256 x 256 input; the image size must
// give every level exactly imgsz / stride cells.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "layers/batchnorm.h"
#include "layers/conv2d.h"
#include "layers/maxpool.h"
#include "layers/model_spec.h"
#include "layers/tensor.h"

namespace vt {

// Every BN of the model: Ultralytics' BatchNorm2d settings after initialize_weights (the
// exporters write the same eps into their files).
inline constexpr BatchNormParams kModelBatchNorm{0.03, 1e-3};

// Optimizer groups (optim/update.h): 0 conv weights (decayed), 1 BN gamma, 2 biases.
enum ParamGroup : uint8_t { kGroupWeight = 0, kGroupNormWeight = 1, kGroupBias = 2 };

struct GraphParam {
  std::string name;
  int layer = 0;  // the YAML row it belongs to
  Shape shape;
  ParamGroup group = kGroupWeight;
  // Initial values: PyTorch's default for conv weights and biases, U(-b, b) with
  // b = 1 / sqrt(fan_in); `fill` instead when has_fill (BN gamma 1, beta 0, Detect's bias_init).
  int64_t fan_in = 0;
  bool has_fill = false;
  double fill = 0;
  bool constant = false;  // the DFL weights 0..15: counted and named, never trained
};

struct GraphAct {
  std::string name;
  Shape shape;             // (B, H, W, C)
  bool needs_grad = true;  // false for the normalised image only
};

enum class OpKind { kImageInput, kConv, kBatchNorm, kSiLU, kAdd, kSplit, kConcat, kMaxPool, kUpsample };

struct GraphOp {
  OpKind kind = OpKind::kConv;
  int layer = 0;               // the YAML row it came from
  std::vector<int> inputs;     // activation ids
  std::vector<int> outputs;    // activation ids (several for split)
  int weight = -1, bias = -1;  // parameter ids: conv weight/bias, BN gamma/beta
  int bn = -1;                 // BN index: running and saved statistics
  Conv2dParams conv;
  MaxPoolParams pool;
  int scale = 2;  // upsample factor
};

struct GraphBn {
  std::string name;  // "model.0.bn": its running statistics are <name>.running_mean / _var
  int64_t channels = 0;
};

struct ModelGraph {
  std::vector<GraphAct> acts;  // acts[0]: the normalised image (B, S, S, 3)
  std::vector<GraphParam> params;
  std::vector<GraphOp> ops;  // in forward order
  std::vector<GraphBn> bns;
  std::vector<int> outputs;        // per detection level: (B, H_l, W_l, 4 reg_max + nc)
  std::vector<int> strides;        // per detection level
  std::vector<int> layer_outputs;  // per YAML row (-1 for Detect, whose outputs are `outputs`)
  int nc = 0;
  int reg_max = 16;
};

// Expands `spec` for a (batch, imgsz, imgsz, 3) input. Throws vt::Error naming the spec's
// file and the row when a layer cannot be built at this size (mismatched concat sizes,
// channels not divisible by groups, an image size that is not a multiple of the largest
// stride).
ModelGraph build_model_graph(const ModelSpec& spec, int64_t batch, int64_t imgsz);

}  // namespace vt
