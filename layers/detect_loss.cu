// Detection loss in CUDA: the assignment per GT and per anchor instead of the CPU's dense
// (M, A) tables, then one thread per anchor for the loss terms and the gradient.
//
// Kernels, in launch order (B images, M target rows, A anchors, K = topk):
//   decode      (B A threads)  predicted boxes in grid units; resets the positive counters.
//   topk        (M x B blocks) per GT: each thread keeps its own best K candidates (align
//               > 0, ordered by align descending then anchor index ascending); K rounds of
//               a block-wide arg-best merge them. If fewer than K candidates have a
//               positive align, torch.topk fills up with zero-align anchors in index order:
//               thread 0 walks anchors 0, 1, ... and keeps those inside the GT (positives
//               with score 0). Output: the GT's positives.
//   mark        (B M K threads) counts, per anchor, the GTs it is positive for, and keeps the
//               largest such row (integer atomics: the result is order-independent).
//   resolve     (B A threads)  one GT per anchor (argmax of the overlaps when several);
//               the align metric and overlap with it.
//   gt_max      (M x B blocks) per GT, the maxima of align and overlap over its anchors.
//   target      (B A threads)  target score = align * max ov / (max align + eps).
//   reduce_sum  tss.
//   cls         (B A x 8 threads) per anchor, 8 lanes over its classes in 16-byte packs
//               (V classes each; V = 1 when the rows do not allow it): BCE against the
//               one-hot target score, its gradient added into dpreds, and the anchor's sum
//               by a fixed-order butterfly over its lanes.
//   box         (B A threads)  per fg anchor: CIoU and DFL, the box bins' gradient.
//   reduce_sum x 3, finish (1 thread) the four loss values.
// The box bins are read in 16-byte packs too (decode, box) when the rows allow it.
// No floating-point atomics; every sum is a fixed-order reduce_sum (reduce.h), so the
// result is bit-identical run to run. Arithmetic is fp32 whatever the storage type.
#include <climits>

#include "layers/cuda_common.cuh"
#include "layers/detect_loss.h"
#include "layers/detect_loss_box.h"
#include "layers/reduce.h"

