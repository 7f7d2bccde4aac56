// The prefetching loader: one rank's batches, assembled by reader threads into a ring of
// pinned host slots ahead of the trainer, and (on a GPU) copied to the device on a stream of
// their own.
//
// Train mode (augment.train): the Sampler gives each micro-step's samples (B / (N k) of them:
// global batch B, N ranks, k micro-steps per step); make_sample augments them. Eval mode: this rank's validation_range in file order, letterboxed, in batches of B
// with the last one partial. A batch:
//   images  (B, S, S, 3) u8 RGB, S = augment.imgsz
//   targets (B, M, 5) f32 rows (cls, x1, y1, x2, y2) in pixels of the S x S image; rows with
//           cls < 0 are padding; M = max_boxes, extra boxes dropped and counted
// Samples are handed to the threads one at a time, in order, so no thread ever waits for
// another's sample; batches are delivered strictly in order, and their bytes depend only on
// (dataset, seed, state, config), never on the thread count or the prefetch depth.
//
// An image that cannot be loaded is replaced by the next one in file order that loads (see
// dataset_source.h); in eval mode its slot is left empty instead (index -1, no targets), so
// no image is scored twice. Each such image is counted and reported once.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "data/augment.h"
#include "data/dataset.h"
#include "data/dataset_source.h"
#include "data/sampler.h"
#include "layers/tensor.h"

namespace vt::data {

class BatchCopier;

struct LoaderConfig {
  std::string dir;                // dataset directory (manifest.json and shards)
  Verify verify = Verify::kFull;  // checksums are verified before training starts
  int64_t global_batch = 16;      // B: samples of one step, over all ranks and micro-steps
  int world_size = 1, rank = 0;   // N ranks
  int micro_steps = 1;            // k: train batches per step and rank (gradient accumulation)
  uint64_t seed = 0;
  int threads = 0;               // reader threads; 0: one per hardware thread
  int prefetch = 4;              // K: batch slots in the pinned ring (>= 1)
  AugmentConfig augment;         // train (augmented, sampled) or eval (letterboxed, in order)
  int max_boxes = 300;           // M
  Device device = Device::kCPU;  // kCUDA: batches are delivered in device memory
  // One line per image that could not be loaded; null: written to stderr.
  std::function<void(const std::string&)> warn;
};

class Batch {
 public:
  Tensor images;                   // (B, S, S, 3) u8
  Tensor targets;                  // (B, M, 5) f32
  std::vector<int64_t> index;      // (B) dataset index of each image; -1 for an empty slot
  std::vector<int32_t> num_boxes;  // (B) target rows in use (the first ones)
  int64_t valid = 0;               // slots 0..valid-1 hold samples (B, except eval's last batch)

  // Makes `compute` wait until the batch is on the device (cudaStreamWaitEvent; no host
  // sync). Call it before queueing work that reads the batch; the loader then reuses the
  // device buffer only after what `compute` had queued when next() was called again.
  // No-op for CPU batches.
  void wait(vt::Stream compute) const;

 private:
  friend class Loader;
  BatchCopier* copier_ = nullptr;
  int buffer_ = -1;
};

struct LoaderStats {
  int64_t batches = 0, images = 0;  // delivered
  BoxStats boxes;                   // from augmentation, over every image the batches used
  int64_t boxes_over_max = 0;       // dropped because an image had more than max_boxes
  int64_t images_skipped = 0;       // distinct images that could not be loaded
  double wait_s = 0;                // time next() blocked waiting for data, in total
  double last_wait_s = 0;           // ... in the last call
};

class Loader {
 public:
  // Opens and validates the dataset (cfg.verify), then starts the reader threads at `start`.
  explicit Loader(LoaderConfig cfg, const LoaderState& start = {});
  ~Loader();  // stops and joins the reader threads
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Blocks until the next batch (train: micro-batch) is complete; valid until the following next() or seek().
  // Eval mode returns null after the last batch of the pass; train mode never does.
  // A sample that failed in a reader thread throws vt::Error here, naming the record.
  const Batch* next();

