// Test helpers (see test_util.h).
#include "tests/test_util.h"

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <cmath>
#include <random>

#include "layers/check.h"

namespace vt::test {

Tensor random_tensor(const Shape& s, DType dt, uint64_t seed, double lo, double hi) {
  Tensor t = Tensor::empty(s, DType::kF64, Device::kCPU);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<double>()[i] = u(rng);
  return dt == DType::kF64 ? t : t.to(Device::kCPU, dt);
}

Tensor random_away_from_zero(const Shape& s, DType dt, uint64_t seed, double gap) {
  Tensor t = random_tensor(s, DType::kF64, seed);
  for (int64_t i = 0; i < t.numel(); ++i) {
    double& v = t.data<double>()[i];
    v = v < 0 ? v - gap : v + gap;
  }
  return dt == DType::kF64 ? t : t.to(Device::kCPU, dt);
}

Tensor from_values(const Shape& s, const std::vector<double>& v, DType dt) {
  VT_CHECK(static_cast<int64_t>(v.size()) == s.numel(), "from_values: ", v.size(), " values for ", s.str());
  Tensor t = Tensor::empty(s, DType::kF64, Device::kCPU);
  std::copy(v.begin(), v.end(), t.data<double>());
  return dt == DType::kF64 ? t : t.to(Device::kCPU, dt);
}

std::vector<double> values(const Tensor& t) {
  Tensor c = t.to(Device::kCPU, DType::kF64);
  return std::vector<double>(c.data<double>(), c.data<double>() + c.numel());
}

Tensor round_to_bf16(const Tensor& t) {
  return t.to(Device::kCPU, DType::kBF16).to(Device::kCPU, t.dtype());
}

void expect_close(const Tensor& actual, const Tensor& expected, double atol, double rtol,
                  const std::string& what) {
  ASSERT_EQ(actual.shape(), expected.shape()) << what << ": " << actual.shape().str() << " vs "
                                              << expected.shape().str();
  const std::vector<double> a = values(actual), e = values(expected);
  int64_t bad = 0, worst = -1;
  double worst_excess = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double err = std::abs(a[i] - e[i]), allowed = atol + rtol * std::abs(e[i]);
    if (!(err <= allowed)) {  // also catches NaN
      ++bad;
      if (worst < 0 || !(err - allowed <= worst_excess)) {
        worst = static_cast<int64_t>(i);
        worst_excess = err - allowed;
      }
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << a.size() << " elements out of tolerance (atol "
                    << atol << ", rtol " << rtol << "); worst at flat index " << worst << ": got "
                    << (worst >= 0 ? a[worst] : 0) << ", expected " << (worst >= 0 ? e[worst] : 0);
}

void check_gradients(const std::vector<Tensor>& inputs, const std::vector<std::string>& names,
                     const std::function<std::vector<Tensor>()>& forward,
                     const std::function<void(const std::vector<Tensor>& dys, std::vector<Tensor>& grads)>& backward,
                     const GradCheckOptions& opt) {
  for (const Tensor& x : inputs) ASSERT_EQ(x.dtype(), DType::kF64) << "gradient checks run in f64";
  std::vector<Tensor> ys = forward();
  std::vector<Tensor> rs;
  for (size_t k = 0; k < ys.size(); ++k) rs.push_back(random_tensor(ys[k].shape(), DType::kF64, 1000 + k));
  auto loss = [&]() {
    const std::vector<Tensor> y = forward();
    double l = 0;
    for (size_t k = 0; k < y.size(); ++k)
      for (int64_t i = 0; i < y[k].numel(); ++i) l += y[k].data<double>()[i] * rs[k].data<double>()[i];
    return l;
  };
  std::vector<Tensor> grads;
  for (const Tensor& x : inputs) grads.push_back(Tensor::empty(x.shape(), DType::kF64, Device::kCPU));
  backward(rs, grads);

  std::mt19937_64 rng(7);
  for (size_t j = 0; j < inputs.size(); ++j) {
    const int64_t n = inputs[j].numel();
    std::vector<int64_t> probes(n);
    for (int64_t i = 0; i < n; ++i) probes[i] = i;
    if (n > opt.max_probes_per_input) {
      std::shuffle(probes.begin(), probes.end(), rng);
      probes.resize(opt.max_probes_per_input);
    }
    int failures = 0;
    for (int64_t i : probes) {
      double& v = inputs[j].data<double>()[i];
      const double saved = v;
      v = saved + opt.h;
      const double lp = loss();
      v = saved - opt.h;
      const double lm = loss();
      v = saved;
      const double numeric = (lp - lm) / (2 * opt.h);
      const double analytic = grads[j].data<double>()[i];
      if (!(std::abs(numeric - analytic) <= opt.atol + opt.rtol * std::abs(numeric)) && failures++ < 5) {
        ADD_FAILURE() << "d/d " << names[j] << "[" << i << "]: analytic " << analytic << ", numeric "
                      << numeric;
      }
    }
    EXPECT_EQ(failures, 0) << names[j] << ": " << failures << " of " << probes.size()
                           << " probed gradient elements are wrong";
  }
}

void expect_error(const std::function<void()>& f, const std::vector<std::string>& needles) {
  try {
    f();
  } catch (const Error& e) {
    for (const std::string& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << "missing '" << n << "' in: " << e.what();
    return;
  }
  ADD_FAILURE() << "no vt::Error thrown; expected one mentioning '" << needles.front() << "'";
}

bool has_gpu() { return cuda_device_count() > 0; }

TempDir::TempDir(const std::string& prefix) {
  std::string tmpl = "/tmp/" + prefix + "XXXXXX";
  VT_CHECK(mkdtemp(tmpl.data()) != nullptr, "mkdtemp failed for ", tmpl);
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace vt::test
