// Box arithmetic of the YOLOv8 head, shared by the loss (CPU and CUDA) and the
// post-processing decode: the DFL expectation, the distance <-> box conversions, CIoU with
// its gradient, the one-side DFL term, and BCE with logits.
//
// Every function is a template on the arithmetic type T (float or double) and compiles for
// the host and, under nvcc, for the device (VT_HD). Boxes are T[4] = (x1, y1, x2, y2);
// distances are T[4] = (left, top, right, bottom) from an anchor point. The formulas are
// Ultralytics 8.x's to the letter (utils/metrics.py bbox_iou, utils/tal.py dist2bbox and
// bbox2dist, utils/loss.py DFLoss), including the order of the floating-point operations
// where that order is visible in their source; detect_loss.h lists them all.
#pragma once

#include <math.h>

#ifdef __CUDACC__
#define VT_HD __host__ __device__ __forceinline__
#else
#define VT_HD inline
#endif

namespace vt::boxmath {

// The libm function of T's precision, on the host and the device alike.
VT_HD float m_exp(float x) {
  return expf(x);
}
VT_HD double m_exp(double x) {
  return exp(x);
}
VT_HD float m_log(float x) {
  return logf(x);
}
VT_HD double m_log(double x) {
  return log(x);
}
VT_HD float m_log1p(float x) {
  return log1pf(x);
}
VT_HD double m_log1p(double x) {
  return log1p(x);
}
VT_HD float m_atan(float x) {
  return atanf(x);
}
VT_HD double m_atan(double x) {
  return atan(x);
}
VT_HD float m_pow(float x, float y) {
  return powf(x, y);
}
VT_HD double m_pow(double x, double y) {
  return pow(x, y);
}

template <class T>
VT_HD T m_max(T a, T b) {
  return a > b ? a : b;
}
template <class T>
VT_HD T m_min(T a, T b) {
  return a < b ? a : b;
}

template <class T>
VT_HD T sigmoid(T x) {
  // Split by sign so that exp never overflows.
  if (x >= T(0)) return T(1) / (T(1) + m_exp(-x));
  const T e = m_exp(x);
  return e / (T(1) + e);
}

// BCE with logits, torch's binary_cross_entropy_with_logits for one element:
//   (1 - t) x + log(1 + exp(-x)), written stably as max(x, 0) - x t + log1p(exp(-|x|)).
// Its derivative in x is sigmoid(x) - t.
template <class T>
VT_HD T bce_with_logits(T x, T t) {
  const T ax = x >= T(0) ? x : -x;
  return m_max(x, T(0)) - x * t + m_log1p(m_exp(-ax));
}

// p = softmax(x) over n bins; returns the expectation sum_i p_i i (Ultralytics'
// softmax(3).matmul(proj), proj = 0..n-1). p may be null when only the expectation is wanted.
template <class T>
VT_HD T softmax_expectation(const T* x, int n, T* p) {
  T m = x[0];
  for (int i = 1; i < n; ++i) m = m_max(m, x[i]);
  T s = 0;
  for (int i = 0; i < n; ++i) s += m_exp(x[i] - m);
  T d = 0;
  for (int i = 0; i < n; ++i) {
    const T pi = m_exp(x[i] - m) / s;
    if (p) p[i] = pi;
    d += pi * T(i);
  }
  return d;
}

// The DFL expectation of one side: its distance in grid units (what the decode needs).
template <class T>
VT_HD T dfl_expectation(const T* x, int n) {
  return softmax_expectation(x, n, static_cast<T*>(nullptr));
}

// dist2bbox(xywh=False): box = (ax - l, ay - t, ax + r, ay + b).
template <class T>
VT_HD void dist_to_box(T ax, T ay, const T* dist, T* box) {
  box[0] = ax - dist[0];
  box[1] = ay - dist[1];
  box[2] = ax + dist[2];
  box[3] = ay + dist[3];
}

// bbox2dist: dist = (ax - x1, ay - y1, x2 - ax, y2 - ay), each clamped to [0, hi]; the
// loss uses hi = reg_max - 1 - 0.01 (see detect_loss.h).
template <class T>
VT_HD void box_to_dist(T ax, T ay, const T* box, T hi, T* dist) {
  const T d[4] = {ax - box[0], ay - box[1], box[2] - ax, box[3] - ay};
  for (int k = 0; k < 4; ++k) dist[k] = m_min(m_max(d[k], T(0)), hi);
}

// select_candidates_in_gts for one pair: min(ax - x1, ay - y1, x2 - ax, y2 - ay) > eps.
template <class T>
VT_HD bool point_in_box(T ax, T ay, const T* box, T eps) {
  const T d = m_min(m_min(ax - box[0], ay - box[1]), m_min(box[2] - ax, box[3] - ay));
  return d > eps;
}

// d min(a, b) / da and d max(a, b) / da with torch's tie rule (a tie splits the gradient).
template <class T>
VT_HD T dmin_da(T a, T b) {
  return a < b ? T(1) : (a == b ? T(0.5) : T(0));
}
template <class T>
VT_HD T dmax_da(T a, T b) {
  return a > b ? T(1) : (a == b ? T(0.5) : T(0));
}

// CIoU of b1 against b2, Ultralytics' bbox_iou(b1, b2, xywh=False, CIoU=True, eps):
//   w1 = x2 - x1, h1 = y2 - y1 + eps (box 2 alike)
//   inter = clamp(min(x2, X2) - max(x1, X1), 0) * clamp(min(y2, Y2) - max(y1, Y1), 0)
//   union = w1 h1 + w2 h2 - inter + eps,  iou = inter / union
//   cw = max(x2, X2) - min(x1, X1), ch = max(y2, Y2) - min(y1, Y1), c2 = cw^2 + ch^2 + eps
//   rho2 = ((X1 + X2 - x1 - x2)^2 + (Y1 + Y2 - y1 - y2)^2) / 4
//   v = 4 / pi^2 (atan(w2 / h2) - atan(w1 / h1))^2,  alpha = v / (v - iou + (1 + eps))
//   ciou = iou - (rho2 / c2 + v alpha)
// The value is symmetric in b1, b2 up to rounding (the loss keeps Ultralytics' argument
// order). When d1 is not null it receives d ciou / d b1 as autograd computes it: alpha
// held constant (Ultralytics evaluates it under no_grad), clamp passing the gradient where
// its input is >= 0, and min/max ties splitting it in half.
template <class T>
VT_HD T ciou(const T* b1, const T* b2, T eps, T* d1) {
  const T x1 = b1[0], y1 = b1[1], x2 = b1[2], y2 = b1[3];
  const T X1 = b2[0], Y1 = b2[1], X2 = b2[2], Y2 = b2[3];
  const T w1 = x2 - x1, h1 = y2 - y1 + eps;
  const T w2 = X2 - X1, h2 = Y2 - Y1 + eps;
  const T ix = m_min(x2, X2) - m_max(x1, X1);
  const T iy = m_min(y2, Y2) - m_max(y1, Y1);
  const T ixc = m_max(ix, T(0)), iyc = m_max(iy, T(0));
  const T inter = ixc * iyc;
  const T uni = w1 * h1 + w2 * h2 - inter + eps;
  const T iou = inter / uni;
  const T cw = m_max(x2, X2) - m_min(x1, X1);
  const T ch = m_max(y2, Y2) - m_min(y1, Y1);
  const T c2 = cw * cw + ch * ch + eps;
  const T dx = X1 + X2 - x1 - x2;
  const T dy = Y1 + Y2 - y1 - y2;
  const T rho2 = (dx * dx + dy * dy) / T(4);
  const T k = T(4.0 / (3.14159265358979323846 * 3.14159265358979323846));
  const T r1 = w1 / h1;
  const T da = m_atan(w2 / h2) - m_atan(r1);
  const T v = k * (da * da);
  const T alpha = v / (v - iou + (T(1) + eps));
  const T value = iou - (rho2 / c2 + v * alpha);
  if (d1) {
    // Index order x1, y1, x2, y2 throughout.
    const T gx = ix >= T(0) ? T(1) : T(0), gy = iy >= T(0) ? T(1) : T(0);
    const T dinter[4] = {-iyc * gx * dmax_da(x1, X1), -ixc * gy * dmax_da(y1, Y1), iyc * gx * dmin_da(x2, X2),
                         ixc * gy * dmin_da(y2, Y2)};
    const T dwh[4] = {-h1, -w1, h1, w1};  // d(w1 h1)
    const T drho[4] = {-dx / T(2), -dy / T(2), -dx / T(2), -dy / T(2)};
    const T dc2[4] = {-T(2) * cw * dmin_da(x1, X1), -T(2) * ch * dmin_da(y1, Y1), T(2) * cw * dmax_da(x2, X2),
                      T(2) * ch * dmax_da(y2, Y2)};
    const T dr1[4] = {-T(1) / h1, r1 / h1, T(1) / h1, -r1 / h1};  // d(w1 / h1)
    const T dv_dr1 = k * T(2) * da * (-T(1) / (T(1) + r1 * r1));
    for (int i = 0; i < 4; ++i) {
      const T diou = (dinter[i] - iou * (dwh[i] - dinter[i])) / uni;
      const T dterm = drho[i] / c2 - rho2 * dc2[i] / (c2 * c2);
      d1[i] = diou - dterm - alpha * dv_dr1 * dr1[i];
    }
  }
  return value;
}

// One side's DFL term, Ultralytics' DFLoss for a target t already clamped to
// [0, n - 1 - 0.01]: tl = floor(t), tr = tl + 1, wl = tr - t, wr = 1 - wl,
//   loss = CE(x, tl) wl + CE(x, tr) wr,   CE(x, k) = logsumexp(x) - x_k.
// When dx is not null, dx[i] += scale * d loss / d x_i = scale (wl (p_i - [i == tl]) +
// wr (p_i - [i == tr])), p = softmax(x).
template <class T>
VT_HD T dfl_side(const T* x, int n, T t, T* dx, T scale) {
  const int tl = static_cast<int>(t);  // t >= 0: truncation is floor, as torch's .long()
  const int tr = tl + 1;
  const T wl = T(tr) - t;
  const T wr = T(1) - wl;
  T m = x[0];
  for (int i = 1; i < n; ++i) m = m_max(m, x[i]);
  T s = 0;
  for (int i = 0; i < n; ++i) s += m_exp(x[i] - m);
  const T lse = m + m_log(s);
  if (dx) {
    for (int i = 0; i < n; ++i) {
      const T p = m_exp(x[i] - m) / s;
      dx[i] += scale * (wl * (p - (i == tl ? T(1) : T(0))) + wr * (p - (i == tr ? T(1) : T(0))));
    }
  }
  return (lse - x[tl]) * wl + (lse - x[tr]) * wr;
}

}  // namespace vt::boxmath
