// Detect post-processing in CUDA.
//
// decode: one thread per (image, anchor) of a level: four DFL expectations, the box, and the
// anchor's class sigmoids.
//
// nms, every step deterministic (no atomics, nothing that depends on timing):
//   1. count     per chunk of 256 enumerated candidates (see detect_postprocess.h), how many
//                score > conf (__syncthreads_count);
//   2. scan      per image, the exclusive prefix sum of the chunk counts, and the total n_b;
//   3. compact   each candidate above conf writes its key at its chunk's offset + its rank
//                in the chunk, so the compacted list keeps the enumeration order;
//   4. sort      per image, a bitonic sort of the keys, descending, over the network of
//                next_pow2(n_b) keys (the rest of the image's key array is 0, below any key);
//   5. gather    the first m_b = min(n_b, max_nms) candidates: box, score, class;
//   6. mask      per image: bit t of mask[i][c] says candidate j = 64 c + t > i has the class
//                of i (any class when agnostic) and IoU(i, j) > iou;
//   7. suppress  per image, one block walks i = 0.. in order and keeps i unless a kept box's
//                mask row removed it, up to max_det;
//   8. emit      the kept (box, score, class) per image, copied to the host in one block.
// Key = (bits of score) << 32 | (2^32 - 1 - index): scores of candidates are > conf >= 0, so
// their bits order like the floats, and equal scores put the lower index first, as the CPU
// path's sort does. Steps 6-7 run image by image, so the mask (max_nms^2 / 8 bytes) exists
// once; the others run on the whole batch.
#include <vector>

#include "layers/cuda_common.cuh"
#include "layers/detect_postprocess.h"

