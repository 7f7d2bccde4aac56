// allreduce_bench: the all-reduce rate of visiontrain's communicator against the bare
// library call it wraps, and how much of the communication a backward pass can hide.
//
//   mpirun -np 2 ./build/bench/allreduce_bench [--backend mpi|nccl] [--out FILE.json]
//
// 1. Bus bandwidth per message size: the bare collective (MPI_Allreduce on MPI_COMM_WORLD,
//    or ncclAllReduce on the device) against Communicator::start_allreduce + wait_all on the
//    same buffer. Bus bandwidth is NCCL's measure, 2 (n - 1) / n x bytes / time, which for a
//    ring is the rate each link carries, comparable across rank counts.
// 2. Overlap: a simulated backward over a flat gradient buffer the size of yolov8n's
//    (3,157,184 f32 = 12 MB, COCO classes; override with --params): compute of --backward-ms in total,
//    spread evenly over the buffer and reported range by range to GradBuckets, as
//    Model::backward does. Exposed = (backward with bucketed all-reduce, until every bucket
//    is summed) - (the same backward without communication): the time communication adds to
//    the step, including what it takes from the computation by competing for the cores.
//    Reported as a fraction of the all-reduce time measured alone, for the default bucket
//    size and smaller ones.
// Each figure is the median of --iters timed repetitions after 3 warm-up ones.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cxxopts.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/grad_buckets.h"
#include "comm/world.h"
#include "layers/check.h"

#ifdef VT_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

