// Bucketed gradient all-reduce (see grad_buckets.h).
#include "comm/grad_buckets.h"

#include <algorithm>

#include "layers/check.h"

namespace vt::comm {

Tensor slice(const Tensor& flat, int64_t offset, int64_t count) {
  VT_CHECK(flat.rank() == 1 && offset >= 0 && count >= 0 && offset + count <= flat.numel(), "slice [", offset, ", ",
           offset + count, ") of ", flat.str("flat"));
  return Tensor::view(static_cast<char*>(flat.raw()) + offset * int64_t(dtype_size(flat.dtype())), Shape{count},
                      flat.dtype(), flat.device());
}

GradBuckets::GradBuckets(Communicator& comm, const Tensor& grads, int64_t bucket_bytes, int64_t first_bucket_bytes)
    : comm_(comm), grads_(grads) {
  const int64_t esize = static_cast<int64_t>(dtype_size(grads.dtype())), p = grads.numel();
  VT_CHECK(grads.rank() == 1 && p > 0, "gradient buckets over ", grads.str("grads"), ": a non-empty flat buffer");
  VT_CHECK(bucket_bytes >= esize && first_bucket_bytes >= esize, "gradient buckets of ", first_bucket_bytes, " and ",
           bucket_bytes, " bytes: at least one element (", esize, " bytes) each");
  bounds_.push_back(0);
  int64_t at = std::min(p, first_bucket_bytes / esize);
  bounds_.push_back(at);
  while (at < p) {
    at = std::min(p, at + bucket_bytes / esize);
    bounds_.push_back(at);
  }
}

void GradBuckets::begin(int64_t step) {
  VT_CHECK(next_ == 0 || next_ == num_buckets(), "gradient buckets: step ", step, " begins with buckets of step ",
           step_, " unfinished");
  next_ = 0;
  step_ = step;
}

void GradBuckets::start(int b, Stream s) {
  comm_.start_allreduce(slice(grads_, bounds_[b], bounds_[b + 1] - bounds_[b]), s, cat("bucket ", b), step_);
}

void GradBuckets::ready(int64_t done, Stream s) {
  while (next_ < num_buckets() && bounds_[next_ + 1] <= done) start(next_++, s);
}

void GradBuckets::finish(Stream s) {
  while (next_ < num_buckets()) start(next_++, s);
  comm_.wait_all(s);
}

}  // namespace vt::comm
