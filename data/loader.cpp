// The prefetching loader (see loader.h): planning batches, the reader threads that fill the
// pinned ring, and delivery in order, to the host or through the copy stream to the device.
//
// Hand-out: samples are tasks (batch seq, position), given out under mu_ in increasing
// order, and a batch is planned (its SampleRefs drawn from the Sampler) when its first task
// is taken. Batch seq may be filled only while its ring slot is free: seq < released_ + K.
// On the CPU path a slot is released when next() is called again (the caller has finished
// with it); on the CUDA path when its host-to-device copy has completed. Each thread writes
// only its own sample's bytes, so none waits on another, and what a sample holds depends only
// on its SampleRef: the output is the same for any number of threads and any K.
#include "data/loader.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "data/batch_copy.h"
#include "layers/check.h"

namespace vt::data {
namespace {

constexpr size_t kAlign = 256;  // slot parts start on this boundary (pinned DMA, cache lines)

size_t align_up(size_t n) {
  return (n + kAlign - 1) / kAlign * kAlign;
}

// Target rows of one image: the first n from `boxes`, the rest padding (cls -1, zeros).
void write_targets(float* rows, int64_t max_boxes, const std::vector<Box>& boxes, int64_t n) {
  for (int64_t k = 0; k < max_boxes; ++k) {
    float* r = rows + 5 * k;
    if (k < n) {
      const Box& b = boxes[static_cast<size_t>(k)];
      r[0] = static_cast<float>(b.cls);
      r[1] = b.x1;
      r[2] = b.y1;
      r[3] = b.x2;
      r[4] = b.y2;
    } else {
      r[0] = -1.f;
      r[1] = r[2] = r[3] = r[4] = 0.f;
    }
  }
}

}  // namespace

void Batch::wait(vt::Stream compute) const {
#ifdef VT_WITH_CUDA
  if (copier_) copier_->wait(buffer_, compute);
#else
  (void)compute;
#endif
}

Loader::Loader(LoaderConfig cfg, const LoaderState& start)
    : cfg_(std::move(cfg)), dataset_(Dataset::open(cfg_.dir, cfg_.verify, cfg_.threads)), source_(dataset_) {
  const LoaderConfig& c = cfg_;
  VT_CHECK(c.world_size >= 1 && c.rank >= 0 && c.rank < c.world_size, "loader: rank ", c.rank,
           " of world size ", c.world_size);
  const int64_t split = int64_t(c.world_size) * (c.augment.train ? c.micro_steps : 1);
  VT_CHECK(c.micro_steps >= 1 && c.global_batch > 0 && c.global_batch % split == 0, "loader: global batch ",
           c.global_batch, " does not split evenly over ", c.world_size, " ranks x ", c.micro_steps,
           " micro-steps");
  VT_CHECK(c.prefetch >= 1 && c.max_boxes >= 1 && c.threads >= 0 && c.augment.imgsz > 0,
           "loader: bad config for ", c.dir, " (prefetch ", c.prefetch, ", max_boxes ", c.max_boxes,
           ", threads ", c.threads, ", imgsz ", c.augment.imgsz,
           "): prefetch and max_boxes must be >= 1, threads >= 0, imgsz > 0");
  rank_batch_ = c.global_batch / split;
  imgsz_ = c.augment.imgsz;
  if (c.augment.train)
    sampler_ = std::make_unique<Sampler>(dataset_.size(), c.global_batch, c.world_size, c.rank, c.seed,
                                         c.micro_steps);
  else
    range_ = validation_range(dataset_.size(), c.world_size, c.rank);

  image_bytes_ = static_cast<size_t>(rank_batch_ * imgsz_ * imgsz_ * 3);
  target_bytes_ = static_cast<size_t>(rank_batch_ * c.max_boxes * 5) * sizeof(float);
  const size_t stride = align_up(image_bytes_) + align_up(target_bytes_);
  ring_ = allocate_pinned(stride * static_cast<size_t>(c.prefetch));
  slots_.resize(static_cast<size_t>(c.prefetch));
  for (size_t k = 0; k < slots_.size(); ++k) {
    Slot& s = slots_[k];
    s.images = static_cast<uint8_t*>(ring_.get()) + k * stride;
    s.targets = reinterpret_cast<float*>(s.images + align_up(image_bytes_));
    s.index.assign(static_cast<size_t>(rank_batch_), -1);
    s.num_boxes.assign(static_cast<size_t>(rank_batch_), 0);
    s.box_stats.resize(static_cast<size_t>(rank_batch_));
    s.over_max.assign(static_cast<size_t>(rank_batch_), 0);
    s.bad.resize(static_cast<size_t>(rank_batch_));
    s.error.resize(static_cast<size_t>(rank_batch_));
  }
  if (c.device == Device::kCUDA) {
#ifdef VT_WITH_CUDA
    copier_ = std::make_shared<BatchCopier>(image_bytes_, target_bytes_, &Loader::on_copied, this);
#else
    VT_CHECK(false, "loader: device CUDA requested, but this build has no CUDA support");
#endif
  }
  this->start(start);
}

Loader::~Loader() {
  // Destructors only print. The threads are joined before anything in stop() can throw
  // (the CUDA calls that follow, e.g. on a compute stream the caller already destroyed).
  try {
    stop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "loader: shutting down: %s\n", e.what());
  }
}

