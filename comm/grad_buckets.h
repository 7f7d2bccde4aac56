// Gradient buckets: contiguous slices of the flat gradient buffer, each summed over the ranks
// as soon as backward has finished it, while backward goes on.
//
// The flat layout puts the parameters of the last op first, so what backward has finished is
// always a prefix [0, done) (Model::backward reports it range by range). ready(done) starts
// the all-reduce of every bucket inside that prefix; finish() starts any left and makes all
// the sums visible to the consumer stream, which is all the optimizer waits for (its fused
// update reads the whole buffer). Boundaries, in elements of `grads` (P of them):
//   bucket 0:  [0, first)              first = first_bucket_bytes / element size (default 1 MB,
//                                      so the head's gradients, finished first, leave at once)
//   bucket i:  the next bucket_bytes (default 25 MB), the last one shorter.
// No packing copies: a bucket is a view of the buffer the optimizer reads.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/communicator.h"

namespace vt::comm {

class GradBuckets {
 public:
  GradBuckets(Communicator& comm, const Tensor& grads, int64_t bucket_bytes, int64_t first_bucket_bytes);

  int num_buckets() const { return static_cast<int>(bounds_.size()) - 1; }
  const std::vector<int64_t>& bounds() const { return bounds_; }  // (num_buckets + 1) offsets

  // Opens a step: nothing started yet. `step` names the collectives for the watchdog and trace.
  void begin(int64_t step);
  // [0, done) is final once the work queued on `s` so far has run: starts the buckets inside.
  void ready(int64_t done, Stream s);
  // Starts the buckets not started yet, then comm.wait_all(s).
  void finish(Stream s);

 private:
  void start(int b, Stream s);

  Communicator& comm_;
  Tensor grads_;
  std::vector<int64_t> bounds_;
  int next_ = 0;  // first bucket not started
  int64_t step_ = 0;
};

// A view of elements [offset, offset + count) of a 1-D tensor.
Tensor slice(const Tensor& flat, int64_t offset, int64_t count);

}  // namespace vt::comm
