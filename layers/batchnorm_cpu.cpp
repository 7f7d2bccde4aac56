// Batch norm on the CPU: plain loops, the reference for the CUDA kernels.
//
// Activations are (N, H, W, C) row-major, so flat index i = m * C + c with m over the
// M = N*H*W positions; y, dy and the residual's r and dr may be channel views, element
// (m, c) at m * pitch + c. Statistics are two-pass (mean, then the variance about it) and every
// sum is accumulated in double even for f32 storage: this is the oracle, so it is as
// accurate as cheaply possible; results are rounded to the storage type once, at the end.
#include <cmath>
#include <vector>

#include "layers/batchnorm.h"
#include "layers/op.h"

namespace vt::cpu {
namespace {

// M = N*H*W, the positions each channel's statistics run over.
int64_t positions(const Tensor& x) {
  return x.dim(0) * x.dim(1) * x.dim(2);
}

double sigmoid(double u) {
  return 1.0 / (1.0 + std::exp(-u));
}

// The fused activation's value at the BN output u: silu(u) with p.silu, else u itself.
double act_value(const BatchNormParams& p, double u) {
  return p.silu ? u * sigmoid(u) : u;
}

// The fused residual's element (m, c) (p.residual), or 0 without one.
template <class T>
double residual_at(const BatchNormParams& p, int64_t m, int64_t c) {
  return p.residual ? double(p.residual->data<T>()[m * p.residual->pitch() + c]) : 0.0;
}

// The per-channel sums of the backward passes, then the gradients. mean and invstd (C)
// define xhat = (x - mean) * invstd; `through_stats` selects the training dx, which also
// flows through the batch mean and variance, over the eval dx of a fixed affine map. With
// p.silu the incoming dy is first taken through the SiLU at u = gamma xhat + beta; with
// p.dresidual dy is also added into it.
template <class T>
void backward_impl(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& beta,
                   const std::vector<double>& mean, const std::vector<double>& invstd, bool through_stats,
                   const Tensor* dx, const Tensor* dgamma, const Tensor* dbeta, const BatchNormParams& p) {
  const int64_t m_count = positions(x), c_count = x.dim(3), dyq = dy.pitch();
  const T* xp = x.data<T>();
  const T* dyp = dy.data<T>();
  const T* gam = gamma.data<T>();
  const T* bet = beta.data<T>();
  // g(i): the gradient at the BN output; with p.silu dy taken through the SiLU once, into
  // silu_g (M, C), else dy itself (no copy).
  std::vector<double> silu_g;
  if (p.silu) {
    silu_g.resize(static_cast<size_t>(m_count * c_count));
    for (int64_t m = 0; m < m_count; ++m) {
      for (int64_t c = 0; c < c_count; ++c) {
        const int64_t i = m * c_count + c;
        const double u = (double(xp[i]) - mean[c]) * invstd[c] * double(gam[c]) + double(bet[c]);
        const double s = sigmoid(u);
        silu_g[i] = double(dyp[m * dyq + c]) * s * (1.0 + u * (1.0 - s));
      }
    }
  }
  auto g = [&](int64_t m, int64_t c) { return p.silu ? silu_g[m * c_count + c] : double(dyp[m * dyq + c]); };
  std::vector<double> sum_dy(c_count, 0.0), sum_dy_xhat(c_count, 0.0);
  for (int64_t m = 0; m < m_count; ++m) {
    for (int64_t c = 0; c < c_count; ++c) {
      const int64_t i = m * c_count + c;
      const double xhat = (double(xp[i]) - mean[c]) * invstd[c];
      sum_dy[c] += g(m, c);
      sum_dy_xhat[c] += g(m, c) * xhat;
    }
  }
  for (int64_t c = 0; c < c_count; ++c) {
    if (dgamma) dgamma->data<T>()[c] = T(double(dgamma->data<T>()[c]) + sum_dy_xhat[c]);
    if (dbeta) dbeta->data<T>()[c] = T(double(dbeta->data<T>()[c]) + sum_dy[c]);
  }
  if (!dx) return;
  T* dxp = dx->data<T>();
  for (int64_t m = 0; m < m_count; ++m) {
    for (int64_t c = 0; c < c_count; ++c) {
      const int64_t i = m * c_count + c;
      const double k = double(gam[c]) * invstd[c];
      double d;
      if (through_stats) {
        const double xhat = (double(xp[i]) - mean[c]) * invstd[c];
        d = k * (g(m, c) - sum_dy[c] / m_count - xhat * sum_dy_xhat[c] / m_count);
      } else {
        d = k * g(m, c);
      }
      dxp[i] = T(double(dxp[i]) + d);
    }
  }
  // The fused residual's gradient: dy itself, added (an overwritten dr was zeroed).
  if (p.dresidual) {
    T* drp = p.dresidual->data<T>();
    const int64_t drq = p.dresidual->pitch();
    for (int64_t m = 0; m < m_count; ++m)
      for (int64_t c = 0; c < c_count; ++c)
        drp[m * drq + c] = T(double(drp[m * drq + c]) + double(dyp[m * dyq + c]));
  }
}

}  // namespace

void batchnorm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                             const Tensor& running_mean, const Tensor& running_var, const Tensor& save_mean,
                             const Tensor& save_invstd, const BatchNormParams& p) {
  const int64_t m_count = positions(x), c_count = x.dim(3);
  if (m_count == 0 || c_count == 0) return;
  dispatch_cpu("batchnorm_forward_train", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    std::vector<double> mean(c_count, 0.0), var(c_count, 0.0), invstd(c_count);
    for (int64_t m = 0; m < m_count; ++m)
      for (int64_t c = 0; c < c_count; ++c) mean[c] += double(xp[m * c_count + c]);
    for (double& v : mean) v /= double(m_count);
    for (int64_t m = 0; m < m_count; ++m) {
      for (int64_t c = 0; c < c_count; ++c) {
        const double d = double(xp[m * c_count + c]) - mean[c];
        var[c] += d * d;
      }
    }
    const double momentum = p.momentum;
    // M == 1 has no unbiased variance; the biased one (0) is used instead (see batchnorm.h).
    const double unbias = m_count > 1 ? double(m_count) / double(m_count - 1) : 1.0;
    for (int64_t c = 0; c < c_count; ++c) {
      var[c] /= double(m_count);
      invstd[c] = 1.0 / std::sqrt(var[c] + double(p.eps));
      save_mean.data<T>()[c] = T(mean[c]);
      save_invstd.data<T>()[c] = T(invstd[c]);
      T& rm = running_mean.data<T>()[c];
      T& rv = running_var.data<T>()[c];
      rm = T((1 - momentum) * double(rm) + momentum * mean[c]);
      rv = T((1 - momentum) * double(rv) + momentum * var[c] * unbias);
    }
    const T* gam = gamma.data<T>();
    const T* bet = beta.data<T>();
    const int64_t yq = y.pitch();
    for (int64_t m = 0; m < m_count; ++m) {
      for (int64_t c = 0; c < c_count; ++c) {
        const int64_t i = m * c_count + c;
        const double u = (double(xp[i]) - mean[c]) * invstd[c] * double(gam[c]) + double(bet[c]);
        yp[m * yq + c] = T(residual_at<T>(p, m, c) + act_value(p, u));
      }
    }
  });
}

