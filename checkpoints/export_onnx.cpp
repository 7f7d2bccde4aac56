// ONNX export of the model graph and the Detect decode (see export_onnx.h for the interface).
#include "checkpoints/export_onnx.h"

#include <onnx/onnx_pb.h>

#include <cctype>
#include <set>

#include "checkpoints/torch_state.h"
#include "data/fileio.h"
#include "layers/check.h"

namespace vt::ckpt {
namespace {

// Appends nodes and initializers to one GraphProto; names every value.
class OnnxGraph {
 public:
  explicit OnnxGraph(onnx::GraphProto* g) : g_(g) {}

  // One node, named after its op type and position.
  onnx::NodeProto* node(const std::string& op, const std::vector<std::string>& in,
                        const std::vector<std::string>& out) {
    onnx::NodeProto* n = g_->add_node();
    n->set_op_type(op);
    n->set_name(cat(op, "_", g_->node_size()));
    for (const std::string& s : in) n->add_input(s);
    for (const std::string& s : out) n->add_output(s);
    return n;
  }
  std::string unary(const std::string& op, const std::string& x, const std::string& y) {
    node(op, {x}, {y});
    return y;
  }

  static void attr(onnx::NodeProto* n, const std::string& name, int64_t v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name), a->set_type(onnx::AttributeProto::INT), a->set_i(v);
  }
  static void attr(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name), a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  static void attr(onnx::NodeProto* n, const std::string& name, float v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name), a->set_type(onnx::AttributeProto::FLOAT), a->set_f(v);
  }
  static void attr(onnx::NodeProto* n, const std::string& name, const std::string& v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name), a->set_type(onnx::AttributeProto::STRING), a->set_s(v);
  }

  // Initializers (raw little-endian data); a constant of an existing name is reused.
  std::string floats(const std::string& name, const std::vector<int64_t>& dims, const std::vector<float>& v) {
    if (names_.insert(name).second) {
      onnx::TensorProto* t = init(name, dims, onnx::TensorProto::FLOAT);
      t->set_raw_data(v.data(), v.size() * sizeof(float));
    }
    return name;
  }
  std::string int64s(const std::string& name, const std::vector<int64_t>& dims,
                     const std::vector<int64_t>& v) {
    if (names_.insert(name).second) {
      onnx::TensorProto* t = init(name, dims, onnx::TensorProto::INT64);
      t->set_raw_data(v.data(), v.size() * sizeof(int64_t));
    }
    return name;
  }
  // A 1-D int64 constant named after its values ("shape_0_68_-1"), for Reshape/Split inputs.
  std::string ints(const std::string& what, const std::vector<int64_t>& v) {
    std::string name = what;
    for (int64_t x : v) name += cat("_", x);
    return int64s(name, {static_cast<int64_t>(v.size())}, v);
  }

  // A graph input or output: elem type and dims, a string dim being symbolic.
  static void value(onnx::ValueInfoProto* vi, const std::string& name, int32_t elem,
                    const std::vector<std::string>& dims) {
    vi->set_name(name);
    onnx::TypeProto_Tensor* t = vi->mutable_type()->mutable_tensor_type();
    t->set_elem_type(elem);
    for (const std::string& d : dims) {
      onnx::TensorShapeProto_Dimension* dim = t->mutable_shape()->add_dim();
      if (!d.empty() && (std::isdigit(static_cast<unsigned char>(d[0])) != 0))
        dim->set_dim_value(std::stoll(d));
      else
        dim->set_dim_param(d);
    }
  }

 private:
  onnx::TensorProto* init(const std::string& name, const std::vector<int64_t>& dims, int32_t type) {
    onnx::TensorProto* t = g_->add_initializer();
    t->set_name(name);
    t->set_data_type(type);
    for (int64_t d : dims) t->add_dims(d);
    return t;
  }

  onnx::GraphProto* g_;
  std::set<std::string> names_;
};

