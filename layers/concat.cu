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

// accumulate[i]: whether part i's copy adds.
template <bool kToWhole>
void run_parts(const char* op, const Tensor& whole, const std::vector<Tensor>& parts,
               const std::vector<bool>& accumulate, Stream s) {
  const int64_t pixels = whole.dim(0) * whole.dim(1) * whole.dim(2), Cw = whole.dim(3);
  dispatch(op, whole.dtype(), [&](auto tag) {
    using T = decltype(tag);
    int64_t off = 0;
    for (size_t i = 0; i < parts.size(); ++i) {
      const Tensor& part = parts[i];
      const int64_t Cp = part.dim(3), n = pixels * Cp;
      if (n > 0) {
        constexpr int kPack = 16 / static_cast<int>(sizeof(T));
        const bool packs = Cp % kPack == 0 && Cw % kPack == 0 && off % kPack == 0;
        if (accumulate[i])
          launch_elementwise<T>(CopySlice<T, kToWhole, true>{part.data<T>(), whole.data<T>(), Cp, Cw, off}, n,
                                {part.raw(), whole.raw()}, stream_of(s), packs);
        else
          launch_elementwise<T>(CopySlice<T, kToWhole, false>{part.data<T>(), whole.data<T>(), Cp, Cw, off}, n,
                                {part.raw(), whole.raw()}, stream_of(s), packs);
        VT_LAUNCH_CHECK();
      }
      off += Cp;
    }
  });
}

std::vector<bool> all(size_t n, bool v) { return std::vector<bool>(n, v); }

}  // namespace

void concat_forward(const std::vector<Tensor>& xs, const Tensor& y, Stream s) {
  run_parts<true>("concat_forward", y, xs, all(xs.size(), false), s);
}

void concat_backward(const Tensor& dy, const std::vector<Tensor>& dxs, const std::vector<bool>& overwrite,
                     Stream s) {
  std::vector<bool> accumulate(dxs.size());
  for (size_t i = 0; i < dxs.size(); ++i) accumulate[i] = !overwrite[i];
  run_parts<false>("concat_backward", dy, dxs, accumulate, s);
}

void split_forward(const Tensor& x, const std::vector<Tensor>& ys, Stream s) {
  run_parts<false>("split_forward", x, ys, all(ys.size(), false), s);
}

void split_backward(const std::vector<Tensor>& dys, const Tensor& dx, bool overwrite, Stream s) {
  run_parts<true>("split_backward", dx, dys, all(dys.size(), !overwrite), s);
}

}  // namespace vt::cuda
