// Tensor, Shape, raw allocation and cross-device copies (see tensor.h).
#include "layers/tensor.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "layers/check.h"

#ifdef VT_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace vt {

size_t dtype_size(DType dt) {
  switch (dt) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kF64: return 8;
    case DType::kU8: return 1;
  }
  return 0;
}

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::kF32: return "f32";
    case DType::kBF16: return "bf16";
    case DType::kF64: return "f64";
    case DType::kU8: return "u8";
  }
  return "?";
}

const char* device_name(Device d) { return d == Device::kCPU ? "cpu" : "cuda"; }

Shape::Shape(std::initializer_list<int64_t> dims) {
  VT_CHECK(dims.size() <= kMaxRank, "Shape: rank ", dims.size(), " exceeds ", kMaxRank);
  for (int64_t d : dims) {
    VT_CHECK(d >= 0, "Shape: negative dimension ", d);
    dims_[rank_++] = d;
  }
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[i];
  return n;
}

bool Shape::operator==(const Shape& o) const {
  if (rank_ != o.rank_) return false;
  for (int i = 0; i < rank_; ++i)
    if (dims_[i] != o.dims_[i]) return false;
  return true;
}

std::string Shape::str() const {
  std::string s = "(";
  for (int i = 0; i < rank_; ++i) s += (i ? ", " : "") + std::to_string(dims_[i]);
  return s + ")";
}

namespace {
std::atomic<int64_t> g_allocations{0};
}

int64_t allocation_count() { return g_allocations; }

std::shared_ptr<void> allocate(Device dev, size_t bytes) {
  ++g_allocations;
  const size_t n = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
  if (dev == Device::kCPU) {
    void* p = std::aligned_alloc(64, n);
    VT_CHECK(p != nullptr, "allocate: out of host memory for ", bytes, " bytes");
    std::memset(p, 0, n);
    return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  }
#ifdef VT_WITH_CUDA
  void* p = nullptr;
  CUDA_CHECK(cudaMalloc(&p, n));
  CUDA_CHECK(cudaMemset(p, 0, n));
  return std::shared_ptr<void>(p, [](void* q) { cudaFree(q); });
#else
  VT_CHECK(false, "allocate: this build has no CUDA support");
#endif
}

std::shared_ptr<void> allocate_pinned(size_t bytes) {
#ifdef VT_WITH_CUDA
  if (cuda_device_count() > 0) {
    ++g_allocations;
    void* p = nullptr;
    CUDA_CHECK(cudaMallocHost(&p, bytes == 0 ? 64 : bytes));
    std::memset(p, 0, bytes);
    return std::shared_ptr<void>(p, [](void* q) { cudaFreeHost(q); });
  }
#endif
  return allocate(Device::kCPU, bytes);
}

Tensor Tensor::empty(const Shape& shape, DType dt, Device dev) {
  std::shared_ptr<void> mem = allocate(dev, static_cast<size_t>(shape.numel()) * dtype_size(dt));
  void* p = mem.get();
  return view(p, shape, dt, dev, std::move(mem));
}

