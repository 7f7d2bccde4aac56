// Elementwise add on the CPU: plain loops, the reference for the CUDA kernels.
#include "layers/add.h"
#include "layers/op.h"

namespace vt::cpu {

void add_forward(const Tensor& a, const Tensor& b, const Tensor& y) {
  dispatch_cpu("add_forward", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* ap = a.data<T>();
    const T* bp = b.data<T>();
    T* yp = y.data<T>();
    for (int64_t i = 0, n_ = a.numel(); i < n_; ++i) yp[i] = ap[i] + bp[i];
  });
}

void accumulate(const Tensor& src, const Tensor& dst) {
  dispatch_cpu("add_backward", src.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* sp = src.data<T>();
    T* dp = dst.data<T>();
    for (int64_t i = 0, n_ = src.numel(); i < n_; ++i) dp[i] += sp[i];
  });
}

void scale(const Tensor& x, double alpha) {
  dispatch_cpu("scale", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* p = x.data<T>();
    const T a = static_cast<T>(alpha);
    for (int64_t i = 0, n_ = x.numel(); i < n_; ++i) p[i] *= a;
  });
}

}  // namespace vt::cpu
