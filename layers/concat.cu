// Concat and split in CUDA: one launch per part, each an elementwise copy between the part
// and its channel slice of the whole (in 16-byte packs when the channel counts allow, else
// one element per thread, so any C_i works).
// Parts run one after another on the stream, which makes repeated parts accumulate
// correctly and keeps the result deterministic.
#include "layers/concat.h"
#include "layers/cuda_common.cuh"

namespace vt::cuda {
namespace {

// part: (pixels, Cp) contiguous; whole: (pixels, Cw), the part at channels [off, off + Cp).
// kToWhole picks the direction, kAccumulate adds (in fp32) instead of overwriting. A
// launch_elementwise op over the part's elements: packs are allowed when Cp, Cw and off are
// multiples of the pack, so a pack is contiguous and aligned on both sides.
template <class T, bool kToWhole, bool kAccumulate>
struct CopySlice {
  T* part;
  T* whole;
  int64_t Cp, Cw, off;
  template <int V>
  __device__ void apply(int64_t i) const {
    const int64_t p = i / Cp, c = i - p * Cp;
    T* w = whole + p * Cw + off + c;
    T* dst = kToWhole ? w : part + i;
    const Pack<T, V> src = load_pack<V>(kToWhole ? part + i : w);
    Pack<T, V> out = src;
    if (kAccumulate) {
      out = load_pack<V>(dst);
#pragma unroll
      for (int j = 0; j < V; ++j) out.v[j] = from_f32<T>(to_f32(out.v[j]) + to_f32(src.v[j]));
    }
    store_pack(dst, out);
  }
};

template <bool kToWhole, bool kAccumulate>
void run_parts(const char* op, const Tensor& whole, const std::vector<Tensor>& parts, Stream s) {
  const int64_t pixels = whole.dim(0) * whole.dim(1) * whole.dim(2), Cw = whole.dim(3);
  dispatch(op, whole.dtype(), [&](auto tag) {
    using T = decltype(tag);
    int64_t off = 0;
    for (const Tensor& part : parts) {
      const int64_t Cp = part.dim(3), n = pixels * Cp;
      if (n > 0) {
        constexpr int kPack = 16 / static_cast<int>(sizeof(T));
        launch_elementwise<T>(
            CopySlice<T, kToWhole, kAccumulate>{part.data<T>(), whole.data<T>(), Cp, Cw, off}, n,
            {part.raw(), whole.raw()}, stream_of(s), Cp % kPack == 0 && Cw % kPack == 0 && off % kPack == 0);
        VT_LAUNCH_CHECK();
      }
      off += Cp;
    }
  });
}

}  // namespace

void concat_forward(const std::vector<Tensor>& xs, const Tensor& y, Stream s) {
  run_parts<true, false>("concat_forward", y, xs, s);
}

void concat_backward(const Tensor& dy, const std::vector<Tensor>& dxs, Stream s) {
  run_parts<false, true>("concat_backward", dy, dxs, s);
}

void split_forward(const Tensor& x, const std::vector<Tensor>& ys, Stream s) {
  run_parts<false, false>("split_forward", x, ys, s);
}

void split_backward(const std::vector<Tensor>& dys, const Tensor& dx, Stream s) {
  run_parts<true, true>("split_backward", dx, dys, s);
}

}  // namespace vt::cuda
