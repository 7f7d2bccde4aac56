// Max pooling on the CPU: plain loops, the reference for the CUDA kernels.
#include <cmath>

#include "layers/maxpool.h"
#include "layers/op.h"

namespace vt::cpu {
namespace {

// The winner of output cell (oh, ow) under the rule in maxpool.h, as the pixel index
// ih * W + iw. `img` points at x[n, 0, 0, c], so pixel q's value is img[q * C].
template <class T>
int64_t window_winner(const T* img, int64_t H, int64_t W, int64_t C, int64_t oh, int64_t ow,
                      const MaxPoolParams& p) {
  int64_t best = -1;
  T best_v = 0;
  for (int64_t kh = 0; kh < p.kernel; ++kh) {
    const int64_t ih = oh * p.stride - p.pad + kh;
    if (ih < 0 || ih >= H) continue;
    for (int64_t kw = 0; kw < p.kernel; ++kw) {
      const int64_t iw = ow * p.stride - p.pad + kw;
      if (iw < 0 || iw >= W) continue;
      const T v = img[(ih * W + iw) * C];
      if (best < 0 || v > best_v || (std::isnan(v) && !std::isnan(best_v))) {
        best = ih * W + iw;
        best_v = v;
      }
    }
  }
  return best;  // >= 0: the pad rule leaves a real cell in every window
}

}  // namespace

void maxpool_forward(const Tensor& x, const Tensor& y, const MaxPoolParams& p) {
  dispatch_cpu("maxpool_forward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t N = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3), Ho = y.dim(1), Wo = y.dim(2);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow)
          for (int64_t c = 0; c < C; ++c) {
            const T* img = xp + n * H * W * C + c;
            yp[((n * Ho + oh) * Wo + ow) * C + c] = img[window_winner(img, H, W, C, oh, ow, p) * C];
          }
  });
}

void maxpool_backward(const Tensor& x, const Tensor& dy, const Tensor& dx, const MaxPoolParams& p) {
  dispatch_cpu("maxpool_backward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t N = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3), Ho = dy.dim(1), Wo = dy.dim(2);
    const T* xp = x.data<T>();
    const T* gp = dy.data<T>();
    T* dxp = dx.data<T>();
    // Scatter in output order: each dx cell gets its windows' dy in (oh, ow) order.
    for (int64_t n = 0; n < N; ++n)
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow)
          for (int64_t c = 0; c < C; ++c) {
            const int64_t base = n * H * W * C + c;
            const int64_t q = window_winner(xp + base, H, W, C, oh, ow, p);
            dxp[base + q * C] += gp[((n * Ho + oh) * Wo + ow) * C + c];
          }
  });
}

}  // namespace vt::cpu
