// Model: a detector built from a ModelSpec, as a static graph over statically planned memory.
//
// At construction the model expands the spec (model_graph.h) for a fixed batch B and image
// size S and requests every buffer a step needs from one MemoryPlan on its device: the u8
// input, every activation, one gradient arena for all activation gradients, the flat
// parameter buffers, BN statistics and the conv workspace. forward() and backward() then
// only launch ops; they allocate nothing, so a GPU step can be captured as a CUDA graph.
// On CUDA each Conv's BN -> SiLU pair runs as one op, batch norm with its SiLU fused
// (batchnorm.h): the BN output between them, read by that SiLU alone, has no buffer and no
// gradient (ModelOptions::fusion; the graph itself, which the exporters walk, keeps both ops).
// Likewise the Bottleneck's residual add after such a pair (x + cv2(cv1(x))) runs inside the
// BN op (BatchNormParams::residual), and the SiLU output it alone read is not stored either.
// The gradient of an activation is written, not added into, by the first backward that
// produces it (its last reader's), and lies after the arena's zeroed part
// (ModelOptions::overwrite_grads):
// zero_grads() clears only what is accumulated.
// A concatenation whose inputs those fused BN ops, upsamples or convs write (C2f's: cv1's
// output, split in two, and each Bottleneck's; the neck's; the Detect's box and class
// outputs) is one buffer they write in place, each input a channel view of it
// (Tensor::channels), read in place by the convs, fused residuals and upsamples after them;
// the concat (and C2f's split) then do nothing, and neither do their backward passes, whose
// gradients are views of the concatenation's gradient likewise
// (ModelOptions::concat_in_place). Only the SPPF's concat (max pools read its inputs) copies.
// The constructor initialises the weights from options.seed (init()); load_state() replaces
// them.
//
// Flat buffers (P = flat_size() elements each, laid out in the order backward produces the
// gradients: the last op first, so that a finished range is always a prefix):
//   params   (P)  param_dtype(dtype): f32, or f64 in the CPU f64 mode (gradient checks)
//   grads    (P)  same type; backward ACCUMULATES into it, like every op
//   groups   (P)  u8: 0 conv weights (decayed), 1 BN gamma, 2 biases (BN beta, Detect conv biases)
//   bn_stats (2 sum C)  per BN, in the same order: running mean (C), then running var (C)
// A bf16 model keeps a bf16 copy of its conv weights, made by refresh_weights(), each
// weight at an offset that is a multiple of 8 elements (16 bytes: the tensor-core convs' vector
// loads need it whatever the class count); f32 and f64 models read the master weights directly.
//
// The parameter table lists every parameter under its Ultralytics name with its shape (conv
// weights OHWI), offset and group, in flat order, then the constant DFL weights (offset -1,
// not in the flat buffers, never trained): num_params() counts them as Ultralytics does
// (3,157,200 for yolov8n with 80 classes), flat_size() does not.
//
// A step:   model.zero_grads(s);                 // param and activation gradients, outputs' too
//           copy the u8 batch into model.input();
//           model.forward(true, s);              // outputs(): raw Detect outputs per level
//           loss accumulates into output_grads();
//           model.backward(s, on_ready);         // on_ready(offset, count) per finished range
//           optimizer step on params(); model.refresh_weights(s);
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "layers/memory_plan.h"
#include "layers/model_graph.h"
#include "layers/model_spec.h"
#include "layers/tensor.h"

