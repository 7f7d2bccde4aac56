// The MPI backend: a communication thread that runs blocking MPI_Allreduce calls in the
// order they were started, on a duplicate of MPI_COMM_WORLD (see communicator.h).
//
// Host buffers are reduced in place. Device buffers (a GPU machine without NCCL) go through
// a pinned staging area of `staging_bytes`, bump-allocated per collective and reset by
// wait_all(): the thread waits for the producer's event, copies the slice down, reduces it,
// and copies it back up before the collective counts as finished.
#include <mpi.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>

#include "comm/communicator.h"
#include "comm/world.h"
#include "layers/check.h"

#ifdef VT_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace vt::comm {
namespace {

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(Device dev, size_t staging_bytes, Watchdog* watchdog)
      : dev_(dev), staging_bytes_(staging_bytes), watchdog_(watchdog) {
    init_world();
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm_));
    MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    if (dev_ == Device::kCUDA) {
#ifdef VT_WITH_CUDA
      CUDA_CHECK(cudaGetDevice(&cuda_device_));
      staging_ = allocate_pinned(staging_bytes_);
#else
      VT_CHECK(false, "mpi communicator: device buffers in a build without CUDA");
#endif
    }
    thread_ = std::thread([this] { run(); });
  }

  ~MpiCommunicator() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    MPI_Comm_free(&comm_);
  }

  const char* name() const override { return "mpi"; }

  void start_allreduce(const Tensor& buf, Stream producer, const std::string& what, int64_t step) override {
    VT_CHECK(buf.dtype() == DType::kF32 || buf.dtype() == DType::kF64, "mpi all-reduce of ", buf.str("buf"),
             ": f32 or f64 only");
    VT_CHECK(buf.device() == dev_, "mpi all-reduce of ", buf.str("buf"), " on a communicator for ",
             device_name(dev_), " buffers");
    Job job{buf, what, step, watchdog_ ? watchdog_->begin("all-reduce of " + what, step) : -1};
#ifdef VT_WITH_CUDA
    if (dev_ == Device::kCUDA) {
      VT_CHECK(staged_ + buf.nbytes() <= staging_bytes_, "mpi all-reduce: ", staged_ + buf.nbytes(),
               " bytes staged between waits, more than the ", staging_bytes_, " planned");
      job.host = static_cast<char*>(staging_.get()) + staged_;
      staged_ += (buf.nbytes() + 255) / 256 * 256;
      CUDA_CHECK(cudaEventCreateWithFlags(&job.ready, cudaEventDisableTiming));
      CUDA_CHECK(cudaEventRecord(job.ready, static_cast<cudaStream_t>(producer.handle)));
    }
#endif
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(job));
      ++started_;
    }
    cv_.notify_all();
  }

  void wait_all(Stream) override {
    const double t0 = trace_clock();
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [this] { return finished_ == started_ || !error_.empty(); });
    if (!error_.empty()) throw Error(error_);
    exposed_s_ += trace_clock() - t0;
    staged_ = 0;
  }

  std::vector<CollectiveRecord> take_records(double* exposed_s) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (exposed_s) *exposed_s = exposed_s_;
    exposed_s_ = 0;
    return std::exchange(records_, {});
  }

  void broadcast(const Tensor& buf, int root) override {
    // On the communication thread's communicator, after everything started before.
    wait_all({});
    const Tensor host = buf.device() == Device::kCPU ? buf : buf.to(Device::kCPU);
    broadcast_bytes(host.raw(), host.nbytes(), root);
    if (host.raw() != buf.raw()) copy(host, buf);
  }

 private:
  struct Job {
    Tensor buf;
    std::string what;
    int64_t step = 0, token = -1;
    void* host = nullptr;  // staging (device buffers)
#ifdef VT_WITH_CUDA
    cudaEvent_t ready = nullptr;
#endif
  };

  void run() {
#ifdef VT_WITH_CUDA
    cudaStream_t stream = nullptr;
    if (dev_ == Device::kCUDA) {
      cudaSetDevice(cuda_device_);
      cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
    }
#endif
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) break;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      CollectiveRecord rec{job.what, job.step, static_cast<int64_t>(job.buf.nbytes()), trace_clock(), 0};
      std::string error;
      try {
        void* data = job.buf.raw();
#ifdef VT_WITH_CUDA
        if (job.host) {
          CUDA_CHECK(cudaEventSynchronize(job.ready));
          CUDA_CHECK(cudaEventDestroy(job.ready));
          CUDA_CHECK(cudaMemcpyAsync(job.host, data, job.buf.nbytes(), cudaMemcpyDeviceToHost, stream));
          CUDA_CHECK(cudaStreamSynchronize(stream));
          data = job.host;
        }
#endif
        // MPI counts are int: reduce in pieces of at most 2^30 elements.
        const MPI_Datatype type = job.buf.dtype() == DType::kF64 ? MPI_DOUBLE : MPI_FLOAT;
        const size_t esize = dtype_size(job.buf.dtype());
        for (int64_t done = 0, n = job.buf.numel(); done < n;) {
          const int count = static_cast<int>(std::min<int64_t>(n - done, int64_t(1) << 30));
          MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, static_cast<char*>(data) + done * esize, count, type, MPI_SUM, comm_));
          done += count;
        }
#ifdef VT_WITH_CUDA
        if (job.host) {
          CUDA_CHECK(cudaMemcpyAsync(job.buf.raw(), job.host, job.buf.nbytes(), cudaMemcpyHostToDevice, stream));
          CUDA_CHECK(cudaStreamSynchronize(stream));
        }
#endif
      } catch (const std::exception& e) {
        error = cat("all-reduce of ", job.what, " (step ", job.step, "): ", e.what());
      }
      rec.end_s = trace_clock();
      if (watchdog_ && job.token >= 0) watchdog_->end(job.token);
      {
        std::lock_guard<std::mutex> lock(mu_);
        records_.push_back(std::move(rec));
        ++finished_;
        if (!error.empty() && error_.empty()) error_ = error;
      }
      done_cv_.notify_all();
    }
#ifdef VT_WITH_CUDA
    if (stream) cudaStreamDestroy(stream);
#endif
  }

  Device dev_;
  size_t staging_bytes_, staged_ = 0;
  Watchdog* watchdog_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int cuda_device_ = 0;
  std::shared_ptr<void> staging_;

  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::deque<Job> queue_;
  int64_t started_ = 0, finished_ = 0;
  bool stop_ = false;
  std::string error_;
  std::vector<CollectiveRecord> records_;
  double exposed_s_ = 0;
  std::thread thread_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(Device dev, size_t staging_bytes, Watchdog* watchdog) {
  return std::make_unique<MpiCommunicator>(dev, staging_bytes, watchdog);
}

}  // namespace vt::comm