// The network: one or two ONNX nodes per graph op, NCHW. Returns the per-level Detect outputs.
std::vector<std::string> add_network(OnnxGraph& o, const ModelGraph& graph) {
  std::vector<std::string> name(graph.acts.size());
  for (size_t a = 0; a < graph.acts.size(); ++a) name[a] = graph.acts[a].name;
  name[0] = "images";  // the normalised image is the input itself
  auto in = [&](const GraphOp& op, size_t i) { return name[op.inputs[i]]; };
  auto out = [&](const GraphOp& op, size_t i = 0) { return name[op.outputs[i]]; };
  for (const GraphOp& op : graph.ops) {
    switch (op.kind) {
      case OpKind::kImageInput:
        break;
      case OpKind::kConv: {
        const GraphParam& w = graph.params[op.weight];  // (O, KH, KW, I) here, OIHW in the file
        std::vector<std::string> ins = {in(op, 0), w.name};
        if (op.bias >= 0) ins.push_back(graph.params[op.bias].name);
        onnx::NodeProto* n = o.node("Conv", ins, {out(op)});
        OnnxGraph::attr(n, "kernel_shape", std::vector<int64_t>{w.shape[1], w.shape[2]});
        OnnxGraph::attr(n, "strides", std::vector<int64_t>{op.conv.stride_h, op.conv.stride_w});
        OnnxGraph::attr(n, "pads",
                        std::vector<int64_t>{op.conv.pad_h, op.conv.pad_w, op.conv.pad_h, op.conv.pad_w});
        OnnxGraph::attr(n, "dilations", std::vector<int64_t>{1, 1});
        OnnxGraph::attr(n, "group", static_cast<int64_t>(op.conv.groups));
        break;
      }
      case OpKind::kBatchNorm: {
        const std::string& bn = graph.bns[op.bn].name;
        onnx::NodeProto* n = o.node("BatchNormalization",
                                    {in(op, 0), graph.params[op.weight].name, graph.params[op.bias].name,
                                     bn + ".running_mean", bn + ".running_var"},
                                    {out(op)});
        OnnxGraph::attr(n, "epsilon", static_cast<float>(kModelBatchNorm.eps));
        break;
      }
      case OpKind::kSiLU:
        o.node("Mul", {in(op, 0), o.unary("Sigmoid", in(op, 0), out(op) + ".sigmoid")}, {out(op)});
        break;
      case OpKind::kAdd:
        o.node("Add", {in(op, 0), in(op, 1)}, {out(op)});
        break;
      case OpKind::kSplit: {
        std::vector<int64_t> sizes;
        std::vector<std::string> outs;
        for (int y : op.outputs) sizes.push_back(graph.acts[y].shape[3]), outs.push_back(name[y]);
        OnnxGraph::attr(o.node("Split", {in(op, 0), o.ints("split", sizes)}, outs), "axis", int64_t{1});
        break;
      }
      case OpKind::kConcat: {
        std::vector<std::string> ins;
        for (int x : op.inputs) ins.push_back(name[x]);
        OnnxGraph::attr(o.node("Concat", ins, {out(op)}), "axis", int64_t{1});
        break;
      }
      case OpKind::kMaxPool: {
        const MaxPoolParams& p = op.pool;
        onnx::NodeProto* n = o.node("MaxPool", {in(op, 0)}, {out(op)});
        OnnxGraph::attr(n, "kernel_shape", std::vector<int64_t>{p.kernel, p.kernel});
        OnnxGraph::attr(n, "strides", std::vector<int64_t>{p.stride, p.stride});
        OnnxGraph::attr(n, "pads", std::vector<int64_t>{p.pad, p.pad, p.pad, p.pad});
        break;
      }
      case OpKind::kUpsample: {
        const float s = static_cast<float>(op.scale);
        const std::string scales = o.floats(cat("resize_scales_", op.scale), {4}, {1.f, 1.f, s, s});
        onnx::NodeProto* n = o.node("Resize", {in(op, 0), "", scales}, {out(op)});
        OnnxGraph::attr(n, "mode", std::string("nearest"));
        OnnxGraph::attr(n, "coordinate_transformation_mode", std::string("asymmetric"));
        OnnxGraph::attr(n, "nearest_mode", std::string("floor"));
        break;
      }
    }
  }
  std::vector<std::string> levels;
  for (int a : graph.outputs) levels.push_back(name[a]);
  return levels;
}

