// Conv2d on the CPU: the CPU training path, so it goes through OpenBLAS.
//
// groups == 1: per image, im2col into the workspace, col: (Ho Wo, KH KW Cin), whose column
// (kh KW + kw) Cin + ci matches w viewed as (Cout, KH KW Cin); then
//   forward   y_n (Ho Wo, Cout) = col · w^T            (+ b, written into y_n first)
//   backward  dw (Cout, K)     += dy_n^T · col
//             dcol (Ho Wo, K)   = dy_n · w, then col2im adds dcol into dx_n
// A 1x1 / stride 1 / pad 0 conv skips im2col: x_n is already the (H W, Cin) matrix, with
// leading dimension xq (x's pitch: a channel view is read and written in place); y_n and
// dy_n have leading dimension yq likewise.
// groups > 1 (grouped and depthwise convs) runs as direct loops. Accumulation is in T.
#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <mutex>

#include "layers/conv2d.h"
#include "layers/op.h"

namespace vt::cpu {

namespace {
// The GEMMs here are one image's worth: OpenBLAS's own threads only contend with the OpenMP
// elementwise ops and the loader's threads (measured: more system time, no speed-up).
void single_threaded_blas() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}
}  // namespace

namespace {

// Row-major C (m, n) = alpha op(A) op(B) + beta C.
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n),
              int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
          const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n),
              int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

bool is_pointwise(const Conv2dDims& d) {
  return d.kh == 1 && d.kw == 1 && d.stride_h == 1 && d.stride_w == 1 && d.pad_h == 0 && d.pad_w == 0;
}

// BLAS takes int sizes; a single image's matrices must fit.
void check_blas_sizes(const char* op, const Conv2dDims& d) {
  const int64_t k = d.kh * d.kw * d.cin;
  VT_CHECK(d.ho * d.wo <= INT_MAX && d.h * d.w <= INT_MAX && k <= INT_MAX && d.cout <= INT_MAX, op,
           ": one image's GEMM exceeds BLAS int sizes (Ho Wo ", d.ho * d.wo, ", K ", k, ")");
}

// col (Ho Wo, KH KW Cin) from one image xn (H, W, Cin), positions xq apart; padding reads as zero.
template <class T>
void im2col(const Conv2dDims& d, const T* xn, T* col) {
  const int64_t k = d.kh * d.kw * d.cin;
  for (int64_t ho = 0; ho < d.ho; ++ho) {
    for (int64_t wo = 0; wo < d.wo; ++wo) {
      T* row = col + (ho * d.wo + wo) * k;
      for (int64_t kh = 0; kh < d.kh; ++kh) {
        const int64_t hi = ho * d.stride_h - d.pad_h + kh;
        for (int64_t kw = 0; kw < d.kw; ++kw) {
          const int64_t wi = wo * d.stride_w - d.pad_w + kw;
          T* dst = row + (kh * d.kw + kw) * d.cin;
          if (hi < 0 || hi >= d.h || wi < 0 || wi >= d.w)
            std::fill(dst, dst + d.cin, T(0));
          else
            std::memcpy(dst, xn + (hi * d.w + wi) * d.xq, sizeof(T) * d.cin);
        }
      }
    }
  }
}

// dxn (H, W, Cin), positions xq apart, += the im2col adjoint of col; padding positions are dropped.
template <class T>
void col2im_add(const Conv2dDims& d, const T* col, T* dxn) {
  const int64_t k = d.kh * d.kw * d.cin;
  for (int64_t ho = 0; ho < d.ho; ++ho) {
    for (int64_t wo = 0; wo < d.wo; ++wo) {
      const T* row = col + (ho * d.wo + wo) * k;
      for (int64_t kh = 0; kh < d.kh; ++kh) {
        const int64_t hi = ho * d.stride_h - d.pad_h + kh;
        if (hi < 0 || hi >= d.h) continue;
        for (int64_t kw = 0; kw < d.kw; ++kw) {
          const int64_t wi = wo * d.stride_w - d.pad_w + kw;
          if (wi < 0 || wi >= d.w) continue;
          const T* src = row + (kh * d.kw + kw) * d.cin;
          T* dst = dxn + (hi * d.w + wi) * d.xq;
          for (int64_t c = 0; c < d.cin; ++c) dst[c] += src[c];
        }
      }
    }
  }
}

template <class T>
void forward_gemm(const Conv2dDims& d, const T* x, const T* w, const T* b, T* y, T* col) {
  const int64_t k = d.kh * d.kw * d.cin, p = d.ho * d.wo;
  const bool pointwise = is_pointwise(d);
  for (int64_t n = 0; n < d.n; ++n) {
    const T* xn = x + n * d.h * d.w * d.xq;
    T* yn = y + n * p * d.yq;
    for (int64_t i = 0; i < p; ++i)
      for (int64_t co = 0; co < d.cout; ++co) yn[i * d.yq + co] = b ? b[co] : T(0);
    if (!pointwise) im2col(d, xn, col);
    gemm(false, true, p, d.cout, k, T(1), pointwise ? xn : col, pointwise ? d.xq : k, w, k, T(1), yn, d.yq);
  }
}

