// The fused updates in CUDA: one elementwise kernel per update in 16-byte packs, fp32
// storage and arithmetic, the same formulas in the same order as update_cpu.cpp (see update.h).
//
// Nothing here syncs with the host: the clipping norm is read by every thread from the (1)
// device buffer that reduce_sum_squares wrote earlier on the same stream, and the other
// per-step constants (learning rates, bias corrections) travel as kernel arguments. A CUDA
// graph of the step would freeze those arguments: replaying it needs them updated per step
// (cudaGraphExecKernelNodeSetParams) or moved into a device buffer.
#include "layers/cuda_common.cuh"
#include "optim/update.h"

namespace vt::cuda {
namespace {

// Kernel arguments: UpdateConstants in fp32, passed by value.
struct Coeffs {
  float lr0, lr1, lr2;
  float decay_mult0;  // AdamW; groups 1 and 2 have no decay (factor 1)
  float step_size0, step_size1, step_size2;
  float bc2_sqrt, momentum, one_minus_b1, beta2, one_minus_b2, eps, weight_decay;
  float grad_scale, max_norm;
  const float* sumsq;  // (1) on the device, or null: no clipping
  bool first, nesterov;
};

Coeffs coeffs_of(const UpdateConstants& k) {
  Coeffs c;
  c.lr0 = static_cast<float>(k.lr[0]);
  c.lr1 = static_cast<float>(k.lr[1]);
  c.lr2 = static_cast<float>(k.lr[2]);
  c.decay_mult0 = static_cast<float>(k.decay_mult[0]);
  c.step_size0 = static_cast<float>(k.step_size[0]);
  c.step_size1 = static_cast<float>(k.step_size[1]);
  c.step_size2 = static_cast<float>(k.step_size[2]);
  c.bc2_sqrt = static_cast<float>(k.bc2_sqrt);
  c.momentum = static_cast<float>(k.momentum);
  c.one_minus_b1 = static_cast<float>(k.one_minus_b1);
  c.beta2 = static_cast<float>(k.beta2);
  c.one_minus_b2 = static_cast<float>(k.one_minus_b2);
  c.eps = static_cast<float>(k.eps);
  c.weight_decay = static_cast<float>(k.weight_decay);
  c.grad_scale = static_cast<float>(k.grad_scale);
  c.max_norm = static_cast<float>(k.max_norm);
  c.sumsq = static_cast<const float*>(k.sumsq);
  c.first = k.first;
  c.nesterov = k.nesterov;
  return c;
}

// A per-group value without indexing an argument array (which would go through local
// memory); any group above 2 reads as 2 (see update.h).
__device__ __forceinline__ float pick(unsigned j, float v0, float v1, float v2) {
  return j == 0 ? v0 : (j == 1 ? v1 : v2);
}

// grad_scale * min(1, max_norm / (grad_scale * sqrt(sumsq) + 1e-6)); a NaN sumsq gives NaN.
// sqrtf and '/' are correctly rounded (no fast-math), as on the CPU.
__device__ __forceinline__ float grad_multiplier(const Coeffs& c) {
  if (c.sumsq == nullptr) return c.grad_scale;
  const float norm = c.grad_scale * sqrtf(*c.sumsq);
  const float clip = c.max_norm / (norm + 1e-6f);
  return clip >= 1.f ? c.grad_scale : c.grad_scale * clip;
}

// The updates as launch_elementwise ops: 4 floats (and 4 group bytes) per 16-byte access.
// p, grad, buf: (n); group: (n).
struct Sgd {
  Coeffs c;
  float* p;
  const float* grad;
  const uint8_t* group;
  float* buf;
  template <int V>
  __device__ void apply(int64_t i) const {
    const float mult = grad_multiplier(c);
    Pack<float, V> pp = load_pack<V>(p + i), bb = load_pack<V>(buf + i);
    const Pack<float, V> gg = load_pack<V>(grad + i);
    const Pack<uint8_t, V> jj = load_pack<V>(group + i);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const unsigned j = jj.v[e];
      const float pi = pp.v[e];
      float d = gg.v[e] * mult;
      if (j == 0) d = d + c.weight_decay * pi;
      const float b = c.first ? d : c.momentum * bb.v[e] + d;
      bb.v[e] = b;
      d = c.nesterov ? d + c.momentum * b : b;
      pp.v[e] = pi - pick(j, c.lr0, c.lr1, c.lr2) * d;
    }
    store_pack(buf + i, bb);
    store_pack(p + i, pp);
  }
};

// p, grad, m, v: (n); group: (n).
struct AdamW {
  Coeffs c;
  float* p;
  const float* grad;
  const uint8_t* group;
  float* m;
  float* v;
  template <int V>
  __device__ void apply(int64_t i) const {
    const float mult = grad_multiplier(c);
    Pack<float, V> pp = load_pack<V>(p + i), mm = load_pack<V>(m + i), vv = load_pack<V>(v + i);
    const Pack<float, V> gg = load_pack<V>(grad + i);
    const Pack<uint8_t, V> jj = load_pack<V>(group + i);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const unsigned j = jj.v[e];
      const float g = gg.v[e] * mult;
      const float mi = c.momentum * mm.v[e] + c.one_minus_b1 * g;
      const float vi = c.beta2 * vv.v[e] + c.one_minus_b2 * g * g;
      mm.v[e] = mi;
      vv.v[e] = vi;
      const float denom = sqrtf(vi) / c.bc2_sqrt + c.eps;
      const float decay_mult = j == 0 ? c.decay_mult0 : 1.f;
      pp.v[e] = pp.v[e] * decay_mult - pick(j, c.step_size0, c.step_size1, c.step_size2) * (mi / denom);
    }
    store_pack(m + i, mm);
    store_pack(v + i, vv);
    store_pack(p + i, pp);
  }
};

