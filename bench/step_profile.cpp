// step_profile: where one training step's time goes, op by op (issue 8). The first thing to
// run on a GPU before optimising anything: it ranks the model's ops by time and says which
// are far from the device's copy rate or its tensor-core rate.
//
//   ./build/bench/step_profile [--model configs/yolov8n.yaml] [--batch 64] [--imgsz 640]
//                              [--device auto|cpu|cuda] [--steps 5] [--top 12] [--out FILE.json]
//                              [--disable fusion,concat-in-place,conv-stats,overwrite-grads]
//
// The model is built as training builds it (bf16 with BN + SiLU fused and gradients
// overwritten on the GPU, f32 on the CPU), with random images and 8 random boxes per image.
// One step = zero the gradients, forward, the detection loss, backward, the optimizer (the
// gradient norm, SGD, the EMA of the weights and of the BN statistics, the bf16 weight
// casts). Every op of forward and backward is timed through Model::set_op_hook with CUDA
// events on the step's stream (host clocks on the CPU, whose ops are synchronous); each
// figure is the median over --steps steps after one warm-up step. A separate step without
// the per-op events gives the step time and images/s.
//
// Per op kind: count, forward and backward ms, share of the step, and the rate of its
// minimal traffic (each tensor read or written once, except BN's two passes over x, and dy in
// its backward, as kernel_bench counts them) in GB/s, against a device-to-device copy of
// the largest activation measured in the same run; convolutions also in TFLOP/s (2 N Ho Wo
// Cout KH KW Cin/groups per product, three products). Then the --top slowest ops (the JSON
// lists every op).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <cxxopts.hpp>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "layers/check.h"
#include "layers/cuda_graph.h"
#include "layers/detect_loss.h"
#include "layers/model.h"
#include "layers/reduce.h"
#include "optim/update.h"

#ifdef VT_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace {

using namespace vt;

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Points in the step's stream order: CUDA events, read once the step is done; on the CPU,
// host clock readings (every op has finished when it returns).
class Clock {
 public:
  Clock(Device dev, Stream s) : cuda_(dev == Device::kCUDA), s_(s) {}
  ~Clock() {
#ifdef VT_WITH_CUDA
    for (void* e : events_) cudaEventDestroy(static_cast<cudaEvent_t>(e));
#endif
  }
  void reset() { n_ = 0; }
  size_t mark() {
    if (!cuda_) {
      if (n_ == host_.size()) host_.push_back(0);
      host_[n_] = now_ms();
      return n_++;
    }
#ifdef VT_WITH_CUDA
    if (n_ == events_.size()) {
      cudaEvent_t e = nullptr;
      CUDA_CHECK(cudaEventCreate(&e));
      events_.push_back(e);
    }
    CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(events_[n_]), static_cast<cudaStream_t>(s_.handle)));
#endif
    return n_++;
  }
  // Milliseconds between marks a and b of a finished step.
  double ms(size_t a, size_t b) const {
    if (!cuda_) return host_[b] - host_[a];
    float t = 0;
#ifdef VT_WITH_CUDA
    CUDA_CHECK(cudaEventElapsedTime(&t, static_cast<cudaEvent_t>(events_[a]), static_cast<cudaEvent_t>(events_[b])));
#endif
    return t;
  }

 private:
  bool cuda_;
  Stream s_;
  size_t n_ = 0;
  std::vector<void*> events_;
  std::vector<double> host_;
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Random boxes, 8 per image, as (cls, x1, y1, x2, y2) pixel rows.
Tensor random_targets(int64_t batch, int nc, int64_t imgsz, Device dev) {
  const int64_t m = 8;
  Tensor t = Tensor::empty({batch, m, 5}, DType::kF32, Device::kCPU);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  float* p = t.data<float>();
  for (int64_t i = 0; i < batch * m; ++i) {
    const float s = float(imgsz), w = (0.05f + 0.4f * u(rng)) * s, h = (0.05f + 0.4f * u(rng)) * s;
    const float x = u(rng) * (s - w), y = u(rng) * (s - h);
    const float row[5] = {float(rng() % unsigned(nc)), x, y, x + w, y + h};
    std::copy(row, row + 5, p + i * 5);
  }
  return t.to(dev);
}

