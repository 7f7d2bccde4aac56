// `visiontrain selftest`: every op of the layer library, composed into one small block,
// run forward and backward on each backend this machine has. It checks the composed
// backward against finite differences (CPU, f64) and each GPU against the CPU (f32, bf16),
// so a user can validate a build on a new node in seconds. The block:
//
//   x (N,H,W,C) -> conv3x3 -> BN(train) -> SiLU -> a (N,H,W,2C)
//   a -> maxpool 5x5 s1 p2 -> p;  concat(a, p) -> c (N,H,W,4C) -> conv1x1 +bias -> d (N,H,W,2C)
//   d -> maxpool 2x2 s2 -> upsample x2 -> u;  g = u + d;  split(g) -> g1, g2 (C each)
//   loss = sum(g1^2) + sum(g2)
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cxxopts.hpp>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "layers/activation.h"
#include "layers/add.h"
#include "layers/batchnorm.h"
#include "layers/check.h"
#include "layers/concat.h"
#include "layers/conv2d.h"
#include "layers/maxpool.h"
#include "layers/memory_plan.h"
#include "layers/op.h"
#include "layers/reduce.h"
#include "layers/upsample.h"
#include "trainer/commands.h"

namespace vt {
namespace {

// The block's inputs and parameters: the tensors the gradient check perturbs.
const char* const kInputs[] = {"x", "w1", "gamma", "beta", "w2", "b2"};

class Block {
 public:
  Block(Device dev, DType dt, int64_t n, int64_t h, int64_t w, int64_t c) : plan_(dev) {
    const DType pt = param_dtype(dt);
    const Shape act{n, h, w, c}, act2{n, h, w, 2 * c}, act4{n, h, w, 4 * c}, half{n, h / 2, w / 2, 2 * c};
    const Shape split{n, h, w, c};
    // A tensor and its gradient, of type t and gt (conv weights: the activation type, their
    // gradients param_dtype, as the ops require).
    auto both = [&](const std::string& name, const Shape& s, DType t, DType gt) {
      ids_[name] = plan_.request(name, s, t);
      ids_["d" + name] = plan_.request("d" + name, s, gt);
    };
    both("x", act, dt, dt);
    both("w1", {2 * c, 3, 3, c}, dt, pt);
    both("gamma", {2 * c}, pt, pt);
    both("beta", {2 * c}, pt, pt);
    both("w2", {2 * c, 1, 1, 4 * c}, dt, pt);
    both("b2", {2 * c}, pt, pt);
    for (const char* s : {"y1", "bn", "a", "p", "d", "u", "g"}) both(s, act2, dt, dt);
    both("c", act4, dt, dt);
    both("e", half, dt, dt);
    both("g1", split, dt, dt);
    both("g2", split, dt, dt);
    for (const char* s : {"run_mean", "run_var", "save_mean", "save_invstd"})
      ids_[s] = plan_.request(s, {2 * c}, pt);
    for (const char* s : {"l1", "l2", "one"}) ids_[s] = plan_.request(s, {1}, pt);
    conv1_ = {1, 1, 1, 1, 1};
    const size_t ws = std::max({conv2d_workspace_bytes(act, {2 * c, 3, 3, c}, conv1_, dt, dev),
                                conv2d_workspace_bytes(act4, {2 * c, 1, 1, 4 * c}, conv2_, dt, dev),
                                batchnorm_workspace_bytes(act2, dev)});
    ids_["ws"] = plan_.request("ws", {static_cast<int64_t>(ws / 4 + 1)}, DType::kF32);
    ids_["red_ws"] = plan_.request(
        "red_ws", Shape{std::max<int64_t>(1, reduce_workspace_elems(act2.numel(), dev))}, DType::kF32);
    plan_.allocate();
  }

  Tensor operator[](const std::string& name) const { return plan_.get(ids_.at(name)); }
  const MemoryPlan& plan() const { return plan_; }

  // Sets the inputs and parameters from a seeded draw (same values on every backend).
  void init(uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(-1, 1);
    for (const char* name : kInputs) {
      Tensor t = (*this)[name];
      Tensor host = Tensor::empty(t.shape(), DType::kF64, Device::kCPU);
      for (int64_t i = 0; i < host.numel(); ++i)
        host.data<double>()[i] = u(rng) * (name[0] == 'w' ? 0.3 : 1.0);
      if (std::string(name) == "gamma")
        for (int64_t i = 0; i < host.numel(); ++i) host.data<double>()[i] += 1.5;
      copy(host, t);
    }
    Tensor one = Tensor::empty({1}, DType::kF64, Device::kCPU);
    one.data<double>()[0] = 1;
    copy(one, (*this)["one"]);
  }

