// MemoryPlan: every buffer a run needs, planned up front and allocated once.
//
// Input size and per-rank batch are fixed for a run, so the model asks for all of its
// activations, gradients and workspaces while it is being built (request), then the plan
// makes one allocation per device (allocate) and hands out views (get). A request after
// allocate() is an error: nothing is allocated inside a training step, which is also what
// lets the whole GPU step be captured as a CUDA graph.
//
//   MemoryPlan plan(Device::kCUDA);
//   BufferId y = plan.request("conv1.y", {n, h, w, c}, DType::kBF16);
//   plan.allocate();
//   Tensor t = plan.get(y);
#pragma once

#include <string>
#include <vector>

#include "layers/tensor.h"

namespace vt {

using BufferId = int;

class MemoryPlan {
 public:
  explicit MemoryPlan(Device dev) : device_(dev) {}

  // Reserves a zero-initialised buffer; names appear in errors and in summary().
  BufferId request(const std::string& name, const Shape& shape, DType dt);
  // One allocation holding every requested buffer, each aligned to 256 bytes.
  void allocate();
  Tensor get(BufferId id) const;

  bool allocated() const { return static_cast<bool>(arena_); }
  size_t total_bytes() const { return total_bytes_; }
  Device device() const { return device_; }
  // One line per buffer, largest first: "  conv1.y  (8, 320, 320, 16) bf16  25.0 MiB".
  std::string summary() const;

 private:
  struct Entry {
    std::string name;
    Shape shape;
    DType dtype;
    size_t offset;
  };
  Device device_;
  std::vector<Entry> entries_;
  size_t total_bytes_ = 0;
  std::shared_ptr<void> arena_;
};

}  // namespace vt
