// Tests of the core: Shape, Tensor copies and storage-type conversion, the static memory
// plan, and the check macros' messages (file:line, rank, library text).
#include <cmath>
#include <cstring>
#include <limits>

#include "layers/check.h"
#include "layers/memory_plan.h"
#include "layers/tensor.h"
#include "tests/test_util.h"

#ifdef VT_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace vt {
namespace {

TEST(Shape, NumelEqualityAndText) {
  Shape s{2, 13, 17, 7};
  EXPECT_EQ(s.rank(), 4);
  EXPECT_EQ(s.numel(), 2 * 13 * 17 * 7);
  EXPECT_EQ(s.str(), "(2, 13, 17, 7)");
  EXPECT_EQ(s, (Shape{2, 13, 17, 7}));
  EXPECT_NE(s, (Shape{2, 13, 17}));
  EXPECT_EQ(Shape{}.numel(), 1);  // a scalar
  EXPECT_THROW((Shape{1, 2, 3, 4, 5, 6, 7}), Error);
  EXPECT_THROW((Shape{2, -1}), Error);
}

TEST(Tensor, Bf16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly half way between 1 and 1 + 2^-7: ties go to the even mantissa (1).
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  // 1 + 3 * 2^-8 is half way between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6.
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8))), 1.0f + std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isinf(bf16_to_float(float_to_bf16(std::numeric_limits<float>::infinity()))));
  EXPECT_EQ(bf16_to_float(float_to_bf16(-2.5f)), -2.5f);
}

TEST(Tensor, CopyConvertsStorageTypes) {
  Tensor a = test::from_values({2, 2}, {1.5, -2.25, 3.0, 1e-3}, DType::kF64);
  Tensor f = a.to(Device::kCPU, DType::kF32);
  Tensor b = a.to(Device::kCPU, DType::kBF16);
  EXPECT_EQ(f.data<float>()[1], -2.25f);
  EXPECT_EQ(test::values(b)[0], 1.5);
  EXPECT_NEAR(test::values(b)[3], 1e-3, 1e-3 * std::ldexp(1.0, -8));  // one bf16 rounding
  EXPECT_THROW(copy(a, Tensor::empty({3}, DType::kF32, Device::kCPU)), Error);
  Tensor r = f.reshape({4});
  EXPECT_EQ(r.raw(), f.raw());
  EXPECT_THROW(f.reshape({5}), Error);
  EXPECT_THROW(Tensor::empty({2}, DType::kF64, Device::kCUDA), Error);  // f64 is CPU-only
  // u8 rounds and saturates: image bytes.
  EXPECT_EQ(test::values(test::from_values({4}, {-3, 12.4, 12.6, 300}).to(Device::kCPU, DType::kU8)),
            (std::vector<double>{0, 12, 13, 255}));
  const int64_t before = allocation_count();
  std::shared_ptr<void> pinned = allocate_pinned(1000);
  EXPECT_EQ(allocation_count(), before + 1);
  EXPECT_EQ(static_cast<unsigned char*>(pinned.get())[999], 0);
}

TEST(Tensor, CopyAsyncCopiesOnlyLikeToLike) {
  const Tensor a = test::random_tensor({2, 3}, DType::kF32, 9), b = Tensor::empty({6}, DType::kF32, Device::kCPU);
  copy_async(a, b);
  test::expect_close(b, a.reshape({6}), 0, 0, "copy_async");
  test::expect_error([&] { copy_async(a, Tensor::empty({6}, DType::kF64, Device::kCPU)); },
                     {"copy_async", "(6) f64", "type or device"});
  test::expect_error([&] { copy_async(a, Tensor::empty({5}, DType::kF32, Device::kCPU)); }, {"copy_async", "(5)"});
}

TEST(Tensor, GpuCopyAsyncOnAStream) {
  VT_REQUIRE_GPU();
  const Tensor a = test::random_tensor({1000}, DType::kF32, 9);
  Tensor ga = a.to(Device::kCUDA), gb = Tensor::empty({1000}, DType::kF32, Device::kCUDA);
  copy_async(ga, gb);
  synchronize();
  test::expect_close(gb, a, 0, 0, "device copy");
}

