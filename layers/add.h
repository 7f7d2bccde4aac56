// Elementwise sum of two tensors: residual (shortcut) connections, e.g. in C2f bottlenecks.
//
// a, b, y: any rank, all the same shape (no broadcasting). y may alias a or b (y = a + b
// in place): each element is read and then written by the same thread. Gradients
// accumulate: da += dy, db += dy, either may be null (no gradient wanted); da and db may
// be the same tensor (y = a + a), which then receives 2 * dy; neither may alias dy. With
// overwrite_da (overwrite_db) the backward writes da = dy (db = dy) instead, for a gradient
// no other op writes; not overwrite_db when db is da.
#pragma once

#include "layers/tensor.h"

namespace vt {

// a, b, y: the same shape; y = a + b
void add_forward(const Tensor& a, const Tensor& b, const Tensor& y, Stream s = {});
// dy, *da, *db: the same shape; *da += dy, *db += dy (each when not null; = when overwritten)
void add_backward(const Tensor& dy, const Tensor* da, const Tensor* db, Stream s = {}, bool overwrite_da = false,
                  bool overwrite_db = false);
// x *= alpha, in place (fp32 arithmetic for f32 and bf16, fp64 for f64): averaging sums.
void scale(const Tensor& x, double alpha, Stream s = {});

namespace cpu {
void add_forward(const Tensor& a, const Tensor& b, const Tensor& y);
// dst += src
void accumulate(const Tensor& src, const Tensor& dst);
void scale(const Tensor& x, double alpha);
}  // namespace cpu
namespace cuda {
void add_forward(const Tensor& a, const Tensor& b, const Tensor& y, Stream s);
// dst += src
void accumulate(const Tensor& src, const Tensor& dst, Stream s);
void scale(const Tensor& x, double alpha, Stream s);
}  // namespace cuda

}  // namespace vt
