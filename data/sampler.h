// Which samples each rank reads, step by step: the global order of an epoch, each rank's
// slice of every global batch, and the validation split.
//
// The order of epoch e is a permutation of [0, N) drawn from (seed, e) alone, so every rank
// computes the same one. A training step consumes the next global batch B of that order in
// k micro-steps (gradient accumulation, k >= 1) on each of the N ranks, b = B / (N k) samples
// each: micro-step j of rank r reads positions [cursor + m*b, cursor + (m+1)*b), m = j*N + r.
// Any (N, k) with the same N k therefore reads the same micro-batches, only dealt out
// differently: 1 rank with k = 2 computes exactly what 2 ranks with k = 1 do.
// The last N mod B samples of an epoch are dropped, so every rank takes the same number of
// steps; the next epoch then reshuffles, and the dropped samples differ from epoch to epoch.
// The whole state is (epoch, cursor), counted in global samples: resuming at the same state
// with any world size of the same global batch continues the identical stream of samples.
#pragma once

#include <cstdint>
#include <vector>

#include "data/rng.h"

namespace vt::data {

// What a checkpoint stores to resume the sample stream exactly.
struct LoaderState {
  int64_t epoch = 0;
  int64_t cursor = 0;  // global samples of this epoch already consumed
  bool operator==(const LoaderState& o) const { return epoch == o.epoch && cursor == o.cursor; }
  bool operator!=(const LoaderState& o) const { return !(*this == o); }
};

// The global order of `epoch`: a uniform permutation of [0, n) by Fisher-Yates, with the
// draws of SampleRng(seed, epoch, 0, Stream::shuffle).
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch);

// One sample of a step: which one to load, and the key of its augmentation draws.
struct SampleRef {
  int64_t index = 0;
  SampleKey key;
  bool operator==(const SampleRef& o) const { return index == o.index && key == o.key; }
};

class Sampler {
 public:
  // Throws unless 0 < global_batch <= num_samples < 2^32, world_size x micro_steps divides
  // global_batch, and 0 <= rank < world_size.
  Sampler(int64_t num_samples, int64_t global_batch, int world_size, int rank, uint64_t seed,
          int micro_steps = 1);

  int64_t num_samples() const { return num_samples_; }
  int64_t global_batch() const { return global_batch_; }
  int micro_steps() const { return micro_steps_; }
  int64_t rank_batch() const { return global_batch_ / (int64_t(world_size_) * micro_steps_); }  // b
  int64_t steps_per_epoch() const { return num_samples_ / global_batch_; }

  // The state at the start of the current step (micro-steps do not move it until the last).
  const LoaderState& state() const { return state_; }
  // Continues from `s`, at its first micro-step; a cursor with less than a global batch left (possible after a change
  // of global batch) moves to the start of the next epoch, as next() would.
  void seek(const LoaderState& s);

  // This rank's rank_batch() samples of the current micro-step; after the last micro-step of
  // a step, advances by a global batch.
  std::vector<SampleRef> next();

 private:
  void roll_over();  // to the next epoch when fewer than a global batch remain

  int64_t num_samples_, global_batch_;
  int world_size_, rank_;
  uint64_t seed_;
  int micro_steps_, micro_ = 0;  // k, and the next micro-step of the current step
  LoaderState state_;
  int64_t order_epoch_ = -1;  // the epoch `order_` belongs to
  std::vector<int64_t> order_;
};

// Validation reads [begin, end) of the samples in file order, unshuffled, nothing dropped:
// the N samples are split into world_size contiguous ranges whose sizes differ by at most
// one (the first N mod world_size ranks take one more). Ranks may therefore run different
// numbers of evaluation batches, and one with N < world_size may get none.
struct SampleRange {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};
SampleRange validation_range(int64_t num_samples, int world_size, int rank);

}  // namespace vt::data