// Detect's decode into "boxes" (B, A, 4) and "scores" (B, A, nc); returns the channel-first
// (B, 4, A) boxes and (B, nc, A) scores for the NMS.
std::pair<std::string, std::string> add_decode(OnnxGraph& o, const ModelGraph& graph,
                                               const std::vector<std::string>& levels,
                                               const std::string& dfl_weight) {
  const int64_t bins = graph.reg_max, nc = graph.nc, no = 4 * bins + nc;
  std::vector<std::string> flat;
  std::vector<float> anchors_x, anchors_y, strides;
  for (size_t l = 0; l < levels.size(); ++l) {
    const Shape& s = graph.acts[graph.outputs[l]].shape;  // (B, H, W, no)
    flat.push_back(cat("detect.flat", l));
    o.node("Reshape", {levels[l], o.ints("shape", {0, no, -1})}, {flat.back()});
    for (int64_t y = 0; y < s[1]; ++y)
      for (int64_t x = 0; x < s[2]; ++x) {
        anchors_x.push_back(static_cast<float>(x) + 0.5f);
        anchors_y.push_back(static_cast<float>(y) + 0.5f);
        strides.push_back(static_cast<float>(graph.strides[l]));
      }
  }
  const int64_t A = static_cast<int64_t>(strides.size());
  std::vector<float> anchors = anchors_x;
  anchors.insert(anchors.end(), anchors_y.begin(), anchors_y.end());

  OnnxGraph::attr(o.node("Concat", flat, {"detect.raw"}), "axis", int64_t{2});  // (B, no, A)
  OnnxGraph::attr(
      o.node("Split", {"detect.raw", o.ints("split", {4 * bins, nc})}, {"detect.box", "detect.cls"}), "axis",
      int64_t{1});
  // DFL: softmax over each side's bins, then the expectation sum_i i p_i as a 1x1 conv.
  o.node("Reshape", {"detect.box", o.ints("shape", {0, 4, bins, -1})}, {"detect.bins"});  // (B, 4, 16, A)
  OnnxGraph::attr(o.node("Transpose", {"detect.bins"}, {"detect.bins_t"}), "perm",
                  std::vector<int64_t>{0, 2, 1, 3});
  OnnxGraph::attr(o.node("Softmax", {"detect.bins_t"}, {"detect.prob"}), "axis",
                  int64_t{1});                                                      // (B, 16, 4, A)
  o.node("Conv", {"detect.prob", dfl_weight}, {"detect.dfl"});                      // (B, 1, 4, A)
  o.node("Reshape", {"detect.dfl", o.ints("shape", {0, 4, -1})}, {"detect.dist"});  // (B, 4, A)
  OnnxGraph::attr(o.node("Split", {"detect.dist", o.ints("split", {2, 2})}, {"detect.lt", "detect.rb"}),
                  "axis", int64_t{1});
  // dist2bbox in grid units, then pixels: ((x + .5 - l, y + .5 - t), (x + .5 + r, y + .5 + b)) * stride.
  const std::string anchor = o.floats("detect.anchors", {1, 2, A}, anchors);
  o.node("Sub", {anchor, "detect.lt"}, {"detect.x1y1"});
  o.node("Add", {anchor, "detect.rb"}, {"detect.x2y2"});
  OnnxGraph::attr(o.node("Concat", {"detect.x1y1", "detect.x2y2"}, {"detect.grid_boxes"}), "axis",
                  int64_t{1});
  o.node("Mul", {"detect.grid_boxes", o.floats("detect.strides", {1, 1, A}, strides)}, {"detect.boxes_cf"});
  OnnxGraph::attr(o.node("Transpose", {"detect.boxes_cf"}, {"boxes"}), "perm", std::vector<int64_t>{0, 2, 1});
  o.node("Sigmoid", {"detect.cls"}, {"detect.scores_cf"});  // (B, nc, A)
  OnnxGraph::attr(o.node("Transpose", {"detect.scores_cf"}, {"scores"}), "perm",
                  std::vector<int64_t>{0, 2, 1});
  return {"boxes", "detect.scores_cf"};
}

