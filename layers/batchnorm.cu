// Batch norm in CUDA: per-channel reductions over the M = N*H*W positions of NHWC data, in
// the column layout of channel_sum.cuh (one warp across 32 channels of a position, so reads
// are coalesced; fixed summation order, no atomics, bit-identical run to run).
//
// Without a workspace each group of 32 channels is reduced by a single block: the training
// forward is one kernel (mean, then the variance about it: two passes over x, then y), and
// the backward kernel reduces sum(dy) and sum(dy * xhat) first and then writes dx. That is
// few blocks when C is small and M large: correct, not fast; with a workspace the training
// passes take the sliced path below instead, whose forward statistics may also come from the
// per-tile partials the conv before it left (TileRows: x is then read once). The
// eval forward and the eval dx are elementwise.
// Every kernel that reads or writes the BN output is templated on kSiLU, the fused SiLU of
// BatchNormParams::silu: the forward applies it before the store, the backward takes dy back
// through it at u = xhat gamma + beta, recomputed in registers (act_out / act_grad). Those
// kernels also take the fused residual (r: null or added to the output; dr: null or dy
// added into it, or written with overwrite_dr, in the pass that writes dx).
// y, dy, r and dr may be channel views (batchnorm.h): they travel as Pitched, element (m, c)
// at m * pitch + c; x and dx are contiguous (M, C).
#include "layers/batchnorm.h"
#include "layers/channel_sum.cuh"