namespace vt::cuda {
namespace {

constexpr int kChunk = 256;  // candidates per count/compact block (8 full warps)
constexpr int kScanThreads = 1024;
constexpr int kMaskBits = 64;

__device__ __forceinline__ float sigmoid(float x) {
  if (x >= 0.f) return 1.f / (1.f + expf(-x));
  const float e = expf(x);
  return e / (1.f + e);
}

template <class T>
__device__ __forceinline__ float dfl_distance(const T* logits) {
  float m = to_f32(logits[0]);
  for (int i = 1; i < kDecodeBins; ++i) m = fmaxf(m, to_f32(logits[i]));
  float sum = 0.f, weighted = 0.f;
  for (int i = 0; i < kDecodeBins; ++i) {
    const float e = expf(to_f32(logits[i]) - m);
    sum += e;
    weighted += e * static_cast<float>(i);
  }
  return weighted / sum;
}

// out: (B, h, w, 4 * 16 + nc) of one level whose first anchor is `first`.
template <class T>
__global__ void decode_kernel(const T* out, int64_t batch, int64_t h, int64_t w, int64_t nc, int64_t anchors,
                              int64_t first, float stride, float* boxes, float* scores) {
  const int64_t cells = h * w, channels = 4 * kDecodeBins + nc;
  VT_GRID_STRIDE(idx, batch * cells) {
    const int64_t b = idx / cells, r = idx % cells;
    const float ax = static_cast<float>(r % w) + 0.5f, ay = static_cast<float>(r / w) + 0.5f;
    const T* cell = out + idx * channels;  // idx = (b h + y) w + x
    const int64_t a = first + r;
    float* box = boxes + (b * anchors + a) * 4;
    box[0] = (ax - dfl_distance(cell)) * stride;
    box[1] = (ay - dfl_distance(cell + kDecodeBins)) * stride;
    box[2] = (ax + dfl_distance(cell + 2 * kDecodeBins)) * stride;
    box[3] = (ay + dfl_distance(cell + 3 * kDecodeBins)) * stride;
    float* sc = scores + (b * anchors + a) * nc;
    for (int64_t c = 0; c < nc; ++c) sc[c] = sigmoid(to_f32(cell[4 * kDecodeBins + c]));
  }
}

// Candidate e of one image (scores: (A, nc)): with multi_label e = a nc + c, else e = a with
// its best class (lowest index on ties). Returns score > conf; sets the score and class.
__device__ __forceinline__ bool candidate(const float* scores, int64_t e, int64_t nc, bool multi_label,
                                          float conf, float* score, int* cls) {
  if (multi_label) {
    *score = scores[e];
    *cls = static_cast<int>(e % nc);
  } else {
    const float* s = scores + e * nc;
    int best = 0;
    for (int c = 1; c < nc; ++c)
      if (s[c] > s[best]) best = c;
    *score = s[best];
    *cls = best;
  }
  return *score > conf;
}

struct Select {
  const float* scores;                      // (B, A, nc)
  int64_t anchors, nc, enumerated, chunks;  // enumerated: candidates per image (A nc or A)
  bool multi_label;
  float conf;
};

__global__ void count_kernel(Select sel, int* chunk_counts) {
  const int64_t b = blockIdx.y, e = static_cast<int64_t>(blockIdx.x) * kChunk + threadIdx.x;
  float score;
  int cls;
  const bool keep = e < sel.enumerated && candidate(sel.scores + b * sel.anchors * sel.nc, e, sel.nc,
                                                    sel.multi_label, sel.conf, &score, &cls);
  const int n = __syncthreads_count(keep);
  if (threadIdx.x == 0) chunk_counts[b * sel.chunks + blockIdx.x] = n;
}

// One block per image: chunk_offsets = exclusive prefix sum of chunk_counts, totals[b] = sum.
__global__ void scan_kernel(const int* chunk_counts, int64_t chunks, int* chunk_offsets, int* totals) {
  __shared__ int buf[kScanThreads];
  const int64_t b = blockIdx.x;
  const int tid = threadIdx.x;
  int carry = 0;
  for (int64_t base = 0; base < chunks; base += kScanThreads) {
    const int64_t i = base + tid;
    const int v = i < chunks ? chunk_counts[b * chunks + i] : 0;
    buf[tid] = v;
    __syncthreads();
    for (int off = 1; off < kScanThreads; off <<= 1) {  // Hillis-Steele inclusive scan
      const int t = tid >= off ? buf[tid - off] : 0;
      __syncthreads();
      buf[tid] += t;
      __syncthreads();
    }
    if (i < chunks) chunk_offsets[b * chunks + i] = carry + buf[tid] - v;
    carry += buf[kScanThreads - 1];
    __syncthreads();  // everyone has read buf before the next tile overwrites it
  }
  if (tid == 0) totals[b] = carry;
}

__global__ void compact_kernel(Select sel, const int* chunk_offsets, uint64_t* keys, int64_t key_stride) {
  __shared__ int warp_counts[kChunk / 32];
  const int64_t b = blockIdx.y, e = static_cast<int64_t>(blockIdx.x) * kChunk + threadIdx.x;
  float score = 0.f;
  int cls;
  const bool keep = e < sel.enumerated && candidate(sel.scores + b * sel.anchors * sel.nc, e, sel.nc,
                                                    sel.multi_label, sel.conf, &score, &cls);
  const unsigned ballot = __ballot_sync(0xffffffffu, keep);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_counts[warp] = __popc(ballot);
  __syncthreads();
  if (!keep) return;
  int rank = __popc(ballot & ((1u << lane) - 1u));
  for (int wi = 0; wi < warp; ++wi) rank += warp_counts[wi];
  const int64_t pos = chunk_offsets[b * sel.chunks + blockIdx.x] + rank;
  keys[b * key_stride + pos] =
      (static_cast<uint64_t>(__float_as_uint(score)) << 32) | (0xffffffffull - static_cast<uint64_t>(e));
}

__device__ __forceinline__ int64_t next_pow2(int64_t n) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

// One compare-exchange step (k, j) of the descending bitonic network over each image's first
// next_pow2(n_b) keys; images whose network is smaller than k are already sorted.
__global__ void bitonic_kernel(uint64_t* keys, int64_t key_stride, const int* totals, int64_t k, int64_t j) {
  const int64_t b = blockIdx.y;
  const int64_t size = next_pow2(totals[b]);
  if (k > size) return;
  uint64_t* kb = keys + b * key_stride;
  VT_GRID_STRIDE(i, size) {
    const int64_t l = i ^ j;
    if (l <= i) continue;
    const uint64_t x = kb[i], y = kb[l];
    const bool descending = (i & k) == 0;
    if (descending ? x < y : x > y) {
      kb[i] = y;
      kb[l] = x;
    }
  }
}

struct Cands {
  float* box;    // (B, M, 4)
  float* score;  // (B, M)
  int* cls;      // (B, M)
  int64_t m;     // M = min(max_nms, enumerated)
};

__global__ void gather_kernel(Select sel, const float* boxes, const uint64_t* keys, int64_t key_stride,
                              const int* totals, Cands c) {
  const int64_t b = blockIdx.y, i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= min(static_cast<int64_t>(totals[b]), c.m)) return;
  const uint64_t key = keys[b * key_stride + i];
  const int64_t e = static_cast<int64_t>(0xffffffffull - (key & 0xffffffffull));
  float score;
  int cls;
  candidate(sel.scores + b * sel.anchors * sel.nc, e, sel.nc, sel.multi_label, sel.conf, &score, &cls);
  const int64_t a = sel.multi_label ? e / sel.nc : e;
  const float* src = boxes + (b * sel.anchors + a) * 4;
  float* dst = c.box + (b * c.m + i) * 4;
  for (int q = 0; q < 4; ++q) dst[q] = src[q];
  c.score[b * c.m + i] = __uint_as_float(static_cast<unsigned>(key >> 32));
  c.cls[b * c.m + i] = cls;
}

// The CPU path's box_iou, operation for operation; the _rn intrinsics keep the compiler from
// fusing a multiply and an add into an FMA, which rounds differently.
__device__ __forceinline__ float box_iou(const float* a, const float* b) {
  const float iw = fmaxf(fminf(a[2], b[2]) - fmaxf(a[0], b[0]), 0.f);
  const float ih = fmaxf(fminf(a[3], b[3]) - fmaxf(a[1], b[1]), 0.f);
  const float inter = __fmul_rn(iw, ih);
  const float area_a = __fmul_rn(a[2] - a[0], a[3] - a[1]);
  const float area_b = __fmul_rn(b[2] - b[0], b[3] - b[1]);
  return __fdiv_rn(inter, __fsub_rn(__fadd_rn(area_a, area_b), inter));
}

// Image b; block (column block x, row block y) of 64 x 64 candidate pairs; only column blocks
// >= the row block are needed (and written), since bits are set for j > i only.
__global__ void mask_kernel(Cands c, const int* totals, int64_t b, float iou, bool agnostic, uint64_t* mask,
                            int64_t words) {
  __shared__ float col_box[kMaskBits * 4];
  __shared__ int col_cls[kMaskBits];
  const int64_t m = min(static_cast<int64_t>(totals[b]), c.m);
  const int64_t rb = blockIdx.y, cb = blockIdx.x;
  if (cb < rb || cb * kMaskBits >= m) return;  // whole block: no barrier is skipped by a part
  const int64_t j0 = cb * kMaskBits, ncol = min(static_cast<int64_t>(kMaskBits), m - j0);
  if (threadIdx.x < ncol) {
    const int64_t j = b * c.m + j0 + threadIdx.x;
    for (int q = 0; q < 4; ++q) col_box[threadIdx.x * 4 + q] = c.box[j * 4 + q];
    col_cls[threadIdx.x] = c.cls[j];
  }
  __syncthreads();
  const int64_t i = rb * kMaskBits + threadIdx.x;
  if (i >= m) return;
  float mine[4];
  for (int q = 0; q < 4; ++q) mine[q] = c.box[(b * c.m + i) * 4 + q];
  const int my_cls = c.cls[b * c.m + i];
  uint64_t bits = 0;
  for (int t = 0; t < ncol; ++t) {
    if (j0 + t <= i || (!agnostic && col_cls[t] != my_cls)) continue;
    if (box_iou(mine, col_box + t * 4) > iou) bits |= 1ull << t;
  }
  mask[i * words + cb] = bits;
}

// Image b, one block: the greedy pass over the mask rows. `removed` (shared, one bit per
// candidate) changes only in iterations that keep a box, between two barriers, so every
// thread reads the same bits and takes the same branches.
__global__ void suppress_kernel(const uint64_t* mask, int64_t words, const int* totals, int64_t max_cands,
                                int64_t b, int max_det, int* keep_idx, int* keep_count) {
  extern __shared__ uint64_t removed[];
  const int64_t m = min(static_cast<int64_t>(totals[b]), max_cands);
  const int64_t nw = (m + kMaskBits - 1) / kMaskBits;
  for (int64_t w = threadIdx.x; w < nw; w += blockDim.x) removed[w] = 0;
  __syncthreads();
  int kept = 0;
  for (int64_t i = 0; i < m && kept < max_det; ++i) {
    if ((removed[i / kMaskBits] >> (i % kMaskBits)) & 1ull) continue;
    if (threadIdx.x == 0) keep_idx[b * max_det + kept] = static_cast<int>(i);
    ++kept;
    __syncthreads();  // every thread has read bit i before any word changes
    const uint64_t* row = mask + i * words;
    for (int64_t w = i / kMaskBits + threadIdx.x; w < nw; w += blockDim.x) removed[w] |= row[w];
    __syncthreads();
  }
  if (threadIdx.x == 0) keep_count[b] = kept;
}

// out: (B, max_det, 6) rows (x1, y1, x2, y2, score, cls).
__global__ void emit_kernel(Cands c, const int* keep_idx, const int* keep_count, int max_det, float* out) {
  const int64_t b = blockIdx.y, k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= keep_count[b]) return;
  const int64_t i = b * c.m + keep_idx[b * max_det + k];
  float* row = out + (b * max_det + k) * 6;
  for (int q = 0; q < 4; ++q) row[q] = c.box[i * 4 + q];
  row[4] = c.score[i];
  row[5] = static_cast<float>(c.cls[i]);
}

