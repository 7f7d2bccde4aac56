// Module -> primitive op expansion of a ModelSpec (see model_graph.h).
#include "layers/model_graph.h"

#include <algorithm>
#include <cmath>

#include "layers/check.h"

namespace vt {
namespace {

class Builder {
 public:
  Builder(ModelGraph& g, const std::vector<int>& strides) : g_(g), strides_(strides) {}

  void set_layer(int layer) { layer_ = layer; }

  int act(const std::string& name, const Shape& s) {
    g_.acts.push_back({name, s, true});
    return static_cast<int>(g_.acts.size()) - 1;
  }
  const Shape& shape(int a) const { return g_.acts[a].shape; }
  int64_t channels(int a) const { return shape(a)[3]; }

  int param(const std::string& name, const Shape& s, ParamGroup group, int64_t fan_in) {
    GraphParam p;
    p.name = name, p.shape = s, p.group = group, p.fan_in = fan_in, p.layer = layer_;
    g_.params.push_back(p);
    return static_cast<int>(g_.params.size()) - 1;
  }
  int filled(const std::string& name, const Shape& s, ParamGroup group, double value) {
    const int id = param(name, s, group, 0);
    g_.params[id].has_fill = true, g_.params[id].fill = value;
    return id;
  }

  GraphOp& op(OpKind kind, std::vector<int> in, std::vector<int> out) {
    GraphOp o;
    o.kind = kind, o.layer = layer_, o.inputs = std::move(in), o.outputs = std::move(out);
    g_.ops.push_back(o);
    return g_.ops.back();
  }

  // nn.Conv2d(cin, cout, k, s, p, groups, bias) named <prefix>.weight / .bias; output <out>.
  int conv2d(const std::string& prefix, const std::string& out, int x, int64_t cout, int k, int s, int p,
             int g, bool bias) {
    const Conv2dParams cp{s, s, p, p, g};
    const int64_t cin = channels(x);
    if (cin % g != 0 || cout % g != 0)
      throw Error(cat(prefix, ": channels ", cin, " -> ", cout, " are not divisible by groups ", g));
    const Shape w{cout, k, k, cin / g};
    const Shape y = conv2d_output_shape(shape(x), w, cp);
    const int yid = act(out, y);
    GraphOp& o = op(OpKind::kConv, {x}, {yid});
    o.conv = cp;
    o.weight = param(prefix + ".weight", w, kGroupWeight, (cin / g) * k * k);
    if (bias) o.bias = param(prefix + ".bias", {cout}, kGroupBias, (cin / g) * k * k);
    return yid;
  }

  // Ultralytics' Conv: conv2d (no bias) -> BN -> SiLU, output named <prefix>.
  int conv(const std::string& prefix, int x, int64_t c2, int k, int s, int p, int g = 1) {
    const int y = conv2d(prefix + ".conv", prefix + ".conv", x, c2, k, s, p, g, false);
    const int z = act(prefix + ".bn", shape(y));
    GraphOp& bn = op(OpKind::kBatchNorm, {y}, {z});
    bn.weight = filled(prefix + ".bn.weight", {c2}, kGroupNormWeight, 1.0);
    bn.bias = filled(prefix + ".bn.bias", {c2}, kGroupBias, 0.0);
    bn.bn = static_cast<int>(g_.bns.size());
    g_.bns.push_back({prefix + ".bn", c2});
    const int a = act(prefix, shape(z));
    op(OpKind::kSiLU, {z}, {a});
    return a;
  }

  int bottleneck(const std::string& prefix, int x, int64_t c2, bool shortcut, int g, int k1, int k2,
                 double e) {
    const int64_t c_ = static_cast<int64_t>(c2 * e);  // Python's int(c2 * e)
    if (c_ < 1) throw Error(cat(prefix, ": hidden channels int(", c2, " * ", e, ") = 0"));
    const int h = conv(prefix + ".cv1", x, c_, k1, 1, k1 / 2);
    const int y = conv(prefix + ".cv2", h, c2, k2, 1, k2 / 2, g);
    if (!(shortcut && channels(x) == c2)) return y;
    const int sum = act(prefix + ".add", shape(y));
    op(OpKind::kAdd, {x, y}, {sum});
    return sum;
  }

