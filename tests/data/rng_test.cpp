// The counter-based generator: Philox known answers, how the key and counter are built, the
// independence of streams, and the statistics of the derived draws.
#include "data/rng.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <vector>

namespace vt::data {
namespace {

TEST(Philox, KnownAnswers) {
  // Random123's kat_vectors for philox4x32 with 10 rounds: (counter, key) -> output.
  using C = std::array<uint32_t, 4>;
  EXPECT_EQ(philox4x32_10({0, 0, 0, 0}, {0, 0}), (C{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
            (C{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
            (C{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(SampleRng, DrawsAreTheCounterBlocksInOrder) {
  // Key = seed (low word first); counter = (block, stream, epoch, sample).
  const uint64_t seed = 0x0123456789abcdefull;
  SampleRng rng(seed, 7, 1234, Stream::augment);
  for (uint32_t block = 0; block < 3; ++block) {
    const auto want = philox4x32_10({block, 2, 7, 1234}, {0x89abcdef, 0x01234567});
    for (int lane = 0; lane < 4; ++lane) EXPECT_EQ(rng.next_u32(), want[lane]) << block << "," << lane;
  }
}

std::vector<uint32_t> draws(SampleRng rng, int n) {
  std::vector<uint32_t> v(n);
  for (auto& x : v) x = rng.next_u32();
  return v;
}

TEST(SampleRng, DeterministicAndStreamsIndependent) {
  const SampleKey key{42, 3, 17};
  EXPECT_EQ(draws(SampleRng(key, Stream::augment), 100), draws(SampleRng(42, 3, 17, Stream::augment), 100));
  // Changing any one coordinate, including only the seed's high word, gives another stream.
  const std::vector<std::vector<uint32_t>> streams = {
      draws(SampleRng(42, 3, 17, Stream::augment), 64),          draws(SampleRng(43, 3, 17, Stream::augment), 64),
      draws(SampleRng(42 + (1ull << 32), 3, 17, Stream::augment), 64), draws(SampleRng(42, 4, 17, Stream::augment), 64),
      draws(SampleRng(42, 3, 18, Stream::augment), 64),          draws(SampleRng(42, 3, 17, Stream::mosaic), 64),
      draws(SampleRng(42, 3, 17, Stream::shuffle), 64),          draws(SampleRng(42, 17, 3, Stream::augment), 64),
  };
  std::set<uint32_t> seen;
  for (const auto& s : streams)
    for (uint32_t x : s) seen.insert(x);
  EXPECT_EQ(seen.size(), streams.size() * 64);  // 512 draws of 2^32 values: a repeat is a bug

  // Neighbouring samples' uniform draws are uncorrelated: Pearson r over 20000 pairs has
  // standard deviation 1/sqrt(20000) = 0.007; 0.04 is over 5 sigma.
  const int n = 20000;
  double sa = 0, sb = 0, sab = 0, saa = 0, sbb = 0;
  for (int i = 0; i < n; ++i) {
    SampleRng a(1, 0, i, Stream::augment), b(1, 0, i + 1, Stream::augment);
    const double x = a.uniform(), y = b.uniform();
    sa += x, sb += y, sab += x * y, saa += x * x, sbb += y * y;
  }
  const double r = (sab / n - sa / n * sb / n) / std::sqrt((saa / n - sa * sa / n / n) * (sbb / n - sb * sb / n / n));
  EXPECT_LT(std::abs(r), 0.04);
}

TEST(SampleRng, UniformMomentsAndRange) {
  // U[0,1): mean 1/2, variance 1/12. Over n = 200000 draws the mean's standard deviation is
  // sqrt(1/12/n) = 6.5e-4 and the variance estimate's sqrt(1/180/n) = 1.7e-4: bounds of
  // about 6 sigma.
  SampleRng rng(5, 0, 0, Stream::augment);
  const int n = 200000;
  double s = 0, ss = 0;
  float lo = 1, hi = 0;
  for (int i = 0; i < n; ++i) {
    const float u = rng.uniform();
    s += u, ss += double(u) * u;
    lo = std::min(lo, u), hi = std::max(hi, u);
  }
  const double mean = s / n, var = ss / n - mean * mean;
  EXPECT_NEAR(mean, 0.5, 0.004);
  EXPECT_NEAR(var, 1.0 / 12, 0.001);
  EXPECT_GE(lo, 0.f);
  EXPECT_LT(hi, 1.f);
  for (int i = 0; i < 1000; ++i) {
    const float u = rng.uniform(-3.f, 5.f);
    EXPECT_TRUE(u >= -3.f && u < 5.f) << u;
  }
}

TEST(SampleRng, BelowIsUniform) {
  // Chi-square over 10 buckets (9 degrees of freedom): 40 has probability below 1e-5.
  SampleRng rng(9, 1, 2, Stream::mosaic);
  const int n = 100000;
  std::vector<int> count(10);
  for (int i = 0; i < n; ++i) ++count[rng.below(10)];
  double chi2 = 0;
  for (int c : count) chi2 += (c - n / 10.0) * (c - n / 10.0) / (n / 10.0);
  EXPECT_LT(chi2, 40);

  // n = 3 * 2^30 is where a plain modulo is most biased (the lowest third twice as likely).
  const uint32_t big = 3u << 30;
  std::vector<int> third(3);
  for (int i = 0; i < 30000; ++i) ++third[rng.below(big) >> 30];
  for (int c : third) EXPECT_NEAR(c, 10000, 500);  // sd = 82
  for (int i = 0; i < 100; ++i) EXPECT_EQ(rng.below(1), 0u);
  EXPECT_THROW(rng.below(0), Error);
}

}  // namespace
}  // namespace vt::data
