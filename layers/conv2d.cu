// Conv2d in CUDA. bf16 convs with groups 1 on sm_80+ run as tensor-core implicit GEMMs
// (conv2d_igemm.cu); everything else (f32 runs, grouped convs, older GPUs) runs on the
// direct kernels below: simple and deterministic (no atomics), fp32 arithmetic for f32 and
// bf16 storage alike, and the GPU reference the tests compare with.
//   forward: one thread per output element, looping over (kh, kw, ci) of its group;
//   dx:      one thread per input element, gathering over the (kh, kw, co) whose window
//            covers it;
//   dw:      one block per weight element, the block's threads striding over the N Ho Wo
//            output positions and summing with a fixed shared-memory tree, so the result is
//            bit-identical run to run.
// The bias gradient, for every path, is a per-channel column sum of dy in channel_sum.cuh's
// coalesced layout, split over slices of the positions (partials in the workspace).
#include "layers/channel_sum.cuh"
#include "layers/conv2d.h"
#include "layers/conv2d_igemm.cuh"
#include "layers/reduce.h"

namespace vt::cuda {
namespace {

// Blocks for the one-block-per-output reductions; the kernels grid-stride over the rest.
constexpr int64_t kMaxReduceBlocks = 65535 * 8;

// Sum of v over the block (blockDim.x == kThreads, a power of two) in a fixed order; the
// result is valid in thread 0. `part` is kThreads floats of shared memory. Every thread of
// the block must call it.
__device__ float block_sum(float v, float* part) {
  part[threadIdx.x] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (static_cast<int>(threadIdx.x) < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  const float total = part[0];
  __syncthreads();  // part is reused by the caller's next call
  return total;
}

// y (N, Ho, Wo, Cout; positions yq apart) = conv(x (N, H, W, Cin; xq apart),
// w (Cout, KH, KW, cin_g)) + b (Cout, may be null).
template <class T>
__global__ void forward_kernel(Conv2dDims d, const T* x, const T* w, const float* b, T* y, int64_t total) {
  VT_GRID_STRIDE(i, total) {
    const int64_t co = i % d.cout;
    int64_t r = i / d.cout;
    T& out = y[r * d.yq + co];  // r: the output position
    const int64_t wo = r % d.wo;
    r /= d.wo;
    const int64_t ho = r % d.ho;
    const int64_t n = r / d.ho;
    const int64_t g = co / d.cout_g;
    const T* xn = x + n * d.h * d.w * d.xq + g * d.cin_g;   // this image, this group's channels
    const T* wc = w + co * d.kh * d.kw * d.cin_g;           // this output channel's filter
    float acc = b ? b[co] : 0.f;
    for (int64_t kh = 0; kh < d.kh; ++kh) {
      const int64_t hi = ho * d.stride_h - d.pad_h + kh;
      if (hi < 0 || hi >= d.h) continue;
      for (int64_t kw = 0; kw < d.kw; ++kw) {
        const int64_t wi = wo * d.stride_w - d.pad_w + kw;
        if (wi < 0 || wi >= d.w) continue;
        const T* xp = xn + (hi * d.w + wi) * d.xq;
        const T* wp = wc + (kh * d.kw + kw) * d.cin_g;
        for (int64_t ci = 0; ci < d.cin_g; ++ci) acc += to_f32(xp[ci]) * to_f32(wp[ci]);
      }
    }
    out = from_f32<T>(acc);
  }
}

// dx (N, H, W, Cin; positions xq apart) += (or, overwrite, =) the sum over the outputs (ho, wo, co)
// that read x[n, hi, wi, c]:
// hi = ho stride_h - pad_h + kh, i.e. ho = (hi + pad_h - kh) / stride_h when that divides
// exactly and lands in [0, Ho); likewise for wo; co runs over c's group.
template <class T>
__global__ void backward_dx_kernel(Conv2dDims d, const T* w, const T* dy, T* dx, bool overwrite,
                                   int64_t total) {
  const int64_t w_co_stride = d.kh * d.kw * d.cin_g;  // w distance between output channels
  VT_GRID_STRIDE(i, total) {
    const int64_t c = i % d.cin;
    int64_t r = i / d.cin;
    const int64_t wi = r % d.w;
    r /= d.w;
    const int64_t hi = r % d.h;
    const int64_t n = r / d.h;
    const int64_t g = c / d.cin_g, ci = c % d.cin_g;
    float acc = 0.f;
    for (int64_t kh = 0; kh < d.kh; ++kh) {
      const int64_t th = hi + d.pad_h - kh;
      if (th < 0 || th % d.stride_h != 0) continue;
      const int64_t ho = th / d.stride_h;
      if (ho >= d.ho) continue;
      for (int64_t kw = 0; kw < d.kw; ++kw) {
        const int64_t tw = wi + d.pad_w - kw;
        if (tw < 0 || tw % d.stride_w != 0) continue;
        const int64_t wo = tw / d.stride_w;
        if (wo >= d.wo) continue;
        const T* dyp = dy + ((n * d.ho + ho) * d.wo + wo) * d.yq + g * d.cout_g;
        // w[g cout_g + co, kh, kw, ci]
        const T* wp = w + g * d.cout_g * w_co_stride + (kh * d.kw + kw) * d.cin_g + ci;
        for (int64_t co = 0; co < d.cout_g; ++co) acc += to_f32(dyp[co]) * to_f32(wp[co * w_co_stride]);
      }
    }
    T& out = dx[(r * d.w + wi) * d.xq + c];  // r = n H + hi: the position's row
    out = from_f32<T>(overwrite ? acc : to_f32(out) + acc);
  }
}

// dw (Cout, KH, KW, cin_g) += sum over (n, ho, wo) of dy[n, ho, wo, co] x[n, hi, wi, c]:
// one block per weight element.
template <class T>
__global__ void backward_dw_kernel(Conv2dDims d, const T* x, const T* dy, float* dw, int64_t nw) {
  __shared__ float part[kThreads];
  const int64_t positions = d.n * d.ho * d.wo;
  for (int64_t e = blockIdx.x; e < nw; e += gridDim.x) {
    const int64_t ci = e % d.cin_g;
    int64_t r = e / d.cin_g;
    const int64_t kw = r % d.kw;
    r /= d.kw;
    const int64_t kh = r % d.kh;
    const int64_t co = r / d.kh;
    const int64_t c = (co / d.cout_g) * d.cin_g + ci;  // the input channel this weight reads
    float acc = 0.f;
    for (int64_t p = threadIdx.x; p < positions; p += blockDim.x) {
      const int64_t wo = p % d.wo;
      const int64_t q = p / d.wo;
      const int64_t ho = q % d.ho;
      const int64_t n = q / d.ho;
      const int64_t hi = ho * d.stride_h - d.pad_h + kh;
      const int64_t wi = wo * d.stride_w - d.pad_w + kw;
      if (hi < 0 || hi >= d.h || wi < 0 || wi >= d.w) continue;
      acc += to_f32(dy[p * d.yq + co]) * to_f32(x[((n * d.h + hi) * d.w + wi) * d.xq + c]);
    }
    const float total = block_sum(acc, part);
    if (threadIdx.x == 0) dw[e] += total;
  }
}

// db (Cout) += sum over the M = N Ho Wo positions of dy (M, Cout; rows `pitch` apart). Grid (channel groups,
// S slices of slice_len positions), block channel_block(). One slice adds its sum into db
// directly; with several, each writes its partial to part (S, Cout) and db_total_kernel adds
// them up in slice order.
template <class T>
__global__ void backward_db_kernel(const T* dy, int64_t pitch, float* part, float* db, int64_t m_count,
                                   int64_t c_count, int64_t slice_len) {
  __shared__ float red[kRows][kChannels];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kChannels + threadIdx.x;
  const bool active = c < c_count;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * slice_len, m1 = min(m_count, m0 + slice_len);
  float acc = 0.f;
  if (active)
    for (int64_t m = m0 + threadIdx.y; m < m1; m += kRows) acc += to_f32(dy[m * pitch + c]);
  acc = column_sum(acc, red);
  if (!active || threadIdx.y != 0) return;
  if (gridDim.y == 1)
    db[c] += acc;
  else
    part[blockIdx.y * c_count + c] = acc;
}

__global__ void db_total_kernel(const float* part, int64_t slices, int64_t c_count, float* db) {
  VT_GRID_STRIDE(c, c_count) {
    db[c] += slices_total(part, slices, c_count, c);
  }
}

unsigned reduce_blocks(int64_t outputs) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(outputs, kMaxReduceBlocks)));
}

}  // namespace