  int c2f(const std::string& prefix, int x, int64_t c2, int n, bool shortcut, int g, double e) {
    const int64_t c = static_cast<int64_t>(c2 * e);
    if (c < 1) throw Error(cat(prefix, ": hidden channels int(", c2, " * ", e, ") = 0"));
    const int t = conv(prefix + ".cv1", x, 2 * c, 1, 1, 0);
    Shape half = shape(t);
    half[3] = c;
    std::vector<int> parts = {act(prefix + ".chunk0", half), act(prefix + ".chunk1", half)};
    op(OpKind::kSplit, {t}, parts);
    for (int j = 0; j < n; ++j)
      parts.push_back(bottleneck(cat(prefix, ".m.", j), parts.back(), c, shortcut, g, 3, 3, 1.0));
    return conv(prefix + ".cv2", concat(prefix + ".cat", parts), c2, 1, 1, 0);
  }

  int sppf(const std::string& prefix, int x, int64_t c2, int k) {
    const int64_t c_ = channels(x) / 2;
    if (c_ < 1) throw Error(cat(prefix, ": SPPF needs at least 2 input channels"));
    std::vector<int> parts = {conv(prefix + ".cv1", x, c_, 1, 1, 0)};
    const MaxPoolParams mp{k, 1, k / 2};
    for (int j = 0; j < 3; ++j) {
      const int y = act(cat(prefix, ".m", j), maxpool_output_shape(shape(parts.back()), mp));
      op(OpKind::kMaxPool, {parts.back()}, {y}).pool = mp;
      parts.push_back(y);
    }
    return conv(prefix + ".cv2", concat(prefix + ".cat", parts), c2, 1, 1, 0);
  }

  int upsample(const std::string& prefix, int x, int scale) {
    Shape s = shape(x);
    s[1] *= scale, s[2] *= scale;
    const int y = act(prefix, s);
    op(OpKind::kUpsample, {x}, {y}).scale = scale;
    return y;
  }

  int concat(const std::string& name, const std::vector<int>& xs) {
    Shape s = shape(xs[0]);
    s[3] = 0;
    for (int x : xs) {
      if (shape(x)[1] != s[1] || shape(x)[2] != s[2])
        throw Error(cat(name, ": inputs of different sizes, ", g_.acts[xs[0]].name, " ", shape(xs[0]).str(),
                        " and ", g_.acts[x].name, " ", shape(x).str(),
                        " (is the image size a multiple of the largest stride?)"));
      s[3] += shape(x)[3];
    }
    const int y = act(name, s);
    op(OpKind::kConcat, xs, {y});
    return y;
  }

  void detect(const std::string& prefix, const std::vector<int>& xs, int nc) {
    const int reg_max = g_.reg_max;
    const int64_t c0 = channels(xs[0]);
    const int64_t c2 = std::max<int64_t>({16, c0 / 4, 4 * reg_max}),
                  c3 = std::max<int64_t>(c0, std::min(nc, 100));
    for (size_t l = 0; l < xs.size(); ++l) {
      auto branch = [&](const std::string& p, int64_t c, int64_t cout) {
        const int a = conv(p + ".0", xs[l], c, 3, 1, 1);
        const int b = conv(p + ".1", a, c, 3, 1, 1);
        return conv2d(p + ".2", p + ".2", b, cout, 1, 1, 0, 1, true);
      };
      const int box = branch(cat(prefix, ".cv2.", l), c2, 4 * reg_max);
      // Detect.bias_init: box logits 1.0, class logits log(5 / nc / (640 / stride)^2), i.e. a
      // prior of about 5 objects per 640 x 640 image spread over the classes.
      g_.params[g_.ops.back().bias].has_fill = true;
      g_.params[g_.ops.back().bias].fill = 1.0;
      const int cls = branch(cat(prefix, ".cv3.", l), c3, nc);
      const double s = l < strides_.size() ? strides_[l] : 0;
      g_.params[g_.ops.back().bias].has_fill = true;
      g_.params[g_.ops.back().bias].fill = s > 0 ? std::log(5.0 / nc / ((640.0 / s) * (640.0 / s))) : 0;
      g_.outputs.push_back(concat(cat(prefix, ".out", l), {box, cls}));
    }
    const int dfl = param(prefix + ".dfl.conv.weight", {1, 1, 1, reg_max}, kGroupWeight, 0);
    g_.params[dfl].constant = true;
    g_.nc = nc;
  }