void batchnorm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                            const Tensor& running_mean, const Tensor& running_var, const Tensor& y,
                            const BatchNormParams& p) {
  const int64_t m_count = positions(x), c_count = x.dim(3);
  if (m_count == 0 || c_count == 0) return;
  dispatch_cpu("batchnorm_forward_eval", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    const T* gam = gamma.data<T>();
    const T* bet = beta.data<T>();
    const T* rm = running_mean.data<T>();
    const T* rv = running_var.data<T>();
    const int64_t yq = y.pitch();
    for (int64_t m = 0; m < m_count; ++m) {
      for (int64_t c = 0; c < c_count; ++c) {
        const int64_t i = m * c_count + c;
        const double invstd = 1.0 / std::sqrt(double(rv[c]) + double(p.eps));
        const double u = (double(xp[i]) - double(rm[c])) * invstd * double(gam[c]) + double(bet[c]);
        yp[m * yq + c] = T(residual_at<T>(p, m, c) + act_value(p, u));
      }
    }
  });
}

void batchnorm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& beta,
                        const Tensor& save_mean, const Tensor& save_invstd, const Tensor* dx,
                        const Tensor* dgamma, const Tensor* dbeta, const BatchNormParams& p) {
  const int64_t m_count = positions(x), c_count = x.dim(3);
  if (m_count == 0 || c_count == 0) return;
  dispatch_cpu("batchnorm_backward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    std::vector<double> mean(c_count), invstd(c_count);
    for (int64_t c = 0; c < c_count; ++c) {
      mean[c] = double(save_mean.data<T>()[c]);
      invstd[c] = double(save_invstd.data<T>()[c]);
    }
    backward_impl<T>(x, dy, gamma, beta, mean, invstd, /*through_stats=*/true, dx, dgamma, dbeta, p);
  });
}

void batchnorm_backward_eval(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& beta,
                             const Tensor& running_mean, const Tensor& running_var, const Tensor* dx,
                             const Tensor* dgamma, const Tensor* dbeta, const BatchNormParams& p) {
  const int64_t m_count = positions(x), c_count = x.dim(3);
  if (m_count == 0 || c_count == 0) return;
  dispatch_cpu("batchnorm_backward_eval", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    std::vector<double> mean(c_count), invstd(c_count);
    for (int64_t c = 0; c < c_count; ++c) {
      mean[c] = double(running_mean.data<T>()[c]);
      invstd[c] = 1.0 / std::sqrt(double(running_var.data<T>()[c]) + double(p.eps));
    }
    backward_impl<T>(x, dy, gamma, beta, mean, invstd, /*through_stats=*/false, dx, dgamma, dbeta, p);
  });
}

}  // namespace vt::cpu