bool tile_stats_available(const Conv2dDims& d, DType dt) {
  return dt == DType::kBF16 && conv2d_igemm_available(d);
}

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor* b, const Tensor& y, const Conv2dParams& p,
                    Stream s, const Tensor* tile_stats) {
  const int64_t total = y.numel();
  if (total == 0) return;
  const Conv2dDims d = conv2d_dims(x.shape(), w.shape(), p, x.pitch(), y.pitch());
  if (tile_stats_available(d, x.dtype()))
    return conv2d_igemm_forward(d, x.data<bf16>(), w.data<bf16>(), b ? b->data<float>() : nullptr,
                                y.data<bf16>(), stream_of(s),
                                tile_stats ? reinterpret_cast<MeanM2*>(tile_stats->raw()) : nullptr);
  dispatch("conv2d_forward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    forward_kernel<T><<<grid_for(total), kThreads, 0, stream_of(s)>>>(
        d, x.data<T>(), w.data<T>(), b ? b->data<float>() : nullptr, y.data<T>(), total);
  });
  VT_LAUNCH_CHECK();
}

void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor* dx, const Tensor* dw,
                     const Tensor* db, const Conv2dParams& p, const Tensor& workspace, Stream s) {
  if (dy.numel() == 0) return;
  const Conv2dDims d = conv2d_dims(x.shape(), w.shape(), p, x.pitch(), dy.pitch());
  const cudaStream_t st = stream_of(s);
  if (x.dtype() == DType::kBF16 && conv2d_igemm_available(d)) {
    if (dx) conv2d_igemm_dgrad(d, dy.data<bf16>(), w.data<bf16>(), dx->data<bf16>(), p.overwrite_dx, st);
    if (dw)
      conv2d_igemm_wgrad(d, dy.data<bf16>(), x.data<bf16>(), dw->data<float>(),
                         static_cast<float*>(workspace.raw()), st);
    dx = dw = nullptr;  // only db left for the direct kernels
  }
  dispatch("conv2d_backward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (dx) {
      const int64_t total = dx->numel();
      backward_dx_kernel<T><<<grid_for(total), kThreads, 0, st>>>(d, w.data<T>(), dy.data<T>(), dx->data<T>(),
                                                                  p.overwrite_dx, total);
      VT_LAUNCH_CHECK();
    }
    if (dw) {
      const int64_t nw = dw->numel();
      backward_dw_kernel<T>
          <<<reduce_blocks(nw), kThreads, 0, st>>>(d, x.data<T>(), dy.data<T>(), dw->data<float>(), nw);
      VT_LAUNCH_CHECK();
    }
    if (db) {
      const int64_t m_count = d.n * d.ho * d.wo, slices = channel_sum_slices(m_count, d.cout);
      float* part = static_cast<float*>(workspace.raw());
      backward_db_kernel<T><<<channel_grid(d.cout, slices), channel_block(), 0, st>>>(
          dy.data<T>(), d.yq, part, db->data<float>(), m_count, d.cout, (m_count + slices - 1) / slices);
      VT_LAUNCH_CHECK();
      if (slices > 1) {
        db_total_kernel<<<grid_for(d.cout), kThreads, 0, st>>>(part, slices, d.cout, db->data<float>());
        VT_LAUNCH_CHECK();
      }
    }
  });
}

}  // namespace vt::cuda