// ------------------------------------------------------------------------ workspace layout

int64_t host_next_pow2(int64_t n) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

struct Layout {
  int64_t enumerated, chunks, key_stride, m, words;
  size_t chunk_counts, chunk_offsets, totals, keys, box, score, cls, mask, keep_idx, keep_count, out, end;
};

Layout layout(int64_t batch, int64_t anchors, int64_t nc, const NmsParams& p) {
  Layout l;
  l.enumerated = (p.multi_label && nc > 1) ? anchors * nc : anchors;
  l.chunks = std::max<int64_t>(1, (l.enumerated + kChunk - 1) / kChunk);
  l.key_stride = host_next_pow2(l.enumerated);
  l.m = std::max<int64_t>(1, std::min<int64_t>(p.max_nms, l.enumerated));
  l.words = (l.m + kMaskBits - 1) / kMaskBits;
  size_t at = 0;
  auto take = [&](int64_t count, size_t elem) {
    const size_t start = at;
    at += (static_cast<size_t>(count) * elem + 255) / 256 * 256;
    return start;
  };
  l.chunk_counts = take(batch * l.chunks, sizeof(int));
  l.chunk_offsets = take(batch * l.chunks, sizeof(int));
  l.totals = take(batch, sizeof(int));
  l.keys = take(batch * l.key_stride, sizeof(uint64_t));
  l.box = take(batch * l.m * 4, sizeof(float));
  l.score = take(batch * l.m, sizeof(float));
  l.cls = take(batch * l.m, sizeof(int));
  l.mask = take(l.m * l.words, sizeof(uint64_t));
  l.keep_idx = take(batch * p.max_det, sizeof(int));
  // keep_count and out are adjacent: one copy brings both to the host.
  l.keep_count = take(batch, sizeof(int));
  l.out = take(batch * p.max_det * 6, sizeof(float));
  l.end = at;
  return l;
}

}  // namespace