  // Returns the loss; leaves every activation in place for backward().
  double forward() {
    const Block& b = *this;
    conv2d_forward(b["x"], b["w1"], nullptr, b["y1"], conv1_, b["ws"]);
    batchnorm_forward_train(b["y1"], b["gamma"], b["beta"], b["bn"], b["run_mean"], b["run_var"],
                            b["save_mean"], b["save_invstd"], bn_, {}, b["ws"]);
    activation_forward({ActKind::kSiLU}, b["bn"], b["a"]);
    maxpool_forward(b["a"], b["p"], {5, 1, 2});
    concat_forward({b["a"], b["p"]}, b["c"]);
    const Tensor b2 = b["b2"];
    conv2d_forward(b["c"], b["w2"], &b2, b["d"], conv2_, b["ws"]);
    maxpool_forward(b["d"], b["e"], {2, 2, 0});
    upsample_nearest_forward(b["e"], b["u"], 2);
    add_forward(b["u"], b["d"], b["g"]);
    split_forward(b["g"], {b["g1"], b["g2"]});
    reduce_sum_squares(b["g1"], b["l1"], b["red_ws"]);
    reduce_sum(b["g2"], b["l2"], b["red_ws"]);
    synchronize();
    const Tensor l1 = b["l1"].to(Device::kCPU, DType::kF64), l2 = b["l2"].to(Device::kCPU, DType::kF64);
    return l1.data<double>()[0] + l2.data<double>()[0];
  }

  void backward() {
    const Block& b = *this;
    for (const auto& [name, id] : ids_)
      if (name[0] == 'd' && name != "d") zero(plan_.get(id));
    reduce_sum_squares_backward(b["g1"], b["one"], b["dg1"]);
    reduce_sum_backward(b["one"], b["dg2"]);
    split_backward({b["dg1"], b["dg2"]}, b["dg"]);
    Tensor du = b["du"], dd = b["dd"];
    add_backward(b["dg"], &du, &dd);
    upsample_nearest_backward(b["du"], b["de"], 2);
    maxpool_backward(b["d"], b["de"], b["dd"], {2, 2, 0});
    Tensor dc = b["dc"], dw2 = b["dw2"], db2 = b["db2"];
    conv2d_backward(b["c"], b["w2"], b["dd"], &dc, &dw2, &db2, conv2_, b["ws"]);
    concat_backward(b["dc"], {b["da"], b["dp"]});
    maxpool_backward(b["a"], b["dp"], b["da"], {5, 1, 2});
    activation_backward({ActKind::kSiLU}, b["bn"], b["da"], b["dbn"]);
    Tensor dy1 = b["dy1"], dgamma = b["dgamma"], dbeta = b["dbeta"];
    batchnorm_backward(b["y1"], b["dbn"], b["gamma"], b["beta"], b["save_mean"], b["save_invstd"], &dy1,
                       &dgamma, &dbeta, bn_, {}, b["ws"]);
    Tensor dx = b["dx"], dw1 = b["dw1"];
    conv2d_backward(b["x"], b["w1"], b["dy1"], &dx, &dw1, nullptr, conv1_, b["ws"]);
    synchronize();
  }

