// The sampler: the global sample stream does not depend on the number of ranks, each epoch
// is a permutation minus its dropped tail, resume is exact, validation covers every sample.
#include "data/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <set>

namespace vt::data {
namespace {

// The global stream as `world` simulated ranks see it: per step, the ranks' slices in rank order.
std::vector<SampleRef> global_stream(int64_t n, int64_t batch, int world, int steps, const LoaderState& start = {}) {
  std::vector<Sampler> ranks;
  for (int r = 0; r < world; ++r) {
    ranks.emplace_back(n, batch, world, r, 2024);
    ranks.back().seek(start);
  }
  std::vector<SampleRef> out;
  for (int s = 0; s < steps; ++s)
    for (auto& rank : ranks) {
      const auto slice = rank.next();
      EXPECT_EQ(int64_t(slice.size()), batch / world);
      out.insert(out.end(), slice.begin(), slice.end());
    }
  for (auto& rank : ranks) EXPECT_EQ(rank.state(), ranks[0].state());
  return out;
}

TEST(Sampler, GlobalStreamIsTheSameFor1_2And4Ranks) {
  // 103 samples, global batch 12: 8 steps per epoch, 7 dropped; 20 steps cross two epochs.
  const auto one = global_stream(103, 12, 1, 20);
  EXPECT_TRUE(one == global_stream(103, 12, 2, 20));
  EXPECT_TRUE(one == global_stream(103, 12, 4, 20));
  ASSERT_EQ(one.size(), 240u);
  EXPECT_EQ(one[95].key.epoch, 0);
  EXPECT_EQ(one[96].key.epoch, 1);
  EXPECT_EQ(one[96].key.position, 0);
  EXPECT_EQ(one[191].key.position, 95);
}

// Micro-steps: (N ranks, k micro-steps) deals out the same micro-batches as any other
// decomposition with the same N k: micro-batch m = j N + r of a step holds the same samples.
TEST(Sampler, MicroStepsDealTheSameMicroBatches) {
  const int64_t n = 103, batch = 12;
  // micro[m] for every step, with 1 rank x 4 micro-steps, 2 x 2, and 4 x 1.
  auto micro_batches = [&](int world, int k) {
    std::vector<Sampler> ranks;
    for (int r = 0; r < world; ++r) ranks.emplace_back(n, batch, world, r, 7, k);
    std::vector<std::vector<SampleRef>> out;
    for (int step = 0; step < 20; ++step) {
      std::vector<std::vector<SampleRef>> m(4);
      for (int j = 0; j < k; ++j)
        for (int r = 0; r < world; ++r) {
          EXPECT_EQ(ranks[r].rank_batch(), 3);
          m[j * world + r] = ranks[r].next();
          // The state moves only after the last micro-step.
          EXPECT_EQ(ranks[r].state().cursor, j + 1 < k ? (step % 8) * batch : ((step + 1) % 8) * batch);
        }
      out.insert(out.end(), m.begin(), m.end());
    }
    return out;
  };
  const auto a = micro_batches(1, 4);
  EXPECT_TRUE(a == micro_batches(2, 2));
  EXPECT_TRUE(a == micro_batches(4, 1));
  // And their concatenation is the plain global stream.
  std::vector<SampleRef> flat;
  for (const auto& m : a) flat.insert(flat.end(), m.begin(), m.end());
  Sampler one(n, batch, 1, 0, 7);
  std::vector<SampleRef> plain;
  for (int step = 0; step < 20; ++step) {
    const auto s = one.next();
    plain.insert(plain.end(), s.begin(), s.end());
  }
  EXPECT_TRUE(flat == plain);
  EXPECT_THROW(Sampler(n, batch, 2, 0, 7, 4), Error);  // 12 does not split into 2 x 4
}

TEST(Sampler, EachEpochIsItsOrderMinusTheTail) {
  const int64_t n = 103, batch = 12;
  Sampler s(n, batch, 1, 0, 7);
  EXPECT_EQ(s.steps_per_epoch(), 8);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    const auto order = epoch_order(n, 7, epoch);
    std::vector<int64_t> seen;
    for (int step = 0; step < 8; ++step)
      for (const SampleRef& r : s.next()) {
        EXPECT_EQ(r.key.epoch, epoch);
        EXPECT_EQ(r.index, order[r.key.position]);
        seen.push_back(r.index);
      }
    EXPECT_EQ(s.state(), (LoaderState{epoch + 1, 0}));
    EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), 96u);
    EXPECT_TRUE(std::equal(seen.begin(), seen.end(), order.begin()));
  }
}