int64_t Loader::num_batches() const {
  return sampler_ ? sampler_->steps_per_epoch() : (range_.size() + rank_batch_ - 1) / rank_batch_;
}

void Loader::start(const LoaderState& s) {
  if (sampler_) {
    sampler_->seek(s);
    state_ = sampler_->state();
    total_ = -1;
  } else {
    check_eval_state(s);
    state_ = s;
    eval_cursor_ = s.cursor;
    total_ = (range_.size() - s.cursor + rank_batch_ - 1) / rank_batch_;
  }
  for (Slot& slot : slots_) slot.seq = -1;
  stop_ = false;
  fatal_.clear();
  task_seq_ = task_pos_ = released_ = next_seq_ = 0;
  const int n =
      cfg_.threads > 0 ? cfg_.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  try {
    for (int t = 0; t < n; ++t) threads_.emplace_back([this] { reader(); });
  } catch (...) {
    stop();  // never leave a joinable thread behind
    throw;
  }
}

void Loader::check_eval_state(const LoaderState& s) const {
  VT_CHECK(s.epoch == 0 && s.cursor >= 0 && s.cursor <= range_.size(),
           "loader: cannot resume evaluation at epoch ", s.epoch, " cursor ", s.cursor, " (rank ", cfg_.rank,
           " evaluates ", range_.size(), " samples)");
}

void Loader::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    work_cv_.notify_all();
  }
  for (std::thread& t : threads_) t.join();
  threads_.clear();
#ifdef VT_WITH_CUDA
  // Queued copies read the ring and their callbacks take mu_: let them finish first.
  if (copier_) copier_->drop();
#endif
}

void Loader::seek(const LoaderState& s) {
  // A state the sampler refuses must fail before the running pipeline is stopped.
  if (sampler_)
    Sampler(dataset_.size(), cfg_.global_batch, cfg_.world_size, cfg_.rank, cfg_.seed, cfg_.micro_steps).seek(s);
  else
    check_eval_state(s);
  stop();
  start(s);
}

void Loader::reader() {
  try {
    for (;;) {
      Slot* s = nullptr;
      int64_t pos = 0;
      {
        std::unique_lock<std::mutex> lock(mu_);
        work_cv_.wait(
            lock, [&] { return stop_ || (!finished(task_seq_) && task_seq_ < released_ + cfg_.prefetch); });
        if (stop_) return;
        s = &slot(task_seq_);
        if (task_pos_ == 0) plan(*s, task_seq_);
        pos = task_pos_;
        if (++task_pos_ == rank_batch_) {
          task_pos_ = 0;
          ++task_seq_;
        }
      }
      fill(*s, pos);
      std::lock_guard<std::mutex> lock(mu_);
      if (--s->pending == 0) ready_cv_.notify_all();
    }
  } catch (const std::exception& e) {
    // Planning failed (fill() catches its own errors): nothing more can be delivered.
    std::lock_guard<std::mutex> lock(mu_);
    if (fatal_.empty()) fatal_ = cat("loader: planning the next batch of ", cfg_.dir, " failed: ", e.what());
    ready_cv_.notify_all();
  }
}