namespace vt::cuda {
namespace {

using D = DetectLossDims;
namespace bm = boxmath;

constexpr float kIouEps = 1e-7f;  // bbox_iou's default eps

// The per-level prediction and gradient tensors.
template <class T>
struct Heads {
  const T* x[D::kMaxLevels];
  T* dx[D::kMaxLevels];
};

// Kernel parameters indexed by a run-time level would be copied to local memory (per thread);
// these pick with compile-time indices instead.
template <class V>
__device__ __forceinline__ V at_level(const V (&v)[D::kMaxLevels], int level) {
  V r = v[0];
#pragma unroll
  for (int k = 1; k < D::kMaxLevels; ++k)
    if (k == level) r = v[k];
  return r;
}

struct Anchor {
  int level;
  int64_t local;       // index in the level's grid
  int64_t w;           // the level's grid width (= height)
  float x, y, stride;  // point in grid units
};

__device__ Anchor locate(const D& d, int64_t a) {
  int l = 0;
  int64_t begin = d.level_begin[0], w = d.level_w[0];
  int stride = d.level_stride[0];
#pragma unroll
  for (int k = 1; k < D::kMaxLevels; ++k)
    if (k < d.levels && a >= d.level_begin[k])
      l = k, begin = d.level_begin[k], w = d.level_w[k], stride = d.level_stride[k];
  const int64_t local = a - begin;
  return {l, local, w, static_cast<float>(local % w) + 0.5f, static_cast<float>(local / w) + 0.5f,
          static_cast<float>(stride)};
}

// Offset of anchor a's C channels, image b, in its level's tensor (B, H, W, C).
__device__ int64_t row_offset(const D& d, int64_t b, const Anchor& an) {
  return (b * an.w * an.w + an.local) * d.channels;
}

// The rows' 16-byte packs: V = 16 / sizeof(T) consecutive channels, when every level's
// tensors start 16-byte aligned and C, reg_max and nc are multiples of V (then every box
// side and the class block start on a pack). Set on the host (vec_rows).
template <class T>
constexpr int kPackOf = 16 / static_cast<int>(sizeof(T));

// x[k] = the R bins of one side of a row (16-byte packs when vec).
template <class T>
__device__ __forceinline__ void load_bins(const T* row, int side, int R, bool vec, float* x) {
  const T* p = row + side * R;
  if (vec) {
    constexpr int V = kPackOf<T>;
    for (int k = 0; k < R; k += V) {
      const Pack<T, V> v = load_pack<V>(p + k);
#pragma unroll
      for (int e = 0; e < V; ++e) x[k + e] = to_f32(v.v[e]);
    }
  } else {
    for (int k = 0; k < R; ++k) x[k] = to_f32(p[k]);
  }
}

// drow[side R + k] += g[k] (16-byte packs when vec).
template <class T>
__device__ __forceinline__ void add_bins(T* drow, int side, int R, bool vec, const float* g) {
  T* p = drow + side * R;
  if (vec) {
    constexpr int V = kPackOf<T>;
    for (int k = 0; k < R; k += V) {
      Pack<T, V> v = load_pack<V>(p + k);
#pragma unroll
      for (int e = 0; e < V; ++e) v.v[e] = from_f32<T>(to_f32(v.v[e]) + g[k + e]);
      store_pack(p + k, v);
    }
  } else {
    for (int k = 0; k < R; ++k) p[k] = from_f32<T>(to_f32(p[k]) + g[k]);
  }
}

struct GtRow {
  bool valid;
  int cls;  // 0 unless valid
  float box[4];
};

// A class outside [0, nc) makes the row padding here (the CPU throws; see detect_loss.h).
__device__ GtRow read_gt(const D& d, const float* targets, int64_t b, int64_t j) {
  const float* r = targets + (b * d.max_boxes + j) * 5;
  GtRow g;
  g.valid = r[0] >= 0.f && r[0] < static_cast<float>(d.nc) && r[1] + r[2] + r[3] + r[4] > 0.f;
  g.cls = g.valid ? static_cast<int>(r[0]) : 0;
  for (int k = 0; k < 4; ++k) g.box[k] = r[1 + k];
  return g;
}

// TAL's view of the pair (GT g, anchor a of image b): inside?, CIoU overlap, align metric.
template <class T>
__device__ void pair_metrics(const D& d, const Heads<T>& h, const float* pbox, const GtRow& g, int64_t b,
                             int64_t a, bool& in, float& ov, float& align) {
  in = false;
  ov = 0.f;
  align = 0.f;
  if (!g.valid) return;
  const Anchor an = locate(d, a);
  if (!bm::point_in_box(an.x * an.stride, an.y * an.stride, g.box, static_cast<float>(d.eps))) return;
  in = true;
  const float* pb = pbox + (b * d.anchors + a) * 4;
  const float pd[4] = {pb[0] * an.stride, pb[1] * an.stride, pb[2] * an.stride, pb[3] * an.stride};
  ov = bm::m_max(bm::ciou(g.box, pd, kIouEps, static_cast<float*>(nullptr)), 0.f);
  const float score = bm::sigmoid(to_f32(at_level(h.x, an.level)[row_offset(d, b, an) + 4 * d.reg_max + g.cls]));
  align = bm::m_pow(score, static_cast<float>(d.alpha)) * bm::m_pow(ov, static_cast<float>(d.beta));
}

// The order of the top-k: larger align first, then the lower anchor index.
__device__ __forceinline__ bool better(float v1, int i1, float v2, int i2) {
  return v1 > v2 || (v1 == v2 && i1 < i2);
}

// pbox, count, last: (B, A, 4), (B, A), (B, A).
// kBins: reg_max when it is 16 (Ultralytics' value: the bins' arrays then live in registers,
// their loops unrolled), 0 for any other, read from d (the arrays then go to local memory).
template <class T, int kBins>
__global__ void decode_kernel(D d, Heads<T> h, bool vec, float* pbox, int* count, int* last) {
  const int R = kBins ? kBins : d.reg_max;
  VT_GRID_STRIDE(i, d.batch * d.anchors) {
    const int64_t b = i / d.anchors, a = i % d.anchors;
    const Anchor an = locate(d, a);
    const T* row = at_level(h.x, an.level) + row_offset(d, b, an);
    float dist[4];
#pragma unroll
    for (int side = 0; side < 4; ++side) {
      float x[kBins ? kBins : D::kMaxBins];
      load_bins(row, side, R, vec, x);
      dist[side] = bm::dfl_expectation(x, R);
    }
    bm::dist_to_box(an.x, an.y, dist, pbox + i * 4);
    count[i] = 0;
    last[i] = -1;
  }
}

// One block of kThreads per (GT j, image b) = (blockIdx.x, blockIdx.y).
// topk_idx: (B, M, K), the GT's positives in its first topk_n[b, j] slots.
template <class T>
__global__ void topk_kernel(D d, Heads<T> h, const float* pbox, const float* targets, int* topk_idx,
                            int* topk_n) {
  const int64_t j = blockIdx.x, b = blockIdx.y;
  const int64_t bj = b * d.max_boxes + j;
  const GtRow g = read_gt(d, targets, b, j);
  if (!g.valid) {  // uniform across the block, so leaving before the barriers is safe
    if (threadIdx.x == 0) topk_n[bj] = 0;
    return;
  }
  const int K = d.topk;
  // This thread's best K candidates, sorted.
  float lv[D::kMaxTopk];
  int li[D::kMaxTopk];
  int ln = 0;
  for (int64_t a = threadIdx.x; a < d.anchors; a += kThreads) {
    bool in;
    float ov, al;
    pair_metrics(d, h, pbox, g, b, a, in, ov, al);
    if (!in || !(al > 0.f)) continue;
    const int ia = static_cast<int>(a);
    if (ln == K && !better(al, ia, lv[K - 1], li[K - 1])) continue;
    int p = ln < K ? ln++ : K - 1;
    while (p > 0 && better(al, ia, lv[p - 1], li[p - 1])) {
      lv[p] = lv[p - 1];
      li[p] = li[p - 1];
      --p;
    }
    lv[p] = al;
    li[p] = ia;
  }
  // K rounds: the block's best remaining head wins and its owner pops it.
  __shared__ float sv[kThreads];
  __shared__ int si[kThreads];
  int head = 0, n_sel = 0;
  int picked[D::kMaxTopk];  // thread 0's copy of the winners
  for (int k = 0; k < K; ++k) {
    sv[threadIdx.x] = head < ln ? lv[head] : -1.f;
    si[threadIdx.x] = head < ln ? li[head] : INT_MAX;
    __syncthreads();
    for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
      const int t = threadIdx.x;
      if (t < stride && better(sv[t + stride], si[t + stride], sv[t], si[t])) {
        sv[t] = sv[t + stride];
        si[t] = si[t + stride];
      }
      __syncthreads();
    }
    const float wv = sv[0];
    const int wi = si[0];
    __syncthreads();      // all have read the winner before the next round overwrites sv
    if (wv < 0.f) break;  // no candidate left (the same decision in every thread)
    if (head < ln && li[head] == wi) ++head;
    picked[k] = wi;
    n_sel = k + 1;
  }
  if (threadIdx.x != 0) return;
  int* out = topk_idx + bj * K;
  int n = 0;
  for (int k = 0; k < n_sel; ++k) out[n++] = picked[k];
  // torch.topk's zero fill. With n_sel < K every positive align was picked, so the zeros
  // are exactly the anchors not (inside with align > 0); it takes the first K - n_sel.
  int need = K - n_sel;
  for (int64_t a = 0; a < d.anchors && need > 0; ++a) {
    bool in;
    float ov, al;
    pair_metrics(d, h, pbox, g, b, a, in, ov, al);
    if (in && al > 0.f) continue;
    --need;
    if (in) out[n++] = static_cast<int>(a);
  }
  topk_n[bj] = n;
}

// count[b, a] = number of GTs the anchor is positive for; last[b, a] = the largest of them.
__global__ void mark_kernel(D d, const int* topk_idx, const int* topk_n, int* count, int* last) {
  const int K = d.topk;
  VT_GRID_STRIDE(i, d.batch * d.max_boxes * K) {
    const int64_t bj = i / K, k = i % K;
    if (k >= topk_n[bj]) continue;
    const int64_t b = bj / d.max_boxes, j = bj % d.max_boxes;
    const int64_t ba = b * d.anchors + topk_idx[i];
    atomicAdd(count + ba, 1);
    atomicMax(last + ba, static_cast<int>(j));
  }
}

// assigned: (B, A) the anchor's row or -1; a_align, a_ov: (B, A) its metrics with that row.
template <class T>
__global__ void resolve_kernel(D d, Heads<T> h, const float* pbox, const float* targets, const int* count,
                               const int* last, int* assigned, float* a_align, float* a_ov) {
  VT_GRID_STRIDE(i, d.batch * d.anchors) {
    const int64_t b = i / d.anchors, a = i % d.anchors;
    const int c = count[i];
    if (c == 0) {
      assigned[i] = -1;
      a_align[i] = 0.f;
      a_ov[i] = 0.f;
      continue;
    }
    int64_t j = last[i];
    bool in;
    float ov, al;
    if (c > 1) {  // select_highest_overlaps: argmax over all rows, the first on ties
      float best = 0.f;
      for (int64_t jj = 0; jj < d.max_boxes; ++jj) {
        pair_metrics(d, h, pbox, read_gt(d, targets, b, jj), b, a, in, ov, al);
        if (jj == 0 || ov > best) {
          best = ov;
          j = jj;
        }
      }
    }
    pair_metrics(d, h, pbox, read_gt(d, targets, b, j), b, a, in, ov, al);
    assigned[i] = static_cast<int>(j);
    a_align[i] = al;
    a_ov[i] = ov;
  }
}

// One block of kThreads per (GT j, image b). pos_align, pos_ov: (B, M). Max is exact, so
// the fold order cannot change the result.
__global__ void gt_max_kernel(D d, const float* targets, const int* assigned, const float* a_align,
                              const float* a_ov, float* pos_align, float* pos_ov) {
  const int64_t j = blockIdx.x, b = blockIdx.y;
  __shared__ float sa[kThreads], so[kThreads];
  float ma = 0.f, mo = 0.f;
  if (read_gt(d, targets, b, j).valid) {  // other rows have align = ov = 0 everywhere
    for (int64_t a = threadIdx.x; a < d.anchors; a += kThreads) {
      const int64_t i = b * d.anchors + a;
      if (assigned[i] != j) continue;
      ma = bm::m_max(ma, a_align[i]);
      mo = bm::m_max(mo, a_ov[i]);
    }
  }
  sa[threadIdx.x] = ma;
  so[threadIdx.x] = mo;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (static_cast<int>(threadIdx.x) < stride) {
      sa[threadIdx.x] = bm::m_max(sa[threadIdx.x], sa[threadIdx.x + stride]);
      so[threadIdx.x] = bm::m_max(so[threadIdx.x], so[threadIdx.x + stride]);
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    pos_align[b * d.max_boxes + j] = sa[0];
    pos_ov[b * d.max_boxes + j] = so[0];
  }
}

// score: (B, A) the target score.
__global__ void target_kernel(D d, const int* assigned, const float* a_align, const float* pos_align,
                              const float* pos_ov, float* score) {
  VT_GRID_STRIDE(i, d.batch * d.anchors) {
    const int j = assigned[i];
    if (j < 0) {
      score[i] = 0.f;
      continue;
    }
    const int64_t bj = (i / d.anchors) * d.max_boxes + j;
    score[i] = a_align[i] * pos_ov[bj] / (pos_align[bj] + static_cast<float>(d.eps));
  }
}

// The classification term over (anchor, class): 8 lanes per anchor (a group of a warp),
// lane l taking the packs l, l + 8, ... of V classes (V = kPackOf<T> when vec, else 1). Per
// class: BCE against the one-hot target score, and g_cls (sigmoid(x) - t) added into dpreds.
// The anchor's sum goes to partials[n + i] (n = B A) by a fixed-order butterfly over its lanes,
// so the result does not depend on the launch geometry. Grid-stride over B A x 8 lanes, with
// blockDim and the stride multiples of 32: an anchor's lanes stay in one warp, step together.
template <class T, int V>
__global__ void cls_kernel(D d, Heads<T> h, const float* targets, const int* assigned, const float* score,
                           const float* sums, float* partials) {
  constexpr int kLanes = 8;
  const int R = d.reg_max, packs = d.nc / V;
  const int64_t n = d.batch * d.anchors;
  const float g_cls = static_cast<float>(d.batch) * static_cast<float>(d.cls_gain) / bm::m_max(sums[0], 1.f);
  const unsigned group = 0xffu << (threadIdx.x % 32 / kLanes * kLanes);
  VT_GRID_STRIDE(t, n * kLanes) {
    const int64_t i = t / kLanes;
    const int lane = static_cast<int>(t % kLanes);
    const int64_t b = i / d.anchors, a = i % d.anchors;
    const Anchor an = locate(d, a);
    const int64_t off = row_offset(d, b, an) + 4 * R;
    const T* row = at_level(h.x, an.level) + off;
    T* drow = at_level(h.dx, an.level) + off;
    const int j = assigned[i];
    const int cls = j >= 0 ? read_gt(d, targets, b, j).cls : -1;
    const float sc = score[i];
    float sum = 0.f;
    for (int q = lane; q < packs; q += kLanes) {
      const int c0 = q * V;
      const Pack<T, V> x = load_pack<V>(row + c0);
      Pack<T, V> g = load_pack<V>(drow + c0);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const float xv = to_f32(x.v[e]), tv = c0 + e == cls ? sc : 0.f;
        sum += bm::bce_with_logits(xv, tv);
        g.v[e] = from_f32<T>(to_f32(g.v[e]) + g_cls * (bm::sigmoid(xv) - tv));
      }
      store_pack(drow + c0, g);
    }
#pragma unroll
    for (int k = kLanes / 2; k > 0; k /= 2) sum += __shfl_xor_sync(group, sum, k, kLanes);
    if (lane == 0) partials[n + i] = sum;
  }
}