namespace vt::cuda {
namespace {

// The fused activation at the BN output u: the value stored, and the gradient dy takes back to u.
template <bool kSiLU>
__device__ __forceinline__ float act_out(float u) {
  return kSiLU ? silu(u) : u;
}
template <bool kSiLU>
__device__ __forceinline__ float act_grad(float u, float dy) {
  return kSiLU ? dy * silu_derivative(u) : dy;
}

// An (M, C) activation whose rows lie `pitch` elements apart (a channel view, or C); p null
// for an absent one (no residual).
template <class T>
struct Pitched {
  T* p;
  int64_t pitch;
  __device__ T* at(int64_t m, int64_t c) const { return p + m * pitch + c; }
};
template <class T>
Pitched<T> pitched(const Tensor* t) {
  return t ? Pitched<T>{t->data<std::remove_const_t<T>>(), t->pitch()} : Pitched<T>{nullptr, 0};
}

// The fused residual's contribution to output element (m, c): r's, or 0 without one.
template <class T>
__device__ __forceinline__ float residual_at(Pitched<const T> r, int64_t m, int64_t c) {
  return r.p ? to_f32(*r.at(m, c)) : 0.f;
}
// dr(m, c) += dy (= dy with overwrite) when there is a dr.
template <class T>
__device__ __forceinline__ void add_residual_grad(Pitched<T> dr, int64_t m, int64_t c, float dy,
                                                  bool overwrite) {
  if (dr.p) *dr.at(m, c) = from_f32<T>(overwrite ? dy : to_f32(*dr.at(m, c)) + dy);
}

// x: (M, C), y and r: (M, C) views, storage T; gamma, beta, running_*, save_*: (C) fp32.
template <class T, bool kSiLU>
__global__ void forward_train_kernel(const T* x, Pitched<const T> r, const float* gamma, const float* beta,
                                     Pitched<T> y, float* running_mean, float* running_var, float* save_mean,
                                     float* save_invstd, float momentum, float eps, int64_t m_count,
                                     int64_t c_count) {
  __shared__ float red[kRows][kChannels];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kChannels + threadIdx.x;
  const bool active = c < c_count;  // the last group may be partial; idle lanes add zeros

  float sum = 0.f;
  if (active) {
    for (int64_t m = threadIdx.y; m < m_count; m += kRows) sum += to_f32(x[m * c_count + c]);
  }
  const float mean = column_sum(sum, red) / static_cast<float>(m_count);

  float sq = 0.f;
  if (active) {
    for (int64_t m = threadIdx.y; m < m_count; m += kRows) {
      const float d = to_f32(x[m * c_count + c]) - mean;
      sq += d * d;
    }
  }
  const float var = column_sum(sq, red) / static_cast<float>(m_count);  // biased
  const float invstd = 1.f / sqrtf(var + eps);
  if (!active) return;  // no barrier follows

  if (threadIdx.y == 0) {
    save_mean[c] = mean;
    save_invstd[c] = invstd;
    // M == 1 has no unbiased variance; the biased one (0) is used instead (see batchnorm.h).
    const float unbiased =
        m_count > 1 ? var * (static_cast<float>(m_count) / static_cast<float>(m_count - 1)) : var;
    running_mean[c] = (1.f - momentum) * running_mean[c] + momentum * mean;
    running_var[c] = (1.f - momentum) * running_var[c] + momentum * unbiased;
  }
  const float g = gamma[c], b = beta[c];
  for (int64_t m = threadIdx.y; m < m_count; m += kRows) {
    const float u = (to_f32(x[m * c_count + c]) - mean) * invstd * g + b;
    *y.at(m, c) = from_f32<T>(residual_at(r, m, c) + act_out<kSiLU>(u));
  }
}

// x: (M, C) flattened to n = M * C elements, y and r alike (views); the rest (C) fp32.
template <class T, bool kSiLU>
__global__ void forward_eval_kernel(const T* x, Pitched<const T> r, const float* gamma, const float* beta,
                                    const float* running_mean, const float* running_var, Pitched<T> y,
                                    float eps, int64_t n, int64_t c_count) {
  VT_GRID_STRIDE(i, n) {
    const int64_t m = i / c_count, c = i - m * c_count;
    const float invstd = rsqrtf(running_var[c] + eps);  // per element: no IEEE division
    const float u = (to_f32(x[i]) - running_mean[c]) * invstd * gamma[c] + beta[c];
    *y.at(m, c) = from_f32<T>(residual_at(r, m, c) + act_out<kSiLU>(u));
  }
}

// Where xhat = (x - mean) * invstd takes its statistics from: the saved batch statistics
// (train) or the running ones (eval: invstd = 1 / sqrt(var + eps)). All (C) fp32.
struct Stats {
  const float* mean;
  const float* invstd;  // save_invstd in train; null in eval
  const float* var;     // running_var in eval; null in train
  float eps;            // eval only
  __device__ float invstd_at(int64_t c) const { return invstd ? invstd[c] : rsqrtf(var[c] + eps); }
};

// The reductions of both backward passes, then the training dx. x, dx: (M, C), dy a view, storage T;
// gamma, beta, dgamma, dbeta: (C) fp32. Each of dx, dgamma, dbeta may be null; dx, when given,
// gets the training formula (through the batch statistics), so the eval launcher passes null
// and writes its dx elementwise.
template <class T, bool kSiLU>
__global__ void backward_kernel(const T* x, Pitched<const T> dy, const float* gamma, const float* beta,
                                Stats st, T* dx, bool overwrite, Pitched<T> dr, bool overwrite_dr,
                                float* dgamma, float* dbeta, int64_t m_count, int64_t c_count) {
  __shared__ float red[kRows][kChannels];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kChannels + threadIdx.x;
  const bool active = c < c_count;
  const float mean = active ? st.mean[c] : 0.f;
  const float invstd = active ? st.invstd_at(c) : 0.f;
  const float gam = active ? gamma[c] : 0.f, bet = active && kSiLU ? beta[c] : 0.f;

  float s_dy = 0.f, s_dy_xhat = 0.f;
  if (active) {
    for (int64_t m = threadIdx.y; m < m_count; m += kRows) {
      const int64_t i = m * c_count + c;
      const float xhat = (to_f32(x[i]) - mean) * invstd;
      const float g = act_grad<kSiLU>(xhat * gam + bet, to_f32(*dy.at(m, c)));
      s_dy += g;
      s_dy_xhat += g * xhat;
    }
  }
  const float sum_dy = column_sum(s_dy, red);
  const float sum_dy_xhat = column_sum(s_dy_xhat, red);
  if (!active) return;  // no barrier follows

  if (threadIdx.y == 0) {
    if (dgamma) dgamma[c] += sum_dy_xhat;
    if (dbeta) dbeta[c] += sum_dy;
  }
  if (!dx) return;
  const float k = gam * invstd;
  const float mean_dy = sum_dy / static_cast<float>(m_count);
  const float mean_dy_xhat = sum_dy_xhat / static_cast<float>(m_count);
  for (int64_t m = threadIdx.y; m < m_count; m += kRows) {
    const int64_t i = m * c_count + c;
    const float xhat = (to_f32(x[i]) - mean) * invstd;
    const float d = to_f32(*dy.at(m, c)), g = act_grad<kSiLU>(xhat * gam + bet, d);
    const float v = k * (g - mean_dy - xhat * mean_dy_xhat);
    dx[i] = from_f32<T>(overwrite ? v : to_f32(dx[i]) + v);
    add_residual_grad(dr, m, c, d, overwrite_dr);
  }
}

// The eval dx of the fixed affine map: dx += (or =) g * gamma * invstd, g = dy taken back through the
// fused activation (x is read only then). (M, C) flattened to n.
template <class T, bool kSiLU>
__global__ void backward_eval_dx_kernel(const T* x, Pitched<const T> dy, const float* gamma,
                                        const float* beta, Stats st, T* dx, bool overwrite, Pitched<T> dr,
                                        bool overwrite_dr, int64_t n, int64_t c_count) {
  VT_GRID_STRIDE(i, n) {
    const int64_t m = i / c_count, c = i - m * c_count;
    const float invstd = st.invstd_at(c);
    const float u = kSiLU ? (to_f32(x[i]) - st.mean[c]) * invstd * gamma[c] + beta[c] : 0.f;
    const float d = to_f32(*dy.at(m, c));
    const float v = gamma[c] * invstd * act_grad<kSiLU>(u, d);
    dx[i] = from_f32<T>(overwrite ? v : to_f32(dx[i]) + v);
    add_residual_grad(dr, m, c, d, overwrite_dr);
  }
}

// ---- The sliced path, when the caller gives a workspace (batchnorm_workspace_bytes): the
// per-channel reductions are split over S slices of the M positions, one block per (group of
// 32 channels, slice), each writing its partial to (S, C) buffers; one thread per channel
// then combines the S partials in slice order. Training forward: one pass over x for each
// slice's count, mean and M2 (Welford per thread, then exact pairwise combination: MeanM2),
// combined into mean, var, invstd and the running statistics; then y elementwise. Backward:
// sum g and sum g xhat -> dgamma, dbeta and the coefficients dx needs; dx elementwise. The
// per-channel kernels leave the elementwise passes their coefficients in the workspace
// (Coefficients), read in packs. Same results as the single-block kernels above up to the
// order and grouping of the fp32 operations.

// The rows slice_stats_kernel folds per channel: x's values (BN's own pass), or the per-tile
// statistics a convolution left, (T, C) MeanM2, which are combined the same way.
template <class T>
struct XRows {
  const T* x;
  __device__ void fold(MeanM2& acc, int64_t row, int64_t c, int64_t c_count) const {
    acc.add(to_f32(x[row * c_count + c]));
  }
};
struct TileRows {
  const MeanM2* tiles;
  __device__ void fold(MeanM2& acc, int64_t row, int64_t c, int64_t c_count) const {
    acc = combine(acc, tiles[row * c_count + c]);
  }
};

// part: (S, C) MeanM2 (three floats each), slice z folding rows [z len, (z + 1) len) of
// `rows` (count rows in all), each thread row every kRows-th of them in order, then
// column_combine. Grid (channel groups, S), block (kChannels, kRows).
template <class Rows>
__global__ void slice_stats_kernel(Rows rows, MeanM2* part, int64_t count, int64_t c_count,
                                   int64_t slice_len) {
  __shared__ MeanM2 red[kRows][kChannels];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kChannels + threadIdx.x;
  const bool active = c < c_count;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * slice_len, r1 = min(count, r0 + slice_len);
  MeanM2 acc{0.f, 0.f, 0.f};
  if (active)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRows) rows.fold(acc, r, c, c_count);
  acc = column_combine(acc, red);
  if (active && threadIdx.y == 0) part[blockIdx.y * c_count + c] = acc;
}

// part_a = sum g, part_b = sum g xhat: (S, C), g = dy taken back through the fused activation
// (gamma and beta are read with kSiLU only). Grid and block as slice_stats_kernel.
template <class T, bool kSiLU>
__global__ void slice_grad_sums_kernel(const T* x, Pitched<const T> dy, const float* mean,
                                       const float* invstd, const float* gamma, const float* beta,
                                       float* part_a, float* part_b, int64_t m_count, int64_t c_count,
                                       int64_t slice_len) {
  __shared__ float red[kRows][kChannels];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kChannels + threadIdx.x;
  const bool active = c < c_count;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * slice_len, m1 = min(m_count, m0 + slice_len);
  float a = 0.f, b = 0.f;
  if (active) {
    const float mu = mean[c], is = invstd[c];
    const float gam = kSiLU ? gamma[c] : 0.f, bet = kSiLU ? beta[c] : 0.f;
    for (int64_t m = m0 + threadIdx.y; m < m1; m += kRows) {
      const float xhat = (to_f32(x[m * c_count + c]) - mu) * is;
      const float g = act_grad<kSiLU>(xhat * gam + bet, to_f32(*dy.at(m, c)));
      a += g;
      b += g * xhat;
    }
  }
  a = column_sum(a, red);
  b = column_sum(b, red);
  if (active && threadIdx.y == 0) {
    part_a[blockIdx.y * c_count + c] = a;
    part_b[blockIdx.y * c_count + c] = b;
  }
}

// The elementwise passes' per-channel coefficients, (C) arrays at `base` (the workspace after
// the slice partials; 16-byte aligned when C is a multiple of 4, so a pack of channels loads
// them in packs too). With d = x - mean: the forward's u = d scale + beta (scale = gamma
// invstd); the training dx = scale g - (ka + kb d), where ka = scale sum(g) / M and
// kb = scale invstd sum(g xhat) / M, the form gamma invstd (g - sum g / M - xhat sum(g xhat)
// / M) takes with xhat = d invstd. Per element a subtraction and two fused multiply-adds,
// and no division.
struct Coefficients {
  float* base;
  int64_t c_count;
  __host__ __device__ float* mean() const { return base; }
  __host__ __device__ float* scale() const { return base + c_count; }
  __host__ __device__ float* beta() const { return base + 2 * c_count; }
  __host__ __device__ float* ka() const { return base + 3 * c_count; }
  __host__ __device__ float* kb() const { return base + 4 * c_count; }
};

// The S slice partials of each channel, combined in slice order: mean, biased variance,
// invstd and the running statistics; and the forward's coefficients.
__global__ void stats_kernel(const MeanM2* part, int64_t slices, int64_t m_count, int64_t c_count,
                             float momentum, float eps, const float* gamma, const float* beta,
                             float* save_mean, float* save_invstd, float* running_mean, float* running_var,
                             Coefficients co) {
  VT_GRID_STRIDE(c, c_count) {
    MeanM2 t = part[c];
    for (int64_t z = 1; z < slices; ++z) t = combine(t, part[z * c_count + c]);
    const float var = t.m2 / static_cast<float>(m_count);  // biased
    const float invstd = 1.f / sqrtf(var + eps);
    save_mean[c] = t.mean;
    save_invstd[c] = invstd;
    co.mean()[c] = t.mean, co.scale()[c] = gamma[c] * invstd, co.beta()[c] = beta[c];
    // M == 1 has no unbiased variance; the biased one (0) is used instead (see batchnorm.h).
    const float unbiased =
        m_count > 1 ? var * (static_cast<float>(m_count) / static_cast<float>(m_count - 1)) : var;
    running_mean[c] = (1.f - momentum) * running_mean[c] + momentum * t.mean;
    running_var[c] = (1.f - momentum) * running_var[c] + momentum * unbiased;
  }
}

// The slices' sums combined: sum g -> dbeta, sum g xhat -> dgamma; and the backward's
// coefficients for dx.
__global__ void grad_totals_kernel(const float* part_a, const float* part_b, int64_t slices, int64_t m_count,
                                   int64_t c_count, const float* mean, const float* invstd,
                                   const float* gamma, const float* beta, float* dgamma, float* dbeta,
                                   Coefficients co) {
  VT_GRID_STRIDE(c, c_count) {
    const float sum_dy = slices_total(part_a, slices, c_count, c);
    const float sum_dy_xhat = slices_total(part_b, slices, c_count, c);
    if (dgamma) dgamma[c] += sum_dy_xhat;
    if (dbeta) dbeta[c] += sum_dy;
    const float scale = gamma[c] * invstd[c], m = static_cast<float>(m_count);
    co.mean()[c] = mean[c], co.scale()[c] = scale, co.beta()[c] = beta[c];
    co.ka()[c] = scale * (sum_dy / m);
    co.kb()[c] = scale * invstd[c] * (sum_dy_xhat / m);
  }
}

// V consecutive floats from p in 16-byte loads (p 16-byte aligned when V > 1): the
// coefficients of a pack of channels.
template <int V>
__device__ __forceinline__ Pack<float, V> load_floats(const float* p) {
  if constexpr (V % 4 != 0) {
    return load_pack<V>(p);
  } else {
    Pack<float, V> out;
#pragma unroll
    for (int q = 0; q < V; q += 4) {
      const Pack<float, 4> part = load_pack<4>(p + q);
#pragma unroll
      for (int j = 0; j < 4; ++j) out.v[q + j] = part.v[j];
    }
    return out;
  }
}

// y = act(d scale + beta) (+ r), d = x - mean, over (M, C) flattened (Coefficients); packs
// never straddle a row (launched with packs only when C and the views' pitches are multiples
// of the pack), so a pack's channels are consecutive and their coefficients load as packs too.
template <class T, bool kSiLU>
struct Normalize {
  const T* x;
  Pitched<const T> r;  // the fused residual, or null
  Pitched<T> y;
  Coefficients co;
  template <int V>
  __device__ void apply(int64_t i) const {
    const int64_t m = i / co.c_count, c0 = i - m * co.c_count;
    const Pack<T, V> a = load_pack<V>(x + i);
    const Pack<float, V> mean = load_floats<V>(co.mean() + c0), scale = load_floats<V>(co.scale() + c0),
                         beta = load_floats<V>(co.beta() + c0);
    Pack<T, V> res{};
    if (r.p) res = load_pack<V>(r.at(m, c0));
    Pack<T, V> o;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const float v = act_out<kSiLU>(fmaf(to_f32(a.v[j]) - mean.v[j], scale.v[j], beta.v[j]));
      o.v[j] = from_f32<T>(r.p ? to_f32(res.v[j]) + v : v);
    }
    store_pack(y.at(m, c0), o);
  }
};

