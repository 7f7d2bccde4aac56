// MeanM2: count, mean and sum of squared deviations (M2) of some values, the partials of
// batch norm's one-pass statistics (channel_sum.cuh, batchnorm.cu). They combine exactly
// (Chan, Golub and LeVeque's pairwise update), so a variance comes from one pass over the
// data without the cancellation of sum(x^2) - sum(x)^2 / n, which loses everything in fp32
// once |mean| / std passes ~1e3. add() is Welford's update for one value. Host and device
// (VT_HD): the CPU tests replay the kernels' order of updates.
#pragma once

#include "layers/host_device.h"

namespace vt {

// Trivially constructible (it lives in __shared__ arrays): start from MeanM2{0, 0, 0}.
struct MeanM2 {
  float n, mean, m2;
  VT_HD void add(float v) {
    n += 1.f;
    const float d = v - mean;
    mean += d / n;
    m2 += d * (v - mean);
  }
};

VT_HD MeanM2 combine(const MeanM2& a, const MeanM2& b) {
  const float n = a.n + b.n;
  if (n == 0.f) return a;
  const float d = b.mean - a.mean, f = b.n / n;
  return {n, a.mean + d * f, a.m2 + b.m2 + d * d * a.n * f};
}

}  // namespace vt
