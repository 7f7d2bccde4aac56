// Communicator tests, run under mpirun with 2 and 4 ranks (and alone, as 1 rank): all-reduce
// exactness on integer-valued data, bit-identical results on every rank for arbitrary data,
// bucket boundaries and bucketed sums, the handshake's verdict, and bad arguments.
// Every rank runs every test; mpirun fails when any rank does. GPU cases use NCCL and skip
// without a device.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "comm/communicator.h"
#include "comm/grad_buckets.h"
#include "comm/handshake.h"
#include "comm/world.h"
#include "layers/check.h"
#include "tests/test_util.h"

namespace vt::comm {
namespace {

// Rank r's contribution: integers in [-1000, 1000] from a generator seeded by (seed, r).
std::vector<double> integers(int64_t n, int rank, uint64_t seed) {
  std::mt19937_64 g(seed * 1000003 + static_cast<uint64_t>(rank));
  std::uniform_int_distribution<int> d(-1000, 1000);
  std::vector<double> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(g);
  return v;
}

// The sum over all ranks of integers(n, r, seed): what every rank must receive.
std::vector<double> expected_sum(int64_t n, uint64_t seed) {
  std::vector<double> sum(static_cast<size_t>(n), 0.0);
  for (int r = 0; r < world().size; ++r) {
    const auto v = integers(n, r, seed);
    for (int64_t i = 0; i < n; ++i) sum[i] += v[i];
  }
  return sum;
}

Tensor host_tensor(const std::vector<double>& v, DType dt) {
  return test::from_values({static_cast<int64_t>(v.size())}, v, dt);
}

// Sums of integers below 2^24 are exact in f32 whatever the order, so every rank must get
// exactly the sum of all ranks' contributions. Sizes: 1 element, odd, and over a megabyte.
TEST(Allreduce, ExactOnIntegers) {
  const World& w = world();
  auto comm = make_communicator("mpi", Device::kCPU, 0, nullptr);
  for (DType dt : {DType::kF32, DType::kF64}) {
    for (int64_t n : {int64_t(1), int64_t(7), int64_t(300007)}) {
      SCOPED_TRACE(cat(dtype_name(dt), " n=", n));
      const Tensor buf = host_tensor(integers(n, w.rank, 5), dt);
      comm->start_allreduce(buf, {}, "test", 0);
      comm->wait_all({});
      const std::vector<double> expected = expected_sum(n, 5);
      const auto got = test::values(buf);
      int64_t wrong = 0;
      for (int64_t i = 0; i < n; ++i) wrong += got[i] != expected[i];
      EXPECT_EQ(wrong, 0) << "of " << n << " elements";
    }
  }
  double exposed = -1;
  EXPECT_EQ(comm->take_records(&exposed).size(), 6u);
  EXPECT_GE(exposed, 0);
}

// Arbitrary floats: the sum's rounding depends on the order, but every rank must hold the
// same bits (the gradients, hence the weights, stay identical on all ranks).
TEST(Allreduce, BitIdenticalOnEveryRank) {
  const World& w = world();
  auto comm = make_communicator("mpi", Device::kCPU, 0, nullptr);
  for (int64_t n : {int64_t(5), int64_t(1 << 20) + 3}) {
    const Tensor buf = test::random_tensor({n}, DType::kF32, 100 + static_cast<uint64_t>(w.rank), -1e3, 1e3);
    comm->start_allreduce(buf, {}, "test", 0);
    comm->wait_all({});
    const std::string mine = digest(std::string(static_cast<const char*>(buf.raw()), buf.nbytes()));
    const auto all = allgather_string(mine);
    for (int r = 0; r < w.size; ++r) EXPECT_EQ(all[r], all[0]) << "rank " << r << ", " << n << " elements";
  }
}

// Buckets: 1 MB first, then 25 MB; in elements of 4 bytes, with the last one short.
TEST(GradBuckets, Boundaries) {
  auto comm = make_communicator("mpi", Device::kCPU, 0, nullptr);
  const Tensor g = Tensor::empty({20000000}, DType::kF32, Device::kCPU);
  GradBuckets b(*comm, g, 25 << 20, 1 << 20);
  const std::vector<int64_t> expected = {0,       262144, 262144 + 6553600, 262144 + 2 * 6553600,
                                         262144 + 3 * 6553600, 20000000};
  EXPECT_EQ(b.bounds(), expected);
  // A first bucket larger than the buffer: one bucket.
  GradBuckets one(*comm, Tensor::empty({10}, DType::kF32, Device::kCPU), 25 << 20, 1 << 20);
  EXPECT_EQ(one.bounds(), (std::vector<int64_t>{0, 10}));
  test::expect_error([&] { GradBuckets(*comm, g, 2, 1 << 20); }, {"gradient buckets", "at least one element"});
}

// Buckets start as the finished prefix grows, in order, and sum exactly what one all-reduce
// of the whole buffer would.
TEST(GradBuckets, BucketedSumsEqualTheWholeSum) {
  const World& w = world();
  auto comm = make_communicator("mpi", Device::kCPU, 0, nullptr);
  const int64_t n = 100003;
  const Tensor g = host_tensor(integers(n, w.rank, 9), DType::kF32);
  GradBuckets b(*comm, g, 4 * 10000, 4 * 1000);  // 1000, then 10000 elements per bucket
  ASSERT_EQ(b.num_buckets(), 1 + 10);
  b.begin(7);
  // Backward reports ranges in increasing order; buckets go out as soon as they are covered.
  for (int64_t done = 0; done < n;) {
    const int64_t next = std::min(n, done + 777);
    b.ready(next, {});
    done = next;
  }
  b.finish({});
  const std::vector<double> expected = expected_sum(n, 9);
  EXPECT_TRUE(test::values(g) == expected);
  const auto records = comm->take_records(nullptr);
  ASSERT_EQ(records.size(), 11u);
  EXPECT_EQ(records[0].what, "bucket 0");
  EXPECT_EQ(records[10].what, "bucket 10");
  EXPECT_EQ(records[3].step, 7);
  EXPECT_EQ(records[0].bytes, 4000);
}

// Every rank reaches the same verdict and names the differing rank and field.
TEST(Handshake, AgreesAndNamesTheDifference) {
  const World& w = world();
  EXPECT_NO_THROW(handshake({{"config.lr0", "0.01"}, {"program version", "1"}}, nullptr));
  if (w.size == 1) return;
  // The last rank has a different lr0 and lacks a field.
  std::vector<HandshakeField> f = {{"config.lr0", w.rank == w.size - 1 ? "0.02" : "0.01"}};
  if (w.rank != w.size - 1) f.push_back({"dataset manifest", "abc"});
  test::expect_error([&] { handshake(f, nullptr); },
                     {"consistency handshake failed", cat("rank ", w.size - 1, " differs from rank 0 in config.lr0"),
                      "'0.02' vs '0.01'", "dataset manifest: '(missing)' vs 'abc'"});
}

TEST(Communicator, BadArguments) {
  auto comm = make_communicator("mpi", Device::kCPU, 0, nullptr);
  const Tensor u8 = Tensor::empty({4}, DType::kU8, Device::kCPU);
  test::expect_error([&] { comm->start_allreduce(u8, {}, "x", 0); }, {"mpi all-reduce", "f32 or f64"});
  test::expect_error([&] { make_communicator("gloo", Device::kCPU, 0, nullptr); }, {"--comm must be auto, nccl or mpi"});
  test::expect_error([&] { make_communicator("nccl", Device::kCPU, 0, nullptr); }, {"nccl"});
}

// NCCL on the GPU (one rank per GPU): integer sums exact, as on the CPU.
TEST(AllreduceGpu, NcclExactOnIntegers) {
  VT_REQUIRE_GPU();
  if (!have_nccl()) GTEST_SKIP() << "build without NCCL";
  const World& w = world();
  if (w.size > cuda_device_count()) GTEST_SKIP() << "NCCL needs a GPU per rank";
  cuda_set_device(w.local_rank);
  auto comm = make_communicator("nccl", Device::kCUDA, 0, nullptr);
  const int64_t n = 300007;
  const Tensor buf = host_tensor(integers(n, w.rank, 5), DType::kF32).to(Device::kCUDA);
  comm->start_allreduce(buf, {}, "test", 0);
  comm->wait_all({});
  synchronize();
  const std::vector<double> expected = expected_sum(n, 5);
  EXPECT_TRUE(test::values(buf) == expected);
}

// The MPI backend staging device buffers through pinned host memory.
TEST(AllreduceGpu, MpiStagesDeviceBuffers) {
  VT_REQUIRE_GPU();
  const World& w = world();
  cuda_set_device(w.local_rank % cuda_device_count());
  auto comm = make_communicator("mpi", Device::kCUDA, 1 << 22, nullptr);
  const int64_t n = 100003;
  const Tensor buf = host_tensor(integers(n, w.rank, 6), DType::kF32).to(Device::kCUDA);
  comm->start_allreduce(buf, {}, "test", 0);
  comm->wait_all({});
  const std::vector<double> expected = expected_sum(n, 6);
  EXPECT_TRUE(test::values(buf) == expected);
}

}  // namespace
}  // namespace vt::comm

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  vt::comm::init_world();
  const int rc = RUN_ALL_TESTS();
  vt::comm::finalize_world();
  return rc;
}