// dx += scale g - (ka + kb d) (Coefficients), g = dy taken back through the fused activation
// at u = d scale + beta.
template <class T, bool kSiLU>
struct TrainDx {
  const T* x;
  Pitched<const T> dy;
  T* dx;
  Pitched<T> dr;  // the fused residual's gradient: dr += dy (= dy with overwrite_dr); or null
  Coefficients co;
  bool overwrite, overwrite_dr;  // dx = ... instead of dx += ...; the same for dr
  template <int V>
  __device__ void apply(int64_t i) const {
    const int64_t m = i / co.c_count, c0 = i - m * co.c_count;
    const Pack<T, V> a = load_pack<V>(x + i), g = load_pack<V>(dy.at(m, c0));
    const Pack<float, V> mean = load_floats<V>(co.mean() + c0), scale = load_floats<V>(co.scale() + c0),
                         ka = load_floats<V>(co.ka() + c0), kb = load_floats<V>(co.kb() + c0);
    Pack<float, V> beta{};
    if (kSiLU) beta = load_floats<V>(co.beta() + c0);
    Pack<T, V> o{};
    if (!overwrite) o = load_pack<V>(dx + i);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const float d = to_f32(a.v[j]) - mean.v[j];
      const float gj = act_grad<kSiLU>(fmaf(d, scale.v[j], beta.v[j]), to_f32(g.v[j]));
      const float v = scale.v[j] * gj - fmaf(d, kb.v[j], ka.v[j]);
      o.v[j] = from_f32<T>(overwrite ? v : to_f32(o.v[j]) + v);
    }
    store_pack(dx + i, o);
    if (dr.p) {
      Pack<T, V> q = g;
      if (!overwrite_dr) {
        const Pack<T, V> old = load_pack<V>(dr.at(m, c0));
#pragma unroll
        for (int j = 0; j < V; ++j) q.v[j] = from_f32<T>(to_f32(old.v[j]) + to_f32(g.v[j]));
      }
      store_pack(dr.at(m, c0), q);
    }
  }
};

