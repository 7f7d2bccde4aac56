// Reduction contract checks, the workspace size, and backend dispatch (see reduce.h).
#include "layers/reduce.h"

#include <algorithm>

#include "layers/op.h"

namespace vt {

namespace {

// CUDA pass 1 gives each block this many elements until the block count reaches the cap;
// both numbers are fixed so that the summation tree depends on n alone (see reduce.cu).
constexpr int64_t kElemsPerBlock = 4096;
constexpr int64_t kMaxBlocks = 1024;

}  // namespace

int64_t channel_sum_slices(int64_t positions, int64_t channels) {
  const int64_t groups = (channels + 31) / 32;
  return std::max<int64_t>(1, std::min<int64_t>({(1024 + groups - 1) / groups, positions / 256, 256}));
}

namespace {

void check_reduction(const char* op, const Tensor& x, const Tensor& out, const Tensor& workspace) {
  check_types(op, {{"x", x}}, {{"out", out}});
  check_shape(op, {"out", out}, Shape{1});
  op_check(out.raw() != nullptr, op, "out has no storage", {{"out", out}});
  const int64_t need = reduce_workspace_elems(x.numel(), x.device());
  if (need == 0) return;
  const bool ok = workspace.raw() != nullptr && workspace.device() == x.device() &&
                  workspace.dtype() == DType::kF32 && workspace.numel() >= need;
  op_check(ok, op,
           cat("workspace must be f32 on ", device_name(x.device()), " with at least ", need,
               " elements (reduce_workspace_elems)"),
           {{"x", x}, {"workspace", workspace}});
}

void check_backward(const char* op, const Tensor& dout, const Tensor& dx) {
  check_types(op, {{"dx", dx}}, {{"dout", dout}});
  check_shape(op, {"dout", dout}, Shape{1});
  op_check(dout.raw() != nullptr, op, "dout has no storage", {{"dout", dout}});
}

}  // namespace

int64_t reduce_workspace_elems(int64_t n, Device dev) {
  if (dev == Device::kCPU || n <= 0) return 0;
  return std::min((n + kElemsPerBlock - 1) / kElemsPerBlock, kMaxBlocks);
}

void reduce_sum(const Tensor& x, const Tensor& out, const Tensor& workspace, Stream s) {
  const char* op = "reduce_sum";
  check_reduction(op, x, out, workspace);
  if (x.is_cuda())
    VT_CUDA_CALL(op, cuda::reduce_sum(x, out, workspace, s));
  else
    cpu::reduce_sum(x, out);
}

void reduce_sum_backward(const Tensor& dout, const Tensor& dx, Stream s) {
  const char* op = "reduce_sum_backward";
  check_backward(op, dout, dx);
  if (dx.is_cuda())
    VT_CUDA_CALL(op, cuda::reduce_sum_backward(dout, dx, s));
  else
    cpu::reduce_sum_backward(dout, dx);
}

void reduce_sum_squares(const Tensor& x, const Tensor& out, const Tensor& workspace, Stream s) {
  const char* op = "reduce_sum_squares";
  check_reduction(op, x, out, workspace);
  if (x.is_cuda())
    VT_CUDA_CALL(op, cuda::reduce_sum_squares(x, out, workspace, s));
  else
    cpu::reduce_sum_squares(x, out);
}

void reduce_sum_squares_backward(const Tensor& x, const Tensor& dout, const Tensor& dx, Stream s) {
  const char* op = "reduce_sum_squares_backward";
  check_types(op, {{"x", x}, {"dx", dx}}, {{"dout", dout}});
  check_shape(op, {"dx", dx}, x.shape());
  check_backward(op, dout, dx);
  if (x.is_cuda())
    VT_CUDA_CALL(op, cuda::reduce_sum_squares_backward(x, dout, dx, s));
  else
    cpu::reduce_sum_squares_backward(x, dout, dx);
}

void reduce_max_abs(const Tensor& x, const Tensor& out, const Tensor& workspace, Stream s) {
  const char* op = "reduce_max_abs";
  check_reduction(op, x, out, workspace);
  if (x.is_cuda())
    VT_CUDA_CALL(op, cuda::reduce_max_abs(x, out, workspace, s));
  else
    cpu::reduce_max_abs(x, out);
}

void count_nonfinite(const Tensor& x, const Tensor& out, const Tensor& workspace, Stream s) {
  const char* op = "count_nonfinite";
  check_reduction(op, x, out, workspace);
  if (x.is_cuda())
    VT_CUDA_CALL(op, cuda::count_nonfinite(x, out, workspace, s));
  else
    cpu::count_nonfinite(x, out);
}

}  // namespace vt