namespace vt {

struct ModelOptions {
  Device device = Device::kCPU;
  DType dtype = DType::kF32;  // activations: f32 or f64 on the CPU, f32 or bf16 on CUDA
  int64_t batch = 1;
  int64_t imgsz = 640;
  uint64_t seed = 0;  // initial weights (init())
  // BN -> SiLU pairs fused (above) or run as the graph's two ops: the same results up to the
  // rounding of the BN output. kAuto fuses on CUDA, where it saves two passes over the
  // activations in each direction; the CPU keeps the separate ops, whose SiLU runs in fp32 over
  // OpenMP threads (the fused CPU op is the double-precision reference: measured 20% slower
  // per yolov8n step at 320 on 2 cores).
  enum class Fusion { kAuto, kOn, kOff } fusion = Fusion::kAuto;
  // Backward order is the reverse of the graph's, so the last op that reads an activation is
  // the first to produce its gradient: where that op's backward writes every element of that
  // input (a conv, BN, concat, split or add: all but the max pool's scatter, the upsample's
  // gather and a separate SiLU) and reads the activation once, it writes the gradient
  // instead of adding into it, and the earlier readers then add. Only the other gradients
  // (and the outputs', which the loss adds into) are zeroed per step: per written gradient,
  // one memset and one read less on every device. Off: the reference the tests compare with
  // (the same values: 0 + v is v).
  bool overwrite_grads = true;
  // Concatenations written in place by their inputs' producers (above): no copy of the
  // activations into a concatenation, nor of its gradient back out, nor of C2f's cv1 output
  // into the two halves the split makes. Applies where the BN ops are fused (the SiLU ops do
  // not take views); the same results. Off: the reference the tests compare with.
  bool concat_in_place = true;
  // CUDA, bf16: a BN reading a tensor-core conv's output alone takes its batch statistics
  // from the conv's epilogue (per-tile column statistics, conv2d_forward's tile_stats), so its
  // training forward reads that output once instead of twice. Off: the BN's own pass.
  bool conv_stats = true;
};

// Turns off the speed features named in `names`, comma-separated: fusion, concat-in-place,
// conv-stats, overwrite-grads ("" for none): to bisect a device problem, or measure what
// each feature buys (the results are the same up to rounding either way). Throws naming an
// unknown one and the known ones.
void disable_features(ModelOptions& o, const std::string& names);

struct ParamInfo {
  std::string name;     // "model.2.m.0.cv1.conv.weight", "model.22.cv3.1.2.bias", ...
  Shape shape;          // conv weights (Cout, KH, KW, Cin / groups)
  int64_t offset = -1;  // into the flat buffers; -1 for a constant
  ParamGroup group = kGroupWeight;
  bool constant = false;
};

// Host values by name: parameters and BN statistics ("<bn>.running_mean", "<bn>.running_var"),
// each flattened in its table shape (conv weights OHWI).
using NamedValues = std::map<std::string, std::vector<float>>;

class Model {
 public:
  Model(const ModelSpec& spec, const ModelOptions& options);
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelOptions& options() const { return opt_; }
  const ModelGraph& graph() const { return graph_; }
  int nc() const { return graph_.nc; }
  int reg_max() const { return graph_.reg_max; }
  const std::vector<int>& strides() const { return graph_.strides; }
  int64_t num_params() const;  // Ultralytics' count, DFL constant included
  int64_t flat_size() const { return flat_size_; }
  const std::vector<ParamInfo>& param_table() const { return table_; }

  Tensor input() const { return input_; }        // (B, S, S, 3) u8 RGB on the model's device
  Tensor params() const { return params_; }      // (P)
  Tensor grads() const { return grads_; }        // (P)
  Tensor groups() const { return groups_; }      // (P) u8
  Tensor bn_stats() const { return bn_stats_; }  // (2 sum C)
  // Per detection level l (strides()[l]): (B, S / stride, S / stride, 4 reg_max + nc) in the
  // activation type; channels [0, 64) are the box-distribution logits ordered (side, bin),
  // sides left, top, right, bottom; channels [64, 64 + nc) the class logits.
  const std::vector<Tensor>& outputs() const { return outputs_; }
  // The same shapes; the loss ACCUMULATES d(loss)/d(outputs) here before backward().
  const std::vector<Tensor>& output_grads() const { return output_grads_; }

  // PyTorch's default init from `seed` (conv weights and biases U(-1/sqrt(fan_in),
  // 1/sqrt(fan_in)), drawn in flat order), BN gamma 1, beta 0, running mean 0, var 1, then
  // Detect's bias_init. Synchronous; refreshes the bf16 weight copy.
  void init(uint64_t seed);
  // bf16 models: recasts the fp32 master weights into the bf16 copy the convolutions read;
  // call after every change of params() (optimizer step, EMA swap). No-op otherwise.
  void refresh_weights(Stream s = {});

  // Runs the graph on input(). train: BN normalises with batch statistics and updates the
  // running ones; eval: BN uses the running statistics.
  void forward(bool train, Stream s = {});
  // Zeroes grads() and every activation gradient, output_grads() included.
  void zero_grads(Stream s = {});
  // Zeroes the activation gradients only: between micro-batches whose parameter gradients
  // are summed.
  void zero_activation_grads(Stream s = {});
  // Elements of activation gradient those calls zero (the accumulated ones; see overwrite_grads).
  int64_t zeroed_grad_elems() const { return zeroed_; }
  // Backpropagates output_grads() through the last forward (train or eval mode: eval
  // backward treats BN as the fixed affine map it computed), ACCUMULATING into grads().
  // on_ready(offset, count) is called as each op's parameter gradients become final, in
  // increasing offset order, the ranges covering [0, P) exactly once. On CUDA "final" is in
  // stream order: the work is enqueued on `s`; record an event on `s` to wait for it.
  using ReadyFn = std::function<void(int64_t offset, int64_t count)>;
  void backward(Stream s = {}, const ReadyFn& on_ready = {});

