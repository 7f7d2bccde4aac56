// CUDA graphs: a fixed sequence of stream work recorded once and replayed with one launch.
// Once a model's shapes and buffers are fixed (the static memory plan), its training step
// queues the same kernels on the same addresses every time, which is what a graph needs;
// replaying it removes the per-kernel launch cost (hundreds of launches per step).
//
//   CudaStream s;                   // capture needs a stream of its own, not the legacy one
//   CudaGraph g;
//   g.capture(s.get(), [&] { model.forward(true, s.get()); ... });   // records, runs nothing
//   g.launch(s.get());              // every step: new inputs copied into the same buffers first
//
// What the captured function may do: queue kernels, async copies and memsets on that stream.
// What it must not: synchronise (a host read, copy(), synchronize()), allocate, or use the
// legacy default stream; CUDA reports such a call as a capture error, which throws here.
// Only in CUDA builds with a device; constructing either class otherwise throws.
#pragma once

#include <functional>

#include "layers/tensor.h"

namespace vt {

// A blocking stream owned by this object (it orders with the legacy default stream, so the
// synchronous copy() still sees its work).
class CudaStream {
 public:
  CudaStream();
  ~CudaStream();
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  Stream get() const { return s_; }

 private:
  Stream s_;
};

class CudaGraph {
 public:
  CudaGraph() = default;
  ~CudaGraph();
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  // Records what fn queues on s (thread-local capture) and instantiates it, replacing any
  // earlier recording. Nothing runs until launch().
  void capture(Stream s, const std::function<void()>& fn);
  // Queues the recorded work on s.
  void launch(Stream s) const;
  bool ready() const { return exec_ != nullptr; }

 private:
  void reset();
  void* graph_ = nullptr;  // cudaGraph_t
  void* exec_ = nullptr;   // cudaGraphExec_t
};

}  // namespace vt