  // The state of the next batch next() will deliver (a checkpoint stores this), and a
  // restart of the pipeline there. Eval state is {0, samples of the rank's range consumed}.
  LoaderState state() const { return state_; }
  void seek(const LoaderState& s);

  const LoaderStats& stats() const { return stats_; }
  const Dataset& dataset() const { return dataset_; }
  int64_t batch_size() const { return rank_batch_; }  // per next(): B / (N k) in train, B / N in eval
  // Train: steps per epoch (each k batches); eval: batches of this rank's validation range.
  int64_t num_batches() const;

 private:
  // One batch in the ring: its plan, and per sample what the reader thread found.
  struct Slot {
    int64_t seq = -1;     // batch number since the last seek
    int64_t pending = 0;  // samples not yet written
    int64_t valid = 0;
    LoaderState after;  // the loader's state once this batch is delivered
    std::vector<SampleRef> refs;
    std::vector<int64_t> index;
    std::vector<int32_t> num_boxes;
    std::vector<BoxStats> box_stats;
    std::vector<int64_t> over_max;
    std::vector<std::vector<BadImage>> bad;
    std::vector<std::string> error;  // empty: the sample is fine
    uint8_t* images = nullptr;       // (B, S, S, 3) in the pinned ring
    float* targets = nullptr;        // (B, M, 5)
  };
  // A batch taken out of its slot: what next() accounts and returns.
  struct Harvest {
    int64_t valid = 0;
    LoaderState after;
    std::vector<int64_t> index;
    std::vector<int32_t> num_boxes;
    BoxStats boxes;
    int64_t over_max = 0;
    std::vector<BadImage> bad;
    uint8_t* images = nullptr;
    float* targets = nullptr;
  };

  void start(const LoaderState& s);
  void check_eval_state(const LoaderState& s) const;
  void stop();
  void reader();
  void plan(Slot& slot, int64_t seq);
  void fill(Slot& slot, int64_t pos);
  bool finished(int64_t seq) const { return total_ >= 0 && seq >= total_; }
  Slot& slot(int64_t seq) { return slots_[static_cast<size_t>(seq % cfg_.prefetch)]; }
  // Waits (timed as data-wait) until batch `seq` is complete; throws its first error.
  Slot& wait_for(int64_t seq, std::unique_lock<std::mutex>& lock);
  void harvest(Slot& slot, Harvest& out);
  void account(const Harvest& h);
  const Batch* next_cpu();
  const Batch* next_cuda();
  static void on_copied(void* self);

  LoaderConfig cfg_;
  Dataset dataset_;
  DatasetSource source_;
  int64_t rank_batch_ = 0, imgsz_ = 0;
  size_t image_bytes_ = 0, target_bytes_ = 0;  // per batch
  SampleRange range_;                          // eval: this rank's samples
  std::unique_ptr<Sampler> sampler_;           // train: plans batches (under mu_)
  int64_t eval_cursor_ = 0;                    // eval: plans batches (under mu_)

  std::shared_ptr<void> ring_;  // pinned: K x (images, targets)
  std::vector<Slot> slots_;

  // Shared with the reader threads, under mu_.
  std::mutex mu_;
  std::condition_variable work_cv_, ready_cv_;
  bool stop_ = false;
  std::string fatal_;     // a reader thread could not plan a batch
  int64_t total_ = -1;    // batches until the end of an eval pass (-1: train, no end)
  int64_t task_seq_ = 0;  // the next sample to hand out: batch task_seq_, position task_pos_
  int64_t task_pos_ = 0;
  int64_t released_ = 0;  // batches whose slot may be refilled; slot of seq is free iff seq < released_ + K
  std::vector<std::thread> threads_;

  // Consumer side.
  int64_t next_seq_ = 0;  // the batch next() delivers
  LoaderState state_;
  LoaderStats stats_;
  std::set<int64_t> reported_;
  Batch out_;
  Harvest current_, staged_;             // CUDA: delivered, and copied ahead
  std::shared_ptr<BatchCopier> copier_;  // device kCUDA only (shared: device tensors keep it alive)
};

}  // namespace vt::data
