// Storage-type conversions in CUDA: grid-stride elementwise kernels, one per (source,
// destination) pair, instantiated for the f32/bf16 pairs and the u8 image input.
#include "layers/convert.h"
#include "layers/cuda_common.cuh"

namespace vt::cuda {
namespace {

template <class T>
__global__ void image_kernel(const uint8_t* x, T* y, int64_t n) {
  // IEEE division (no fast math in this build), as the CPU's fp32 quotient.
  VT_GRID_STRIDE(i, n) {
    y[i] = from_f32<T>(static_cast<float>(x[i]) / 255.f);
  }
}

template <class S, class D>
__global__ void cast_kernel(const S* x, D* y, int64_t n) {
  VT_GRID_STRIDE(i, n) {
    y[i] = from_f32<D>(to_f32(x[i]));
  }
}

}  // namespace

void image_to_activation(const Tensor& x, const Tensor& y, Stream s) {
  const int64_t n = x.numel();
  if (n == 0) return;
  dispatch("image_to_activation", y.dtype(), [&](auto tag) {
    using T = decltype(tag);
    image_kernel<T><<<grid_for(n), kThreads, 0, stream_of(s)>>>(x.data<uint8_t>(), y.data<T>(), n);
  });
  VT_LAUNCH_CHECK();
}

void cast(const Tensor& x, const Tensor& y, Stream s) {
  const int64_t n = x.numel();
  if (n == 0) return;
  dispatch("cast", x.dtype(), [&](auto src) {
    dispatch("cast", y.dtype(), [&](auto dst) {
      using S = decltype(src);
      using D = decltype(dst);
      cast_kernel<S, D><<<grid_for(n), kThreads, 0, stream_of(s)>>>(x.data<S>(), y.data<D>(), n);
    });
  });
  VT_LAUNCH_CHECK();
}

}  // namespace vt::cuda
