// VT_HD marks small functions compiled for both the host and the device: __host__ __device__
// under nvcc, plain inline in host-only translation units, so the CPU tests can replay the
// arithmetic the kernels do (conv2d_igemm.h, mean_m2.h).
#pragma once

#if defined(__CUDACC__)
#define VT_HD __host__ __device__ __forceinline__
#else
#define VT_HD inline
#endif
