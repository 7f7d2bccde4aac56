// The global sample order and each rank's slice of it (see sampler.h).
#include "data/sampler.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "layers/check.h"

namespace vt::data {

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  VT_CHECK(n >= 0 && n <= 0xFFFFFFFFll, "epoch_order: ", n, " samples (at most 2^32 - 1)");
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  SampleRng rng(seed, static_cast<uint64_t>(epoch), 0, Stream::shuffle);
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[rng.below(static_cast<uint32_t>(i + 1))]);
  return order;
}

Sampler::Sampler(int64_t num_samples, int64_t global_batch, int world_size, int rank, uint64_t seed,
                 int micro_steps)
    : num_samples_(num_samples),
      global_batch_(global_batch),
      world_size_(world_size),
      rank_(rank),
      seed_(seed),
      micro_steps_(micro_steps) {
  VT_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "sampler: rank ", rank, " of world size ", world_size);
  VT_CHECK(micro_steps >= 1, "sampler: ", micro_steps, " micro-steps per step (at least 1)");
  VT_CHECK(global_batch > 0 && global_batch % (int64_t(world_size) * micro_steps) == 0, "sampler: global batch ",
           global_batch, " does not split evenly over ", world_size, " ranks x ", micro_steps, " micro-steps");
  VT_CHECK(num_samples >= global_batch, "sampler: ", num_samples, " training samples, fewer than one global batch of ",
           global_batch);
  VT_CHECK(num_samples <= 0xFFFFFFFFll, "sampler: ", num_samples, " samples (at most 2^32 - 1)");
}

void Sampler::seek(const LoaderState& s) {
  VT_CHECK(s.epoch >= 0 && s.epoch <= 0xFFFFFFFFll && s.cursor >= 0 && s.cursor <= num_samples_,
           "sampler: cannot resume at epoch ", s.epoch, " cursor ", s.cursor, " of ", num_samples_, " samples");
  state_ = s;
  micro_ = 0;
  roll_over();
}

void Sampler::roll_over() {
  if (state_.cursor + global_batch_ > num_samples_) {
    ++state_.epoch;
    state_.cursor = 0;
  }
}

std::vector<SampleRef> Sampler::next() {
  if (order_epoch_ != state_.epoch) {
    order_ = epoch_order(num_samples_, seed_, state_.epoch);
    order_epoch_ = state_.epoch;
  }
  const int64_t b = rank_batch(), first = state_.cursor + (int64_t(micro_) * world_size_ + rank_) * b;
  std::vector<SampleRef> refs(static_cast<size_t>(b));
  for (int64_t i = 0; i < b; ++i) refs[i] = {order_[first + i], {seed_, state_.epoch, first + i}};
  if (++micro_ == micro_steps_) {
    micro_ = 0;
    state_.cursor += global_batch_;
    roll_over();
  }
  return refs;
}

SampleRange validation_range(int64_t num_samples, int world_size, int rank) {
  VT_CHECK(num_samples >= 0 && world_size >= 1 && rank >= 0 && rank < world_size, "validation split: ", num_samples,
           " samples, rank ", rank, " of world size ", world_size);
  const int64_t q = num_samples / world_size, extra = num_samples % world_size;
  const int64_t begin = rank * q + std::min<int64_t>(rank, extra);
  return {begin, begin + q + (rank < extra ? 1 : 0)};
}

}  // namespace vt::data
