// Model: memory planning, binding and the forward / backward passes (see model.h).
#include "layers/model.h"

#include <algorithm>
#include <sstream>

#include "layers/activation.h"
#include "layers/add.h"
#include "layers/batchnorm.h"
#include "layers/check.h"
#include "layers/concat.h"
#include "layers/conv2d.h"
#include "layers/convert.h"
#include "layers/maxpool.h"
#include "layers/mean_m2.h"
#include "layers/op.h"
#include "layers/upsample.h"

namespace vt {
namespace {

// Views are carved out of the gradient arena at 256-byte boundaries, as the plan aligns.
constexpr int64_t kAlignBytes = 256;

Tensor slice(const Tensor& flat, int64_t offset, const Shape& shape) {
  VT_CHECK(offset >= 0 && offset + shape.numel() <= flat.numel(), "model: slice [", offset, ", +",
           shape.numel(), ") outside ", flat.str("buffer"));
  char* base = static_cast<char*>(flat.raw()) + offset * static_cast<int64_t>(dtype_size(flat.dtype()));
  return Tensor::view(base, shape, flat.dtype(), flat.device());
}

const Activation kSiLU{ActKind::kSiLU};

// Where in the op workspace a BN's tile statistics start: after its own sliced reductions.
size_t stats_offset(const Shape& bn_input, Device dev) {
  return (batchnorm_workspace_bytes(bn_input, dev) + kAlignBytes - 1) / kAlignBytes * kAlignBytes;
}

BatchNormParams bn_params(bool silu, bool overwrite_dx) {
  BatchNormParams p = kModelBatchNorm;
  p.silu = silu;
  p.overwrite_dx = overwrite_dx;
  return p;
}

}  // namespace

void disable_features(ModelOptions& o, const std::string& names) {
  std::stringstream list(names);
  for (std::string name; std::getline(list, name, ',');) {
    if (name == "fusion")
      o.fusion = ModelOptions::Fusion::kOff;
    else if (name == "concat-in-place")
      o.concat_in_place = false;
    else if (name == "conv-stats")
      o.conv_stats = false;
    else if (name == "overwrite-grads")
      o.overwrite_grads = false;
    else
      VT_CHECK(false, "unknown model feature '", name, "' to disable (known: fusion, concat-in-place, conv-stats, ",
               "overwrite-grads)");
  }
}

Model::Model(const ModelSpec& spec, const ModelOptions& options)
    : opt_(options), path_(spec.path), layers_(spec.layers), plan_(options.device) {
  const bool ok = options.device == Device::kCPU
                      ? (options.dtype == DType::kF32 || options.dtype == DType::kF64)
                      : (options.dtype == DType::kF32 || options.dtype == DType::kBF16);
  VT_CHECK(ok, "model ", spec.path, ": activation type ", dtype_name(options.dtype), " is not supported on ",
           device_name(options.device), " (cpu: f32, f64; cuda: f32, bf16)");
  VT_CHECK(options.device == Device::kCPU || cuda_device_count() > 0, "model ", spec.path,
           ": CUDA requested but no CUDA device is available");
  graph_ = build_model_graph(spec, options.batch, options.imgsz);
  find_fusions();
  find_in_place();
  find_overwrites();
  find_conv_stats();
  plan_memory();
  bind();
  init(options.seed);
}

int64_t Model::num_params() const {
  int64_t n = 0;
  for (const GraphParam& p : graph_.params) n += p.shape.numel();
  return n;
}

// Per activation, how many ops read it, counting the loss (outputs) and the exporters
// (layer outputs) as readers.
std::vector<int> Model::readers() const {
  std::vector<int> n(graph_.acts.size(), 0);
  for (const GraphOp& o : graph_.ops)
    for (int a : o.inputs) ++n[a];
  for (int a : graph_.outputs) ++n[a];
  for (int a : graph_.layer_outputs)
    if (a >= 0) ++n[a];
  return n;
}

// A BN whose output only the next op, a SiLU, reads: the pair runs as one fused op. And an
// add right after such a pair that alone reads the SiLU's output (the Bottleneck's residual):
// it runs inside the same op, the add's other input as the residual.
void Model::find_fusions() {
  absorbed_.assign(graph_.ops.size(), false);
  residual_.assign(graph_.ops.size(), -1);
  elided_.assign(graph_.acts.size(), false);
  const bool fuse = opt_.fusion == ModelOptions::Fusion::kOn ||
                    (opt_.fusion == ModelOptions::Fusion::kAuto && opt_.device == Device::kCUDA);
  if (!fuse) return;
  const std::vector<int> readers = this->readers();
  for (size_t i = 0; i + 1 < graph_.ops.size(); ++i) {
    const GraphOp &bn = graph_.ops[i], &act = graph_.ops[i + 1];
    if (bn.kind == OpKind::kBatchNorm && act.kind == OpKind::kSiLU && act.inputs[0] == bn.outputs[0] &&
        readers[bn.outputs[0]] == 1) {
      absorbed_[i + 1] = true;
      elided_[bn.outputs[0]] = true;
    }
  }
  for (size_t i = 0; i + 2 < graph_.ops.size(); ++i) {
    const GraphOp& add = graph_.ops[i + 2];
    if (graph_.ops[i].kind != OpKind::kBatchNorm || !absorbed_[i + 1] || add.kind != OpKind::kAdd) continue;
    const int z = graph_.ops[i + 1].outputs[0];
    if (readers[z] != 1 || (add.inputs[0] == z) == (add.inputs[1] == z)) continue;
    absorbed_[i + 2] = true;
    elided_[z] = true;
    residual_[i] = add.inputs[0] == z ? add.inputs[1] : add.inputs[0];
  }
}

// Concatenations written in place (ModelOptions::concat_in_place). A concat's input can be a
// channel view of the concat's output when a conv, a BN (alone or with its SiLU and residual
// fused) or an upsample writes it, each of its other readers takes a view too and runs before
// the concat (a conv's x, a BN's fused residual, an upsample's x), and the loss does not read
// it (not a Detect output). A run of inputs that are a split's outputs, in order, can be views
// when the split's input can be one over the run (such an op writes it, the split alone reads
// it). When every input of a concat can, the concat and those splits do nothing (in_place_),
// in both directions: the readers' backward passes add into views of the concat's gradient,
// which the concat's own readers, all later in the graph, have finished by then
// (find_overwrites makes the no-op concat or split the first writer of its inputs'
// gradients, so every other reader adds).
void Model::find_in_place() {
  placed_.assign(graph_.acts.size(), {});
  in_place_.assign(graph_.ops.size(), false);
  if (!opt_.concat_in_place) return;
  std::vector<int> producer(graph_.acts.size(), -1);
  std::vector<std::vector<int>> readers(graph_.acts.size());
  for (size_t i = 0; i < graph_.ops.size(); ++i) {
    for (int a : graph_.ops[i].outputs) producer[a] = static_cast<int>(i);
    for (int a : graph_.ops[i].inputs) readers[a].push_back(static_cast<int>(i));
  }
  std::vector<bool> output(graph_.acts.size(), false);
  for (int a : graph_.outputs) output[a] = true;
  auto writes_views = [&](int a) {
    int w = producer[a];
    while (w > 0 && absorbed_[w]) --w;  // the BN a fused SiLU or residual add runs in
    const OpKind k = w >= 0 ? graph_.ops[w].kind : OpKind::kImageInput;
    return k == OpKind::kConv || k == OpKind::kBatchNorm || k == OpKind::kUpsample;
  };
  // a's readers other than the concat at k and the split at `via` take views and run before k.
  auto readers_take_views = [&](int a, int k, int via) {
    if (output[a] || placed_[a].root >= 0) return false;
    for (int i : readers[a]) {
      const GraphOp& o = graph_.ops[i];
      const bool residual = absorbed_[i] && o.kind == OpKind::kAdd && residual_[i - 2] == a;
      const bool takes = o.kind == OpKind::kConv || o.kind == OpKind::kUpsample || residual;
      if (i != k && i != via && (i > k || !takes)) return false;
    }
    return true;
  };
  for (size_t k = 0; k < graph_.ops.size(); ++k) {
    const GraphOp& cat = graph_.ops[k];
    if (cat.kind != OpKind::kConcat) continue;
    const int ki = static_cast<int>(k);
    std::vector<std::pair<int, int64_t>> views;  // (activation, its first channel in the concat)
    std::vector<int> splits;
    bool ok = true;
    int64_t off = 0;
    for (size_t j = 0; ok && j < cat.inputs.size();) {
      const int a = cat.inputs[j], p = producer[a];
      if (std::count(cat.inputs.begin(), cat.inputs.end(), a) != 1) ok = false;
      if (p >= 0 && graph_.ops[p].kind == OpKind::kSplit) {
        const GraphOp& split = graph_.ops[p];
        const int s = split.inputs[0];
        ok = ok && j + split.outputs.size() <= cat.inputs.size() &&
             std::equal(split.outputs.begin(), split.outputs.end(), cat.inputs.begin() + j) &&
             writes_views(s) && readers[s].size() == 1 && readers_take_views(s, ki, p);
        views.emplace_back(s, off);
        for (int o : split.outputs) {
          ok = ok && readers_take_views(o, ki, p);
          views.emplace_back(o, off);
          off += graph_.acts[o].shape[3];
        }
        splits.push_back(p);
        j += split.outputs.size();
      } else {
        ok = ok && writes_views(a) && readers_take_views(a, ki, -1);
        views.emplace_back(a, off);
        off += graph_.acts[a].shape[3];
        ++j;
      }
    }
    if (!ok) continue;
    for (const auto& [a, first] : views) placed_[a] = {cat.outputs[0], first};
    in_place_[k] = true;
    for (int p : splits) in_place_[p] = true;
  }
}

// Per conv op, the tiles of its statistics for the BN right after it (ModelOptions::conv_stats),
// or 0: that BN reads the conv's output alone, and the conv runs on the tensor cores.
void Model::find_conv_stats() {
  stats_tiles_.assign(graph_.ops.size(), 0);
  if (!opt_.conv_stats) return;
  const std::vector<int> readers = this->readers();
  for (size_t i = 0; i + 1 < graph_.ops.size(); ++i) {
    const GraphOp &conv = graph_.ops[i], &bn = graph_.ops[i + 1];
    if (conv.kind == OpKind::kConv && bn.kind == OpKind::kBatchNorm && bn.inputs[0] == conv.outputs[0] &&
        readers[conv.outputs[0]] == 1)
      stats_tiles_[i] =
          conv2d_tile_stats_tiles(graph_.acts[conv.inputs[0]].shape, graph_.params[conv.weight].shape,
                                  conv.conv, opt_.dtype, opt_.device);
  }
}

// Per activation that needs a gradient, the op whose backward produces that gradient first:
// the last op in graph order that reads it (backward runs in reverse). That backward writes
// the gradient instead of adding into it when it writes every element of that input (conv,
// BN, concat, split, add; not the max pool, which scatters, the upsample, which gathers into
// an accumulation, nor a separate SiLU) and the op reads the activation once. An absorbed
// add (a BN's fused residual) counts at its own graph index: it runs inside the BN two ops
// earlier, with no reader of the residual between. Outputs are excluded: the loss adds into
// their gradients before backward.
void Model::find_overwrites() {
  first_writer_.assign(graph_.acts.size(), -1);
  if (!opt_.overwrite_grads) return;
  std::vector<int> last(graph_.acts.size(), -1);
  for (size_t i = 0; i < graph_.ops.size(); ++i)
    for (int a : graph_.ops[i].inputs) last[a] = static_cast<int>(i);
  std::vector<bool> output(graph_.acts.size(), false);
  for (int a : graph_.outputs) output[a] = true;
  for (size_t a = 0; a < graph_.acts.size(); ++a) {
    if (last[a] < 0 || !graph_.acts[a].needs_grad || elided_[a] || output[a]) continue;
    const GraphOp& o = graph_.ops[last[a]];
    const bool writes_all = o.kind == OpKind::kConv || o.kind == OpKind::kBatchNorm ||
                            o.kind == OpKind::kConcat || o.kind == OpKind::kSplit || o.kind == OpKind::kAdd;
    if (writes_all && std::count(o.inputs.begin(), o.inputs.end(), static_cast<int>(a)) == 1)
      first_writer_[a] = last[a];
  }
}

void Model::plan_memory() {
  const DType dt = opt_.dtype, pt = param_dtype(dt);
  // Flat layout: ops in backward order (last first), each op's weight then bias, so the
  // ranges backward finishes are consecutive.
  param_offset_.assign(graph_.params.size(), -1);
  bn_offset_.assign(graph_.bns.size(), -1);
  for (auto it = graph_.ops.rbegin(); it != graph_.ops.rend(); ++it) {
    for (int id : {it->weight, it->bias}) {
      if (id < 0) continue;
      const GraphParam& p = graph_.params[id];
      param_offset_[id] = flat_size_;
      table_.push_back({p.name, p.shape, flat_size_, p.group, false});
      flat_size_ += p.shape.numel();
    }
    if (it->bn >= 0) {
      bn_offset_[it->bn] = stats_size_;
      stats_size_ += 2 * graph_.bns[it->bn].channels;
    }
  }
  for (size_t id = 0; id < graph_.params.size(); ++id) {
    const GraphParam& p = graph_.params[id];
    VT_CHECK(p.constant == (param_offset_[id] < 0), "model: parameter ", p.name, " has no op");
    if (p.constant) table_.push_back({p.name, p.shape, -1, p.group, true});
  }

  // Activation gradients: one arena, the accumulated ones first, so that zeroing them is
  // one call.
  const int64_t align = kAlignBytes / static_cast<int64_t>(dtype_size(dt));
  int64_t arena = 0;
  grad_offset_.assign(graph_.acts.size(), -1);
  for (bool overwritten : {false, true}) {
    for (size_t a = 0; a < graph_.acts.size(); ++a) {
      if (!graph_.acts[a].needs_grad || elided_[a] || placed_[a].root >= 0 ||
          (first_writer_[a] >= 0) != overwritten)
        continue;
      grad_offset_[a] = arena;
      arena += (graph_.acts[a].shape.numel() + align - 1) / align * align;
    }
    if (!overwritten) zeroed_ = arena;
  }

  input_id_ = plan_.request("input", {opt_.batch, opt_.imgsz, opt_.imgsz, 3}, DType::kU8);
  for (size_t a = 0; a < graph_.acts.size(); ++a)
    act_ids_.push_back(elided_[a] || placed_[a].root >= 0
                           ? -1
                           : plan_.request(graph_.acts[a].name, graph_.acts[a].shape, dt));
  arena_id_ = plan_.request("activation_grads", {arena}, dt);
  params_id_ = plan_.request("params", {flat_size_}, pt);
  grads_id_ = plan_.request("grads", {flat_size_}, pt);
  groups_id_ = plan_.request("groups", {flat_size_}, DType::kU8);
  stats_id_ = plan_.request("bn_stats", {stats_size_}, pt);
  saved_id_ = plan_.request("bn_saved", {stats_size_}, pt);
  bf16_offset_.assign(graph_.params.size(), -1);
  if (dt == DType::kBF16) {
    int64_t size = 0;
    for (const GraphOp& o : graph_.ops)
      if (o.kind == OpKind::kConv && o.weight >= 0 && !graph_.params[o.weight].constant) {
        bf16_offset_[o.weight] = size;
        size += (graph_.params[o.weight].shape.numel() + 7) / 8 * 8;
      }
    weights_id_ = plan_.request("weights_bf16", {std::max<int64_t>(size, 1)}, DType::kBF16);
  }
  // One scratch buffer for every op that needs one (convs, and BN's sliced reductions on
  // CUDA): ops run one after another on the step's stream. A conv's tile statistics for the
  // BN after it lie after that BN's own part (stats_offset).
  size_t ws = 0;
  for (size_t i = 0; i < graph_.ops.size(); ++i) {
    const GraphOp& o = graph_.ops[i];
    if (o.kind == OpKind::kConv)
      ws = std::max(ws, conv2d_workspace_bytes(graph_.acts[o.inputs[0]].shape, graph_.params[o.weight].shape,
                                               o.conv, dt, opt_.device));
    if (o.kind == OpKind::kBatchNorm)
      ws = std::max(ws, batchnorm_workspace_bytes(graph_.acts[o.inputs[0]].shape, opt_.device));
    if (const int64_t tiles = stats_tiles_[i]; tiles > 0)
      ws = std::max(ws, stats_offset(graph_.acts[o.outputs[0]].shape, opt_.device) +
                            static_cast<size_t>(tiles * graph_.acts[o.outputs[0]].shape[3]) * sizeof(MeanM2));
  }
  if (ws > 0)
    workspace_id_ = plan_.request("op_workspace", {static_cast<int64_t>((ws + 3) / 4)}, DType::kF32);
  plan_.allocate();
}

void Model::bind() {
  input_ = plan_.get(input_id_);
  params_ = plan_.get(params_id_), grads_ = plan_.get(grads_id_), groups_ = plan_.get(groups_id_);
  bn_stats_ = plan_.get(stats_id_), arena_ = plan_.get(arena_id_);
  const Tensor saved = plan_.get(saved_id_);
  if (weights_id_ >= 0) weights_ = plan_.get(weights_id_);
  if (workspace_id_ >= 0) workspace_ = plan_.get(workspace_id_);

  std::vector<Tensor> act(graph_.acts.size()), dact(graph_.acts.size());
  for (size_t a = 0; a < graph_.acts.size(); ++a) {
    if (act_ids_[a] >= 0) act[a] = plan_.get(act_ids_[a]);
    if (grad_offset_[a] >= 0) dact[a] = slice(arena_, grad_offset_[a], graph_.acts[a].shape);
  }
  // Views into the concatenations, which come later in the graph (already bound above).
  for (size_t a = 0; a < graph_.acts.size(); ++a) {
    const auto [root, first] = placed_[a];
    if (root < 0) continue;
    act[a] = act[root].channels(first, graph_.acts[a].shape[3]);
    if (graph_.acts[a].needs_grad) dact[a] = dact[root].channels(first, graph_.acts[a].shape[3]);
  }
  auto param = [&](const Tensor& flat, int id) {
    return slice(flat, param_offset_[id], graph_.params[id].shape);
  };

  for (size_t i = 0; i < graph_.ops.size(); ++i) {
    if (absorbed_[i] || in_place_[i]) continue;
    const GraphOp& op = graph_.ops[i];
    BoundOp b;
    b.op = &op;
    b.index = i;
    // A fused BN writes the SiLU's output (or the residual add's) and reads its gradient.
    b.silu = op.kind == OpKind::kBatchNorm && i + 1 < graph_.ops.size() && absorbed_[i + 1];
    if (const int r = residual_[i]; r >= 0)
      b.r = act[r], b.dr = dact[r], b.overwrite_r = first_writer_[r] == static_cast<int>(i) + 2;
    for (int a : op.inputs) b.overwrite.push_back(first_writer_[a] == static_cast<int>(i));
    // A conv feeding its BN's statistics, and that BN: the same view of the workspace.
    const size_t conv_op = stats_tiles_[i] > 0 ? i : i - 1;  // this conv, or the conv before this BN
    if (conv_op < graph_.ops.size() && stats_tiles_[conv_op] > 0) {
      const Shape& y = graph_.acts[graph_.ops[conv_op].outputs[0]].shape;
      const int64_t off = static_cast<int64_t>(stats_offset(y, opt_.device) / sizeof(float));
      b.tile_stats = slice(workspace_, off, {stats_tiles_[conv_op], y[3], 3});
    }
    const std::vector<int>& outputs = residual_[i] >= 0 ? graph_.ops[i + 2].outputs
                                      : b.silu          ? graph_.ops[i + 1].outputs
                                                        : op.outputs;
    for (int a : op.inputs) b.x.push_back(act[a]), b.dx.push_back(dact[a]);
    for (int a : outputs) b.y.push_back(act[a]), b.dy.push_back(dact[a]);
    if (op.weight >= 0) {
      b.w = param(params_, op.weight);
      if (bf16_offset_[op.weight] >= 0) {
        const Tensor master = b.w;
        b.w = slice(weights_, bf16_offset_[op.weight], graph_.params[op.weight].shape);
        weight_casts_.emplace_back(master, b.w);
      }
      b.dw = param(grads_, op.weight);
      b.param_offset = param_offset_[op.weight];
      b.param_count = graph_.params[op.weight].shape.numel();
    }
    if (op.bias >= 0) {
      b.b = param(params_, op.bias);
      b.db = param(grads_, op.bias);
      b.param_count += graph_.params[op.bias].shape.numel();
    }
    if (op.bn >= 0) {
      const int64_t c = graph_.bns[op.bn].channels, off = bn_offset_[op.bn];
      b.run_mean = slice(bn_stats_, off, {c}), b.run_var = slice(bn_stats_, off + c, {c});
      b.save_mean = slice(saved, off, {c}), b.save_invstd = slice(saved, off + c, {c});
    }
    ops_.push_back(std::move(b));
  }
  for (int o : graph_.outputs) outputs_.push_back(act[o]), output_grads_.push_back(dact[o]);

  std::vector<uint8_t> groups(static_cast<size_t>(flat_size_));
  for (const ParamInfo& p : table_)
    if (!p.constant) std::fill_n(groups.begin() + p.offset, p.shape.numel(), static_cast<uint8_t>(p.group));
  copy(Tensor::view(groups.data(), {flat_size_}, DType::kU8, Device::kCPU), groups_);
}

void Model::refresh_weights(Stream s) {
  for (const auto& [master, copy] : weight_casts_) cast(master, copy, s);
}

void Model::forward_op(const BoundOp& o, bool train, Stream s) {
  switch (o.op->kind) {
    case OpKind::kImageInput:
      image_to_activation(input_, o.y[0], s);
      break;
    case OpKind::kConv:
      conv2d_forward(o.x[0], o.w, o.b.defined() ? &o.b : nullptr, o.y[0], o.op->conv, workspace_, s,
                     train && o.tile_stats.defined() ? &o.tile_stats : nullptr);
      break;
    case OpKind::kBatchNorm: {
      BatchNormParams p = bn_params(o.silu, false);
      if (o.r.defined()) p.residual = &o.r;
      if (train)
        batchnorm_forward_train(o.x[0], o.w, o.b, o.y[0], o.run_mean, o.run_var, o.save_mean, o.save_invstd,
                                p, s, workspace_, o.tile_stats.defined() ? &o.tile_stats : nullptr);
      else
        batchnorm_forward_eval(o.x[0], o.w, o.b, o.run_mean, o.run_var, o.y[0], p, s);
      break;
    }
    case OpKind::kSiLU:
      activation_forward(kSiLU, o.x[0], o.y[0], s);
      break;
    case OpKind::kAdd:
      add_forward(o.x[0], o.x[1], o.y[0], s);
      break;
    case OpKind::kSplit:
      split_forward(o.x[0], o.y, s);
      break;
    case OpKind::kConcat:
      concat_forward(o.x, o.y[0], s);
      break;
    case OpKind::kMaxPool:
      maxpool_forward(o.x[0], o.y[0], o.op->pool, s);
      break;
    case OpKind::kUpsample:
      upsample_nearest_forward(o.x[0], o.y[0], o.op->scale, s);
      break;
  }
}

void Model::backward_op(const BoundOp& o, bool train, Stream s) {
  const Tensor* dx = o.dx.empty() || !o.dx[0].defined() ? nullptr : &o.dx[0];
  switch (o.op->kind) {
    case OpKind::kImageInput:
      break;
    case OpKind::kConv: {
      Conv2dParams p = o.op->conv;
      p.overwrite_dx = o.overwrite[0];
      conv2d_backward(o.x[0], o.w, o.dy[0], dx, &o.dw, o.b.defined() ? &o.db : nullptr, p, workspace_, s);
      break;
    }
    case OpKind::kBatchNorm: {
      BatchNormParams p = bn_params(o.silu, o.overwrite[0]);
      if (o.dr.defined()) p.dresidual = &o.dr, p.overwrite_dresidual = o.overwrite_r;
      if (train)
        batchnorm_backward(o.x[0], o.dy[0], o.w, o.b, o.save_mean, o.save_invstd, dx, &o.dw, &o.db, p, s,
                           workspace_);
      else
        batchnorm_backward_eval(o.x[0], o.dy[0], o.w, o.b, o.run_mean, o.run_var, dx, &o.dw, &o.db, p, s);
      break;
    }
    case OpKind::kSiLU:
      activation_backward(kSiLU, o.x[0], o.dy[0], o.dx[0], s);
      break;
    case OpKind::kAdd:
      add_backward(o.dy[0], &o.dx[0], &o.dx[1], s, o.overwrite[0], o.overwrite[1]);
      break;
    case OpKind::kSplit:
      split_backward(o.dy, o.dx[0], s, o.overwrite[0]);
      break;
    case OpKind::kConcat:
      concat_backward(o.dy[0], o.dx, s, o.overwrite);
      break;
    case OpKind::kMaxPool:
      maxpool_backward(o.x[0], o.dy[0], o.dx[0], o.op->pool, s);
      break;
    case OpKind::kUpsample:
      upsample_nearest_backward(o.dy[0], o.dx[0], o.op->scale, s);
      break;
  }
}

void Model::forward(bool train, Stream s) {
  for (const BoundOp& o : ops_) {
    if (hook_) hook_(o.index, false, false);
    forward_op(o, train, s);
    if (hook_) hook_(o.index, false, true);
  }
  has_forward_ = true;
  last_train_ = train;
}

void Model::zero_grads(Stream s) {
  zero(grads_, s);
  zero_activation_grads(s);
}

void Model::zero_activation_grads(Stream s) {
  zero(slice(arena_, 0, {zeroed_}), s);
}

void Model::backward(Stream s, const ReadyFn& on_ready) {
  VT_CHECK(has_forward_, "model ", path_, ": backward() before any forward()");
  for (auto it = ops_.rbegin(); it != ops_.rend(); ++it) {
    if (hook_) hook_(it->index, true, false);
    backward_op(*it, last_train_, s);
    if (hook_) hook_(it->index, true, true);
    if (it->param_count > 0 && on_ready) on_ready(it->param_offset, it->param_count);
  }
}

}  // namespace vt