 private:
  ModelGraph& g_;
  std::vector<int> strides_;
  int layer_ = 0;
};

// Expands every row; `strides` (empty while finding them) feed Detect's bias init.
ModelGraph expand(const ModelSpec& spec, int64_t batch, int64_t imgsz, const std::vector<int>& strides) {
  ModelGraph g;
  Builder b(g, strides);
  g.acts.push_back({"image", {batch, imgsz, imgsz, 3}, false});
  b.op(OpKind::kImageInput, {}, {0});
  for (const LayerSpec& l : spec.layers) {
    b.set_layer(l.index);
    const std::string prefix = cat("model.", l.index);
    std::vector<int> in;
    for (int f : l.from) in.push_back(f < 0 ? 0 : g.layer_outputs[f]);
    try {
      int y = in[0];
      for (int j = 0; j < l.repeats; ++j) {
        // nn.Sequential copies carry their index in parameter names.
        const std::string p = l.repeats > 1 ? cat(prefix, ".", j) : prefix;
        switch (l.module) {
          case ModuleKind::kConv:
            y = b.conv(p, y, l.c2, l.k, l.s, l.p, l.g);
            break;
          case ModuleKind::kBottleneck:
            y = b.bottleneck(p, y, l.c2, l.shortcut, l.g, l.k1, l.k2, l.e);
            break;
          case ModuleKind::kSPPF:
            y = b.sppf(p, y, l.c2, l.k);
            break;
          case ModuleKind::kC2f:
            y = b.c2f(p, y, l.c2, l.n, l.shortcut, l.g, l.e);
            break;
          case ModuleKind::kUpsample:
            y = b.upsample(p, y, l.scale);
            break;
          case ModuleKind::kConcat:
            y = b.concat(p, in);
            break;
          case ModuleKind::kDetect:
            b.detect(p, in, l.nc), y = -1;
            break;
        }
      }
      g.layer_outputs.push_back(y);
    } catch (const Error& e) {
      throw Error(
          cat("model ", spec.path, ": layer ", l.index, " ", l.text, " at imgsz ", imgsz, ": ", e.what()));
    }
  }
  // Convolutions can skip the gradient of their input; anything else reading the image
  // needs one (an unusual first layer such as Upsample).
  for (const GraphOp& o : g.ops)
    if (o.kind != OpKind::kConv && std::count(o.inputs.begin(), o.inputs.end(), 0) > 0)
      g.acts[0].needs_grad = true;
  return g;
}

}  // namespace

ModelGraph build_model_graph(const ModelSpec& spec, int64_t batch, int64_t imgsz) {
  VT_CHECK(batch >= 1 && imgsz >= 1, "model ", spec.path, ": batch ", batch, " and imgsz ", imgsz,
           " must be >= 1");
  // Strides as Ultralytics measures them: 256 / (level height) for a 256 x 256 input.
  const ModelGraph probe = expand(spec, 1, 256, {});
  std::vector<int> strides;
  for (int o : probe.outputs) {
    const int64_t h = probe.acts[o].shape[1];
    if (256 % h != 0)
      throw Error(cat("model ", spec.path, ": a detection level is ", h,
                      " cells high at 256 x 256: not an integer stride"));
    strides.push_back(static_cast<int>(256 / h));
  }
  ModelGraph g = expand(spec, batch, imgsz, strides);
  g.strides = strides;
  for (size_t l = 0; l < g.outputs.size(); ++l) {
    const Shape& s = g.acts[g.outputs[l]].shape;
    if (s[1] * strides[l] != imgsz || s[2] * strides[l] != imgsz)
      throw Error(cat("model ", spec.path, ": imgsz ", imgsz, " gives detection level ", l, " a ", s[1],
                      " x ", s[2], " grid, not ", imgsz, " / ", strides[l], ": imgsz must be a multiple of ",
                      *std::max_element(strides.begin(), strides.end())));
  }
  return g;
}

}  // namespace vt