namespace {

using namespace vt;
double now() { return comm::trace_clock(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Times fn() `iters` times after 3 warm-ups, every rank in step (a barrier before each);
// returns the median of the slowest rank's times.
template <class Fn>
double timed(int iters, Fn&& fn) {
  std::vector<double> t;
  for (int i = -3; i < iters; ++i) {
    comm::barrier();
    const double t0 = now();
    fn();
    double dt = now() - t0;
    MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (i >= 0) t.push_back(dt);
  }
  return median(t);
}

// Busy compute for `seconds` on this thread (a stand-in for backward's arithmetic).
void spin(double seconds) {
  const double end = now() + seconds;
  volatile double x = 1;
  while (now() < end)
    for (int i = 0; i < 1000; ++i) x = x * 1.0000001 + 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options opts("allreduce_bench", "All-reduce bus bandwidth, bare vs visiontrain's communicator, and overlap");
  // clang-format off
  opts.add_options()
    ("backend", "mpi (host buffers) or nccl (device buffers)", cxxopts::value<std::string>()->default_value("mpi"))
    ("iters", "timed repetitions per figure", cxxopts::value<int>()->default_value("10"))
    ("params", "elements of the simulated gradient buffer", cxxopts::value<int64_t>()->default_value("3157184"))
    ("backward-ms", "simulated backward time", cxxopts::value<double>()->default_value("0"))
    ("out", "JSON results file (rank 0)", cxxopts::value<std::string>())
    ("h,help", "show this help");
  // clang-format on
  const auto a = opts.parse(argc, argv);
  if (a.count("help")) {
    std::printf("%s\n", opts.help().c_str());
    return 0;
  }
  const comm::World& w = comm::init_world();
  const std::string backend = a["backend"].as<std::string>();
  const int iters = a["iters"].as<int>();
  const Device dev = backend == "nccl" ? Device::kCUDA : Device::kCPU;
  if (dev == Device::kCUDA) cuda_set_device(w.local_rank % cuda_device_count());
  const double bus = 2.0 * (w.size - 1) / std::max(1, w.size);
  nlohmann::json out = {{"backend", backend}, {"ranks", w.size}, {"host", w.host}, {"sizes", nlohmann::json::array()}};
  if (w.rank == 0)
    std::printf("all-reduce, %d ranks, %s backend (bus bandwidth = 2(n-1)/n x bytes / time, median of %d)\n"
                "%10s %14s %14s %8s\n", w.size, backend.c_str(), iters, "MB", "bare GB/s", "ours GB/s", "ratio");

  comm::Watchdog watchdog(0);
  const int64_t max_elems = std::max<int64_t>(int64_t(16) << 20, a["params"].as<int64_t>());
  auto communicator = comm::make_communicator(backend, dev, size_t(max_elems) * 4 + (1 << 20), &watchdog);
  const Tensor buf = Tensor::empty({max_elems}, DType::kF32, dev);
  for (int64_t mb : {1, 4, 16, 64}) {
    const int64_t n = mb * 262144;
    if (n > max_elems) break;
    const Tensor x = comm::slice(buf, 0, n);
    double bare = 0;
    if (backend == "mpi") {
      bare = timed(iters, [&] { MPI_Allreduce(MPI_IN_PLACE, x.raw(), int(n), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); });
    } else {
#ifdef VT_WITH_NCCL
      // The bare NCCL call on its own communicator and stream, as nccl-tests times it.
      static ncclComm_t nc = [&] {
        ncclUniqueId id{};
        if (w.rank == 0) ncclGetUniqueId(&id);
        comm::broadcast_bytes(&id, sizeof(id), 0);
        ncclComm_t c;
        NCCL_CHECK(ncclCommInitRank(&c, w.size, id, w.rank));
        return c;
      }();
      bare = timed(iters, [&] {
        NCCL_CHECK(ncclAllReduce(x.raw(), x.raw(), size_t(n), ncclFloat, ncclSum, nc, nullptr));
        CUDA_CHECK(cudaStreamSynchronize(nullptr));
      });
#else
      VT_CHECK(false, "--backend nccl: this build has no NCCL");
#endif
    }
    const double ours = timed(iters, [&] {
      communicator->start_allreduce(x, {}, "bench", 0);
      communicator->wait_all({});
      synchronize();
    });
    communicator->take_records(nullptr);
    const double bytes = double(n) * 4;
    if (w.rank == 0)
      std::printf("%10lld %14.2f %14.2f %8.3f\n", (long long)mb, bus * bytes / bare / 1e9, bus * bytes / ours / 1e9,
                  bare / ours);
    out["sizes"].push_back({{"mb", mb}, {"bare_s", bare}, {"ours_s", ours}, {"bare_busbw_gbs", bus * bytes / bare / 1e9},
                            {"ours_busbw_gbs", bus * bytes / ours / 1e9}});
  }

  // Overlap with a simulated backward.
  const int64_t p = a["params"].as<int64_t>();
  const Tensor grads = comm::slice(buf, 0, p);
  const double alone = timed(iters, [&] {
    comm::GradBuckets b(*communicator, grads, int64_t(p) * 4, int64_t(p) * 4);
    b.begin(0);
    b.finish({});
    synchronize();
  });
  communicator->take_records(nullptr);
  double backward_s = a["backward-ms"].as<double>() / 1000;
  if (backward_s <= 0) backward_s = 3 * alone;  // a backward that takes longer than its all-reduce
  out["overlap"] = {{"params", p}, {"allreduce_alone_s", alone}, {"backward_s", backward_s}, {"buckets", nlohmann::json::array()}};
  if (w.rank == 0)
    std::printf("\noverlap: %lld gradients (%.1f MB), all-reduce alone %.2f ms, simulated backward %.2f ms\n"
                "%12s %8s %14s %14s\n", (long long)p, p * 4 / 1048576.0, alone * 1e3, backward_s * 1e3, "bucket MB",
                "buckets", "exposed ms", "exposed/comm");
  const int pieces = 64;  // backward reports its finished ranges in 64 steps
  const double compute_only = timed(iters, [&] {
    for (int k = 1; k <= pieces; ++k) spin(backward_s / pieces);
  });
  out["overlap"]["backward_alone_s"] = compute_only;
  for (double mb : {25.0, 4.0, 2.0, 1.0}) {
    comm::GradBuckets b(*communicator, grads, int64_t(mb * 1048576), 1 << 20);
    int64_t step = 0;
    const double with_comm = timed(iters, [&] {
      b.begin(step++);
      for (int k = 1; k <= pieces; ++k) {
        spin(backward_s / pieces);
        b.ready(p * k / pieces, {});
      }
      b.finish({});
      synchronize();
    });
    communicator->take_records(nullptr);
    const double e = std::max(0.0, with_comm - compute_only);
    if (w.rank == 0) std::printf("%12g %8d %14.2f %13.0f%%\n", mb, b.num_buckets(), e * 1e3, 100 * e / alone);
    out["overlap"]["buckets"].push_back({{"bucket_mb", mb}, {"buckets", b.num_buckets()}, {"exposed_s", e},
                                         {"exposed_fraction", e / alone}});
  }
  if (w.rank == 0 && a.count("out")) {
    std::ofstream f(a["out"].as<std::string>());
    f << out.dump(2) << "\n";
  }
  communicator.reset();
  comm::finalize_world();
  return 0;
}
