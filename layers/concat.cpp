// Concat / split contract checks and backend dispatch (see concat.h).
#include "layers/concat.h"

#include <cstdint>
#include <string>

#include "layers/op.h"

namespace vt {
namespace {

bool overlaps(const Tensor& a, const Tensor& b) {
  if (a.nbytes() == 0 || b.nbytes() == 0) return false;
  const auto a0 = reinterpret_cast<uintptr_t>(a.raw()), b0 = reinterpret_cast<uintptr_t>(b.raw());
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

// The whole (y of concat, x of split, or their gradients) against its parts: one device and
// storage type, NHWC, matching N, H, W, channel counts summing to the whole's C, and no part
// overlapping the whole.
void check_parts(const char* op, const char* whole_name, const Tensor& whole, const char* parts_name,
                 const std::vector<Tensor>& parts) {
  const Arg w{whole_name, whole};
  op_check(!parts.empty(), op, cat(parts_name, " is empty: need at least one part"), {w});
  check_types(op, {w}, {});
  check_nhwc(op, w);
  int64_t channels = 0;
  std::string shapes;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string name = cat(parts_name, "[", i, "]");
    const Arg a{name.c_str(), parts[i]};
    check_types(op, {w, a}, {});
    check_nhwc(op, a);
    op_check(
        parts[i].dim(0) == whole.dim(0) && parts[i].dim(1) == whole.dim(1) && parts[i].dim(2) == whole.dim(2),
        op, cat(name, " must match ", whole_name, " in N, H and W"), {w, a});
    op_check(!overlaps(parts[i], whole), op, cat(name, " overlaps ", whole_name, " in memory"), {w, a});
    channels += parts[i].dim(3);
    shapes += cat(i ? ", " : "", parts[i].shape().str());
  }
  op_check(channels == whole.dim(3), op,
           cat("the channel counts of ", parts_name, " (shapes ", shapes, ") sum to ", channels, ", not to ",
               whole_name, "'s ", whole.dim(3)),
           {w});
}

}  // namespace

void concat_forward(const std::vector<Tensor>& xs, const Tensor& y, Stream s) {
  const char* op = "concat_forward";
  check_parts(op, "y", y, "xs", xs);
  if (y.is_cuda()) VT_CUDA_CALL(op, cuda::concat_forward(xs, y, s));
  else cpu::concat_forward(xs, y);
}

void concat_backward(const Tensor& dy, const std::vector<Tensor>& dxs, Stream s,
                     const std::vector<bool>& overwrite) {
  const char* op = "concat_backward";
  check_parts(op, "dy", dy, "dxs", dxs);
  VT_CHECK(overwrite.empty() || overwrite.size() == dxs.size(), op, ": ", overwrite.size(),
           " overwrite flags for ", dxs.size(), " parts");
  const std::vector<bool> flags = overwrite.empty() ? std::vector<bool>(dxs.size(), false) : overwrite;
  if (dy.is_cuda()) VT_CUDA_CALL(op, cuda::concat_backward(dy, dxs, flags, s));
  else cpu::concat_backward(dy, dxs, flags);
}

void split_forward(const Tensor& x, const std::vector<Tensor>& ys, Stream s) {
  const char* op = "split_forward";
  check_parts(op, "x", x, "ys", ys);
  if (x.is_cuda()) VT_CUDA_CALL(op, cuda::split_forward(x, ys, s));
  else cpu::split_forward(x, ys);
}

void split_backward(const std::vector<Tensor>& dys, const Tensor& dx, Stream s, bool overwrite) {
  const char* op = "split_backward";
  check_parts(op, "dx", dx, "dys", dys);
  if (dx.is_cuda()) VT_CUDA_CALL(op, cuda::split_backward(dys, dx, overwrite, s));
  else cpu::split_backward(dys, dx, overwrite);
}

}  // namespace vt