// M = N*H*W.
int64_t positions(const Tensor& x) {
  return x.dim(0) * x.dim(1) * x.dim(2);
}

float* data_or_null(const Tensor* t) {
  return t ? t->data<float>() : nullptr;
}

// Whether the elementwise passes may run in packs of V channels: C and the pitch of every
// view a multiple of V (pointer alignment is launch_elementwise's check).
bool packs_fit(int64_t c_count, int v, std::initializer_list<const Tensor*> views) {
  bool ok = c_count % v == 0;
  for (const Tensor* t : views) ok = ok && (!t || t->pitch() % v == 0);
  return ok;
}

// Calls fn(std::bool_constant<silu>{}): the kernels' kSiLU from the runtime flag.
template <class Fn>
void with_silu(bool silu, Fn&& fn) {
  if (silu)
    fn(std::true_type{});
  else
    fn(std::false_type{});
}

}  // namespace

void batchnorm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                             const Tensor& running_mean, const Tensor& running_var, const Tensor& save_mean,
                             const Tensor& save_invstd, const BatchNormParams& p, float* workspace, Stream s,
                             const Tensor* tile_stats) {
  const int64_t m_count = positions(x), c_count = x.dim(3);
  if (m_count == 0 || c_count == 0) return;
  const cudaStream_t st = stream_of(s);
  dispatch("batchnorm_forward_train", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    with_silu(p.silu, [&](auto silu) {
      constexpr bool kSiLU = decltype(silu)::value;
      if (workspace) {
        const int64_t slices = batchnorm_slices(x.shape()), len = (m_count + slices - 1) / slices;
        const dim3 grid = channel_grid(c_count, slices);
        float* mean = save_mean.data<float>();
        float* invstd = save_invstd.data<float>();
        MeanM2* part = reinterpret_cast<MeanM2*>(workspace);
        if (tile_stats) {
          const int64_t tiles = tile_stats->dim(0);
          slice_stats_kernel<<<grid, channel_block(), 0, st>>>(
              TileRows{reinterpret_cast<const MeanM2*>(tile_stats->raw())}, part, tiles, c_count,
              (tiles + slices - 1) / slices);
        } else {
          slice_stats_kernel<<<grid, channel_block(), 0, st>>>(XRows<T>{x.data<T>()}, part, m_count, c_count,
                                                               len);
        }
        VT_LAUNCH_CHECK();
        const Coefficients co{workspace + 3 * slices * c_count, c_count};
        stats_kernel<<<grid_for(c_count), kThreads, 0, st>>>(
            part, slices, m_count, c_count, float(p.momentum), float(p.eps), gamma.data<float>(),
            beta.data<float>(), mean, invstd, running_mean.data<float>(), running_var.data<float>(), co);
        VT_LAUNCH_CHECK();
        constexpr int kPack = 16 / static_cast<int>(sizeof(T));
        const Pitched<const T> r = pitched<const T>(p.residual);
        launch_elementwise<T>(Normalize<T, kSiLU>{x.data<T>(), r, pitched<T>(&y), co}, x.numel(),
                              {x.raw(), r.p, y.raw(), co.base}, st,
                              packs_fit(c_count, kPack, {&y, p.residual}));
        return;
      }
      forward_train_kernel<T, kSiLU><<<channel_grid(c_count), channel_block(), 0, st>>>(
          x.data<T>(), pitched<const T>(p.residual), gamma.data<float>(), beta.data<float>(), pitched<T>(&y),
          running_mean.data<float>(), running_var.data<float>(), save_mean.data<float>(),
          save_invstd.data<float>(), float(p.momentum), float(p.eps), m_count, c_count);
    });
  });
  VT_LAUNCH_CHECK();
}

