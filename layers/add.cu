// Elementwise add in CUDA: 16-byte packs (launch_elementwise), fp32 arithmetic whatever the
// storage type.
// Each element is read and written by one thread only, which is what lets y alias a or b.
#include "layers/add.h"
#include "layers/cuda_common.cuh"

namespace vt::cuda {
namespace {

// y = a + b, dst += src, x *= alpha, in 16-byte packs (launch_elementwise).
template <class T>
struct Add {
  const T* a;
  const T* b;
  T* y;
  template <int V>
  __device__ void apply(int64_t i) const {
    const Pack<T, V> u = load_pack<V>(a + i), w = load_pack<V>(b + i);
    Pack<T, V> o;
#pragma unroll
    for (int j = 0; j < V; ++j) o.v[j] = from_f32<T>(to_f32(u.v[j]) + to_f32(w.v[j]));
    store_pack(y + i, o);
  }
};

template <class T>
struct Scale {
  T* x;
  float alpha;
  template <int V>
  __device__ void apply(int64_t i) const {
    Pack<T, V> o = load_pack<V>(x + i);
#pragma unroll
    for (int j = 0; j < V; ++j) o.v[j] = from_f32<T>(to_f32(o.v[j]) * alpha);
    store_pack(x + i, o);
  }
};

}  // namespace

void add_forward(const Tensor& a, const Tensor& b, const Tensor& y, Stream s) {
  const int64_t n = a.numel();
  if (n == 0) return;
  dispatch("add_forward", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    launch_elementwise<T>(Add<T>{a.data<T>(), b.data<T>(), y.data<T>()}, n, {a.raw(), b.raw(), y.raw()},
                          stream_of(s));
  });
  VT_LAUNCH_CHECK();
}

void accumulate(const Tensor& src, const Tensor& dst, Stream s) {
  const int64_t n = src.numel();
  if (n == 0) return;
  dispatch("add_backward", src.dtype(), [&](auto tag) {
    using T = decltype(tag);
    launch_elementwise<T>(Add<T>{src.data<T>(), dst.data<T>(), dst.data<T>()}, n, {src.raw(), dst.raw()},
                          stream_of(s));
  });
  VT_LAUNCH_CHECK();
}

void scale(const Tensor& x, double alpha, Stream s) {
  const int64_t n = x.numel();
  if (n == 0) return;
  dispatch("scale", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    launch_elementwise<T>(Scale<T>{x.data<T>(), static_cast<float>(alpha)}, n, {x.raw()}, stream_of(s));
  });
  VT_LAUNCH_CHECK();
}

}  // namespace vt::cuda