void Loader::plan(Slot& slot, int64_t seq) {
  slot.seq = seq;
  slot.pending = rank_batch_;
  if (sampler_) {
    slot.refs = sampler_->next();
    slot.valid = rank_batch_;
    slot.after = sampler_->state();
  } else {
    const int64_t first = range_.begin + eval_cursor_;
    slot.valid = std::min(rank_batch_, range_.end - first);
    slot.refs.resize(static_cast<size_t>(slot.valid));
    for (int64_t p = 0; p < slot.valid; ++p) slot.refs[p] = {first + p, {cfg_.seed, 0, first + p}};
    eval_cursor_ += slot.valid;
    slot.after = {0, eval_cursor_};
  }
}

void Loader::fill(Slot& slot, int64_t pos) {
  const size_t p = static_cast<size_t>(pos);
  const size_t pixels = static_cast<size_t>(imgsz_ * imgsz_ * 3);
  const int64_t m = cfg_.max_boxes;
  uint8_t* image = slot.images + p * pixels;
  float* rows = slot.targets + static_cast<int64_t>(p) * m * 5;
  slot.index[p] = -1;
  slot.num_boxes[p] = 0;
  slot.box_stats[p] = {};
  slot.over_max[p] = 0;
  slot.bad[p].clear();
  slot.error[p].clear();
  const auto leave_empty = [&] {
    std::memset(image, 0, pixels);
    write_targets(rows, m, {}, 0);
  };
  if (pos >= slot.valid) return leave_empty();  // eval's last batch: padding

  const SampleRef& ref = slot.refs[p];
  try {
    RecordingSource src(source_);
    BoxStats stats;
    const Labeled out = make_sample(src, ref.index, ref.key, cfg_.augment, &stats);
    slot.bad[p] = src.bad();
    const int64_t loaded = src.resolved(ref.index);
    if (!cfg_.augment.train && loaded != ref.index) return leave_empty();  // scored nowhere, not twice
    VT_CHECK(out.image.h == imgsz_ && out.image.w == imgsz_, "loader: sample is ", out.image.h, "x",
             out.image.w, ", expected ", imgsz_, "x", imgsz_);
    std::memcpy(image, out.image.rgb.data(), pixels);
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(out.boxes.size()), m);
    write_targets(rows, m, out.boxes, n);
    slot.index[p] = loaded;
    slot.num_boxes[p] = static_cast<int32_t>(n);
    slot.over_max[p] = static_cast<int64_t>(out.boxes.size()) - n;
    slot.box_stats[p] = stats;
  } catch (const std::exception& e) {
    slot.error[p] = sampler_ ? cat("loader: ", source_.describe(ref.index), " (epoch ", ref.key.epoch,
                                   ", position ", ref.key.position, "): ", e.what())
                             : cat("loader: ", source_.describe(ref.index), " (evaluation): ", e.what());
  }
}

Loader::Slot& Loader::wait_for(int64_t seq, std::unique_lock<std::mutex>& lock) {
  Slot& s = slot(seq);
  const auto t0 = std::chrono::steady_clock::now();
  ready_cv_.wait(lock, [&] { return !fatal_.empty() || (s.seq == seq && s.pending == 0); });
  stats_.last_wait_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stats_.wait_s += stats_.last_wait_s;
  if (!fatal_.empty()) throw Error(fatal_);
  for (const std::string& e : s.error)
    if (!e.empty()) throw Error(e);
  return s;
}