// What one graph op moves and computes: minimal traffic in bytes, forward and backward, and
// (convolutions) forward flops.
struct OpCost {
  std::string kind;
  double fwd_bytes = 0, bwd_bytes = 0, flops = 0;
};

OpCost op_cost(const ModelGraph& g, size_t i, bool fused, double esize) {
  const GraphOp& o = g.ops[i];
  double in = 0, out = 0;
  for (int a : o.inputs) in += double(g.acts[a].shape.numel());
  for (int a : o.outputs) out += double(g.acts[a].shape.numel());
  OpCost c;
  switch (o.kind) {
    case OpKind::kImageInput:
      c.kind = "image input";
      c.fwd_bytes = out * (1 + esize);  // u8 in, activation out
      return c;
    case OpKind::kConv: {
      const Shape& w = g.params[o.weight].shape;
      const Shape& y = g.acts[o.outputs[0]].shape;
      c.kind = "conv";
      c.flops = 2.0 * double(y[0] * y[1] * y[2]) * double(w[0]) * double(w[1] * w[2] * w[3]);
      c.fwd_bytes = (in + out) * esize;
      c.bwd_bytes = (2 * in + 2 * out) * esize;  // dgrad: dy, dx; wgrad: x, dy
      return c;
    }
    case OpKind::kBatchNorm:
      c.kind = fused ? "bn+silu" : "bn";
      c.fwd_bytes = (2 * in + out) * esize;
      c.bwd_bytes = (2 * in + 2 * out + in) * esize;
      return c;
    case OpKind::kSiLU: c.kind = "silu"; break;
    case OpKind::kAdd: c.kind = "add"; break;
    case OpKind::kSplit: c.kind = "split"; break;
    case OpKind::kConcat: c.kind = "concat"; break;
    case OpKind::kMaxPool: c.kind = "maxpool"; break;
    case OpKind::kUpsample: c.kind = "upsample"; break;
  }
  c.fwd_bytes = (in + out) * esize;
  const bool reads_x = o.kind == OpKind::kSiLU || o.kind == OpKind::kMaxPool;
  c.bwd_bytes = (out + in + (reads_x ? in : 0)) * esize;
  return c;
}