TEST(Tensor, GpuRoundTrip) {
  VT_REQUIRE_GPU();
  Tensor a = test::random_tensor({3, 13, 17, 7}, DType::kF32, 5);
  for (DType dt : {DType::kF32, DType::kBF16}) {
    Tensor back = a.to(Device::kCUDA, dt).to(Device::kCPU, DType::kF32);
    // f32 is a plain copy; bf16 loses at most half an ulp, 2^-8 of a value at the bottom of
    // its binade (0.50195 rounds to 0.5).
    test::expect_close(back, a, 0, dt == DType::kF32 ? 0 : std::ldexp(1.0, -8), dtype_name(dt));
  }
  Tensor g = Tensor::empty({5}, DType::kF32, Device::kCUDA);
  copy(test::from_values({5}, {1, 2, 3, 4, 5}), g);
  zero(g);
  synchronize();
  EXPECT_EQ(test::values(g), std::vector<double>(5, 0.0));
}

TEST(MemoryPlan, OneAllocationAlignedViewsAndNoRequestsAfterwards) {
  MemoryPlan plan(Device::kCPU);
  const BufferId a = plan.request("a", {3, 5}, DType::kF32);  // 60 bytes -> 256
  const BufferId b = plan.request("b", {7}, DType::kF64);     // 56 bytes -> 256
  EXPECT_EQ(plan.total_bytes(), 512u);
  EXPECT_THROW(plan.get(a), Error);  // not allocated yet
  const int64_t before = allocation_count();
  plan.allocate();
  EXPECT_EQ(allocation_count(), before + 1);
  Tensor ta = plan.get(a), tb = plan.get(b);
  EXPECT_EQ(ta.shape(), (Shape{3, 5}));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(tb.raw()) - reinterpret_cast<uintptr_t>(ta.raw()), 256u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(ta.raw()) % 64, 0u);
  EXPECT_EQ(tb.data<double>()[6], 0.0);  // zero-initialised
  // Using the views allocates nothing: the property every training step relies on.
  const int64_t planned = allocation_count();
  for (int i = 0; i < 10; ++i) plan.get(i % 2 ? a : b).data<float>()[0] += 1;
  EXPECT_EQ(allocation_count(), planned);
  try {
    plan.request("late", {4}, DType::kF32);
    FAIL() << "request after allocate() accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'late'"), std::string::npos) << e.what();
  }
  EXPECT_NE(plan.summary().find("b "), std::string::npos);
  EXPECT_THROW(plan.get(99), Error);
}

TEST(MemoryPlan, ViewsOutliveThePlan) {
  Tensor t;
  {
    MemoryPlan plan(Device::kCPU);
    BufferId id = plan.request("x", {4}, DType::kF32);
    plan.allocate();
    t = plan.get(id);
  }
  t.data<float>()[3] = 2.0f;  // the arena is shared-owned by its views (ASan would flag a leak of this)
  EXPECT_EQ(t.data<float>()[3], 2.0f);
}

TEST(Check, MessagesCarryFileLineRankAndDetail) {
  set_process_rank(3);
  try {
    VT_CHECK(1 + 1 == 3, "arithmetic on rank ", 3);
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("[rank 3 @ "), std::string::npos) << m;
    EXPECT_NE(m.find("tests/layers/core_test.cpp:"), std::string::npos) << m;  // relative path
    EXPECT_NE(m.find("`1 + 1 == 3`"), std::string::npos) << m;
    EXPECT_NE(m.find("arithmetic on rank 3"), std::string::npos) << m;
  }
  set_process_rank(-1);
  try {
    H5_CHECK(-1, cat("shard-00001.h5", ":/images"));
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("[rank ? @ "), std::string::npos) << m;
    EXPECT_NE(m.find("HDF5 error"), std::string::npos) << m;
    EXPECT_NE(m.find("shard-00001.h5:/images"), std::string::npos) << m;
  }
  EXPECT_NO_THROW(H5_CHECK(0, "fine"));
}

#ifdef VT_WITH_CUDA
TEST(Check, CudaErrorsCarryTheRuntimeMessage) {
  // Device -1 is invalid with or without a GPU, so this runs everywhere CUDA is built.
  try {
    CUDA_CHECK(cudaSetDevice(-1));
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("CUDA error at tests/layers/core_test.cpp:"), std::string::npos) << m;
    EXPECT_NE(m.find("cudaSetDevice(-1)"), std::string::npos) << m;
  }
  cudaGetLastError();
}
#endif

}  // namespace
}  // namespace vt
