// Concat and split in CUDA: one launch per part, each a grid-stride copy between the part
// and its channel slice of the whole (one thread per part element, so any C_i works).
// Parts run one after another on the stream, which makes repeated parts accumulate
// correctly and keeps the result deterministic.
#include "layers/concat.h"
#include "layers/cuda_common.cuh"

namespace vt::cuda {
namespace {

// part: (pixels, Cp) contiguous; whole: (pixels, Cw), the part at channels [off, off + Cp).
// kToWhole picks the direction, kAccumulate adds (in fp32) instead of overwriting.
template <class T, bool kToWhole, bool kAccumulate>
__global__ void copy_slice_kernel(T* part, T* whole, int64_t pixels, int64_t Cp, int64_t Cw, int64_t off) {
  VT_GRID_STRIDE(i, pixels * Cp) {
    const int64_t p = i / Cp, c = i - p * Cp;
    T* dst = kToWhole ? &whole[p * Cw + off + c] : &part[i];
    const T src = kToWhole ? part[i] : whole[p * Cw + off + c];
    *dst = kAccumulate ? from_f32<T>(to_f32(*dst) + to_f32(src)) : src;
  }
}

template <bool kToWhole, bool kAccumulate>
void run_parts(const char* op, const Tensor& whole, const std::vector<Tensor>& parts, Stream s) {
  const int64_t pixels = whole.dim(0) * whole.dim(1) * whole.dim(2), Cw = whole.dim(3);
  dispatch(op, whole.dtype(), [&](auto tag) {
    using T = decltype(tag);
    int64_t off = 0;
    for (const Tensor& part : parts) {
      const int64_t Cp = part.dim(3), n = pixels * Cp;
      if (n > 0) {
        copy_slice_kernel<T, kToWhole, kAccumulate><<<grid_for(n), kThreads, 0, stream_of(s)>>>(
            part.data<T>(), whole.data<T>(), pixels, Cp, Cw, off);
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
