// Background checkpoint writing and state restore (see checkpointing.h).
#include "trainer/checkpointing.h"
#include "trainer/version.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "data/fileio.h"
#include "layers/check.h"

namespace vt {
namespace {

std::vector<float> host_values(const Tensor& t) {
  const Tensor h = t.to(Device::kCPU, DType::kF32);
  return std::vector<float>(h.data<float>(), h.data<float>() + h.numel());
}

void put_flat(ckpt::Checkpoint& c, const std::string& name, const Tensor& t) {
  c.put(name, {t.numel()}, host_values(t));
}

void get_flat(const ckpt::Checkpoint& c, const std::string& name, const std::string& path, const Tensor& dst) {
  VT_CHECK(c.has(name), "checkpoint ", path, " has no '", name, "': it holds no training state to resume from");
  const ckpt::HostTensor& t = c.get(name);
  VT_CHECK(static_cast<int64_t>(t.data.size()) == dst.numel(), "checkpoint ", path, ": ", name, " has ", t.data.size(),
           " values, this run needs ", dst.numel(), " (a different model or optimizer)");
  copy(Tensor::view(const_cast<float*>(t.data.data()), {dst.numel()}, DType::kF32, Device::kCPU), dst);
}

std::string fmt(double v) {
  char b[40];
  std::snprintf(b, sizeof(b), "%.17g", v);
  return b;
}

}  // namespace

Checkpointer::Checkpointer(const Model& model, const StateBuffers& buffers, ckpt::CheckpointStore& store)
    : model_(model), buffers_(buffers), store_(store) {
  size_t bytes = 0;
  const Tensor* all[] = {&buffers_.params, &buffers_.bn_stats, &buffers_.ema,     &buffers_.ema_bn,
                         &buffers_.state0, &buffers_.state1,   &buffers_.grad_sum};
  for (const Tensor* t : all) bytes += (t->nbytes() + 63) / 64 * 64;
  pinned_ = allocate_pinned(bytes);
  size_t at = 0;
  for (const Tensor* t : all) {
    slots_.push_back({t, Tensor::view(static_cast<char*>(pinned_.get()) + at, t->shape(), t->dtype(), Device::kCPU)});
    at += (t->nbytes() + 63) / 64 * 64;
  }
  thread_ = std::thread([this] { writer(); });
}

Checkpointer::~Checkpointer() {
  try {
    finish();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "checkpoint: %s\n", e.what());
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Checkpointer::save(SaveRequest request) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return !busy_; });  // one write in flight at most
  if (!error_.empty()) throw Error(std::exchange(error_, {}));
  for (auto& [src, dst] : slots_) copy(*src, dst);
  pending_ = std::move(request);
  busy_ = true;
  cv_.notify_all();
}

void Checkpointer::finish() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return !busy_; });
  if (!error_.empty()) throw Error(std::exchange(error_, {}));
}

void Checkpointer::writer() {
  for (;;) {
    SaveRequest r;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || pending_.has_value(); });
      if (!pending_) return;
      r = std::move(*pending_);
      pending_.reset();
    }
    std::string error;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      write(r);
    } catch (const std::exception& e) {
      error = e.what();
    }
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::lock_guard<std::mutex> lock(mu_);
    write_s_ += dt;
    max_write_s_ = std::max(max_write_s_, dt);
    ++writes_;
    if (!error.empty()) error_ = "writing the checkpoint of step " + std::to_string(r.counters.step) + " failed: " + error;
    busy_ = false;
    cv_.notify_all();
  }
}

void Checkpointer::write(const SaveRequest& r) {
  auto snap = [&](const Tensor& t) -> const Tensor& {
    for (const auto& [src, dst] : slots_)
      if (src == &t) return dst;
    VT_CHECK(false, "checkpoint: unknown buffer");
  };
  ckpt::Checkpoint c;
  put_info(c, r.info);
  put_named(c, "model", model_, model_.state_of(snap(buffers_.params), snap(buffers_.bn_stats)));
  put_named(c, "ema", model_, model_.state_of(snap(buffers_.ema), snap(buffers_.ema_bn)));
  put_flat(c, "optim/state0", snap(buffers_.state0));
  put_flat(c, "optim/state1", snap(buffers_.state1));
  put_flat(c, "optim/grad_sum", snap(buffers_.grad_sum));
  const TrainCounters& k = r.counters;
  c.set("opt_steps", k.opt_steps);
  c.set("last_opt", k.last_opt);
  c.set("skipped", k.skipped);
  c.set("loader_epoch", k.loader.epoch);
  c.set("loader_cursor", k.loader.cursor);
  c.set("world_size", static_cast<int64_t>(r.world_size));
  c.set("global_batch", r.global_batch);
  c.set("seed", static_cast<int64_t>(r.seed));
  c.set("config", r.config_json);
  c.set("best_fitness", fmt(k.best_fitness));
  c.set("optimizer", r.optimizer);
  c.set("rng", nlohmann::json{{"kind", "Philox4x32-10, counter-based: (seed, epoch, sample, stream)"},
                              {"seed", r.seed}, {"epoch", k.loader.epoch}, {"cursor", k.loader.cursor}}.dump());
  c.set("loss_scale", "1 (none: bf16 keeps fp32's exponent range)");
  c.set("git_commit", std::string(git_commit()));
  const std::string committed = store_.commit(c, k.step, r.fitness);
  for (const std::string& path : r.copies) data::copy_file_atomic(committed, path);
}

TrainCounters restore_state(const ckpt::Checkpoint& c, const std::string& path, Model& model,
                            const StateBuffers& buffers) {
  for (const char* key : {"opt_steps", "last_opt", "loader_epoch", "loader_cursor", "step"})
    VT_CHECK(c.has_attr(key), "checkpoint ", path, " lacks '", key, "': it holds no training state to resume from");
  // EMA first, through the model's own buffers, then the model's weights over them.
  model.load_state(get_named(c, "ema", path));
  copy(model.params(), buffers.ema);
  copy(model.bn_stats(), buffers.ema_bn);
  model.load_state(get_named(c, "model", path));
  get_flat(c, "optim/state0", path, buffers.state0);
  get_flat(c, "optim/state1", path, buffers.state1);
  get_flat(c, "optim/grad_sum", path, buffers.grad_sum);
  TrainCounters k;
  k.step = c.get_int("step");
  k.opt_steps = c.get_int("opt_steps");
  k.last_opt = c.get_int("last_opt");
  k.skipped = c.has_attr("skipped") ? c.get_int("skipped") : 0;
  k.best_fitness = c.has_attr("best_fitness") ? std::stod(c.get_string("best_fitness")) : -1;
  k.loader = {c.get_int("loader_epoch"), c.get_int("loader_cursor")};
  return k;
}

}  // namespace vt
