// Static memory plan (see memory_plan.h).
#include "layers/memory_plan.h"

#include <algorithm>
#include <cstdio>

#include "layers/check.h"

namespace vt {

namespace {
constexpr size_t kAlign = 256;  // cudaMalloc's alignment: keeps vector loads legal
}

BufferId MemoryPlan::request(const std::string& name, const Shape& shape, DType dt) {
  VT_CHECK(!allocated(), "MemoryPlan: buffer '", name, "' ", shape.str(),
           " requested after allocate(): all buffers must be planned before the first step");
  const size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(dt);
  entries_.push_back({name, shape, dt, total_bytes_});
  total_bytes_ += (bytes + kAlign - 1) / kAlign * kAlign;
  return static_cast<BufferId>(entries_.size() - 1);
}

void MemoryPlan::allocate() {
  VT_CHECK(!allocated(), "MemoryPlan: allocate() called twice");
  arena_ = vt::allocate(device_, total_bytes_);
}

Tensor MemoryPlan::get(BufferId id) const {
  VT_CHECK(id >= 0 && id < static_cast<int>(entries_.size()), "MemoryPlan: unknown buffer id ", id);
  const Entry& e = entries_[id];
  VT_CHECK(allocated(), "MemoryPlan: buffer '", e.name, "' used before allocate()");
  return Tensor::view(static_cast<char*>(arena_.get()) + e.offset, e.shape, e.dtype, device_, arena_);
}

std::string MemoryPlan::summary() const {
  std::vector<const Entry*> order;
  for (const Entry& e : entries_) order.push_back(&e);
  std::stable_sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->shape.numel() * dtype_size(a->dtype) > b->shape.numel() * dtype_size(b->dtype);
  });
  std::string s = cat("memory plan (", device_name(device_), "): ", entries_.size(), " buffers, ",
                      total_bytes_ / 1048576.0, " MiB\n");
  for (const Entry* e : order) {
    char line[256];
    std::snprintf(line, sizeof(line), "  %-32s %-22s %-4s %9.2f MiB\n", e->name.c_str(),
                  e->shape.str().c_str(), dtype_name(e->dtype),
                  e->shape.numel() * dtype_size(e->dtype) / 1048576.0);
    s += line;
  }
  return s;
}

}  // namespace vt
