// GPU-vs-CPU parity of the fused updates in f32 over awkward sizes (1, 7, 1000003), with the
// clipping norm reduced on the device and read there by the kernel; a non-finite norm
// skipping on the device; updates captured in a CUDA graph reading each launch's step
// values; and the contract cases that need a CUDA tensor. Every test skips without a device.
#include <cmath>
#include <random>
#include <vector>

#include "layers/check.h"
#include "layers/cuda_graph.h"
#include "layers/reduce.h"
#include "optim/update.h"
#include "tests/test_util.h"

namespace vt {
namespace {

using test::from_values;

const int64_t kSizes[] = {1, 7, 1000003};

Tensor random_groups(int64_t n, uint64_t seed, int count = 3) {
  std::mt19937_64 rng(seed);
  std::vector<double> g(static_cast<size_t>(n));
  for (double& x : g) x = static_cast<double>(rng() % static_cast<uint64_t>(count));
  return from_values({n}, g, DType::kU8);
}

// The state of one optimizer: params, grads, groups and two state buffers, on one device.
// The random states are those of a plausible run (v well away from 0), so that the Adam
// ratio m^ / sqrt(v^) stays O(1) and its rounding stays small.
struct State {
  Tensor p, g, groups, s1, s2;
  State to(Device d) const { return {p.to(d), g.to(d), groups.to(d), s1.to(d), s2.to(d)}; }
};

State random_state(int64_t n, uint64_t seed, bool adam) {
  const Shape s{n};
  return {test::random_tensor(s, DType::kF32, seed), test::random_tensor(s, DType::kF32, seed + 1),
          random_groups(n, seed + 2), test::random_tensor(s, DType::kF32, seed + 3, adam ? -0.1 : -1, adam ? 0.1 : 1),
          test::random_tensor(s, DType::kF32, seed + 4, 0.01, 0.02)};
}

// The squared gradient norm on the state's own device (the CUDA one through the workspace).
Tensor sumsq_of(const Tensor& g) {
  const Device d = g.device();
  Tensor out = Tensor::empty({1}, DType::kF32, d);
  const int64_t ws = reduce_workspace_elems(g.numel(), d);
  reduce_sum_squares(g, out, ws > 0 ? Tensor::empty({ws}, DType::kF32, d) : Tensor{});
  return out;
}

enum class Algo { kSgd, kNesterov, kAdamW };

void step(Algo algo, const StepHyper& h0, const GradClip& clip, const State& st) {
  StepHyper h = h0;
  h.nesterov = algo == Algo::kNesterov;
  if (algo == Algo::kAdamW) adamw_step(h, clip, st.p, st.g, st.groups, st.s1, st.s2);
  else sgd_step(h, clip, st.p, st.g, st.groups, st.s1);
}

TEST(OptimGpu, UpdatesMatchCpu) {
  VT_REQUIRE_GPU();
  // Tolerances. Both sides compute the same fp32 formulas in the same order, with correctly
  // rounded sqrt and division; they differ where nvcc contracts a * b + c into one fma (one
  // rounding fewer, <= 1 ulp of a value below ~3: 2.4e-7) and, with clipping, in the norm:
  // the device's fp32 tree sum of 10^6 squares is within ~33 * 2^-24 = 2e-6 relative of the
  // CPU's double sum (layers/reduce.h), so the clip factor is within 1e-6. Hence 2e-6
  // absolute plus 1e-5 relative for params, the momentum buffer and m; v (< 0.02) gets
  // 1e-8 absolute. A wrong term (decay 0.05 * lr, the momentum, the clip factor 0.5) is
  // orders of magnitude larger.
  StepHyper h;
  h.lr[0] = 0.01, h.lr[1] = 0.02, h.lr[2] = 0.05;
  h.momentum = 0.9;
  h.weight_decay = 0.05;
  for (int64_t n : kSizes) {
    for (Algo algo : {Algo::kSgd, Algo::kNesterov, Algo::kAdamW}) {
      for (int64_t t : {1, 3}) {
        for (bool clipped : {false, true}) {
          SCOPED_TRACE(cat("n ", n, (algo == Algo::kSgd ? " sgd" : algo == Algo::kNesterov ? " nesterov" : " adamw"),
                           " step ", t, clipped ? " clipped" : ""));
          const State cpu = random_state(n, 10 * static_cast<uint64_t>(t) + n, algo == Algo::kAdamW);
          const State gpu = cpu.to(Device::kCUDA);
          h.step = t;
          GradClip clip_cpu{nullptr, 10.0, 0.5}, clip_gpu = clip_cpu;
          Tensor ss_cpu, ss_gpu;
          if (clipped) {
            ss_cpu = sumsq_of(cpu.g), ss_gpu = sumsq_of(gpu.g);
            // max_norm a quarter of the raw norm: the scaled norm is half of it, so c = 0.5.
            const float max_norm = 0.25f * std::sqrt(ss_cpu.data<float>()[0]);
            clip_cpu = {&ss_cpu, max_norm, 0.5}, clip_gpu = {&ss_gpu, max_norm, 0.5};
          }
          step(algo, h, clip_cpu, cpu);
          step(algo, h, clip_gpu, gpu);
          synchronize();
          test::expect_close(gpu.p, cpu.p, 2e-6, 1e-5, "params");
          test::expect_close(gpu.s1, cpu.s1, 2e-6, 1e-5, algo == Algo::kAdamW ? "exp_avg" : "momentum_buf");
          if (algo == Algo::kAdamW) test::expect_close(gpu.s2, cpu.s2, 1e-8, 1e-5, "exp_avg_sq");
        }
      }
    }
  }
}

TEST(OptimGpu, EmaMatchesCpu) {
  VT_REQUIRE_GPU();
  for (int64_t n : kSizes) {
    SCOPED_TRACE(cat("n ", n));
    Tensor ema = test::random_tensor({n}, DType::kF32, 1), model = test::random_tensor({n}, DType::kF32, 2);
    Tensor ema_g = ema.to(Device::kCUDA), model_g = model.to(Device::kCUDA);
    for (double d : {0.0, 0.3, 0.9999}) {
      ema_update(ema, model, d);
      ema_update(ema_g, model_g, d);
    }
    synchronize();
    // Two roundings per update of values below 1, fma or not: 1e-7 absolute covers three.
    test::expect_close(ema_g, ema, 1e-7, 1e-6, "ema");
  }
}

TEST(OptimGpu, NonFiniteNormSkipsOnTheDevice) {
  VT_REQUIRE_GPU();
  const State cpu = random_state(1000, 5, true);
  const State gpu = cpu.to(Device::kCUDA);
  Tensor ema = cpu.p.to(Device::kCUDA), ss = from_values({1}, {std::nan("")}).to(Device::kCUDA);
  StepHyper h;
  h.step = 2;
  StepValues k(Device::kCUDA, DType::kF32);
  k.set(h, {&ss, 10.0, 1.0}, 0.5);
  adamw_step(k, gpu.p, gpu.g, gpu.groups, gpu.s1, gpu.s2);
  sgd_step(k, gpu.p, gpu.g, gpu.groups, gpu.s1);
  ema_update(k, ema, gpu.g);
  synchronize();
  test::expect_close(gpu.p, cpu.p, 0, 0, "params");
  test::expect_close(gpu.s1, cpu.s1, 0, 0, "state 1");
  test::expect_close(gpu.s2, cpu.s2, 0, 0, "state 2");
  test::expect_close(ema, cpu.p, 0, 0, "ema");
}

// The property a CUDA graph of the training step relies on: updates captured once read the
// values set before each launch, and give what eager updates with those values give.
TEST(OptimGpu, CapturedUpdatesReadEachStepsValues) {
  VT_REQUIRE_GPU();
  const State start = random_state(1003, 21, true);
  const State eager = start.to(Device::kCUDA), graphed = start.to(Device::kCUDA);
  Tensor ss = sumsq_of(eager.g);
  CudaStream stream;
  CudaGraph graph;
  StepValues k(Device::kCUDA, DType::kF32);
  for (int64_t t = 1; t <= 3; ++t) {
    StepHyper h;
    h.lr[0] = 0.01 * t, h.lr[1] = 0.02, h.lr[2] = 0.05 / t;
    h.step = t;
    const GradClip clip{&ss, 0.5 * t, 1.0};
    adamw_step(h, clip, eager.p, eager.g, eager.groups, eager.s1, eager.s2);
    k.set(h, clip);
    if (!graph.ready())
      graph.capture(stream.get(), [&] {
        adamw_step(k, graphed.p, graphed.g, graphed.groups, graphed.s1, graphed.s2, stream.get());
      });
    graph.launch(stream.get());
    synchronize(stream.get());
  }
  test::expect_close(graphed.p, eager.p, 0, 0, "params");
  test::expect_close(graphed.s1, eager.s1, 0, 0, "exp_avg");
  test::expect_close(graphed.s2, eager.s2, 0, 0, "exp_avg_sq");
}

TEST(OptimGpu, UnknownGroupsCountAsBiases) {
  VT_REQUIRE_GPU();
  // The CPU rejects group 5; CUDA cannot look without a sync and treats it as 2 (update.h).
  StepHyper h;
  h.lr[0] = 0.1, h.lr[1] = 0.2, h.lr[2] = 0.4;
  h.step = 1;
  const Tensor g = from_values({3}, {1, 1, 1});
  Tensor p = from_values({3}, {1, 1, 1}), buf = Tensor::empty({3}, DType::kF32, Device::kCPU);
  sgd_step(h, {}, p, g, from_values({3}, {0, 2, 2}, DType::kU8), buf);
  Tensor pg = from_values({3}, {1, 1, 1}).to(Device::kCUDA), bufg = Tensor::empty({3}, DType::kF32, Device::kCUDA);
  sgd_step(h, {}, pg, g.to(Device::kCUDA), from_values({3}, {0, 5, 2}, DType::kU8).to(Device::kCUDA), bufg);
  synchronize();
  test::expect_close(pg, p, 1e-7, 1e-7, "params");
}

TEST(OptimGpu, BadArgumentsNameTheOpAndDevices) {
  VT_REQUIRE_GPU();
  const Tensor p = Tensor::empty({5}, DType::kF32, Device::kCUDA), g_cpu = Tensor::empty({5}, DType::kF32, Device::kCPU);
  const Tensor groups = Tensor::empty({5}, DType::kU8, Device::kCUDA), b = Tensor::empty({5}, DType::kF32, Device::kCUDA);
  StepHyper h;
  h.step = 1;
  test::expect_error([&] { sgd_step(h, {}, p, g_cpu, groups, b); },
                     {"sgd_step", "grads is on another device than params", "(5) f32 cuda", "(5) f32 cpu"});
  test::expect_error([&] { adamw_step(h, {}, p, b, Tensor::empty({5}, DType::kU8, Device::kCPU), b, b); },
                     {"adamw_step", "groups is on another device", "(5) u8 cpu"});
  Tensor ss_cpu = Tensor::empty({1}, DType::kF32, Device::kCPU);
  test::expect_error([&] { sgd_step(h, {&ss_cpu}, p, b, groups, b); }, {"sgd_step", "grad_sumsq", "(1) f32 cpu"});
  const Tensor pb = Tensor::empty({5}, DType::kBF16, Device::kCUDA);
  test::expect_error([&] { ema_update(pb, pb, 0.5); }, {"ema_update", "ema must be f32 on cuda", "(5) bf16 cuda"});
  test::expect_error([&] { ema_update(p, g_cpu, 0.5); }, {"ema_update", "model is on another device than ema"});
}

}  // namespace
}  // namespace vt
