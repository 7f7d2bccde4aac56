// The CUDA emulator's runtime header (tests only): the part of the CUDA runtime API and of the
// kernel language that visiontrain uses, executed on the CPU, so that CI (no GPU) runs every
// CUDA kernel of layers/ and optim/ against the CPU references (tests/cuda_emu/README.md).
//
// Kernels: the build rewrites each `kernel<<<grid, block, smem, stream>>>(args)` into
// vt_emu::launch (tests/cuda_emu/rewrite.py); each CUDA thread of a block then runs the
// kernel body as a fiber (its own stack), blocks one after another. __syncthreads, warp
// shuffles, ballots and the tensor-core conv's ldmatrix / mma.sync / cp.async
// (vt_emu::ptx) are rendezvous of those fibers, so a missing barrier or a wrong lane
// reads wrong data here as it would on a GPU. Launch configurations are checked against
// sm_90's limits (1024 threads, 48 KiB of dynamic shared memory unless raised by
// cudaFuncSetAttribute, 227 KiB at most) and fail with the CUDA error codes.
//
// Host API: device memory is host memory (AddressSanitizer sees kernels' out-of-bounds
// accesses); work is queued per issue order and runs only when the host synchronises
// (stream/device/event sync, a synchronous cudaMemcpy), so a result read without its sync
// is stale here too. Stream capture records the queued work into a graph; the calls CUDA
// refuses during a capture (synchronous copies, syncs, legacy-stream work) fail the same way.
// Timing, concurrency between streams and the GPU's floating-point corner cases (expf's ulps,
// mma's accumulation order) are not modelled; the tests' tolerances cover the last.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#ifndef VT_CUDA_EMULATION
#define VT_CUDA_EMULATION 1
#endif

// ---- The kernel language ---------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static  // one block runs at a time: a static is the block's shared copy
#define __align__(n) alignas(n)
#define __launch_bounds__(...)

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace vt_emu {

// What the running fiber (one CUDA thread) sees; set by the block scheduler.
struct ThreadView {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
};
extern ThreadView* g_view;

// Block-wide barrier; returns how many threads arrived with pred != 0.
int sync_block(int pred);
// Warp rendezvous: every lane of mask deposits `bytes` (<= kSlotBytes) of `in`; lanes[i]
// then points at lane i's deposit (for the lanes of mask), valid until this lane's next
// rendezvous.
constexpr int kSlotBytes = 32;
void warp_exchange(unsigned mask, const void* in, int bytes, const unsigned char* (&lanes)[32]);
int lane_id();
void* dynamic_shared();
// A static __shared__ array's start of block (rewrite.py puts the call after its
// declaration): the first thread of each block to reach it fills it with 0xff.
void fresh_shared(unsigned long long* seen, void* p, size_t n);
[[noreturn]] void fail(const char* what);

// The tensor-core conv's PTX (layers/conv2d_igemm.cu), with the PTX ISA's semantics:
// shared-window addresses are offsets into the block's dynamic shared memory; cp.async copies
// wait in per-thread groups until cp_async_wait; ldmatrix and mma are warp rendezvous with the
// m8n8 / m16n8k16 fragment layouts (fp32 accumulation, k in order).
namespace ptx {
uint32_t shared_address(const void* p);
void cp_async16(uint32_t dst, const void* src, bool zero_fill);
void cp_async_commit();
void cp_async_wait(int groups_left);
void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr, bool trans);
void mma_16816_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
}  // namespace ptx

}  // namespace vt_emu

#define threadIdx (::vt_emu::g_view->thread_idx)
#define blockIdx (::vt_emu::g_view->block_idx)
#define blockDim (::vt_emu::g_view->block_dim)
#define gridDim (::vt_emu::g_view->grid_dim)
constexpr int warpSize = 32;

inline void __syncthreads() {
  ::vt_emu::sync_block(0);
}
inline int __syncthreads_count(int pred) {
  return ::vt_emu::sync_block(pred);
}

template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  static_assert(sizeof(T) <= ::vt_emu::kSlotBytes, "shuffled value too large");
  const unsigned char* lanes[32];
  ::vt_emu::warp_exchange(mask, &v, sizeof(T), lanes);
  const int lane = ::vt_emu::lane_id();
  int src = lane ^ lane_mask;
  if (src / width != lane / width) src = lane;  // outside the segment: own value
  if (!(mask >> src & 1u)) ::vt_emu::fail("__shfl_xor_sync: source lane not in the mask");
  T r;
  std::memcpy(&r, lanes[src], sizeof(T));
  return r;
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  const unsigned char* lanes[32];
  ::vt_emu::warp_exchange(mask, &pred, sizeof(int), lanes);
  unsigned bits = 0;
  for (int i = 0; i < 32; ++i) {
    if (!(mask >> i & 1u)) continue;
    int p;
    std::memcpy(&p, lanes[i], sizeof(int));
    if (p) bits |= 1u << i;
  }
  return bits;
}
inline int __popc(unsigned x) {
  return __builtin_popcount(x);
}