// ema, model: (n).
struct Ema {
  float d, one_minus_d;
  float* ema;
  const float* model;
  template <int V>
  __device__ void apply(int64_t i) const {
    Pack<float, V> e = load_pack<V>(ema + i);
    const Pack<float, V> w = load_pack<V>(model + i);
#pragma unroll
    for (int k = 0; k < V; ++k) e.v[k] = d * e.v[k] + one_minus_d * w.v[k];
    store_pack(ema + i, e);
  }
};

}  // namespace

void sgd_step(const UpdateConstants& k, const Tensor& params, const Tensor& grads, const Tensor& groups,
              const Tensor& momentum_buf, Stream s) {
  const int64_t n = params.numel();
  launch_elementwise<float>(Sgd{coeffs_of(k), params.data<float>(), grads.data<float>(),
                                groups.data<uint8_t>(), momentum_buf.data<float>()},
                            n, {params.raw(), grads.raw(), groups.raw(), momentum_buf.raw()}, stream_of(s));
  VT_LAUNCH_CHECK();
}

void adamw_step(const UpdateConstants& k, const Tensor& params, const Tensor& grads, const Tensor& groups,
                const Tensor& exp_avg, const Tensor& exp_avg_sq, Stream s) {
  const int64_t n = params.numel();
  launch_elementwise<float>(AdamW{coeffs_of(k), params.data<float>(), grads.data<float>(),
                                  groups.data<uint8_t>(), exp_avg.data<float>(), exp_avg_sq.data<float>()},
                            n, {params.raw(), grads.raw(), groups.raw(), exp_avg.raw(), exp_avg_sq.raw()},
                            stream_of(s));
  VT_LAUNCH_CHECK();
}

void ema_update(const Tensor& ema, const Tensor& model, double decay, Stream s) {
  const int64_t n = ema.numel();
  launch_elementwise<float>(
      Ema{static_cast<float>(decay), static_cast<float>(1 - decay), ema.data<float>(), model.data<float>()},
      n, {ema.raw(), model.raw()}, stream_of(s));
  VT_LAUNCH_CHECK();
}

}  // namespace vt::cuda
