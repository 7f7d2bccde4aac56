// Nearest upsampling on the CPU: plain loops, the reference for the CUDA kernels. Positions
// lie pitch() elements apart (C, or a channel view's pitch).
#include "layers/op.h"
#include "layers/upsample.h"

namespace vt::cpu {

void upsample_nearest_forward(const Tensor& x, const Tensor& y, int scale) {
  dispatch_cpu("upsample_nearest_forward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t N = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3), Ho = y.dim(1), Wo = y.dim(2);
    const int64_t xq = x.pitch(), yq = y.pitch();
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t h = 0; h < Ho; ++h)
        for (int64_t w = 0; w < Wo; ++w)
          for (int64_t c = 0; c < C; ++c)
            yp[((n * Ho + h) * Wo + w) * yq + c] = xp[((n * H + h / scale) * W + w / scale) * xq + c];
  });
}

void upsample_nearest_backward(const Tensor& dy, const Tensor& dx, int scale) {
  dispatch_cpu("upsample_nearest_backward", dx.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t N = dx.dim(0), H = dx.dim(1), W = dx.dim(2), C = dx.dim(3), Ho = dy.dim(1), Wo = dy.dim(2);
    const int64_t dxq = dx.pitch(), dyq = dy.pitch();
    const T* gp = dy.data<T>();
    T* dxp = dx.data<T>();
    // The transpose of forward, scattered in dy order: each dx cell receives its
    // scale*scale cells in (a, b) order, as the CUDA gather adds them.
    for (int64_t n = 0; n < N; ++n)
      for (int64_t h = 0; h < Ho; ++h)
        for (int64_t w = 0; w < Wo; ++w)
          for (int64_t c = 0; c < C; ++c)
            dxp[((n * H + h / scale) * W + w / scale) * dxq + c] += gp[((n * Ho + h) * Wo + w) * dyq + c];
  });
}

}  // namespace vt::cpu
