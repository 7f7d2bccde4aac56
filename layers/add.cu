// Elementwise add in CUDA: grid-stride kernels, fp32 arithmetic whatever the storage type.
// Each element is read and written by one thread only, which is what lets y alias a or b.
#include "layers/add.h"
#include "layers/cuda_common.cuh"

namespace vt::cuda {
namespace {

template <class T>
__global__ void add_kernel(const T* a, const T* b, T* y, int64_t n) {
  VT_GRID_STRIDE(i, n) { y[i] = from_f32<T>(to_f32(a[i]) + to_f32(b[i])); }
}

template <class T>
__global__ void accumulate_kernel(const T* src, T* dst, int64_t n) {
  VT_GRID_STRIDE(i, n) { dst[i] = from_f32<T>(to_f32(dst[i]) + to_f32(src[i])); }
}

template <class T>
__global__ void scale_kernel(T* x, float alpha, int64_t n) {
  VT_GRID_STRIDE(i, n) { x[i] = from_f32<T>(to_f32(x[i]) * alpha); }
}

}  // namespace

void add_forward(const Tensor& a, const Tensor& b, const Tensor& y, Stream s) {
  const int64_t n = a.numel();
  if (n == 0) return;
  dispatch("add_forward", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    add_kernel<T><<<grid_for(n), kThreads, 0, stream_of(s)>>>(a.data<T>(), b.data<T>(), y.data<T>(), n);
  });
  VT_LAUNCH_CHECK();
}

void accumulate(const Tensor& src, const Tensor& dst, Stream s) {
  const int64_t n = src.numel();
  if (n == 0) return;
  dispatch("add_backward", src.dtype(), [&](auto tag) {
    using T = decltype(tag);
    accumulate_kernel<T><<<grid_for(n), kThreads, 0, stream_of(s)>>>(src.data<T>(), dst.data<T>(), n);
  });
  VT_LAUNCH_CHECK();
}

void scale(const Tensor& x, double alpha, Stream s) {
  const int64_t n = x.numel();
  if (n == 0) return;
  dispatch("scale", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    scale_kernel<T><<<grid_for(n), kThreads, 0, stream_of(s)>>>(x.data<T>(), static_cast<float>(alpha), n);
  });
  VT_LAUNCH_CHECK();
}

}  // namespace vt::cuda