// Integer and float atomics: blocks and threads never run at the same time here.
template <class T>
T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
template <class T>
T atomicMax(T* p, T v) {
  const T old = *p;
  *p = old < v ? v : old;
  return old;
}

// Device math: the host's libm for the IEEE functions; the intrinsics by their CUDA
// definitions (round-to-nearest operations, __fdividef's zero for huge divisors).
inline float __expf(float x) {
  return expf(x);
}
inline float __fdividef(float a, float b) {
  const float ab = fabsf(b);
  if (ab > 0x1p126f && ab <= 0x1.fffffep127f) return std::isinf(a) ? NAN : 0.f;
  return a / b;
}
inline float rsqrtf(float x) {
  return 1.f / sqrtf(x);
}
inline float __fadd_rn(float a, float b) {
  return a + b;
}
inline float __fsub_rn(float a, float b) {
  return a - b;
}
inline float __fmul_rn(float a, float b) {
  return a * b;
}
inline float __fdiv_rn(float a, float b) {
  return a / b;
}
inline unsigned __float_as_uint(float x) {
  unsigned u;
  std::memcpy(&u, &x, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
using std::isfinite;  // CUDA declares them in the global namespace
using std::isinf;
using std::isnan;
// CUDA's min and max overloads for mixed integer operands.
template <class A, class B, class = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
constexpr std::common_type_t<A, B> min(A a, B b) {
  return b < a ? b : a;
}
template <class A, class B, class = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
constexpr std::common_type_t<A, B> max(A a, B b) {
  return a < b ? b : a;
}

// ---- The runtime API ---------------------------------------------------------------------
enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
  cudaErrorStreamCaptureImplicit = 906,
};
typedef enum cudaError cudaError_t;

struct CUstream_st;
struct CUevent_st;
struct CUgraph_st;
struct CUgraphExec_st;
typedef CUstream_st* cudaStream_t;
typedef CUevent_st* cudaEvent_t;
typedef CUgraph_st* cudaGraph_t;
typedef CUgraphExec_st* cudaGraphExec_t;
typedef void (*cudaHostFn_t)(void*);

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2
};
enum cudaDeviceAttr { cudaDevAttrComputeCapabilityMajor = 75, cudaDevAttrComputeCapabilityMinor = 76 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
constexpr unsigned cudaStreamDefault = 0, cudaStreamNonBlocking = 1;
constexpr unsigned cudaEventDefault = 0, cudaEventDisableTiming = 2;

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem, sharedMemPerBlock, sharedMemPerBlockOptin, sharedMemPerMultiprocessor;
  int major, minor, multiProcessorCount, maxThreadsPerBlock, warpSize;
};

const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaGetDevice(int* d);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d);
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int d);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b);

cudaError_t cudaMalloc(void** p, size_t n);
cudaError_t cudaFree(void* p);
cudaError_t cudaMallocHost(void** p, size_t n);
cudaError_t cudaFreeHost(void* p);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind k);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind k, cudaStream_t s = nullptr);
cudaError_t cudaMemset(void* p, int v, size_t n);
cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t s = nullptr);
cudaError_t cudaMemset2DAsync(void* p, size_t pitch, int v, size_t width, size_t rows,
                              cudaStream_t s = nullptr);

cudaError_t cudaStreamCreate(cudaStream_t* s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags = 0);
cudaError_t cudaLaunchHostFunc(cudaStream_t s, cudaHostFn_t fn, void* user);

cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* g);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* e, cudaGraph_t g, unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e);
cudaError_t cudaGraphDestroy(cudaGraph_t g);

cudaError_t cudaFuncSetAttribute(const void* kernel, cudaFuncAttribute a, int value);
template <class F>
cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute a, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), a, value);
}

namespace vt_emu {

// A launch's configuration, as written between <<< and >>>.
struct Config {
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  Config(dim3 g, dim3 b, size_t s = 0, cudaStream_t st = nullptr) : grid(g), block(b), smem(s), stream(st) {}
};

// Checks the configuration (errors go to cudaGetLastError, as a launch's do) and queues
// body, which runs the kernel as one thread, for every thread of the grid. key identifies the
// kernel for cudaFuncSetAttribute (its address; null where the rewrite could not take it).
void enqueue_kernel(const char* name, const void* key, const Config& c, std::function<void()> body);

// What `kernel<<<c>>>(args...)` becomes: the arguments are evaluated once, on the host, and
// every thread calls the kernel (through call, a generic lambda) with its own copies.
template <class Call, class... A>
void launch(const char* name, const void* key, const Config& c, Call call, A&&... args) {
  auto params = std::make_tuple(std::decay_t<A>(std::forward<A>(args))...);
  enqueue_kernel(name, key, c, [call, params] { std::apply(call, params); });
}

}  // namespace vt_emu