void batchnorm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                            const Tensor& running_mean, const Tensor& running_var, const Tensor& y,
                            const BatchNormParams& p, Stream s) {
  const int64_t n = x.numel();
  if (n == 0) return;
  dispatch("batchnorm_forward_eval", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    with_silu(p.silu, [&](auto silu) {
      forward_eval_kernel<T, decltype(silu)::value><<<grid_for(n), kThreads, 0, stream_of(s)>>>(
          x.data<T>(), pitched<const T>(p.residual), gamma.data<float>(), beta.data<float>(),
          running_mean.data<float>(), running_var.data<float>(), pitched<T>(&y), float(p.eps), n, x.dim(3));
    });
  });
  VT_LAUNCH_CHECK();
}

void batchnorm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& beta,
                        const Tensor& save_mean, const Tensor& save_invstd, const Tensor* dx,
                        const Tensor* dgamma, const Tensor* dbeta, const BatchNormParams& p, float* workspace,
                        Stream s) {
  const int64_t m_count = positions(x), c_count = x.dim(3);
  if (m_count == 0 || c_count == 0 || (!dx && !dgamma && !dbeta)) return;
  const Stats st{save_mean.data<float>(), save_invstd.data<float>(), nullptr, 0.f};
  const cudaStream_t cs = stream_of(s);
  dispatch("batchnorm_backward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const Pitched<const T> g = pitched<const T>(&dy);
    const Pitched<T> dr = pitched<T>(p.dresidual);
    with_silu(p.silu, [&](auto silu) {
      constexpr bool kSiLU = decltype(silu)::value;
      if (workspace) {
        const int64_t slices = batchnorm_slices(x.shape()), len = (m_count + slices - 1) / slices;
        const dim3 grid = channel_grid(c_count, slices);
        float *part_a = workspace, *part_b = workspace + slices * c_count;
        const Coefficients co{workspace + 3 * slices * c_count, c_count};
        slice_grad_sums_kernel<T, kSiLU>
            <<<grid, channel_block(), 0, cs>>>(x.data<T>(), g, st.mean, st.invstd, gamma.data<float>(),
                                               beta.data<float>(), part_a, part_b, m_count, c_count, len);
        VT_LAUNCH_CHECK();
        grad_totals_kernel<<<grid_for(c_count), kThreads, 0, cs>>>(
            part_a, part_b, slices, m_count, c_count, st.mean, st.invstd, gamma.data<float>(),
            beta.data<float>(), data_or_null(dgamma), data_or_null(dbeta), co);
        VT_LAUNCH_CHECK();
        if (dx) {
          constexpr int kPack = 16 / static_cast<int>(sizeof(T));
          launch_elementwise<T>(
              TrainDx<T, kSiLU>{x.data<T>(), g, dx->data<T>(), dr, co, p.overwrite_dx, p.overwrite_dresidual},
              x.numel(), {x.raw(), dy.raw(), dx->raw(), dr.p, co.base}, cs,
              packs_fit(c_count, kPack, {&dy, p.dresidual}));
        }
        return;
      }
      backward_kernel<T, kSiLU><<<channel_grid(c_count), channel_block(), 0, cs>>>(
          x.data<T>(), g, gamma.data<float>(), beta.data<float>(), st, dx ? dx->data<T>() : nullptr,
          p.overwrite_dx, dr, p.overwrite_dresidual, data_or_null(dgamma), data_or_null(dbeta), m_count,
          c_count);
    });
  });
  VT_LAUNCH_CHECK();
}