TEST(Sampler, EpochOrdersArePermutationsThatDiffer) {
  const auto a = epoch_order(1000, 1, 0), b = epoch_order(1000, 1, 1), c = epoch_order(1000, 2, 0);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> iota(1000);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(sorted, iota);
  EXPECT_NE(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(a, epoch_order(1000, 1, 0));
}

TEST(Sampler, EpochOrderIsUniform) {
  // All 6 orders of 3 samples over 6000 epochs: chi-square with 5 degrees of freedom, 30
  // has probability below 2e-5.
  std::map<std::vector<int64_t>, int> count;
  for (int e = 0; e < 6000; ++e) ++count[epoch_order(3, 11, e)];
  ASSERT_EQ(count.size(), 6u);
  double chi2 = 0;
  for (const auto& [order, c] : count) chi2 += (c - 1000.0) * (c - 1000.0) / 1000.0;
  EXPECT_LT(chi2, 30);
}

TEST(Sampler, ResumeContinuesTheStream) {
  const auto full = global_stream(103, 12, 2, 20);
  // Stop after 11 steps (inside epoch 1), resume with 2 ranks and with 1 rank.
  Sampler r0(103, 12, 2, 0, 2024);
  for (int s = 0; s < 11; ++s) r0.next();
  const LoaderState saved = r0.state();
  EXPECT_EQ(saved, (LoaderState{1, 36}));
  const std::vector<SampleRef> tail(full.begin() + 11 * 12, full.end());
  EXPECT_TRUE(tail == global_stream(103, 12, 2, 9, saved));
  EXPECT_TRUE(tail == global_stream(103, 12, 1, 9, saved));
  EXPECT_TRUE(tail == global_stream(103, 12, 4, 9, saved));
}

TEST(Sampler, SeekIntoTheTailStartsTheNextEpoch) {
  // Saved with global batch 12 at cursor 96; resumed with global batch 16, 7 samples remain.
  Sampler s(103, 16, 1, 0, 3);
  s.seek({2, 96});
  EXPECT_EQ(s.state(), (LoaderState{3, 0}));
  s.seek({2, 80});
  EXPECT_EQ(s.next()[0].index, epoch_order(103, 3, 2)[80]);
  EXPECT_EQ(s.state(), (LoaderState{3, 0}));
}

TEST(Sampler, RejectsBadConfigurations) {
  auto message = [](auto f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([] { Sampler(100, 30, 4, 0, 1); }).find("global batch 30 does not split evenly over 4 ranks"),
            std::string::npos);
  EXPECT_NE(message([] { Sampler(10, 16, 2, 0, 1); }).find("10 training samples, fewer than one global batch of 16"),
            std::string::npos);
  EXPECT_NE(message([] { Sampler(100, 16, 2, 2, 1); }).find("rank 2 of world size 2"), std::string::npos);
  EXPECT_THROW(Sampler(100, 0, 1, 0, 1), Error);
  Sampler s(100, 16, 2, 1, 1);
  EXPECT_THROW(s.seek({0, 101}), Error);
  EXPECT_THROW(s.seek({-1, 0}), Error);
}

TEST(Validation, EverySampleOnceAcrossRanks) {
  for (int64_t n : {0, 1, 2, 10, 97}) {
    for (int world : {1, 2, 3, 4}) {
      std::vector<int> seen(static_cast<size_t>(n));
      int64_t lo = n, hi = 0, next = 0;
      for (int r = 0; r < world; ++r) {
        const SampleRange range = validation_range(n, world, r);
        EXPECT_EQ(range.begin, next);  // contiguous, in rank order
        next = range.end;
        lo = std::min(lo, range.size()), hi = std::max(hi, range.size());
        for (int64_t i = range.begin; i < range.end; ++i) ++seen[i];
      }
      EXPECT_EQ(next, n);
      EXPECT_LE(hi - lo, 1);
      EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; })) << n << " " << world;
    }
  }
  EXPECT_EQ(validation_range(10, 4, 0).size(), 3);
  EXPECT_EQ(validation_range(10, 4, 3).size(), 2);
  EXPECT_THROW(validation_range(10, 4, 4), Error);
}

}  // namespace
}  // namespace vt::data
