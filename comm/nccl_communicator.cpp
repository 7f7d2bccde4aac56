// The NCCL backend: ncclAllReduce on a high-priority stream of its own (see communicator.h).
//
// Rank 0 makes the unique id and MPI_Bcast sends it to the others. A collective waits for an
// event recorded on the producer stream and records two timing events around itself; the
// consumer waits for the last one, with events on each side of that wait to measure how long
// it stalled (the exposed communication). The watchdog's poll retires finished collectives
// by querying their end events; a collective the watchdog finds hung is aborted by it.
#include <cuda_runtime.h>
#include <nccl.h>

#include <deque>
#include <mutex>

#include "comm/communicator.h"
#include "comm/world.h"
#include "layers/check.h"

namespace vt::comm {
namespace {

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(Watchdog* watchdog) : watchdog_(watchdog) {
    const World& w = init_world();
    ncclUniqueId id{};
    if (w.rank == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    broadcast_bytes(&id, sizeof(id), 0);
    NCCL_CHECK(ncclCommInitRank(&comm_, w.size, id, w.rank));
    int least = 0, greatest = 0;
    CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    CUDA_CHECK(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, greatest));
    CUDA_CHECK(cudaEventCreate(&base_));
    CUDA_CHECK(cudaEventRecord(base_, stream_));
    CUDA_CHECK(cudaEventSynchronize(base_));
    base_s_ = trace_clock();
    CUDA_CHECK(cudaEventCreate(&wait_begin_));
    CUDA_CHECK(cudaEventCreate(&wait_end_));
    if (watchdog_) watchdog_->set_poll([this] { poll(); });
  }

  ~NcclCommunicator() override {
    if (watchdog_) watchdog_->set_poll({});
    cudaStreamSynchronize(stream_);
    poll();
    ncclCommDestroy(comm_);
    for (cudaEvent_t e : {base_, wait_begin_, wait_end_}) cudaEventDestroy(e);
    cudaStreamDestroy(stream_);
  }

  const char* name() const override { return "nccl"; }

  void start_allreduce(const Tensor& buf, Stream producer, const std::string& what, int64_t step) override {
    VT_CHECK(buf.dtype() == DType::kF32 && buf.device() == Device::kCUDA, "nccl all-reduce of ", buf.str("buf"),
             ": f32 device buffers only");
    Pending p{what, step, static_cast<int64_t>(buf.nbytes()), watchdog_ ? watchdog_->begin("all-reduce of " + what, step) : -1};
    CUDA_CHECK(cudaEventCreateWithFlags(&p.ready, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreate(&p.begin));
    CUDA_CHECK(cudaEventCreate(&p.end));
    CUDA_CHECK(cudaEventRecord(p.ready, static_cast<cudaStream_t>(producer.handle)));
    CUDA_CHECK(cudaStreamWaitEvent(stream_, p.ready, 0));
    CUDA_CHECK(cudaEventRecord(p.begin, stream_));
    NCCL_CHECK(ncclAllReduce(buf.raw(), buf.raw(), static_cast<size_t>(buf.numel()), ncclFloat, ncclSum, comm_,
                             stream_));
    CUDA_CHECK(cudaEventRecord(p.end, stream_));
    last_end_ = p.end;
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back(p);
  }

  void wait_all(Stream consumer) override {
    if (!last_end_) return;
    auto s = static_cast<cudaStream_t>(consumer.handle);
    CUDA_CHECK(cudaEventRecord(wait_begin_, s));
    CUDA_CHECK(cudaStreamWaitEvent(s, last_end_, 0));
    CUDA_CHECK(cudaEventRecord(wait_end_, s));
    last_end_ = nullptr;
    measured_wait_ = true;
  }

  std::vector<CollectiveRecord> take_records(double* exposed_s) override {
    poll();
    if (exposed_s) {
      float ms = 0;
      if (measured_wait_) CUDA_CHECK(cudaEventElapsedTime(&ms, wait_begin_, wait_end_));
      *exposed_s = ms / 1000.0;
      measured_wait_ = false;
    }
    std::lock_guard<std::mutex> lock(mu_);
    return std::exchange(records_, {});
  }

  void broadcast(const Tensor& buf, int root) override {
    VT_CHECK(buf.dtype() == DType::kF32 && buf.device() == Device::kCUDA, "nccl broadcast of ", buf.str("buf"),
             ": f32 device buffers only");
    // Whatever wrote buf on other streams (the legacy stream's memsets and copies at start
    // and resume, a step's stream) has finished: broadcasts run outside steps, so a device
    // sync costs nothing there.
    CUDA_CHECK(cudaDeviceSynchronize());
    NCCL_CHECK(ncclBroadcast(buf.raw(), buf.raw(), static_cast<size_t>(buf.numel()), ncclFloat, root, comm_,
                             stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

 private:
  struct Pending {
    std::string what;
    int64_t step = 0, bytes = 0, token = -1;
    cudaEvent_t ready = nullptr, begin = nullptr, end = nullptr;
  };

  // Retires the finished collectives, in order (from the watchdog thread or the owner).
  void poll() {
    std::lock_guard<std::mutex> lock(mu_);
    while (!pending_.empty() && cudaEventQuery(pending_.front().end) == cudaSuccess) {
      Pending& p = pending_.front();
      float b = 0, e = 0;
      cudaEventElapsedTime(&b, base_, p.begin);
      cudaEventElapsedTime(&e, base_, p.end);
      records_.push_back({p.what, p.step, p.bytes, base_s_ + b / 1000.0, base_s_ + e / 1000.0});
      if (watchdog_ && p.token >= 0) watchdog_->end(p.token);
      for (cudaEvent_t ev : {p.ready, p.begin, p.end}) cudaEventDestroy(ev);
      pending_.pop_front();
    }
  }

  Watchdog* watchdog_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t base_ = nullptr, wait_begin_ = nullptr, wait_end_ = nullptr, last_end_ = nullptr;
  double base_s_ = 0;
  bool measured_wait_ = false;
  std::mutex mu_;
  std::deque<Pending> pending_;
  std::vector<CollectiveRecord> records_;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Watchdog* watchdog) {
  return std::make_unique<NcclCommunicator>(watchdog);
}

}  // namespace vt::comm
