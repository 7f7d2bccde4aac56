// The data pipeline's random numbers: a counter-based generator, so every draw is a pure
// function of (seed, epoch, sample, stream, draw number) and no generator state is shared
// between threads or ranks.
//
// The generator is Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as
// easy as 1, 2, 3", SC'11): a 10-round bijection of a 128-bit counter under a 64-bit key,
// which passes BigCrush for any counter sequence. Here the key is the run's seed and the
// counter is (block, stream, epoch, sample); block b yields draws 4b..4b+3 of that stream.
// Distinct (seed, epoch, sample, stream) therefore read disjoint counter ranges of one
// bijection, which is what makes the streams independent.
#pragma once

#include <array>
#include <cstdint>

#include "layers/check.h"

namespace vt::data {

// One Philox4x32 evaluation with 10 rounds: out = philox(counter, key).
inline std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;  // round multipliers
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;  // key schedule increments
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key[0] += kWeyl0;
      key[1] += kWeyl1;
    }
    const uint64_t p0 = uint64_t{kMul0} * ctr[0], p1 = uint64_t{kMul1} * ctr[2];
    ctr = {static_cast<uint32_t>(p1 >> 32) ^ ctr[1] ^ key[0], static_cast<uint32_t>(p1),
           static_cast<uint32_t>(p0 >> 32) ^ ctr[3] ^ key[1], static_cast<uint32_t>(p0)};
  }
  return ctr;
}

// What a draw is for: separate streams, so adding a draw to one never shifts another.
enum class Stream : uint32_t {
  shuffle = 1,  // the epoch's sample order (sample = 0)
  augment = 2,  // per-sample augmentation parameters
  mosaic = 3,   // per-sample choice of mosaic partners
};

// Where a sample sits in the global stream of training samples: `position` is its place in
// epoch `epoch`'s order (0 .. steps_per_epoch * global_batch - 1). Augmentation draws are
// keyed by it, never by rank or thread.
struct SampleKey {
  uint64_t seed = 0;
  int64_t epoch = 0;
  int64_t position = 0;
  bool operator==(const SampleKey& o) const { return seed == o.seed && epoch == o.epoch && position == o.position; }
};

class SampleRng {
 public:
  // epoch and sample must fit in 32 bits (4 billion epochs, 4 billion samples).
  SampleRng(uint64_t seed, uint64_t epoch, uint64_t sample, Stream stream)
      : key_{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)},
        ctr_{0, static_cast<uint32_t>(stream), static_cast<uint32_t>(epoch), static_cast<uint32_t>(sample)} {
    VT_CHECK(epoch <= 0xFFFFFFFFu && sample <= 0xFFFFFFFFu, "SampleRng: epoch ", epoch, " or sample ", sample,
             " does not fit in 32 bits");
  }
  SampleRng(const SampleKey& k, Stream stream)
      : SampleRng(k.seed, static_cast<uint64_t>(k.epoch), static_cast<uint64_t>(k.position), stream) {
    VT_CHECK(k.epoch >= 0 && k.position >= 0, "SampleRng: negative epoch ", k.epoch, " or position ", k.position);
  }

  // The stream's next draw: draw d is word d % 4 of block d / 4.
  uint32_t next_u32() {
    if (lane_ == 4) {
      block_ = philox4x32_10(ctr_, key_);
      ++ctr_[0];
      lane_ = 0;
    }
    return block_[lane_++];
  }

  // Uniform in [0, 1), 24 bits: every value is exactly representable as a float.
  float uniform() { return static_cast<float>(next_u32() >> 8) * (1.0f / 16777216.0f); }
  float uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }

  // Uniform integer in [0, n), unbiased (Lemire's multiply-and-reject); n > 0.
  uint32_t below(uint32_t n) {
    VT_CHECK(n > 0, "SampleRng::below(0)");
    uint64_t m = uint64_t{next_u32()} * n;
    if (static_cast<uint32_t>(m) < n) {
      const uint32_t threshold = (0u - n) % n;  // 2^32 mod n
      while (static_cast<uint32_t>(m) < threshold) m = uint64_t{next_u32()} * n;
    }
    return static_cast<uint32_t>(m >> 32);
  }

 private:
  std::array<uint32_t, 2> key_;
  std::array<uint32_t, 4> ctr_;  // (block, stream, epoch, sample)
  std::array<uint32_t, 4> block_{};
  int lane_ = 4;  // next unused word of block_; 4 = none left
};

}  // namespace vt::data