// partials: (3, B, A) the per-anchor terms of (box, cls, dfl) before the division by tss;
// this kernel writes box and dfl (cls_kernel the cls row); sums[0] = sum of the target scores.
// Adds d total / d (box bins) into dpreds for the fg anchors.
// kBins as decode_kernel's.
template <class T, int kBins>
__global__ void box_kernel(D d, Heads<T> h, bool vec, const float* targets, const int* assigned,
                           const float* score, const float* sums, float* partials) {
  const int R = kBins ? kBins : d.reg_max;
  const int64_t n = d.batch * d.anchors;
  const float tss = bm::m_max(sums[0], 1.f);
  const float batch = static_cast<float>(d.batch);
  const float g_box = batch * static_cast<float>(d.box_gain) / tss;
  const float g_dfl = batch * static_cast<float>(d.dfl_gain) / tss;
  const float dfl_hi = static_cast<float>(R - 1 - 0.01);
  const float coord_sign[4] = {-1.f, -1.f, 1.f, 1.f};  // d(x1, y1, x2, y2) / d(l, t, r, b)
  VT_GRID_STRIDE(i, n) {
    const int j = assigned[i];
    float box_term = 0.f, dfl_term = 0.f;
    if (j >= 0) {
      const int64_t b = i / d.anchors, a = i % d.anchors;
      const Anchor an = locate(d, a);
      const int64_t off = row_offset(d, b, an);
      const T* row = at_level(h.x, an.level) + off;
      T* drow = at_level(h.dx, an.level) + off;
      const float sc = score[i];
      const GtRow g = read_gt(d, targets, b, j);
      // Two passes over the sides keep the per-thread arrays at one side's bins: the CIoU
      // needs all four distances before any side's gradient.
      constexpr int kArr = kBins ? kBins : D::kMaxBins;
      float x[kArr], p[kArr], gbin[kArr];
      float dist[4], box[4], tb[4], dci[4], td[4];
#pragma unroll
      for (int side = 0; side < 4; ++side) {
        load_bins(row, side, R, vec, x);
        dist[side] = bm::dfl_expectation(x, R);
      }
      bm::dist_to_box(an.x, an.y, dist, box);
      for (int k = 0; k < 4; ++k) tb[k] = g.box[k] / an.stride;
      const float ci = bm::ciou(box, tb, kIouEps, dci);
      box_term = (1.f - ci) * sc;
      bm::box_to_dist(an.x, an.y, tb, dfl_hi, td);
      float dfl = 0.f;
#pragma unroll
      for (int side = 0; side < 4; ++side) {
        load_bins(row, side, R, vec, x);
        bm::softmax_expectation(x, R, p);
        const float dd = -g_box * sc * dci[side] * coord_sign[side];  // d total / d distance
        for (int k = 0; k < R; ++k) gbin[k] = dd * p[k] * (static_cast<float>(k) - dist[side]);
        dfl += bm::dfl_side(x, R, td[side], gbin, g_dfl * sc / 4.f);
        add_bins(drow, side, R, vec, gbin);
      }
      dfl_term = dfl / 4.f * sc;
    }
    partials[i] = box_term;
    partials[2 * n + i] = dfl_term;
  }
}

