// Channel concat and split (the last, fastest axis of NHWC): YOLO's neck concatenations and
// C2f's chunk. Each is the other's backward.
//
// Parts: any number >= 1, any channel counts C_i >= 0 (odd ones fine), all with the same
// N, H, W as the whole, and sum C_i == the whole's C. Part i occupies channels
// [off_i, off_i + C_i) of the whole, off_i = C_0 + ... + C_{i-1}.
//
// Every entry must be a real tensor: there is no "no gradient wanted" entry (pass a
// scratch buffer to drop one). No part may overlap the whole's memory. The same tensor may
// appear as several parts: parts are processed one after another on the stream, so with
// concat([a, a]) the backward adds both slices into a's gradient.
//
// Gradients accumulate: concat_backward adds into dxs, split_backward into dx; except where
// the caller asks them to overwrite (a gradient no other op writes: it then needs no zeroing,
// and the GPU skips reading it), per part for concat_backward (overwrite[i]; empty: none),
// the whole dx for split_backward.
#pragma once

#include <vector>

#include "layers/tensor.h"

namespace vt {

// xs[i]: (N, H, W, C_i), y: (N, H, W, sum C_i); y[..., off_i + c] = xs[i][..., c]
void concat_forward(const std::vector<Tensor>& xs, const Tensor& y, Stream s = {});
// dy: (N, H, W, sum C_i), dxs[i]: (N, H, W, C_i); dxs[i] += dy[..., off_i : off_i + C_i]
// (= with overwrite[i]; overwrite has one entry per part, or none)
void concat_backward(const Tensor& dy, const std::vector<Tensor>& dxs, Stream s = {},
                     const std::vector<bool>& overwrite = {});
// x: (N, H, W, sum C_i), ys[i]: (N, H, W, C_i); ys[i] = x[..., off_i : off_i + C_i]
void split_forward(const Tensor& x, const std::vector<Tensor>& ys, Stream s = {});
// dys[i]: (N, H, W, C_i), dx: (N, H, W, sum C_i); dx[..., off_i : off_i + C_i] += dys[i]
// (= with overwrite)
void split_backward(const std::vector<Tensor>& dys, const Tensor& dx, Stream s = {}, bool overwrite = false);

namespace cpu {
void concat_forward(const std::vector<Tensor>& xs, const Tensor& y);
void concat_backward(const Tensor& dy, const std::vector<Tensor>& dxs, const std::vector<bool>& overwrite);
void split_forward(const Tensor& x, const std::vector<Tensor>& ys);
void split_backward(const std::vector<Tensor>& dys, const Tensor& dx, bool overwrite);
}  // namespace cpu
namespace cuda {
void concat_forward(const std::vector<Tensor>& xs, const Tensor& y, Stream s);
void concat_backward(const Tensor& dy, const std::vector<Tensor>& dxs, const std::vector<bool>& overwrite,
                     Stream s);
void split_forward(const Tensor& x, const std::vector<Tensor>& ys, Stream s);
void split_backward(const std::vector<Tensor>& dys, const Tensor& dx, bool overwrite, Stream s);
}  // namespace cuda

}  // namespace vt