size_t detect_nms_workspace_bytes(int64_t batch, int64_t anchors, int64_t nc, const NmsParams& p) {
  return layout(batch, anchors, nc, p).end;
}

void detect_decode(const std::vector<Tensor>& outputs, const std::vector<int>& strides, const Tensor& boxes,
                   const Tensor& scores, Stream s) {
  const int64_t anchors = boxes.dim(1), nc = scores.dim(2);
  int64_t first = 0;
  for (size_t l = 0; l < outputs.size(); ++l) {
    const Tensor& o = outputs[l];
    const int64_t n = o.dim(0) * o.dim(1) * o.dim(2);
    dispatch("detect_decode", o.dtype(), [&](auto tag) {
      using T = decltype(tag);
      decode_kernel<T><<<grid_for(n), kThreads, 0, stream_of(s)>>>(
          o.data<T>(), o.dim(0), o.dim(1), o.dim(2), nc, anchors, first, static_cast<float>(strides[l]),
          boxes.data<float>(), scores.data<float>());
    });
    VT_LAUNCH_CHECK();
    first += o.dim(1) * o.dim(2);
  }
}

std::vector<std::vector<DetectedBox>> detect_nms(const Tensor& boxes, const Tensor& scores,
                                                 const NmsParams& p, const std::vector<ImageMap>& maps,
                                                 const Tensor& workspace, Stream s) {
  const int64_t batch = boxes.dim(0), anchors = boxes.dim(1), nc = scores.dim(2);
  std::vector<std::vector<DetectedBox>> result(batch);
  if (batch == 0 || anchors == 0) return result;
  VT_CHECK(batch <= 65535, "detect_nms: batch ", batch, " exceeds the 65535 images a CUDA grid spans");
  const Layout l = layout(batch, anchors, nc, p);
  char* base = static_cast<char*>(workspace.raw());
  int* chunk_counts = reinterpret_cast<int*>(base + l.chunk_counts);
  int* chunk_offsets = reinterpret_cast<int*>(base + l.chunk_offsets);
  int* totals = reinterpret_cast<int*>(base + l.totals);
  uint64_t* keys = reinterpret_cast<uint64_t*>(base + l.keys);
  uint64_t* mask = reinterpret_cast<uint64_t*>(base + l.mask);
  int* keep_idx = reinterpret_cast<int*>(base + l.keep_idx);
  int* keep_count = reinterpret_cast<int*>(base + l.keep_count);
  float* out = reinterpret_cast<float*>(base + l.out);
  const Cands cands{reinterpret_cast<float*>(base + l.box), reinterpret_cast<float*>(base + l.score),
                    reinterpret_cast<int*>(base + l.cls), l.m};
  const Select sel{scores.data<float>(),    anchors, nc, l.enumerated, l.chunks,
                   p.multi_label && nc > 1, p.conf};
  cudaStream_t st = stream_of(s);
  const unsigned ub = static_cast<unsigned>(batch);

  count_kernel<<<dim3(static_cast<unsigned>(l.chunks), ub), kChunk, 0, st>>>(sel, chunk_counts);
  VT_LAUNCH_CHECK();
  scan_kernel<<<ub, kScanThreads, 0, st>>>(chunk_counts, l.chunks, chunk_offsets, totals);
  VT_LAUNCH_CHECK();
  CUDA_CHECK(cudaMemsetAsync(keys, 0, static_cast<size_t>(batch * l.key_stride) * sizeof(uint64_t), st));
  compact_kernel<<<dim3(static_cast<unsigned>(l.chunks), ub), kChunk, 0, st>>>(sel, chunk_offsets, keys,
                                                                               l.key_stride);
  VT_LAUNCH_CHECK();
  const dim3 sort_grid(grid_for(l.key_stride), ub);
  for (int64_t k = 2; k <= l.key_stride; k <<= 1)
    for (int64_t j = k >> 1; j > 0; j >>= 1) {
      bitonic_kernel<<<sort_grid, kThreads, 0, st>>>(keys, l.key_stride, totals, k, j);
      VT_LAUNCH_CHECK();
    }
  gather_kernel<<<dim3(static_cast<unsigned>((l.m + kThreads - 1) / kThreads), ub), kThreads, 0, st>>>(
      sel, boxes.data<float>(), keys, l.key_stride, totals, cands);
  VT_LAUNCH_CHECK();
  const unsigned words = static_cast<unsigned>(l.words);
  for (int64_t b = 0; b < batch; ++b) {
    mask_kernel<<<dim3(words, words), kMaskBits, 0, st>>>(cands, totals, b, p.iou, p.agnostic, mask, l.words);
    VT_LAUNCH_CHECK();
    suppress_kernel<<<1, kThreads, static_cast<size_t>(l.words) * sizeof(uint64_t), st>>>(
        mask, l.words, totals, l.m, b, p.max_det, keep_idx, keep_count);
    VT_LAUNCH_CHECK();
  }
  emit_kernel<<<dim3(static_cast<unsigned>((p.max_det + kThreads - 1) / kThreads), ub), kThreads, 0, st>>>(
      cands, keep_idx, keep_count, p.max_det, out);
  VT_LAUNCH_CHECK();

  // keep_count (padded to 256 bytes) then out, in one copy.
  std::vector<char> host(l.end - l.keep_count);
  CUDA_CHECK(cudaMemcpyAsync(host.data(), base + l.keep_count, host.size(), cudaMemcpyDeviceToHost, st));
  CUDA_CHECK(cudaStreamSynchronize(st));
  const int* counts = reinterpret_cast<const int*>(host.data());
  const float* rows = reinterpret_cast<const float*>(host.data() + (l.out - l.keep_count));
  for (int64_t b = 0; b < batch; ++b) {
    result[b].reserve(counts[b]);
    for (int k = 0; k < counts[b]; ++k) {
      const float* r = rows + (b * p.max_det + k) * 6;
      result[b].push_back(map_detection(r[0], r[1], r[2], r[3], r[4], static_cast<int>(r[5]), maps[b]));
    }
  }
  return result;
}

}  // namespace vt::cuda