// sums: (tss, box, cls, dfl) raw sums; loss: (total, box, cls, dfl).
__global__ void finish_kernel(D d, const float* sums, float* loss) {
  const float tss = bm::m_max(sums[0], 1.f);
  const float batch = static_cast<float>(d.batch);
  const float box = sums[1] / tss * static_cast<float>(d.box_gain);
  const float cls = sums[2] / tss * static_cast<float>(d.cls_gain);
  const float dfl = sums[3] / tss * static_cast<float>(d.dfl_gain);
  loss[0] = box * batch + cls * batch + dfl * batch;
  loss[1] = box;
  loss[2] = cls;
  loss[3] = dfl;
}

// The scratch arrays inside the workspace.
struct Scratch {
  float* pbox;       // (B, A, 4) predicted boxes, grid units
  int* count;        // (B, A) GTs the anchor is positive for
  int* last;         // (B, A) the largest such row
  int* topk_idx;     // (B, M, K) each GT's positives
  int* topk_n;       // (B, M) how many
  int* assigned;     // (B, A) row or -1
  float* a_align;    // (B, A) align metric with the assigned row
  float* a_ov;       // (B, A) overlap with the assigned row
  float* pos_align;  // (B, M) max align over the GT's anchors
  float* pos_ov;     // (B, M) max overlap over the GT's anchors
  float* score;      // (B, A) target score
  float* partials;   // (3, B, A) box, cls, dfl terms
  float* sums;       // (4) tss, box, cls, dfl
  float* reduce_ws;  // reduce_workspace_elems(B A)
  int64_t reduce_ws_elems;
};

