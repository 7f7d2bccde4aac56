// Reductions on the CPU: plain loops in index order, the oracle for the CUDA kernels.
// Sums accumulate in double whatever the storage type, so for f32 input they are more
// accurate than the GPU's fp32 tree (the parity tests bound the difference).
#include <cmath>

#include "layers/op.h"
#include "layers/reduce.h"

namespace vt::cpu {

void reduce_sum(const Tensor& x, const Tensor& out) {
  dispatch_cpu("reduce_sum", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    double acc = 0;
    for (int64_t i = 0, n_ = x.numel(); i < n_; ++i) acc += static_cast<double>(xp[i]);
    out.data<T>()[0] = static_cast<T>(acc);
  });
}

void reduce_sum_backward(const Tensor& dout, const Tensor& dx) {
  dispatch_cpu("reduce_sum_backward", dx.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T d = dout.data<T>()[0];
    T* dxp = dx.data<T>();
    for (int64_t i = 0, n_ = dx.numel(); i < n_; ++i) dxp[i] += d;
  });
}

void reduce_sum_squares(const Tensor& x, const Tensor& out) {
  dispatch_cpu("reduce_sum_squares", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    double acc = 0;
    for (int64_t i = 0, n_ = x.numel(); i < n_; ++i) {
      const double v = static_cast<double>(xp[i]);
      acc += v * v;
    }
    out.data<T>()[0] = static_cast<T>(acc);
  });
}

void reduce_sum_squares_backward(const Tensor& x, const Tensor& dout, const Tensor& dx) {
  dispatch_cpu("reduce_sum_squares_backward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T d = dout.data<T>()[0];
    const T* xp = x.data<T>();
    T* dxp = dx.data<T>();
    for (int64_t i = 0, n_ = x.numel(); i < n_; ++i) dxp[i] += T(2) * xp[i] * d;
  });
}

void reduce_max_abs(const Tensor& x, const Tensor& out) {
  dispatch_cpu("reduce_max_abs", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    T m = 0;  // the value for an empty x
    for (int64_t i = 0, n_ = x.numel(); i < n_; ++i) {
      const T a = std::abs(xp[i]);
      if (std::isnan(a)) {
        m = a;  // NaN wins over everything: a diagnostic must not hide it
        break;
      }
      if (a > m) m = a;
    }
    out.data<T>()[0] = m;
  });
}

void count_nonfinite(const Tensor& x, const Tensor& out) {
  dispatch_cpu("count_nonfinite", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    int64_t count = 0;
    for (int64_t i = 0, n_ = x.numel(); i < n_; ++i) count += std::isfinite(xp[i]) ? 0 : 1;
    out.data<T>()[0] = static_cast<T>(count);
  });
}

}  // namespace vt::cpu
