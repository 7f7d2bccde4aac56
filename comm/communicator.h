// Communicator: sums gradient buffers over all ranks, in the background, behind one interface
// with two backends (`--comm auto|nccl|mpi`).
//
//   nccl  device buffers. ncclAllReduce on a stream of its own with the highest priority,
//         ordered after the producer's work by an event; the consumer stream waits on an
//         event in turn, so the host never blocks. The unique id travels by MPI_Bcast.
//   mpi   host buffers (CPU training, CI, GPU machines without NCCL). A communication thread
//         takes the collectives in order and calls blocking MPI_Allreduce on a duplicate of
//         MPI_COMM_WORLD; on Debian's Open MPI 4.1 that overlaps with computation better than
//         MPI_Iallreduce, which progresses only inside MPI calls. Device buffers are staged
//         through pinned host memory.
// Both sum in place (MPI_SUM / ncclSum) and leave the same bits on every rank: each element
// is reduced once, in one order, then distributed (ring, tree and recursive doubling all do
// this; tests/comm checks it). Collectives complete in the order they were started, and every
// one is registered with the watchdog while it is in flight.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm/watchdog.h"
#include "layers/tensor.h"

namespace vt::comm {

// One finished collective, for the step's statistics and the trace.
struct CollectiveRecord {
  std::string what;  // "bucket 3", "bn stats"
  int64_t step = 0;
  int64_t bytes = 0;
  double start_s = 0, end_s = 0;  // on trace_clock()
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual const char* name() const = 0;  // "mpi", "nccl"

  // Starts the in-place sum of `buf` over all ranks (f32, or f64 on the mpi backend; on the
  // communicator's device). `buf` is final once the work queued on `producer` before this
  // call has run (host buffers: now), and must not be touched until wait_all().
  virtual void start_allreduce(const Tensor& buf, Stream producer, const std::string& what, int64_t step) = 0;
  // Makes every started sum visible: the host blocks until they are done (mpi), or `consumer`
  // waits for them (nccl).
  virtual void wait_all(Stream consumer) = 0;
  // The collectives finished since the last call, and the time the consumer spent waiting
  // for them after it had run out of other work (exposed communication). Needs wait_all()
  // and, for nccl, the consumer stream synchronised.
  virtual std::vector<CollectiveRecord> take_records(double* exposed_s) = 0;
  // Blocking broadcast from `root` (the initial weights).
  virtual void broadcast(const Tensor& buf, int root) = 0;
};

// kind "auto": nccl for CUDA buffers when the build has NCCL, else mpi. staging_bytes: the
// most bytes started between two wait_all() calls, when an mpi backend stages device buffers.
std::unique_ptr<Communicator> make_communicator(const std::string& kind, Device dev, size_t staging_bytes,
                                                Watchdog* watchdog);
// Whether this build has the NCCL backend.
bool have_nccl();

// Seconds on the one clock of records and traces: the steady clock, from process start.
double trace_clock();

// Backend constructors (make_communicator picks).
std::unique_ptr<Communicator> make_mpi_communicator(Device dev, size_t staging_bytes, Watchdog* watchdog);
std::unique_ptr<Communicator> make_nccl_communicator(Watchdog* watchdog);

}  // namespace vt::comm
