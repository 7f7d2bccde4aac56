// Test helpers: seeded random tensors, tolerant comparison, the finite-difference gradient
// checker, and the GPU skip. Every op test uses these three ways of being right:
//   1. a hand-computed case (exact numbers written in the test);
//   2. check_gradients: central differences in double against the op's backward;
//   3. GPU-vs-CPU parity in f32 and bf16 (skipped without a device).
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "layers/tensor.h"

namespace vt::test {

// Uniform in [lo, hi) on the CPU, deterministic in `seed`.
Tensor random_tensor(const Shape& s, DType dt, uint64_t seed, double lo = -1.0, double hi = 1.0);
// Like random_tensor, but every |value| >= gap: keeps finite differences off the kinks of
// ReLU-like functions and keeps max-pool windows free of near-ties.
Tensor random_away_from_zero(const Shape& s, DType dt, uint64_t seed, double gap = 0.05);
// A CPU tensor from explicit values.
Tensor from_values(const Shape& s, const std::vector<double>& v, DType dt = DType::kF32);
// All values as doubles, from any device and storage type.
std::vector<double> values(const Tensor& t);
// The same values, rounded through bf16: what a bf16 GPU run actually sees as input.
Tensor round_to_bf16(const Tensor& t);

// Expects |a - e| <= atol + rtol * |e| elementwise; reports the worst elements.
void expect_close(const Tensor& actual, const Tensor& expected, double atol, double rtol,
                  const std::string& what);

// Gradient check in double precision. `inputs` are CPU f64 tensors the forward reads;
// forward() returns the op's outputs; backward(dys, grads) must ACCUMULATE d(sum dys*ys)/d
// inputs into grads (zeroed f64 tensors shaped like the inputs). The loss is
// L = sum_k <r_k, y_k> with fixed random r_k, and each probed element is compared with
// (L(x + h) - L(x - h)) / 2h.
struct GradCheckOptions {
  double h = 1e-6;
  // In double, central differences err by about h^2 |f'''| (~1e-12) plus rounding
  // eps * |L| / h (~1e-16 * 10 / 1e-6 = 1e-9), so these leave a 100x margin while a wrong
  // derivative (errors of order 1e-2 and up) cannot pass.
  double atol = 1e-7;
  double rtol = 1e-6;
  int max_probes_per_input = 200;  // sampled, seeded, when an input is larger
};
void check_gradients(const std::vector<Tensor>& inputs, const std::vector<std::string>& names,
                     const std::function<std::vector<Tensor>()>& forward,
                     const std::function<void(const std::vector<Tensor>& dys, std::vector<Tensor>& grads)>& backward,
                     const GradCheckOptions& opt = {});

// Expects f() to throw vt::Error whose message contains every one of `needles`.
void expect_error(const std::function<void()>& f, const std::vector<std::string>& needles);

bool has_gpu();

// True in the CUDA emulator's build (tests/cuda_emu), where the GPU tests run on the CPU,
// thousands of times slower: a few skip cases there that only repeat others at a larger size.
#ifdef VT_CUDA_EMULATION
constexpr bool kCudaEmulated = true;
#else
constexpr bool kCudaEmulated = false;
#endif

// A fresh directory under /tmp ("/tmp/<prefix>XXXXXX"), removed with everything in it when
// the object goes.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "vt_test_");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

}  // namespace vt::test

// GPU tests skip cleanly, with a reason, on machines without a device.
#define VT_REQUIRE_GPU() \
  if (!::vt::test::has_gpu()) GTEST_SKIP() << "no CUDA device (or build without CUDA)"
