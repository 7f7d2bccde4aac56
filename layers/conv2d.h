// 2-D convolution, NHWC, with stride, zero padding and groups (depthwise included).
//
//   x:  (N, H, W, Cin)                 activation type
//   w:  (Cout, KH, KW, Cin / groups)   OHWI, the activation type (a bf16 run keeps a bf16
//                                      copy of the master weights)
//   b:  (Cout)                         param_dtype, optional
//   y:  (N, Ho, Wo, Cout)              Ho = (H + 2 pad_h - KH) / stride_h + 1 (floor), Wo alike
//
// Output channel co reads input channels [g Cin/groups, (g+1) Cin/groups) with
// g = co / (Cout/groups). The kernel size comes from w's shape; any size, stride >= 1 and
// padding >= 0 are allowed, as long as Ho, Wo >= 1.
//
// x and y may be channel views (Tensor::channels: parts of concatenations written in place),
// and so may dx (with x's pitch) and dy (any pitch): positions then lie pitch() elements
// apart instead of Cin or Cout.
//
// Forward overwrites y. Backward ACCUMULATES: dx += dL/dx, dw += dL/dw, db += dL/db, so
// the caller zeroes the buffers once per step; any of dx, dw, db may be null (e.g. no dx for
// the first layer). With overwrite_dx, backward writes dx = dL/dx instead (for an input no
// other op reads: dx then needs no zeroing, and the GPU skips reading it). dw and db are
// param_dtype (f32 on CUDA even for bf16 runs, f64 in the CPU f64 mode).
//
// Workspace: scratch memory the caller allocates once, up front (static memory plan), of
// at least conv2d_workspace_bytes() bytes, as a tensor of any storage type on the op's
// device (e.g. f32 with numel = ceil(bytes / 4)); its storage type is ignored, only its
// byte size is checked. When the size is 0 an empty Tensor{} may be passed. On the CPU it
// holds the im2col matrix of one image, (Ho Wo, KH KW Cin) in the activation type, for
// groups == 1 except 1x1 / stride 1 / pad 0 convs (which use x directly); the start of the
// buffer must be aligned for the activation type. On CUDA, bf16 convs with groups 1 run as
// tensor-core implicit GEMMs (conv2d_igemm.h) whose weight gradient is split over slices
// of the N Ho Wo positions: the workspace holds the slices' partial sums (splits, Cout,
// KH KW Cin) in f32 (0 bytes when one slice suffices). Every CUDA conv's bias gradient sums
// dy over slices of the positions too (channel_sum_slices), its partials (slices, Cout) f32;
// the workspace is the larger of the two (the passes run one after the other). The CUDA
// forward uses none (Tensor{} will do there).
#pragma once

#include <cstddef>
#include <cstdint>

#include "layers/tensor.h"

namespace vt {

struct Conv2dParams {
  int stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, groups = 1;
  bool overwrite_dx = false;  // backward: dx = dL/dx instead of dx += dL/dx
};

// (N, Ho, Wo, Cout) for input shape x and weight shape w; throws when they do not fit.
Shape conv2d_output_shape(const Shape& x, const Shape& w, const Conv2dParams& p);

// Every size the backends need, from shapes already checked (plain data, so the CUDA
// kernels take it by value). cin_g = cin / groups, cout_g = cout / groups; xq (yq): elements
// from one position of x and dx (of y or dy) to the next, the pitch (cin, cout unless a
// channel view).
struct Conv2dDims {
  int64_t n, h, w, cin, ho, wo, cout, kh, kw, groups, cin_g, cout_g;
  int64_t stride_h, stride_w, pad_h, pad_w;
  int64_t xq, yq;
};
// xq = x_pitch (yq = y_pitch), or cin (cout) when 0.
Conv2dDims conv2d_dims(const Shape& x, const Shape& w, const Conv2dParams& p, int64_t x_pitch = 0,
                       int64_t y_pitch = 0);

// Bytes of scratch the op needs for these shapes, storage type and device (0 if none).
size_t conv2d_workspace_bytes(const Shape& x, const Shape& w, const Conv2dParams& p, DType dt, Device dev);

// y = conv(x, w) + b. b may be null (no bias). tile_stats (CUDA tensor-core path only, see
// conv2d_tile_stats_tiles): also the column statistics of y per tile of rows, (T, Cout, 3)
// f32 = (count, mean, M2) of the values as stored, for the batch norm that reads y.
void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor* b, const Tensor& y, const Conv2dParams& p,
                    const Tensor& workspace, Stream s = {}, const Tensor* tile_stats = nullptr);
// T, the tiles of rows conv2d_forward's tile_stats has for these shapes on the tensor-core
// path (bf16 on a CUDA device with bf16 tensor cores, groups 1); 0 where that path does not
// run (then tile_stats cannot be asked for).
int64_t conv2d_tile_stats_tiles(const Shape& x, const Shape& w, const Conv2dParams& p, DType dt, Device dev);
// dx += dL/dx (dx = dL/dx with p.overwrite_dx), dw += dL/dw, db += dL/db, given dy = dL/dy:
// (N, Ho, Wo, Cout). Each of dx, dw, db may be null.
void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor* dx, const Tensor* dw,
                     const Tensor* db, const Conv2dParams& p, const Tensor& workspace, Stream s = {});

namespace cpu {
void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor* b, const Tensor& y, const Conv2dParams& p,
                    const Tensor& workspace);
void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor* dx, const Tensor* dw,
                     const Tensor* db, const Conv2dParams& p, const Tensor& workspace);
}  // namespace cpu
namespace cuda {
// tile_stats: null, or (T, Cout, 3) f32 (the tensor-core path must run: tile_stats_available).
void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor* b, const Tensor& y, const Conv2dParams& p,
                    Stream s, const Tensor* tile_stats = nullptr);
bool tile_stats_available(const Conv2dDims& d, DType dt);
void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor* dx, const Tensor* dw,
                     const Tensor* db, const Conv2dParams& p, const Tensor& workspace, Stream s);
}  // namespace cuda

}  // namespace vt
