// Max pooling on the CPU: plain loops, the reference for the CUDA kernels.
#include <cmath>
#include <vector>

#include "layers/maxpool.h"
#include "layers/op.h"

namespace vt::cpu {
namespace {

// The winners of output cell (oh, ow) of one image, every channel at once, under the rule
// in maxpool.h: the window's cells scanned in (kh, kw) order, a cell taking over when its
// value is larger or it is the first NaN; the channels innermost, so every read is
// contiguous. img: x[n] (H, W, C); best, at: (C) the winning values and pixels ih * W + iw.
template <class T>
void window_winners(const T* img, int64_t H, int64_t W, int64_t C, int64_t oh, int64_t ow, const MaxPoolParams& p,
                    T* best, int64_t* at) {
  bool first = true;  // the pad rule leaves a real cell in every window
  for (int64_t kh = 0; kh < p.kernel; ++kh) {
    const int64_t ih = oh * p.stride - p.pad + kh;
    if (ih < 0 || ih >= H) continue;
    for (int64_t kw = 0; kw < p.kernel; ++kw) {
      const int64_t iw = ow * p.stride - p.pad + kw;
      if (iw < 0 || iw >= W) continue;
      const int64_t q = ih * W + iw;
      const T* v = img + q * C;
      if (first) {
        for (int64_t c = 0; c < C; ++c) best[c] = v[c], at[c] = q;
        first = false;
        continue;
      }
      for (int64_t c = 0; c < C; ++c) {
        const bool take = v[c] > best[c] || (v[c] != v[c] && best[c] == best[c]);  // larger, or the first NaN
        best[c] = take ? v[c] : best[c];
        at[c] = take ? q : at[c];
      }
    }
  }
}

}  // namespace

// Rows of output cells are independent in the forward (parallel over them); the backward adds
// into dx cells that overlapping windows share, so it runs in parallel over images only,
// each image's windows in (oh, ow) order: the same sums in the same order as serially.
void maxpool_forward(const Tensor& x, const Tensor& y, const MaxPoolParams& p) {
  dispatch_cpu("maxpool_forward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t N = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3), Ho = y.dim(1), Wo = y.dim(2);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
#pragma omp parallel if (x.numel() > 32768)
    {
      std::vector<int64_t> at(static_cast<size_t>(C));
#pragma omp for schedule(static)
      for (int64_t row = 0; row < N * Ho; ++row) {
        const int64_t n = row / Ho, oh = row % Ho;
        for (int64_t ow = 0; ow < Wo; ++ow)
          window_winners(xp + n * H * W * C, H, W, C, oh, ow, p, yp + ((n * Ho + oh) * Wo + ow) * C, at.data());
      }
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
#pragma omp parallel if (x.numel() > 32768)
    {
      std::vector<T> best(static_cast<size_t>(C));
      std::vector<int64_t> at(static_cast<size_t>(C));
#pragma omp for schedule(static)
      for (int64_t n = 0; n < N; ++n)
        for (int64_t oh = 0; oh < Ho; ++oh)
          for (int64_t ow = 0; ow < Wo; ++ow) {
            window_winners(xp + n * H * W * C, H, W, C, oh, ow, p, best.data(), at.data());
            const T* g = gp + ((n * Ho + oh) * Wo + ow) * C;
            T* d = dxp + n * H * W * C;
            for (int64_t c = 0; c < C; ++c) d[at[c] * C + c] += g[c];
          }
    }
  });
}

}  // namespace vt::cpu
