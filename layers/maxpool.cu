// Max pooling in CUDA. Forward: one thread per output cell scans its window. Backward,
// deterministic without atomics: one thread per input cell visits every output window
// that covers it, recomputes that window's winner (the same scan as forward), and adds
// the dy of each window it wins, in (oh, ow) order, to its dx. That is the order in which
// the CPU reference scatters, so f32 results are bit-identical to it.
#include "layers/cuda_common.cuh"
#include "layers/maxpool.h"

namespace vt::cuda {
namespace {

// Geometry of one pooling call; all int64 so that no index product can overflow.
struct PoolDims {
  int64_t N, H, W, C, Ho, Wo;
  int kernel, stride, pad;
};

// The winner of output cell (oh, ow) under the rule in maxpool.h, as the pixel index
// ih * W + iw. `img` points at x[n, 0, 0, c], so pixel q's value is img[q * C]. Values are
// compared in fp32, which orders bf16 values exactly as the CPU orders their f32 copies.
template <class T>
__device__ int64_t window_winner(const T* img, const PoolDims& d, int64_t oh, int64_t ow) {
  int64_t best = -1;
  float best_v = 0.f;
  for (int kh = 0; kh < d.kernel; ++kh) {
    const int64_t ih = oh * d.stride - d.pad + kh;
    if (ih < 0 || ih >= d.H) continue;
    for (int kw = 0; kw < d.kernel; ++kw) {
      const int64_t iw = ow * d.stride - d.pad + kw;
      if (iw < 0 || iw >= d.W) continue;
      const float v = to_f32(img[(ih * d.W + iw) * d.C]);
      if (best < 0 || v > best_v || (isnan(v) && !isnan(best_v))) {
        best = ih * d.W + iw;
        best_v = v;
      }
    }
  }
  return best;
}

// One thread per output element y[n, oh, ow, c].
template <class T>
__global__ void forward_kernel(const T* x, T* y, PoolDims d) {
  VT_GRID_STRIDE(i, d.N * d.Ho * d.Wo * d.C) {
    const int64_t c = i % d.C;
    int64_t t = i / d.C;
    const int64_t ow = t % d.Wo;
    t /= d.Wo;
    const int64_t oh = t % d.Ho;
    const int64_t n = t / d.Ho;
    const T* img = x + n * d.H * d.W * d.C + c;
    y[i] = img[window_winner(img, d, oh, ow) * d.C];
  }
}

// One thread per input element x[n, ih, iw, c]. Output row oh covers input rows
// [oh*stride - pad, oh*stride - pad + kernel - 1], so the rows covering ih are
// ceil((ih + pad - kernel + 1) / stride) <= oh <= floor((ih + pad) / stride), within [0, Ho).
template <class T>
__global__ void backward_kernel(const T* x, const T* dy, T* dx, PoolDims d) {
  VT_GRID_STRIDE(i, d.N * d.H * d.W * d.C) {
    const int64_t c = i % d.C;
    int64_t t = i / d.C;
    const int64_t iw = t % d.W;
    t /= d.W;
    const int64_t ih = t % d.H;
    const int64_t n = t / d.H;
    const int64_t qh = ih + d.pad - d.kernel + 1, qw = iw + d.pad - d.kernel + 1;
    const int64_t oh_lo = qh <= 0 ? 0 : (qh + d.stride - 1) / d.stride;
    const int64_t ow_lo = qw <= 0 ? 0 : (qw + d.stride - 1) / d.stride;
    const int64_t oh_hi = min((ih + d.pad) / d.stride, d.Ho - 1);
    const int64_t ow_hi = min((iw + d.pad) / d.stride, d.Wo - 1);
    const T* img = x + n * d.H * d.W * d.C + c;
    const int64_t me = ih * d.W + iw;
    float acc = to_f32(dx[i]);
    for (int64_t oh = oh_lo; oh <= oh_hi; ++oh)
      for (int64_t ow = ow_lo; ow <= ow_hi; ++ow)
        if (window_winner(img, d, oh, ow) == me) acc += to_f32(dy[((n * d.Ho + oh) * d.Wo + ow) * d.C + c]);
    dx[i] = from_f32<T>(acc);
  }
}

PoolDims dims_of(const Tensor& x, const Tensor& y, const MaxPoolParams& p) {
  return {x.dim(0), x.dim(1), x.dim(2), x.dim(3), y.dim(1), y.dim(2), p.kernel, p.stride, p.pad};
}

}  // namespace

void maxpool_forward(const Tensor& x, const Tensor& y, const MaxPoolParams& p, Stream s) {
  const int64_t n = y.numel();
  if (n == 0) return;
  const PoolDims d = dims_of(x, y, p);
  dispatch("maxpool_forward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    forward_kernel<T><<<grid_for(n), kThreads, 0, stream_of(s)>>>(x.data<T>(), y.data<T>(), d);
  });
  VT_LAUNCH_CHECK();
}

void maxpool_backward(const Tensor& x, const Tensor& dy, const Tensor& dx, const MaxPoolParams& p, Stream s) {
  const int64_t n = x.numel();
  if (n == 0) return;
  const PoolDims d = dims_of(x, dy, p);
  dispatch("maxpool_backward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    backward_kernel<T>
        <<<grid_for(n), kThreads, 0, stream_of(s)>>>(x.data<T>(), dy.data<T>(), dx.data<T>(), d);
  });
  VT_LAUNCH_CHECK();
}

}  // namespace vt::cuda
