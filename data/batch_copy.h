// The loader's asynchronous host-to-device copy: batches go from the pinned host ring to
// two device buffers on a dedicated non-blocking CUDA stream, so the copy of the next batch
// overlaps the compute on the current one and nothing on the hot path syncs the host.
//
// Protocol, for buffers b in {0, 1}:
//   stage(host):  the copy stream waits for the consumer's release of b's previous batch,
//                 copies host -> b, records copy_done[b], then runs `copied(ctx)` on a CUDA
//                 host-callback thread: from then on the host slot may be refilled.
//   deliver():    the staged buffer becomes the consumer's; the buffer it held is released
//                 by recording released[b] on the stream its batch was waited on.
//   wait(b, s):   stream s (the consumer's compute stream) waits for copy_done[b].
// At most one batch is staged and one held, so two buffers suffice. Only built with CUDA
// (VT_WITH_CUDA); the loader never makes one otherwise.
#pragma once

#include <cstddef>
#include <memory>

#include "layers/tensor.h"

namespace vt::data {

class BatchCopier {
 public:
  using Callback = void (*)(void* ctx);

  // Allocates both device buffers (image_bytes + target_bytes each) on the current device.
  // `copied(ctx)` runs once per stage(), in stage order, when that copy has completed; it
  // must not call CUDA.
  BatchCopier(size_t image_bytes, size_t target_bytes, Callback copied, void* ctx);
  ~BatchCopier();  // waits for queued copies (and so for their callbacks)
  BatchCopier(const BatchCopier&) = delete;
  BatchCopier& operator=(const BatchCopier&) = delete;

  bool has_staged() const { return staged_ >= 0; }
  // Queues the copy of one host batch into the buffer the consumer does not hold.
  void stage(const void* images, const void* targets);
  // Hands the staged buffer to the consumer, releasing the one it held; returns its id.
  int deliver();
  // Makes `consumer` wait for buffer b's copy, and remembers it as the stream that reads b.
  void wait(int b, vt::Stream consumer);
  // Releases the held buffer, forgets the staged one, and waits for every queued copy (seek).
  void drop();

  void* images(int b) const { return images_[b].get(); }
  void* targets(int b) const { return targets_[b].get(); }

 private:
  void release(int b);

  size_t image_bytes_, target_bytes_;
  Callback copied_;
  void* ctx_;
  void* stream_ = nullptr;  // cudaStream_t
  std::shared_ptr<void> images_[2], targets_[2];
  void* copy_done_[2] = {nullptr, nullptr};  // cudaEvent_t
  void* released_[2] = {nullptr, nullptr};   // cudaEvent_t
  bool release_recorded_[2] = {false, false};
  void* consumer_[2] = {nullptr, nullptr};  // the stream that read b (null: legacy default)
  int held_ = -1, staged_ = -1;
};

}  // namespace vt::data