  // Profiling (bench/step_profile): when set, forward() and backward() call hook(i, backward,
  // after) just before and just after running graph().ops[i] (a SiLU or add fused into the
  // BN before them is never called: it runs inside that BN's call; nor is a concat or split
  // done in place). Unset by an empty function.
  using OpHook = std::function<void(size_t op, bool backward, bool after)>;
  void set_op_hook(OpHook hook) { hook_ = std::move(hook); }

  // Parameters and BN statistics by name, DFL constant included. Synchronous.
  NamedValues state() const;
  // The same for other buffers laid out like params() and bn_stats() (the EMA's).
  NamedValues state_of(const Tensor& params, const Tensor& bn_stats) const;
  // Sets them from `values`, which must hold every parameter and statistic of the table with
  // its exact size; the DFL constant may be given (it must then be 0..15) or left out, and
  // PyTorch's "*.num_batches_tracked" counters are ignored. Unknown names are an error.
  // Synchronous; refreshes the bf16 weight copy.
  void load_state(const NamedValues& values);

  // Ultralytics' layer table: index, from, repeats, parameters, module, args; then totals
  // and the memory plan's size.
  std::string summary() const;
  const MemoryPlan& memory() const { return plan_; }

 private:
  // An op with its tensors bound (views into the plan), so a step builds nothing.
  struct BoundOp {
    const GraphOp* op = nullptr;
    size_t index = 0;                  // in graph().ops
    std::vector<Tensor> x, y, dx, dy;  // dx[i] undefined when input i takes no gradient
    Tensor w, b, dw, db;               // conv: weight (activation type) and bias; BN: gamma, beta
    Tensor run_mean, run_var, save_mean, save_invstd;
    bool silu = false;  // BN with the following SiLU fused: y and dy are the SiLU's output
    // BN (with its SiLU) with the residual add after them fused: y and dy are the add's
    // output; r is the add's other input, dr its gradient (written: overwrite_r).
    Tensor r, dr;
    bool overwrite_r = false;
    std::vector<bool> overwrite;  // per input: backward writes dx[i] (its first writer), not adds
    Tensor tile_stats;            // a conv and the BN after it: the conv's per-tile statistics of its output
    int64_t param_offset = 0, param_count = 0;
  };

  std::vector<int> readers() const;
  void find_fusions();
  void find_in_place();
  void find_overwrites();
  void find_conv_stats();
  void plan_memory();
  void bind();
  void forward_op(const BoundOp& o, bool train, Stream s);
  void backward_op(const BoundOp& o, bool train, Stream s);

  ModelOptions opt_;
  std::string path_;
  std::vector<LayerSpec> layers_;
  ModelGraph graph_;
  MemoryPlan plan_;
  int64_t flat_size_ = 0, stats_size_ = 0;
  std::vector<ParamInfo> table_;
  std::vector<int64_t> param_offset_;  // per graph param (-1 for constants)
  std::vector<int64_t> bf16_offset_;   // per conv weight, in the bf16 copy (bf16 models; -1 otherwise)
  std::vector<std::pair<Tensor, Tensor>> weight_casts_;  // (master, bf16 copy) per conv weight
  std::vector<int64_t> bn_offset_;                       // per BN: start of its mean in bn_stats
  std::vector<int64_t> grad_offset_;  // per activation: start in the gradient arena (-1: none)
  std::vector<bool> absorbed_;        // per graph op: a SiLU or add run inside the BN before it
  std::vector<int> residual_;         // per graph op: a BN's fused residual (activation), or -1
  std::vector<bool> elided_;          // per activation: a fused BN's or SiLU's output, never stored
  // Per activation: the concatenation (activation) it is a channel view of and its first
  // channel there, or {-1, 0}: concat_in_place.
  struct Placement {
    int root = -1;
    int64_t offset = 0;
  };
  std::vector<Placement> placed_;
  std::vector<bool> in_place_;     // per graph op: a concat or split its views make a no-op
  std::vector<int> first_writer_;  // per activation: the graph op whose backward writes its gradient, or -1
  std::vector<int64_t> stats_tiles_;  // per graph op: a conv's tiles of statistics for the BN after it, or 0
  int64_t zeroed_ = 0;                // the arena's first zeroed_ elements: gradients added into
  OpHook hook_;
  std::vector<BufferId> act_ids_;
  BufferId input_id_ = -1, params_id_ = -1, grads_id_ = -1, groups_id_ = -1, stats_id_ = -1;
  BufferId saved_id_ = -1, weights_id_ = -1, arena_id_ = -1, workspace_id_ = -1;
  Tensor input_, params_, grads_, groups_, bn_stats_, weights_, arena_, workspace_;
  std::vector<Tensor> outputs_, output_grads_;
  std::vector<BoundOp> ops_;
  bool has_forward_ = false, last_train_ = false;
};

}  // namespace vt
