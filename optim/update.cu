// The fused updates in CUDA: one elementwise kernel per update in 16-byte packs, fp32
// storage and arithmetic, the same formulas in the same order as update_cpu.cpp (see update.h).
//
// Nothing here syncs with the host, and no per-step number is a kernel argument: every
// thread reads the step values (StepValuesOf<float>, the same few addresses for the whole
// grid: L1 hits after the first) and the clipping norm from device buffers, so a captured
// graph of the step replays with the values the host set before each launch.
#include "layers/cuda_common.cuh"
#include "optim/update.h"

namespace vt::cuda {
namespace {

using Values = StepValuesOf<float>;

// A per-group value without indexing an array by a runtime group (which could go through
// local memory); any group above 2 reads as 2 (see update.h).
__device__ __forceinline__ float pick(unsigned j, const float (&v)[3]) {
  return j == 0 ? v[0] : (j == 1 ? v[1] : v[2]);
}

// Whether the step is skipped (a non-finite clipping norm), and otherwise the gradient's
// multiplier grad_scale * min(1, max_norm / (grad_scale * sqrt(sumsq) + 1e-6)). sqrtf and '/'
// are correctly rounded (no fast-math), as on the CPU.
__device__ __forceinline__ bool skipped(const float* sumsq) { return sumsq != nullptr && !isfinite(*sumsq); }
__device__ __forceinline__ float grad_multiplier(const Values& k, const float* sumsq) {
  if (sumsq == nullptr) return k.grad_scale;
  const float norm = k.grad_scale * sqrtf(*sumsq);
  const float clip = k.max_norm / (norm + 1e-6f);
  return clip >= 1.f ? k.grad_scale : k.grad_scale * clip;
}

// The updates as launch_elementwise ops: 4 floats (and 4 group bytes) per 16-byte access.
// p, grad, buf: (n); group: (n).
struct Sgd {
  const Values* k;
  const float* sumsq;  // (1) or null
  float* p;
  const float* grad;
  const uint8_t* group;
  float* buf;
  template <int V>
  __device__ void apply(int64_t i) const {
    if (skipped(sumsq)) return;
    const float mult = grad_multiplier(*k, sumsq);
    const float wd = k->weight_decay, momentum = k->momentum;
    const bool first = k->first != 0.f, nesterov = k->nesterov != 0.f;
    Pack<float, V> pp = load_pack<V>(p + i), bb = load_pack<V>(buf + i);
    const Pack<float, V> gg = load_pack<V>(grad + i);
    const Pack<uint8_t, V> jj = load_pack<V>(group + i);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const unsigned j = jj.v[e];
      const float pi = pp.v[e];
      float d = gg.v[e] * mult;
      if (j == 0) d = d + wd * pi;
      const float b = first ? d : momentum * bb.v[e] + d;
      bb.v[e] = b;
      d = nesterov ? d + momentum * b : b;
      pp.v[e] = pi - pick(j, k->lr) * d;
    }
    store_pack(buf + i, bb);
    store_pack(p + i, pp);
  }
};

// p, grad, m, v: (n); group: (n).
struct AdamW {
  const Values* k;
  const float* sumsq;  // (1) or null
  float* p;
  const float* grad;
  const uint8_t* group;
  float* m;
  float* v;
  template <int V>
  __device__ void apply(int64_t i) const {
    if (skipped(sumsq)) return;
    const Values& c = *k;
    const float mult = grad_multiplier(c, sumsq);
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
      pp.v[e] = pp.v[e] * decay_mult - pick(j, c.step_size) * (mi / denom);
    }
    store_pack(m + i, mm);
    store_pack(v + i, vv);
    store_pack(p + i, pp);
  }
};

// ema, model: (n).
struct Ema {
  const Values* k;
  const float* sumsq;  // (1) or null
  float* ema;
  const float* model;
  template <int V>
  __device__ void apply(int64_t i) const {
    if (skipped(sumsq)) return;
    const float d = k->ema_decay, one_minus_d = k->one_minus_ema_decay;
    Pack<float, V> e = load_pack<V>(ema + i);
    const Pack<float, V> w = load_pack<V>(model + i);
#pragma unroll
    for (int q = 0; q < V; ++q) e.v[q] = d * e.v[q] + one_minus_d * w.v[q];
    store_pack(ema + i, e);
  }
};

const Values* values_of(const Tensor& values) { return values.data<Values>(); }
const float* sumsq_of(const Tensor* sumsq) { return sumsq ? sumsq->data<float>() : nullptr; }

}  // namespace

void sgd_step(const Tensor& values, const Tensor* sumsq, const Tensor& params, const Tensor& grads,
              const Tensor& groups, const Tensor& momentum_buf, Stream s) {
  launch_elementwise<float>(Sgd{values_of(values), sumsq_of(sumsq), params.data<float>(), grads.data<float>(),
                                groups.data<uint8_t>(), momentum_buf.data<float>()},
                            params.numel(), {params.raw(), grads.raw(), groups.raw(), momentum_buf.raw()},
                            stream_of(s));
  VT_LAUNCH_CHECK();
}

void adamw_step(const Tensor& values, const Tensor* sumsq, const Tensor& params, const Tensor& grads,
                const Tensor& groups, const Tensor& exp_avg, const Tensor& exp_avg_sq, Stream s) {
  launch_elementwise<float>(AdamW{values_of(values), sumsq_of(sumsq), params.data<float>(), grads.data<float>(),
                                  groups.data<uint8_t>(), exp_avg.data<float>(), exp_avg_sq.data<float>()},
                            params.numel(),
                            {params.raw(), grads.raw(), groups.raw(), exp_avg.raw(), exp_avg_sq.raw()},
                            stream_of(s));
  VT_LAUNCH_CHECK();
}

void ema_update(const Tensor& values, const Tensor* sumsq, const Tensor& ema, const Tensor& model, Stream s) {
  launch_elementwise<float>(Ema{values_of(values), sumsq_of(sumsq), ema.data<float>(), model.data<float>()},
                            ema.numel(), {ema.raw(), model.raw()}, stream_of(s));
  VT_LAUNCH_CHECK();
}

}  // namespace vt::cuda