void batchnorm_backward_eval(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& beta,
                             const Tensor& running_mean, const Tensor& running_var, const Tensor* dx,
                             const Tensor* dgamma, const Tensor* dbeta, const BatchNormParams& p, Stream s) {
  const int64_t m_count = positions(x), c_count = x.dim(3), n = x.numel();
  if (n == 0) return;
  const Stats st{running_mean.data<float>(), nullptr, running_var.data<float>(), float(p.eps)};
  const cudaStream_t cs = stream_of(s);
  dispatch("batchnorm_backward_eval", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const Pitched<const T> g = pitched<const T>(&dy);
    const Pitched<T> dr = pitched<T>(p.dresidual);
    with_silu(p.silu, [&](auto silu) {
      constexpr bool kSiLU = decltype(silu)::value;
      if (dx) {
        backward_eval_dx_kernel<T, kSiLU><<<grid_for(n), kThreads, 0, cs>>>(
            x.data<T>(), g, gamma.data<float>(), beta.data<float>(), st, dx->data<T>(), p.overwrite_dx, dr,
            p.overwrite_dresidual, n, c_count);
        VT_LAUNCH_CHECK();
      }
      if (dgamma || dbeta) {
        backward_kernel<T, kSiLU><<<channel_grid(c_count), channel_block(), 0, cs>>>(
            x.data<T>(), g, gamma.data<float>(), beta.data<float>(), st, nullptr, false,
            Pitched<T>{nullptr, 0}, false, data_or_null(dgamma), data_or_null(dbeta), m_count, c_count);
        VT_LAUNCH_CHECK();
      }
    });
  });
}

}  // namespace vt::cuda