size_t carve(const D& d, void* base, Scratch* s) {
  ScratchCarver c(base);
  const int64_t ba = d.batch * d.anchors, bm_ = d.batch * d.max_boxes;
  s->pbox = c.take<float>(ba * 4);
  s->count = c.take<int>(ba);
  s->last = c.take<int>(ba);
  s->topk_idx = c.take<int>(bm_ * d.topk);
  s->topk_n = c.take<int>(bm_);
  s->assigned = c.take<int>(ba);
  s->a_align = c.take<float>(ba);
  s->a_ov = c.take<float>(ba);
  s->pos_align = c.take<float>(bm_);
  s->pos_ov = c.take<float>(bm_);
  s->score = c.take<float>(ba);
  s->partials = c.take<float>(3 * ba);
  s->sums = c.take<float>(4);
  s->reduce_ws_elems = reduce_workspace_elems(ba, Device::kCUDA);
  s->reduce_ws = c.take<float>(s->reduce_ws_elems);
  return c.bytes();
}

// Whether the rows can be read in 16-byte packs (kPackOf): aligned tensors, and C, reg_max
// (every side's bins, and the class block at 4 reg_max) and nc multiples of the pack.
bool vec_rows(const D& d, const std::vector<Tensor>& preds, const std::vector<Tensor>& dpreds) {
  const int v = 16 / static_cast<int>(dtype_size(preds[0].dtype()));
  bool ok = d.channels % v == 0 && d.reg_max % v == 0 && d.nc % v == 0;
  for (int l = 0; l < d.levels; ++l)
    ok = ok && reinterpret_cast<uintptr_t>(preds[l].raw()) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(dpreds[l].raw()) % 16 == 0;
  return ok;
}

