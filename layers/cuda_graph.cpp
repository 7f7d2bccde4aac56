// CUDA graph capture and replay (see cuda_graph.h).
#include "layers/cuda_graph.h"

#include "layers/check.h"

#ifdef VT_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace vt {

#ifdef VT_WITH_CUDA

namespace {
cudaStream_t raw(Stream s) {
  return static_cast<cudaStream_t>(s.handle);
}
}  // namespace

CudaStream::CudaStream() {
  VT_CHECK(cuda_device_count() > 0, "CudaStream: no CUDA device");
  cudaStream_t s = nullptr;
  CUDA_CHECK(cudaStreamCreate(&s));
  s_.handle = s;
}

CudaStream::~CudaStream() {
  if (s_.handle) cudaStreamDestroy(raw(s_));
}

CudaGraph::~CudaGraph() {
  reset();
}

void CudaGraph::reset() {
  if (exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
  if (graph_) cudaGraphDestroy(static_cast<cudaGraph_t>(graph_));
  exec_ = graph_ = nullptr;
}

void CudaGraph::capture(Stream s, const std::function<void()>& fn) {
  VT_CHECK(s.handle != nullptr, "CudaGraph: the legacy default stream cannot be captured; use a CudaStream");
  reset();
  CUDA_CHECK(cudaStreamBeginCapture(raw(s), cudaStreamCaptureModeThreadLocal));
  try {
    fn();
  } catch (...) {
    cudaGraph_t partial = nullptr;
    cudaStreamEndCapture(raw(s), &partial);  // leave the stream usable
    if (partial) cudaGraphDestroy(partial);
    cudaGetLastError();
    throw;
  }
  cudaGraph_t g = nullptr;
  CUDA_CHECK(cudaStreamEndCapture(raw(s), &g));
  graph_ = g;
  cudaGraphExec_t e = nullptr;
  CUDA_CHECK(cudaGraphInstantiate(&e, g, 0));
  exec_ = e;
}

void CudaGraph::launch(Stream s) const {
  VT_CHECK(exec_ != nullptr, "CudaGraph: launch before capture");
  CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), raw(s)));
}

#else

CudaStream::CudaStream() {
  VT_CHECK(false, "CudaStream: this build has no CUDA support");
}
CudaStream::~CudaStream() = default;
CudaGraph::~CudaGraph() = default;
void CudaGraph::reset() {}
void CudaGraph::capture(Stream, const std::function<void()>&) {
  VT_CHECK(false, "CudaGraph: this build has no CUDA support");
}
void CudaGraph::launch(Stream) const {
  VT_CHECK(false, "CudaGraph: this build has no CUDA support");
}

#endif

}  // namespace vt
