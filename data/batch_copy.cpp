// The loader's host-to-device copy stream and double device buffers (see batch_copy.h).
// Compiled only with CUDA: without it the loader refuses Device::kCUDA at construction.
#include "data/batch_copy.h"

#ifdef VT_WITH_CUDA
#include <cuda_runtime_api.h>

#include <cstdio>

#include "layers/check.h"

namespace vt::data {
namespace {

cudaStream_t as_stream(void* s) {
  return static_cast<cudaStream_t>(s);
}
cudaEvent_t as_event(void* e) {
  return static_cast<cudaEvent_t>(e);
}

}  // namespace

BatchCopier::BatchCopier(size_t image_bytes, size_t target_bytes, Callback copied, void* ctx)
    : image_bytes_(image_bytes), target_bytes_(target_bytes), copied_(copied), ctx_(ctx) {
  VT_CHECK(cuda_device_count() > 0, "loader: device CUDA requested, but no CUDA device is present");
  cudaStream_t s = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  stream_ = s;
  for (int b = 0; b < 2; ++b) {
    images_[b] = allocate(Device::kCUDA, image_bytes);
    targets_[b] = allocate(Device::kCUDA, target_bytes);
    cudaEvent_t e = nullptr;
    CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    copy_done_[b] = e;
    CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    released_[b] = e;
  }
  // allocate() zero-fills with cudaMemset on the legacy stream; the copy stream does not
  // synchronise with it, so finish that before the first copy can be queued.
  CUDA_CHECK(cudaDeviceSynchronize());
}

BatchCopier::~BatchCopier() {
  // Destructors only print: a failure here must not throw out of the loader's destructor.
  if (cudaStreamSynchronize(as_stream(stream_)) != cudaSuccess)
    std::fprintf(stderr, "loader: waiting for the copy stream failed: %s\n",
                 cudaGetErrorString(cudaGetLastError()));
  for (int b = 0; b < 2; ++b) {
    if (copy_done_[b]) cudaEventDestroy(as_event(copy_done_[b]));
    if (released_[b]) cudaEventDestroy(as_event(released_[b]));
  }
  if (stream_) cudaStreamDestroy(as_stream(stream_));
}

void BatchCopier::stage(const void* images, const void* targets) {
  VT_CHECK(staged_ < 0, "BatchCopier: a batch is already staged");
  const int b = held_ == 0 ? 1 : 0;
  cudaStream_t s = as_stream(stream_);
  // The consumer's kernels reading b's previous batch were queued before its release.
  if (release_recorded_[b]) CUDA_CHECK(cudaStreamWaitEvent(s, as_event(released_[b]), 0));
  CUDA_CHECK(cudaMemcpyAsync(images_[b].get(), images, image_bytes_, cudaMemcpyHostToDevice, s));
  CUDA_CHECK(cudaMemcpyAsync(targets_[b].get(), targets, target_bytes_, cudaMemcpyHostToDevice, s));
  CUDA_CHECK(cudaEventRecord(as_event(copy_done_[b]), s));
  // The host callback runs after the copies: the pinned slot can then be refilled. The
  // function pointer and context never change, so one static trampoline serves every call.
  CUDA_CHECK(cudaLaunchHostFunc(
      s, [](void* self) { static_cast<BatchCopier*>(self)->copied_(static_cast<BatchCopier*>(self)->ctx_); },
      this));
  consumer_[b] = nullptr;
  staged_ = b;
}

int BatchCopier::deliver() {
  VT_CHECK(staged_ >= 0, "BatchCopier: nothing staged to deliver");
  if (held_ >= 0) release(held_);
  held_ = staged_;
  staged_ = -1;
  return held_;
}

void BatchCopier::wait(int b, vt::Stream consumer) {
  VT_CHECK(b == held_, "BatchCopier: wait on buffer ", b, ", which the consumer does not hold");
  CUDA_CHECK(cudaStreamWaitEvent(as_stream(consumer.handle), as_event(copy_done_[b]), 0));
  consumer_[b] = consumer.handle;
}

void BatchCopier::release(int b) {
  CUDA_CHECK(cudaEventRecord(as_event(released_[b]), as_stream(consumer_[b])));
  release_recorded_[b] = true;
}

void BatchCopier::drop() {
  if (held_ >= 0) release(held_);
  held_ = staged_ = -1;
  CUDA_CHECK(cudaStreamSynchronize(as_stream(stream_)));
}

}  // namespace vt::data
#endif  // VT_WITH_CUDA
