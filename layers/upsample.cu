// Nearest upsampling in CUDA, one thread per 16-byte pack of channels of the small side
// (8 bf16 or 4 f32 when C allows, else one element): the forward copies its pack to the
// scale x scale output cells it covers, the backward gathers those cells' dy and adds their
// sum into dx in (a, b) order (deterministic, no atomics; the CPU reference's order, so f32
// is bit-identical to it). One index decomposition per pack, not per element. Either side may
// be a channel view: positions lie sq (small) and lq (large) elements apart.
#include "layers/cuda_common.cuh"
#include "layers/upsample.h"

namespace vt::cuda {
namespace {

struct UpDims {
  int64_t N, H, W, C;  // the small side, x / dx
  int64_t scale;
  int64_t sq, lq;  // pitches: the small side's, the large side's
  // Small-side element i (flat over (N, H, W, C)): its offset there, and the offset in the
  // large side (N, H scale, W scale, C) of the first cell of its scale x scale block; the
  // block's rows lie row() apart, its cells lq.
  struct At {
    int64_t small, corner;
  };
  __device__ At at(int64_t i) const {
    const int64_t c = i % C, pix = i / C, w = pix % W, t = pix / W, h = t % H, n = t / H;
    return {pix * sq + c, ((n * H + h) * scale * W * scale + w * scale) * lq + c};
  }
  __device__ int64_t row() const { return W * scale * lq; }
};

// y (large) from x (small): element pack i of x to its scale^2 cells.
template <class T>
struct Spread {
  const T* x;
  T* y;
  UpDims d;
  template <int V>
  __device__ void apply(int64_t i) const {
    const UpDims::At p = d.at(i);
    const Pack<T, V> v = load_pack<V>(x + p.small);
    const int64_t row = d.row();
    for (int64_t a = 0; a < d.scale; ++a)
      for (int64_t b = 0; b < d.scale; ++b) store_pack(y + p.corner + a * row + b * d.lq, v);
  }
};

// dx (small) += the sum of dy over each element's scale^2 cells, in (a, b) order.
template <class T>
struct Gather {
  const T* dy;
  T* dx;
  UpDims d;
  template <int V>
  __device__ void apply(int64_t i) const {
    const UpDims::At p = d.at(i);
    const Pack<T, V> old = load_pack<V>(dx + p.small);
    float acc[V];
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] = to_f32(old.v[j]);
    const int64_t row = d.row();
    for (int64_t a = 0; a < d.scale; ++a)
      for (int64_t b = 0; b < d.scale; ++b) {
        const Pack<T, V> g = load_pack<V>(dy + p.corner + a * row + b * d.lq);
#pragma unroll
        for (int j = 0; j < V; ++j) acc[j] += to_f32(g.v[j]);
      }
    Pack<T, V> out;
#pragma unroll
    for (int j = 0; j < V; ++j) out.v[j] = from_f32<T>(acc[j]);
    store_pack(dx + p.small, out);
  }
};

UpDims dims_of(const Tensor& small, const Tensor& large, int scale) {
  return {small.dim(0), small.dim(1), small.dim(2), small.dim(3), scale, small.pitch(), large.pitch()};
}

// Packs of V channels fit: C and both pitches multiples of V (alignment: launch_elementwise).
bool packs_fit(const UpDims& d, int v) {
  return d.C % v == 0 && d.sq % v == 0 && d.lq % v == 0;
}

}  // namespace

void upsample_nearest_forward(const Tensor& x, const Tensor& y, int scale, Stream s) {
  const int64_t n = x.numel();
  if (n == 0) return;
  const UpDims d = dims_of(x, y, scale);
  dispatch("upsample_nearest_forward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    constexpr int kPack = 16 / static_cast<int>(sizeof(T));
    launch_elementwise<T>(Spread<T>{x.data<T>(), y.data<T>(), d}, n, {x.raw(), y.raw()}, stream_of(s),
                          packs_fit(d, kPack));
  });
  VT_LAUNCH_CHECK();
}

void upsample_nearest_backward(const Tensor& dy, const Tensor& dx, int scale, Stream s) {
  const int64_t n = dx.numel();
  if (n == 0) return;
  const UpDims d = dims_of(dx, dy, scale);
  dispatch("upsample_nearest_backward", dx.dtype(), [&](auto tag) {
    using T = decltype(tag);
    constexpr int kPack = 16 / static_cast<int>(sizeof(T));
    launch_elementwise<T>(Gather<T>{dy.data<T>(), dx.data<T>(), d}, n, {dy.raw(), dx.raw()}, stream_of(s),
                          packs_fit(d, kPack));
  });
  VT_LAUNCH_CHECK();
}

}  // namespace vt::cuda