// Best class per anchor, then NonMaxSuppression per (image, class) -> "selected_indices".
void add_nms(OnnxGraph& o, const ModelGraph& graph, const std::string& boxes, const std::string& scores_cf,
             const NmsParams& p) {
  std::vector<int64_t> classes(graph.nc);
  for (int c = 0; c < graph.nc; ++c) classes[c] = c;
  onnx::NodeProto* am = o.node("ArgMax", {scores_cf}, {"nms.best"});  // (B, 1, A), first max on ties
  OnnxGraph::attr(am, "axis", int64_t{1});
  OnnxGraph::attr(am, "keepdims", int64_t{1});
  OnnxGraph::attr(am, "select_last_index", int64_t{0});
  o.node("Equal", {"nms.best", o.int64s("nms.classes", {1, graph.nc, 1}, classes)}, {"nms.is_best"});
  o.node("Where", {"nms.is_best", scores_cf, o.floats("nms.zero", {1}, {0.f})},
         {"nms.scores"});  // (B, nc, A)
  onnx::NodeProto* n = o.node("NonMaxSuppression",
                              {boxes, "nms.scores", o.int64s("nms.max_det", {1}, {p.max_det}),
                               o.floats("nms.iou", {1}, {p.iou}), o.floats("nms.conf", {1}, {p.conf})},
                              {"selected_indices"});
  OnnxGraph::attr(n, "center_point_box", int64_t{0});
}

}  // namespace

std::string onnx_model_bytes(const ModelGraph& graph, const NamedValues& values, const std::string& source,
                             const OnnxExportOptions& options) {
  const NmsParams& p = options.nms;
  if (options.with_nms) {
    VT_CHECK(p.conf >= 0 && p.iou >= 0 && p.iou <= 1 && p.max_det >= 1, "ONNX export of ", source,
             ": NMS needs conf >= 0, iou in [0, 1] and max_det >= 1 (got ", p.conf, ", ", p.iou, ", ",
             p.max_det, ")");
    VT_CHECK(!p.multi_label && !p.agnostic, "ONNX export of ", source,
             ": NMS is exported per best class only");
  }
  onnx::ModelProto model;
  model.set_ir_version(8);  // ONNX 1.13's IR, the one opset 17 came with
  model.set_producer_name("visiontrain");
  model.set_producer_version(VT_VERSION);
  model.set_doc_string(
      "YOLO detector exported by visiontrain: images (B, 3, S, S) RGB in [0, 1] -> boxes (B, A, 4) "
      "xyxy pixels, scores (B, A, nc) sigmoid; see docs/serving.md");
  onnx::OperatorSetIdProto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOnnxOpset);
  for (const auto& [k, v] : options.metadata) {
    onnx::StringStringEntryProto* e = model.add_metadata_props();
    e->set_key(k), e->set_value(v);
  }

  onnx::GraphProto* g = model.mutable_graph();
  g->set_name("visiontrain_detector");
  OnnxGraph o(g);
  std::string dfl_weight;
  for (const TorchTensor& t : torch_state(graph, values, source)) o.floats(t.name, t.shape, t.data);
  for (const GraphParam& gp : graph.params)
    if (gp.constant) dfl_weight = gp.name;
  VT_CHECK(!dfl_weight.empty(), "ONNX export of ", source,
           ": the model has no DFL constant (no Detect head?)");

  const Shape& img = graph.acts[0].shape;  // (B, S, S, 3)
  const std::string batch = options.dynamic_batch ? "batch" : "1";
  OnnxGraph::value(g->add_input(), "images", onnx::TensorProto::FLOAT,
                   {batch, "3", std::to_string(img[1]), std::to_string(img[2])});
  const auto [boxes, scores_cf] = add_decode(o, graph, add_network(o, graph), dfl_weight);
  int64_t anchors = 0;
  for (int a : graph.outputs) anchors += graph.acts[a].shape[1] * graph.acts[a].shape[2];
  OnnxGraph::value(g->add_output(), "boxes", onnx::TensorProto::FLOAT, {batch, std::to_string(anchors), "4"});
  OnnxGraph::value(g->add_output(), "scores", onnx::TensorProto::FLOAT,
                   {batch, std::to_string(anchors), std::to_string(graph.nc)});
  if (options.with_nms) {
    add_nms(o, graph, boxes, scores_cf, p);
    OnnxGraph::value(g->add_output(), "selected_indices", onnx::TensorProto::INT64, {"num_selected", "3"});
  }
  std::string bytes;
  VT_CHECK(model.SerializeToString(&bytes), "ONNX export of ", source, ": protobuf serialisation failed");
  return bytes;
}

void export_onnx(const std::string& path, const ModelGraph& graph, const NamedValues& values,
                 const std::string& source, const OnnxExportOptions& options) {
  data::write_file_atomic(path, onnx_model_bytes(graph, values, source, options));
}

}  // namespace vt::ckpt