Tensor flat(float* p, int64_t n) {
  return Tensor::view(p, {n}, DType::kF32, Device::kCUDA);
}

}  // namespace

size_t detect_loss_workspace_bytes(const DetectLossDims& d) {
  Scratch s;
  return carve(d, nullptr, &s);
}

void detect_loss(const DetectLossDims& d, const std::vector<Tensor>& preds, const Tensor& targets,
                 const std::vector<Tensor>& dpreds, const Tensor& loss, const Tensor& workspace, Stream s) {
  const char* op = "detect_loss";
  Scratch w;
  carve(d, workspace.raw(), &w);
  const cudaStream_t st = stream_of(s);
  const int64_t ba = d.batch * d.anchors;
  const float* tg = targets.data<float>();
  const Tensor ws = flat(w.reduce_ws, w.reduce_ws_elems);
  dispatch(op, preds[0].dtype(), [&](auto tag) {
    using T = decltype(tag);
    Heads<T> h{};
    for (int l = 0; l < d.levels; ++l) {
      h.x[l] = preds[l].data<T>();
      h.dx[l] = dpreds[l].data<T>();
    }
    const bool vec = vec_rows(d, preds, dpreds);
    if (d.reg_max == 16)
      decode_kernel<T, 16><<<grid_for(ba), kThreads, 0, st>>>(d, h, vec, w.pbox, w.count, w.last);
    else
      decode_kernel<T, 0><<<grid_for(ba), kThreads, 0, st>>>(d, h, vec, w.pbox, w.count, w.last);
    VT_LAUNCH_CHECK();
    if (d.max_boxes > 0) {
      const dim3 per_gt(static_cast<unsigned>(d.max_boxes), static_cast<unsigned>(d.batch));
      topk_kernel<T><<<per_gt, kThreads, 0, st>>>(d, h, w.pbox, tg, w.topk_idx, w.topk_n);
      VT_LAUNCH_CHECK();
      mark_kernel<<<grid_for(d.batch * d.max_boxes * d.topk), kThreads, 0, st>>>(d, w.topk_idx, w.topk_n,
                                                                                 w.count, w.last);
      VT_LAUNCH_CHECK();
    }
    resolve_kernel<T>
        <<<grid_for(ba), kThreads, 0, st>>>(d, h, w.pbox, tg, w.count, w.last, w.assigned, w.a_align, w.a_ov);
    VT_LAUNCH_CHECK();
    if (d.max_boxes > 0) {
      const dim3 per_gt(static_cast<unsigned>(d.max_boxes), static_cast<unsigned>(d.batch));
      gt_max_kernel<<<per_gt, kThreads, 0, st>>>(d, tg, w.assigned, w.a_align, w.a_ov, w.pos_align, w.pos_ov);
      VT_LAUNCH_CHECK();
    }
    target_kernel<<<grid_for(ba), kThreads, 0, st>>>(d, w.assigned, w.a_align, w.pos_align, w.pos_ov,
                                                     w.score);
    VT_LAUNCH_CHECK();
    cuda::reduce_sum(flat(w.score, ba), flat(w.sums, 1), ws, s);
    if (vec)
      cls_kernel<T, kPackOf<T>>
          <<<grid_for(ba * 8), kThreads, 0, st>>>(d, h, tg, w.assigned, w.score, w.sums, w.partials);
    else
      cls_kernel<T, 1><<<grid_for(ba * 8), kThreads, 0, st>>>(d, h, tg, w.assigned, w.score, w.sums, w.partials);
    VT_LAUNCH_CHECK();
    if (d.reg_max == 16)
      box_kernel<T, 16><<<grid_for(ba), kThreads, 0, st>>>(d, h, vec, tg, w.assigned, w.score, w.sums, w.partials);
    else
      box_kernel<T, 0><<<grid_for(ba), kThreads, 0, st>>>(d, h, vec, tg, w.assigned, w.score, w.sums, w.partials);
    VT_LAUNCH_CHECK();
  });
  for (int q = 0; q < 3; ++q) cuda::reduce_sum(flat(w.partials + q * ba, ba), flat(w.sums + 1 + q, 1), ws, s);
  finish_kernel<<<1, 1, 0, st>>>(d, w.sums, loss.data<float>());
  VT_LAUNCH_CHECK();
}

}  // namespace vt::cuda