Tensor Tensor::view(void* data, const Shape& shape, DType dt, Device dev,
                    std::shared_ptr<void> owner) {
  VT_CHECK(dt != DType::kF64 || dev == Device::kCPU, "Tensor: f64 exists on the CPU only");
  Tensor t;
  t.owner_ = std::move(owner);
  t.data_ = data;
  t.shape_ = shape;
  t.dtype_ = dt;
  t.device_ = dev;
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  VT_CHECK(shape.numel() == numel(), "reshape: ", shape_.str(), " has ", numel(),
           " elements, ", shape.str(), " has ", shape.numel());
  VT_CHECK(contiguous(), "reshape: ", str("a channel view"), " cannot be reshaped");
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::channels(int64_t begin, int64_t count) const {
  VT_CHECK(rank() > 0 && begin >= 0 && count >= 1 && begin + count <= shape_[rank() - 1], "channels: [",
           begin, ", +", count, ") is not inside the last dimension of ", str("the tensor"));
  Tensor t = *this;
  t.pitch_ = pitch() == count ? 0 : pitch();  // all channels of a contiguous tensor: still contiguous
  t.shape_[rank() - 1] = count;
  t.data_ = static_cast<char*>(data_) + begin * static_cast<int64_t>(dtype_size(dtype_));
  return t;
}

std::string Tensor::str(const char* name) const {
  return cat(name, ": ", shape_.str(), " ", dtype_name(dtype_), " ", device_name(device_),
             contiguous() ? std::string() : cat(" pitch ", pitch_));
}

Tensor Tensor::to(Device dev, DType dt) const {
  Tensor t = empty(shape_, dt, dev);
  copy(*this, t);
  return t;
}

uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float bf16_to_float(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

namespace {

// Host-side conversion between storage types, elementwise through double.
double load(const void* p, DType dt, int64_t i) {
  switch (dt) {
    case DType::kF32: return static_cast<const float*>(p)[i];
    case DType::kBF16: return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::kF64: return static_cast<const double*>(p)[i];
    case DType::kU8: return static_cast<const uint8_t*>(p)[i];
  }
  return 0;
}

void store(void* p, DType dt, int64_t i, double v) {
  switch (dt) {
    case DType::kF32: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case DType::kBF16: static_cast<uint16_t*>(p)[i] = float_to_bf16(static_cast<float>(v)); break;
    case DType::kF64: static_cast<double*>(p)[i] = v; break;
    case DType::kU8: static_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v + 0.5); break;
  }
}

void memcpy_any(void* dst, Device ddev, const void* src, Device sdev, size_t n) {
  if (n == 0) return;  // empty tensors may have null data
  if (ddev == Device::kCPU && sdev == Device::kCPU) {
    std::memcpy(dst, src, n);
    return;
  }
#ifdef VT_WITH_CUDA
  CUDA_CHECK(cudaMemcpy(dst, src, n, cudaMemcpyDefault));
  // cudaMemcpy may return before a device-to-device copy, or the DMA of a pageable
  // host-to-device one, has finished: wait, so that copy() is synchronous as it says and
  // work on other streams (NCCL's) sees the result.
  CUDA_CHECK(cudaStreamSynchronize(nullptr));
#else
  VT_CHECK(false, "copy: this build has no CUDA support");
#endif
}

}  // namespace

void copy(const Tensor& src, const Tensor& dst) {
  VT_CHECK(src.numel() == dst.numel(), "copy: ", src.str("src"), " vs ", dst.str("dst"));
  VT_CHECK(src.contiguous() && dst.contiguous(), "copy: channel views are not copied: ", src.str("src"), ", ",
           dst.str("dst"));
  if (src.dtype() == dst.dtype()) {
    memcpy_any(dst.raw(), dst.device(), src.raw(), src.device(), src.nbytes());
    return;
  }
  // Convert on the host: bring src over, convert, send to dst's device.
  std::vector<unsigned char> hs(src.nbytes()), hd(dst.nbytes());
  memcpy_any(hs.data(), Device::kCPU, src.raw(), src.device(), src.nbytes());
  for (int64_t i = 0; i < src.numel(); ++i) store(hd.data(), dst.dtype(), i, load(hs.data(), src.dtype(), i));
  memcpy_any(dst.raw(), dst.device(), hd.data(), Device::kCPU, dst.nbytes());
}

void copy_async(const Tensor& src, const Tensor& dst, Stream stream) {
  VT_CHECK(src.numel() == dst.numel() && src.dtype() == dst.dtype() && src.device() == dst.device(),
           "copy_async: ", src.str("src"), " and ", dst.str("dst"), " differ in size, type or device");
  VT_CHECK(src.contiguous() && dst.contiguous(), "copy_async: channel views are not copied: ", src.str("src"),
           ", ", dst.str("dst"));
  if (src.device() == Device::kCPU) {
    if (src.nbytes() > 0) std::memcpy(dst.raw(), src.raw(), src.nbytes());
    return;
  }
#ifdef VT_WITH_CUDA
  CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToDevice,
                             static_cast<cudaStream_t>(stream.handle)));
#else
  (void)stream;
  VT_CHECK(false, "copy_async: this build has no CUDA support");
#endif
}

void zero(const Tensor& t, Stream stream) {
  if (t.contiguous()) {
    if (t.device() == Device::kCPU) {
      std::memset(t.raw(), 0, t.nbytes());
      return;
    }
#ifdef VT_WITH_CUDA
    CUDA_CHECK(cudaMemsetAsync(t.raw(), 0, t.nbytes(), static_cast<cudaStream_t>(stream.handle)));
    return;
#endif
  }
  // A channel view: rows of `width` bytes, `pitch` bytes apart.
  const size_t elem = dtype_size(t.dtype()), channels = static_cast<size_t>(t.dim(t.rank() - 1));
  const size_t rows = static_cast<size_t>(t.numel()) / channels, width = channels * elem;
  const size_t pitch = static_cast<size_t>(t.pitch()) * elem;
  if (t.device() == Device::kCPU) {
    for (size_t r = 0; r < rows; ++r) std::memset(static_cast<char*>(t.raw()) + r * pitch, 0, width);
    return;
  }
#ifdef VT_WITH_CUDA
  if (rows > 0)
    CUDA_CHECK(cudaMemset2DAsync(t.raw(), pitch, 0, width, rows, static_cast<cudaStream_t>(stream.handle)));
#else
  (void)stream;
  VT_CHECK(false, "zero: this build has no CUDA support");
#endif
}

int cuda_device_count() {
#ifdef VT_WITH_CUDA
  // Asked once: the answer cannot change during a run, and it is on the sync path.
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();  // clear the sticky "no driver" error
      return 0;
    }
    return n;
  }();
  return count;
#else
  return 0;
#endif
}

int64_t cuda_memory_in_use() {
#ifdef VT_WITH_CUDA
  if (cuda_device_count() == 0) return 0;
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return static_cast<int64_t>(total_b - free_b);
#else
  return 0;
#endif
}

void cuda_set_device(int i) {
  VT_CHECK(i >= 0 && i < cuda_device_count(), "cuda_set_device: device ", i, " of ", cuda_device_count());
#ifdef VT_WITH_CUDA
  CUDA_CHECK(cudaSetDevice(i));
#endif
}

std::string cuda_device_description(int i) {
#ifdef VT_WITH_CUDA
  cudaDeviceProp p{};
  CUDA_CHECK(cudaGetDeviceProperties(&p, i));
  return cat(p.name, ", sm_", p.major, p.minor, ", ", p.multiProcessorCount, " SMs, ",
             p.totalGlobalMem / 1073741824.0, " GiB");
#else
  VT_CHECK(false, "cuda_device_description: this build has no CUDA support");
#endif
}

void synchronize(Stream stream) {
#ifdef VT_WITH_CUDA
  if (cuda_device_count() == 0) return;  // nothing can be in flight
  CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream.handle)));
#else
  (void)stream;
#endif
}

}  // namespace vt
