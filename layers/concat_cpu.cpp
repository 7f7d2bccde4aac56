// Concat and split on the CPU: plain loops, the reference for the CUDA kernels. All four
// directions are one copy between a part and its channel slice of the whole.
#include "layers/concat.h"
#include "layers/op.h"

namespace vt::cpu {
namespace {

enum class Dir { kPartToWhole, kWholeToPart };

// For every pixel, part[p, c] and whole[p, off + c] for c < part's C: copy (or add, with
// `accumulate`) in direction `dir`.
template <class T>
void copy_slice(const Tensor& part, const Tensor& whole, int64_t off, Dir dir, bool accumulate) {
  const int64_t pixels = whole.dim(0) * whole.dim(1) * whole.dim(2), Cp = part.dim(3), Cw = whole.dim(3);
  T* pp = part.data<T>();
  T* wp = whole.data<T>();
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t c = 0; c < Cp; ++c) {
      T& part_v = pp[p * Cp + c];
      T& whole_v = wp[p * Cw + off + c];
      if (dir == Dir::kPartToWhole)
        whole_v = accumulate ? whole_v + part_v : part_v;
      else
        part_v = accumulate ? part_v + whole_v : whole_v;
    }
}

// accumulate[i]: whether part i's copy adds.
void run_parts(const char* op, const Tensor& whole, const std::vector<Tensor>& parts, Dir dir,
               const std::vector<bool>& accumulate) {
  dispatch_cpu(op, whole.dtype(), [&](auto tag) {
    using T = decltype(tag);
    int64_t off = 0;
    for (size_t i = 0; i < parts.size(); ++i) {
      copy_slice<T>(parts[i], whole, off, dir, accumulate[i]);
      off += parts[i].dim(3);
    }
  });
}

std::vector<bool> all(size_t n, bool v) { return std::vector<bool>(n, v); }

}  // namespace

void concat_forward(const std::vector<Tensor>& xs, const Tensor& y) {
  run_parts("concat_forward", y, xs, Dir::kPartToWhole, all(xs.size(), false));
}

void concat_backward(const Tensor& dy, const std::vector<Tensor>& dxs, const std::vector<bool>& overwrite) {
  std::vector<bool> accumulate(dxs.size());
  for (size_t i = 0; i < dxs.size(); ++i) accumulate[i] = !overwrite[i];
  run_parts("concat_backward", dy, dxs, Dir::kWholeToPart, accumulate);
}

void split_forward(const Tensor& x, const std::vector<Tensor>& ys) {
  run_parts("split_forward", x, ys, Dir::kWholeToPart, all(ys.size(), false));
}

void split_backward(const std::vector<Tensor>& dys, const Tensor& dx, bool overwrite) {
  run_parts("split_backward", dx, dys, Dir::kPartToWhole, all(dys.size(), !overwrite));
}

}  // namespace vt::cpu