 private:
  MemoryPlan plan_;
  std::map<std::string, BufferId> ids_;
  Conv2dParams conv1_, conv2_;
  BatchNormParams bn_;
};

// ||a - b||_2 / ||b||_2 over all elements: robust to the odd max-pool tie that bf16
// rounding routes differently, unlike an elementwise bound.
double relative_l2(const Tensor& a, const Tensor& b) {
  const Tensor x = a.to(Device::kCPU, DType::kF64), y = b.to(Device::kCPU, DType::kF64);
  double num = 0, den = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double d = x.data<double>()[i] - y.data<double>()[i];
    num += d * d;
    den += y.data<double>()[i] * y.data<double>()[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

double seconds_per_step(Block& b, int iters) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) {
    b.forward();
    b.backward();
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
}

// Central differences in f64 on a sample of every input's elements.
bool gradient_check(int64_t n, int64_t h, int64_t w, int64_t c) {
  Block b(Device::kCPU, DType::kF64, n, h, w, c);
  b.init(1);
  b.forward();
  b.backward();
  std::mt19937_64 rng(3);
  double worst = 0;
  for (const char* name : kInputs) {
    Tensor t = b[name], g = b[std::string("d") + name];
    for (int k = 0; k < 6; ++k) {
      const int64_t i = static_cast<int64_t>(rng() % static_cast<uint64_t>(t.numel()));
      double& v = t.data<double>()[i];
      const double saved = v, eps = 1e-6;
      v = saved + eps;
      const double lp = b.forward();
      v = saved - eps;
      const double lm = b.forward();
      v = saved;
      const double num = (lp - lm) / (2 * eps), ana = g.data<double>()[i];
      // Relative to 1 + |num|: where a gradient is near 0 the finite difference is pure
      // rounding noise (~eps * |loss| / h, about 1e-7 here).
      worst = std::max(worst, std::abs(num - ana) / (1 + std::abs(num)));
    }
  }
  const bool ok = worst < 1e-5;
  std::printf("  cpu f64  gradient check of the whole block (36 probes): worst relative error %.2e  %s\n",
              worst, ok ? "ok" : "FAILED");
  return ok;
}

}  // namespace

int cmd_selftest(int argc, char** argv) {
  cxxopts::Options opts(argv[0],
                        "Run every op forward and backward on the CPU and on each CUDA device, check the "
                        "block's gradients by finite differences, and compare each GPU with the CPU.");
  opts.add_options()("batch", "batch size", cxxopts::value<int64_t>()->default_value("2"))(
      "size", "image height and width (even)", cxxopts::value<int64_t>()->default_value("32"))(
      "channels", "input channels", cxxopts::value<int64_t>()->default_value("8"))(
      "iters", "timed iterations per backend", cxxopts::value<int>()->default_value("5"))("h,help",
                                                                                          "show this help");
  const auto args = opts.parse(argc, argv);
  if (args.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  const int64_t n = args["batch"].as<int64_t>(), s = args["size"].as<int64_t>(),
                c = args["channels"].as<int64_t>();
  const int iters = args["iters"].as<int>();
  VT_CHECK(n >= 1 && c >= 1 && s >= 2 && s % 2 == 0,
           "selftest: need batch >= 1, channels >= 1, even size >= 2");
  std::printf(
      "selftest: conv, batch norm, SiLU, max pool (5x5 and 2x2), concat, upsample, add, split, reductions\n");
  std::printf("  block input (%lld, %lld, %lld, %lld), forward + backward\n", (long long)n, (long long)s,
              (long long)s, (long long)c);
  bool ok = gradient_check(1, 6, 6, 3);

  Block cpu(Device::kCPU, DType::kF32, n, s, s, c);
  cpu.init(2);
  const double cpu_loss = cpu.forward();
  cpu.backward();
  std::printf("  cpu f32  loss %.6f   %.2f ms/step   memory plan %.2f MiB\n", cpu_loss,
              1e3 * seconds_per_step(cpu, iters), cpu.plan().total_bytes() / 1048576.0);
  cpu.forward();
  cpu.backward();

  const int devices = cuda_device_count();
  if (devices == 0) std::printf("  no CUDA device: GPU comparison skipped\n");
  for (int dev = 0; dev < std::min(devices, 1); ++dev) {
    for (DType dt : {DType::kF32, DType::kBF16}) {
      Block gpu(Device::kCUDA, dt, n, s, s, c);
      gpu.init(2);
      const double loss = gpu.forward();
      gpu.backward();
      // f32: kernels and CPU differ only in summation order (~1e-6 relative). bf16: every
      // activation is rounded to 8 significant bits (~3e-3 each), and the max pools route
      // gradients by the rounded values: a window whose two largest values round together
      // (frequent at 8 bits) sends its gradient elsewhere than the f32 CPU does, so the
      // gradients behind the pools differ by 2-8% in L2 (dx and dw1 the most; measured with
      // sizes 16-64, channels 4-32), where a wrong kernel differs by O(1).
      const double limit = dt == DType::kF32 ? 1e-4 : 0.15;
      double worst = std::abs(loss - cpu_loss) / std::max(1.0, std::abs(cpu_loss));
      std::string worst_of = "loss";
      for (const char* name : kInputs) {
        const std::string grad = std::string("d") + name;
        const double e = relative_l2(gpu[grad], cpu[grad]);
        if (e > worst) worst = e, worst_of = grad;
      }
      const bool good = worst < limit;
      ok = ok && good;
      const double ms = 1e3 * seconds_per_step(gpu, iters);
      std::printf(
          "  cuda %-4s loss %.6f   %.2f ms/step   worst relative L2 difference from cpu %.2e (%s, "
          "limit %.2g)  %s\n",
          dtype_name(dt), loss, ms, worst, worst_of.c_str(), limit, good ? "ok" : "FAILED");
    }
  }
  std::printf("selftest %s\n", ok ? "passed" : "FAILED");
  return ok ? 0 : 1;
}

}  // namespace vt