void Loader::harvest(Slot& slot, Harvest& out) {
  out.valid = slot.valid;
  out.after = slot.after;
  out.index = slot.index;
  out.num_boxes = slot.num_boxes;
  out.boxes = {};
  out.over_max = 0;
  out.bad.clear();
  for (size_t p = 0; p < slot.index.size(); ++p) {
    out.boxes += slot.box_stats[p];
    out.over_max += slot.over_max[p];
    out.bad.insert(out.bad.end(), slot.bad[p].begin(), slot.bad[p].end());
  }
  out.images = slot.images;
  out.targets = slot.targets;
}

void Loader::account(const Harvest& h) {
  ++stats_.batches;
  stats_.images += h.valid;
  stats_.boxes += h.boxes;
  stats_.boxes_over_max += h.over_max;
  for (const BadImage& b : h.bad) {
    if (!reported_.insert(b.index).second) continue;
    const std::string line =
        cat("loader: skipped ", source_.describe(b.index), ": it cannot be loaded (", b.reason, "); ",
            sampler_ ? cat("replaced by ", source_.describe(b.replacement))
                     : std::string("left out of evaluation"));
    if (cfg_.warn)
      cfg_.warn(line);
    else
      std::fprintf(stderr, "%s\n", line.c_str());
  }
  stats_.images_skipped = static_cast<int64_t>(reported_.size());
  state_ = h.after;
  out_.valid = h.valid;
  out_.index = h.index;
  out_.num_boxes = h.num_boxes;
}

const Batch* Loader::next() {
  if (finished(next_seq_)) return nullptr;
#ifdef VT_WITH_CUDA
  if (copier_) return next_cuda();
#endif
  return next_cpu();
}

const Batch* Loader::next_cpu() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    released_ = next_seq_;  // the caller is done with the batch it had
    work_cv_.notify_all();
    harvest(wait_for(next_seq_, lock), current_);
  }
  account(current_);
  const Device cpu = Device::kCPU;
  out_.images = Tensor::view(current_.images, {batch_size(), imgsz_, imgsz_, 3}, DType::kU8, cpu, ring_);
  out_.targets = Tensor::view(current_.targets, {batch_size(), cfg_.max_boxes, 5}, DType::kF32, cpu, ring_);
  ++next_seq_;
  return &out_;
}

#ifdef VT_WITH_CUDA
const Batch* Loader::next_cuda() {
  if (copier_->has_staged()) {
    stats_.last_wait_s = 0;
  } else {
    std::unique_lock<std::mutex> lock(mu_);
    harvest(wait_for(next_seq_, lock), staged_);
    lock.unlock();
    copier_->stage(staged_.images, staged_.targets);
  }
  std::swap(current_, staged_);
  const int b = copier_->deliver();
  account(current_);
  const Device dev = Device::kCUDA;
  out_.images = Tensor::view(copier_->images(b), {batch_size(), imgsz_, imgsz_, 3}, DType::kU8, dev, copier_);
  out_.targets =
      Tensor::view(copier_->targets(b), {batch_size(), cfg_.max_boxes, 5}, DType::kF32, dev, copier_);
  out_.copier_ = copier_.get();
  out_.buffer_ = b;
  ++next_seq_;

  // Copy the following batch now if it is complete, so its transfer overlaps this batch's
  // compute; otherwise the next call waits for it. A batch with an error is left to throw there.
  if (!finished(next_seq_)) {
    std::unique_lock<std::mutex> lock(mu_);
    Slot& s = slot(next_seq_);
    const bool ok =
        s.seq == next_seq_ && s.pending == 0 && fatal_.empty() &&
        std::all_of(s.error.begin(), s.error.end(), [](const std::string& e) { return e.empty(); });
    if (ok) {
      harvest(s, staged_);
      lock.unlock();
      copier_->stage(staged_.images, staged_.targets);
    }
  }
  return &out_;
}

void Loader::on_copied(void* self) {
  Loader* l = static_cast<Loader*>(self);
  std::lock_guard<std::mutex> lock(l->mu_);
  ++l->released_;
  l->work_cv_.notify_all();
}
#endif  // VT_WITH_CUDA

}  // namespace vt::data
