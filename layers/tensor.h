// Tensor: a typed, shaped view of memory on the CPU or a CUDA device.
//
// A Tensor does not own memory by itself: it either shares ownership of an allocation
// (Tensor::empty, used by tests and the memory plan) or views memory owned elsewhere
// (Tensor::view, e.g. a slice of the flat parameter buffer). Copies are shallow. Layout is
// row-major; activations are NHWC, so an activation tensor has shape (N, H, W, C).
//
// Channel views: a tensor may also be some consecutive channels (last-dimension entries) of
// a wider one (channels()), e.g. one input's part of a concatenation its producer writes in
// place (Model). Its rows, one per index of all dimensions but the last, then lie pitch()
// elements apart instead of dim(-1). Only the ops whose contracts say so accept such a view
// (Arg::strided in op.h); copy, copy_async, to and reshape need contiguous tensors.
//
// Storage types: fp32 everywhere, bf16 on the GPU (activations and GEMM inputs), and fp64
// on the CPU only, where the finite-difference gradient checks run the ops in double; u8
// for image batches, which cross to the GPU as bytes and are normalised there.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>

namespace vt {

enum class Device : uint8_t { kCPU, kCUDA };
enum class DType : uint8_t { kF32, kBF16, kF64, kU8 };

size_t dtype_size(DType dt);
const char* dtype_name(DType dt);
const char* device_name(Device d);

// Up to 6 dimensions, stored inline (no allocation).
class Shape {
 public:
  static constexpr int kMaxRank = 6;
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);

  int rank() const { return rank_; }
  int64_t operator[](int i) const { return dims_[i]; }
  int64_t& operator[](int i) { return dims_[i]; }
  int64_t numel() const;
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::string str() const;  // "(2, 13, 17, 7)"

 private:
  std::array<int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

// An opaque CUDA stream (cudaStream_t); the default {} is the legacy default stream.
// CPU ops ignore it. Kept opaque so that headers need no CUDA include.
struct Stream {
  void* handle = nullptr;
};

class Tensor {
 public:
  Tensor() = default;

  // A new zero-filled allocation of its own. Not for use inside a training step: the
  // trainer takes all its buffers from a MemoryPlan.
  static Tensor empty(const Shape& shape, DType dt, Device dev);
  // A view of memory owned elsewhere; `owner` (may be null) is kept alive with the view.
  static Tensor view(void* data, const Shape& shape, DType dt, Device dev,
                     std::shared_ptr<void> owner = nullptr);

  void* raw() const { return data_; }
  template <class T>
  T* data() const { return static_cast<T*>(data_); }

  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  int64_t dim(int i) const { return shape_[i]; }
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool defined() const { return data_ != nullptr || shape_.rank() > 0; }
  bool is_cuda() const { return device_ == Device::kCUDA; }
  // Elements from one row (all dimensions but the last fixed) to the next: dim(-1) unless the
  // tensor is a channel view; contiguous() when equal.
  int64_t pitch() const { return pitch_ > 0 ? pitch_ : rank() > 0 ? shape_[rank() - 1] : 1; }
  bool contiguous() const { return pitch_ == 0; }

  // Same memory, new shape with the same element count (contiguous tensors only).
  Tensor reshape(const Shape& shape) const;
  // The view of channels [begin, begin + count) of the last dimension, sharing ownership.
  Tensor channels(int64_t begin, int64_t count) const;
  // "x: (2, 13, 17, 7) f32 cuda", with " pitch 96" for a channel view
  std::string str(const char* name) const;

  // A deep copy on `dev` with storage type `dt` (converting fp32 <-> bf16 <-> fp64).
  Tensor to(Device dev, DType dt) const;
  Tensor to(Device dev) const { return to(dev, dtype_); }

 private:
  std::shared_ptr<void> owner_;
  void* data_ = nullptr;
  Shape shape_;
  int64_t pitch_ = 0;  // 0: contiguous
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCPU;
};

// A zero-filled allocation of `bytes` on `dev` (64-byte aligned on the CPU), freed when the
// last owner goes. Every call is counted, so tests can prove a step allocates nothing.
std::shared_ptr<void> allocate(Device dev, size_t bytes);
// Page-locked host memory when a CUDA device is present (so copies to it run
// asynchronously at full speed), ordinary aligned host memory otherwise. Also counted.
std::shared_ptr<void> allocate_pinned(size_t bytes);
int64_t allocation_count();

// Copies src into dst, which must have the same element count; converts the storage
// type and crosses devices as needed. Synchronous.
void copy(const Tensor& src, const Tensor& dst);
// Copies src into dst of the same element count, storage type and device, asynchronously on
// `stream` for CUDA tensors (so a CUDA graph can capture it).
void copy_async(const Tensor& src, const Tensor& dst, Stream stream = {});
// Sets every element to zero (a channel view's own elements only), asynchronously on `stream`
// for CUDA tensors.
void zero(const Tensor& t, Stream stream = {});

// Number of usable CUDA devices: 0 when built without CUDA, or with no driver or device.
int cuda_device_count();
// Bytes of the current CUDA device's memory in use (by every process), for progress lines;
// 0 without CUDA.
int64_t cuda_memory_in_use();
// Makes device i current for this thread (each rank picks its GPU from its local rank).
void cuda_set_device(int i);
// "NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79.1 GiB" for device i.
std::string cuda_device_description(int i);
// Waits for all work on `stream` (CUDA) to finish; no-op without CUDA or without a device.
void synchronize(Stream stream = {});

// bf16 <-> fp32 on the host, round to nearest even (NaN stays NaN).
uint16_t float_to_bf16(float f);
float bf16_to_float(uint16_t b);

}  // namespace vt