struct Row {
  std::string kind;
  int ops = 0;
  double fwd = 0, bwd = 0, bytes = 0, flops = 0;
};

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options cli("step_profile", "Times every op of a training step (see the top of bench/step_profile.cpp).");
  cli.add_options()("model", "model YAML", cxxopts::value<std::string>()->default_value("configs/yolov8n.yaml"))(
      "batch", "images per step", cxxopts::value<int64_t>()->default_value("64"))(
      "imgsz", "image size", cxxopts::value<int64_t>()->default_value("640"))(
      "device", "auto, cpu or cuda", cxxopts::value<std::string>()->default_value("auto"))(
      "steps", "measured steps (the median is reported)", cxxopts::value<int>()->default_value("5"))(
      "top", "slowest ops listed", cxxopts::value<int>()->default_value("12"))(
      "out", "JSON file", cxxopts::value<std::string>()->default_value(""))(
      "disable", "model speed features to turn off (fusion, concat-in-place, conv-stats, overwrite-grads)",
      cxxopts::value<std::string>()->default_value(""))("h,help", "show this help");
  try {
    const auto a = cli.parse(argc, argv);
    if (a.count("help")) {
      std::printf("%s\n", cli.help().c_str());
      return 0;
    }
    const std::string dev_name = a["device"].as<std::string>();
    VT_CHECK(dev_name == "auto" || dev_name == "cpu" || dev_name == "cuda", "--device must be auto, cpu or cuda");
    const Device dev =
        dev_name == "cuda" || (dev_name == "auto" && cuda_device_count() > 0) ? Device::kCUDA : Device::kCPU;
    const DType dt = dev == Device::kCUDA ? DType::kBF16 : DType::kF32;
    const int64_t batch = a["batch"].as<int64_t>(), imgsz = a["imgsz"].as<int64_t>();
    const int steps = a["steps"].as<int>();
    VT_CHECK(batch >= 1 && imgsz >= 32 && steps >= 1, "--batch, --steps >= 1 and --imgsz >= 32");
    const std::string model_path = a["model"].as<std::string>();

    std::unique_ptr<CudaStream> owned;
    Stream s{};
    if (dev == Device::kCUDA) owned = std::make_unique<CudaStream>(), s = owned->get();
    ModelOptions mo;
    mo.device = dev, mo.dtype = dt, mo.batch = batch, mo.imgsz = imgsz, mo.seed = 1;
    disable_features(mo, a["disable"].as<std::string>());
    Model model(load_model_spec(model_path, 0), mo);
    const ModelGraph& g = model.graph();

    // The step's other buffers, as the trainer plans them.
    DetectLossConfig lc;
    lc.nc = model.nc(), lc.reg_max = model.reg_max(), lc.strides = model.strides(), lc.imgsz = int(imgsz);
    const Tensor targets = random_targets(batch, model.nc(), imgsz, dev);
    const Tensor loss = Tensor::empty({4}, DType::kF32, dev);
    const Tensor loss_ws = Tensor::empty(
        {int64_t(detect_loss_workspace_bytes(lc, batch, targets.dim(1), dt, dev) / 4 + 1)}, DType::kF32, dev);
    const int64_t p = model.flat_size();
    const Tensor sumsq = Tensor::empty({1}, DType::kF32, dev), momentum = Tensor::empty({p}, DType::kF32, dev);
    const int64_t red = reduce_workspace_elems(p, dev);
    const Tensor red_ws = red > 0 ? Tensor::empty({red}, DType::kF32, dev) : Tensor{};
    const Tensor ema = model.params().to(dev), ema_bn = model.bn_stats().to(dev);
    StepValues values(dev, DType::kF32);
    StepHyper hyper;
    hyper.step = 2;
    values.set(hyper, {&sumsq, 10.0, 1.0}, 0.999);
    {
      Tensor host = Tensor::empty(model.input().shape(), DType::kU8, Device::kCPU);
      std::mt19937 rng(5);
      for (int64_t i = 0; i < host.numel(); ++i) host.data<uint8_t>()[i] = uint8_t(rng());
      copy(host, model.input());
    }

    Clock clock(dev, s);
    std::vector<std::pair<size_t, size_t>> fwd_marks(g.ops.size()), bwd_marks(g.ops.size());
    std::vector<bool> seen(g.ops.size(), false);
    size_t pending = 0;
    model.set_op_hook([&](size_t i, bool backward, bool after) {
      const size_t m = clock.mark();
      if (!after) {
        pending = m;
        return;
      }
      (backward ? bwd_marks : fwd_marks)[i] = {pending, m};
      seen[i] = true;
    });
    size_t t_zero = 0, t_fwd = 0, t_loss = 0, t_bwd = 0, t_opt = 0, t_end = 0;
    auto step = [&] {
      clock.reset();
      t_zero = clock.mark();
      model.zero_grads(s);
      t_fwd = clock.mark();
      model.forward(true, s);
      t_loss = clock.mark();
      detect_loss(lc, model.outputs(), targets, model.output_grads(), loss, loss_ws, s);
      t_bwd = clock.mark();
      model.backward(s);
      t_opt = clock.mark();
      reduce_sum_squares(model.grads(), sumsq, red_ws, s);
      sgd_step(values, model.params(), model.grads(), model.groups(), momentum, s);
      ema_update(values, ema, model.params(), s);
      ema_update(values, ema_bn, model.bn_stats(), s);
      model.refresh_weights(s);
      t_end = clock.mark();
      synchronize(s);
    };
    step();  // warm-up; also finds which ops run (a fused SiLU does not)

    std::vector<std::vector<double>> fwd_ms(g.ops.size()), bwd_ms(g.ops.size());
    std::vector<double> zero_ms, loss_ms, opt_ms, instrumented_ms;
    for (int k = 0; k < steps; ++k) {
      step();
      for (size_t i = 0; i < g.ops.size(); ++i) {
        if (!seen[i]) continue;
        fwd_ms[i].push_back(clock.ms(fwd_marks[i].first, fwd_marks[i].second));
        if (bwd_marks[i].second > bwd_marks[i].first)
          bwd_ms[i].push_back(clock.ms(bwd_marks[i].first, bwd_marks[i].second));
      }
      zero_ms.push_back(clock.ms(t_zero, t_fwd));
      loss_ms.push_back(clock.ms(t_loss, t_bwd));
      opt_ms.push_back(clock.ms(t_opt, t_end));
      instrumented_ms.push_back(clock.ms(t_zero, t_end));
    }
    // The step without per-op events: its time and images/s.
    model.set_op_hook({});
    std::vector<double> plain_ms;
    for (int k = 0; k < steps; ++k) {
      step();
      plain_ms.push_back(clock.ms(t_zero, t_end));
    }
    const double step_ms = median(plain_ms);

    // The copy yardstick: the largest activation, device to device (host memcpy on the CPU).
    int64_t biggest = 0;
    for (const GraphAct& act : g.acts) biggest = std::max(biggest, act.shape.numel());
    const Tensor src = Tensor::empty({biggest}, dt, dev), dst = Tensor::empty({biggest}, dt, dev);
    std::vector<double> copy_ms;
    for (int k = 0; k < steps + 1; ++k) {
      clock.reset();
      const size_t c0 = clock.mark();
      copy_async(src, dst, s);
      const size_t c1 = clock.mark();
      synchronize(s);
      if (k > 0) copy_ms.push_back(clock.ms(c0, c1));
    }
    const double copy_gbs = 2.0 * double(src.nbytes()) / (median(copy_ms) * 1e6);

    const double esize = double(dtype_size(dt));
    std::map<std::string, Row> kinds;
    struct OpRow {
      size_t i;
      std::string kind;
      double fwd, bwd;
    };
    std::vector<OpRow> op_rows;
    for (size_t i = 0; i < g.ops.size(); ++i) {
      if (!seen[i]) continue;
      const bool fused = g.ops[i].kind == OpKind::kBatchNorm && i + 1 < g.ops.size() && !seen[i + 1];
      const OpCost c = op_cost(g, i, fused, esize);
      const double f = median(fwd_ms[i]), b = median(bwd_ms[i]);
      Row& r = kinds[c.kind];
      r.kind = c.kind;
      ++r.ops;
      r.fwd += f, r.bwd += b;
      r.bytes += c.fwd_bytes + c.bwd_bytes;
      r.flops += 3 * c.flops;
      op_rows.push_back({i, c.kind, f, b});
    }
    Row extra[3] = {{"zero grads", 1, median(zero_ms), 0, double(model.zeroed_grad_elems()) * esize, 0},
                    {"loss", 1, median(loss_ms), 0, 0, 0},
                    {"optimizer+ema", 1, median(opt_ms), 0, 0, 0}};
    std::vector<Row> rows;
    for (auto& [k, r] : kinds) rows.push_back(r);
    for (const Row& r : extra) rows.push_back(r);
    std::sort(rows.begin(), rows.end(), [](const Row& x, const Row& y) { return x.fwd + x.bwd > y.fwd + y.bwd; });
    double total = 0;
    for (const Row& r : rows) total += r.fwd + r.bwd;

    const std::string device = dev == Device::kCUDA ? cuda_device_description(0) : "cpu";
    std::printf("step_profile: %s, batch %lld, %lld x %lld, %s on %s; median of %d steps\n", model_path.c_str(),
                (long long)batch, (long long)imgsz, (long long)imgsz, dtype_name(dt), device.c_str(), steps);
    std::printf("  copy yardstick: %.1f GB/s (device-to-device, %.1f MB)\n", copy_gbs, src.nbytes() / 1e6);
    std::printf("  %-14s %4s %9s %9s %7s %9s %7s %9s\n", "kind", "ops", "fwd ms", "bwd ms", "share", "GB/s",
                "of copy", "TFLOP/s");
    nlohmann::json jrows = nlohmann::json::array();
    for (const Row& r : rows) {
      const double ms = r.fwd + r.bwd, gbs = r.bytes > 0 && ms > 0 ? r.bytes / (ms * 1e6) : 0;
      const double tflops = r.flops > 0 && ms > 0 ? r.flops / (ms * 1e9) : 0;
      char tf[16] = "-";
      if (tflops > 0) std::snprintf(tf, sizeof(tf), "%.2f", tflops);
      std::printf("  %-14s %4d %9.3f %9.3f %6.1f%% %9.1f %6.2f %9s\n", r.kind.c_str(), r.ops, r.fwd, r.bwd,
                  100.0 * ms / total, gbs, gbs / copy_gbs, tf);
      jrows.push_back({{"kind", r.kind}, {"ops", r.ops}, {"fwd_ms", r.fwd}, {"bwd_ms", r.bwd}, {"gbs", gbs},
                       {"tflops", tflops}});
    }
    std::printf("  whole step: %.3f ms (the parts above sum to %.3f ms with per-op events, %.3f without), "
                "%.1f images/s\n",
                step_ms, total, median(instrumented_ms), 1000.0 * double(batch) / step_ms);

    std::sort(op_rows.begin(), op_rows.end(),
              [](const OpRow& x, const OpRow& y) { return x.fwd + x.bwd > y.fwd + y.bwd; });
    const int top = std::min<int>(a["top"].as<int>(), int(op_rows.size()));
    std::printf("  slowest ops:\n");
    nlohmann::json jops = nlohmann::json::array();  // every op, slowest first
    for (size_t k = 0; k < op_rows.size(); ++k) {
      const OpRow& r = op_rows[k];
      const GraphOp& o = g.ops[r.i];
      const std::string in = g.acts[o.inputs.empty() ? 0 : o.inputs[0]].shape.str();
      const std::string out = g.acts[o.outputs[0]].shape.str();
      const std::string w = o.weight >= 0 ? g.params[o.weight].shape.str() : "";
      if (int(k) < top)
        std::printf("    layer %3d %-9s %s -> %s%s: fwd %.3f ms, bwd %.3f ms\n", o.layer, r.kind.c_str(), in.c_str(),
                    out.c_str(), w.empty() ? "" : (" w " + w).c_str(), r.fwd, r.bwd);
      jops.push_back({{"op", r.i}, {"layer", o.layer}, {"kind", r.kind}, {"in", in}, {"out", out}, {"w", w},
                      {"fwd_ms", r.fwd}, {"bwd_ms", r.bwd}});
    }
    if (!a["out"].as<std::string>().empty()) {
      char date[32];
      const std::time_t t = std::time(nullptr);
      std::strftime(date, sizeof(date), "%Y-%m-%d", std::gmtime(&t));
      std::string command;
      for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
      const nlohmann::json j = {{"device", device}, {"date", date}, {"command", command}, {"model", model_path},
                                {"batch", batch}, {"imgsz", imgsz}, {"step_ms", step_ms},
                                {"images_per_s", 1000.0 * double(batch) / step_ms}, {"copy_gbs", copy_gbs},
                                {"kinds", jrows}, {"ops", jops}};
      std::ofstream(a["out"].as<std::string>()) << j.dump(2) << "\n";
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "step_profile: %s\n", e.what());
    return 1;
  }
}