template <class T>
void backward_gemm(const Conv2dDims& d, const T* x, const T* w, const T* dy, T* dx, T* dw, T* col) {
  const int64_t k = d.kh * d.kw * d.cin, p = d.ho * d.wo;
  const bool pointwise = is_pointwise(d);
  for (int64_t n = 0; n < d.n; ++n) {
    const T* xn = x + n * d.h * d.w * d.xq;
    const T* dyn = dy + n * p * d.yq;
    if (dw) {
      if (!pointwise) im2col(d, xn, col);
      gemm(true, false, d.cout, k, p, T(1), dyn, d.yq, pointwise ? xn : col, pointwise ? d.xq : k, T(1), dw,
           k);
    }
    if (dx) {
      T* dxn = dx + n * d.h * d.w * d.xq;
      if (pointwise) {
        gemm(false, false, p, k, d.cout, T(1), dyn, d.yq, w, k, T(1), dxn, d.xq);
      } else {
        // col is free again: dw is done with this image's im2col.
        gemm(false, false, p, k, d.cout, T(1), dyn, d.yq, w, k, T(0), col, k);
        col2im_add(d, col, dxn);
      }
    }
  }
}

// groups > 1: direct loops. x (N, H, W, Cin), w (Cout, KH, KW, cin_g), y (N, Ho, Wo, Cout).
template <class T>
void forward_grouped(const Conv2dDims& d, const T* x, const T* w, const T* b, T* y) {
  for (int64_t n = 0; n < d.n; ++n) {
    for (int64_t ho = 0; ho < d.ho; ++ho) {
      for (int64_t wo = 0; wo < d.wo; ++wo) {
        T* yrow = y + ((n * d.ho + ho) * d.wo + wo) * d.yq;
        for (int64_t co = 0; co < d.cout; ++co) {
          const int64_t g = co / d.cout_g;
          T acc = b ? b[co] : T(0);
          for (int64_t kh = 0; kh < d.kh; ++kh) {
            const int64_t hi = ho * d.stride_h - d.pad_h + kh;
            if (hi < 0 || hi >= d.h) continue;
            for (int64_t kw = 0; kw < d.kw; ++kw) {
              const int64_t wi = wo * d.stride_w - d.pad_w + kw;
              if (wi < 0 || wi >= d.w) continue;
              const T* xp = x + ((n * d.h + hi) * d.w + wi) * d.xq + g * d.cin_g;
              const T* wp = w + ((co * d.kh + kh) * d.kw + kw) * d.cin_g;
              for (int64_t ci = 0; ci < d.cin_g; ++ci) acc += xp[ci] * wp[ci];
            }
          }
          yrow[co] = acc;
        }
      }
    }
  }
}

template <class T>
void backward_grouped(const Conv2dDims& d, const T* x, const T* w, const T* dy, T* dx, T* dw) {
  for (int64_t n = 0; n < d.n; ++n) {
    for (int64_t ho = 0; ho < d.ho; ++ho) {
      for (int64_t wo = 0; wo < d.wo; ++wo) {
        const T* dyrow = dy + ((n * d.ho + ho) * d.wo + wo) * d.yq;
        for (int64_t co = 0; co < d.cout; ++co) {
          const int64_t g = co / d.cout_g;
          const T gy = dyrow[co];
          for (int64_t kh = 0; kh < d.kh; ++kh) {
            const int64_t hi = ho * d.stride_h - d.pad_h + kh;
            if (hi < 0 || hi >= d.h) continue;
            for (int64_t kw = 0; kw < d.kw; ++kw) {
              const int64_t wi = wo * d.stride_w - d.pad_w + kw;
              if (wi < 0 || wi >= d.w) continue;
              const int64_t x_off = ((n * d.h + hi) * d.w + wi) * d.xq + g * d.cin_g;
              const int64_t w_off = ((co * d.kh + kh) * d.kw + kw) * d.cin_g;
              if (dw)
                for (int64_t ci = 0; ci < d.cin_g; ++ci) dw[w_off + ci] += gy * x[x_off + ci];
              if (dx)
                for (int64_t ci = 0; ci < d.cin_g; ++ci) dx[x_off + ci] += gy * w[w_off + ci];
            }
          }
        }
      }
    }
  }
}

}  // namespace

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor* b, const Tensor& y, const Conv2dParams& p,
                    const Tensor& workspace) {
  const char* op = "conv2d_forward";
  single_threaded_blas();
  const Conv2dDims d = conv2d_dims(x.shape(), w.shape(), p, x.pitch(), y.pitch());
  if (y.numel() == 0) return;
  dispatch_cpu(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* bp = b ? b->data<T>() : nullptr;  // param_dtype == T on the CPU
    if (d.groups == 1) {
      check_blas_sizes(op, d);
      forward_gemm(d, x.data<T>(), w.data<T>(), bp, y.data<T>(), static_cast<T*>(workspace.raw()));
    } else {
      forward_grouped(d, x.data<T>(), w.data<T>(), bp, y.data<T>());
    }
  });
}

void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor* dx, const Tensor* dw,
                     const Tensor* db, const Conv2dParams& p, const Tensor& workspace) {
  const char* op = "conv2d_backward";
  single_threaded_blas();
  const Conv2dDims d = conv2d_dims(x.shape(), w.shape(), p, x.pitch(), dy.pitch());
  if (dy.numel() == 0) return;
  dispatch_cpu(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* dyp = dy.data<T>();
    if (db) {
      T* dbp = db->data<T>();
      const int64_t rows = d.n * d.ho * d.wo;
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t co = 0; co < d.cout; ++co) dbp[co] += dyp[i * d.yq + co];
    }
    T* dxp = dx ? dx->data<T>() : nullptr;
    T* dwp = dw ? dw->data<T>() : nullptr;
    if (!dxp && !dwp) return;
    if (d.groups == 1) {
      check_blas_sizes(op, d);
      backward_gemm(d, x.data<T>(), w.data<T>(), dyp, dxp, dwp, static_cast<T*>(workspace.raw()));
    } else {
      backward_grouped(d, x.data<T>(), w.data<T>(), dyp, dxp, dwp);
    }
  });
}

}  // namespace vt::cpu
