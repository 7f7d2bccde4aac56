// Nearest upsampling in CUDA: forward copies one output element per thread; backward
// gathers, one thread per dx element summing its scale*scale dy cells in (a, b) order
// (deterministic, no atomics; the CPU reference's order, so f32 is bit-identical to it).
#include "layers/cuda_common.cuh"
#include "layers/upsample.h"

namespace vt::cuda {
namespace {

struct UpDims {
  int64_t N, H, W, C;  // the small side, x / dx
  int64_t scale;
};

// One thread per y[n, h, w, c] of shape (N, H*scale, W*scale, C).
template <class T>
__global__ void forward_kernel(const T* x, T* y, UpDims d) {
  const int64_t Ho = d.H * d.scale, Wo = d.W * d.scale;
  VT_GRID_STRIDE(i, d.N * Ho * Wo * d.C) {
    const int64_t c = i % d.C;
    int64_t t = i / d.C;
    const int64_t w = t % Wo;
    t /= Wo;
    const int64_t h = t % Ho;
    const int64_t n = t / Ho;
    y[i] = x[((n * d.H + h / d.scale) * d.W + w / d.scale) * d.C + c];
  }
}

// One thread per dx[n, h, w, c] of shape (N, H, W, C).
template <class T>
__global__ void backward_kernel(const T* dy, T* dx, UpDims d) {
  const int64_t Ho = d.H * d.scale, Wo = d.W * d.scale;
  VT_GRID_STRIDE(i, d.N * d.H * d.W * d.C) {
    const int64_t c = i % d.C;
    int64_t t = i / d.C;
    const int64_t w = t % d.W;
    t /= d.W;
    const int64_t h = t % d.H;
    const int64_t n = t / d.H;
    float acc = to_f32(dx[i]);
    for (int64_t a = 0; a < d.scale; ++a)
      for (int64_t b = 0; b < d.scale; ++b)
        acc += to_f32(dy[((n * Ho + h * d.scale + a) * Wo + w * d.scale + b) * d.C + c]);
    dx[i] = from_f32<T>(acc);
  }
}

UpDims dims_of(const Tensor& small, int scale) {
  return {small.dim(0), small.dim(1), small.dim(2), small.dim(3), scale};
}

}  // namespace

void upsample_nearest_forward(const Tensor& x, const Tensor& y, int scale, Stream s) {
  const int64_t n = y.numel();
  if (n == 0) return;
  const UpDims d = dims_of(x, scale);
  dispatch("upsample_nearest_forward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    forward_kernel<T><<<grid_for(n), kThreads, 0, stream_of(s)>>>(x.data<T>(), y.data<T>(), d);
  });
  VT_LAUNCH_CHECK();
}

void upsample_nearest_backward(const Tensor& dy, const Tensor& dx, int scale, Stream s) {
  const int64_t n = dx.numel();
  if (n == 0) return;
  const UpDims d = dims_of(dx, scale);
  dispatch("upsample_nearest_backward", dx.dtype(), [&](auto tag) {
    using T = decltype(tag);
    backward_kernel<T><<<grid_for(n), kThreads, 0, stream_of(s)>>>(dy.data<T>(), dx.data<T>(), d);
  });
  VT_LAUNCH_CHECK();
}

}  // namespace vt::cuda
