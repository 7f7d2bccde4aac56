// Entry points of the tensor-core implicit-GEMM convolution (conv2d_igemm.cu), called by the
// conv2d dispatcher (conv2d.cu) for bf16 activations. Shapes are checked by the caller;
// semantics as in conv2d.h (forward overwrites y, the gradients accumulate).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "layers/conv2d_igemm.h"

namespace vt::cuda {

// Whether the current device has bf16 tensor cores (sm_80+) and the shapes fit the path.
bool conv2d_igemm_available(const Conv2dDims& d);

// Overrides of the plan, for kernel_bench's checks: tile_width 0 takes the plan's tile
// (igemm::tile_n), 32, 64 or 128 forces one (kernel_bench compares them); registers
// runs a vector problem through the register path instead of the asynchronous loads.
struct IgemmChoice {
  int tile_width = 0;
  bool registers = false;
};

// y (N, Ho, Wo, Cout) = conv(x, w) + b (b may be null).
// stats: null, or (ceil(M / igemm::kBM), Cout) per-tile column statistics of y (ConvFwd).
void conv2d_igemm_forward(const Conv2dDims& d, const __nv_bfloat16* x, const __nv_bfloat16* w, const float* b,
                          __nv_bfloat16* y, cudaStream_t st, MeanM2* stats = nullptr,
                          IgemmChoice choice = {});
// dx (N, H, W, Cin) += dL/dx, or dx = dL/dx when overwrite.
void conv2d_igemm_dgrad(const Conv2dDims& d, const __nv_bfloat16* dy, const __nv_bfloat16* w,
                        __nv_bfloat16* dx, bool overwrite, cudaStream_t st);
// dw (Cout, KH, KW, Cin) += dL/dw; workspace: igemm::wgrad_workspace_bytes(d) bytes.
void conv2d_igemm_wgrad(const Conv2dDims& d, const __nv_bfloat16* dy, const __nv_bfloat16* x, float* dw,
                        float* workspace, cudaStream_t st);

}  // namespace vt::cuda
