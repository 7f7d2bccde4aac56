// The training state in a checkpoint, written in the background: what `visiontrain train`
// saves every --save-every steps, at every epoch's end and on exit, and what --resume reads.
//
// A checkpoint is one ckpt::Checkpoint (docs/formats/checkpoint.md) holding, besides the run
// file's model/ and ema/ weights and metadata (run_state.h, so eval and detect read it):
//   optim/state0, optim/state1  the optimizer's flat buffers (SGD momentum; AdamW moments)
//   optim/grad_sum              gradients summed since the last update (nominal-batch steps)
//   attrs  step, epoch, opt_steps, last_opt, skipped, loader_epoch, loader_cursor,
//          world_size, global_batch, seed; config (JSON), best_fitness, rng, loss_scale,
//          program_version, git_commit, optimizer
// The random state is the seed: every draw is a counter-based function of (seed, epoch,
// sample), so the loader's cursor is all the position a resume needs.
//
// Saving (rank 0): save() waits for the previous write (one in flight at most), copies the
// flat device buffers into pinned host memory (the only stall of the step, measured), and
// hands the copy to a writer thread, which builds the named tensors and commits them through
// the CheckpointStore (atomic file, `latest`, retention), then copies the committed file to
// last.h5 / best.h5 when asked. finish() waits for the last write and rethrows a writer error.
#pragma once

#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "checkpoints/store.h"
#include "data/sampler.h"
#include "layers/model.h"
#include "trainer/run_state.h"

namespace vt {

// Where training stands between two steps.
struct TrainCounters {
  int64_t step = 0;       // steps done (the next step's index)
  int64_t opt_steps = 0;  // optimizer updates done
  int64_t last_opt = -1;  // step index of the last update
  int64_t skipped = 0;    // updates skipped for non-finite gradients
  double best_fitness = -1;
  data::LoaderState loader;
};

// The flat buffers of the state (device tensors, f32), by checkpoint role.
struct StateBuffers {
  Tensor params, bn_stats, ema, ema_bn, state0, state1, grad_sum;
};

struct SaveRequest {
  TrainCounters counters;
  RunInfo info;               // model YAML, classes, imgsz, epoch, metrics
  std::string config_json;    // the run's options
  int world_size = 1;
  int64_t global_batch = 0;
  uint64_t seed = 0;
  std::string optimizer;
  double fitness = std::nan("");  // this checkpoint's validation fitness, if it has one
  std::vector<std::string> copies;  // also write the checkpoint to these paths (last.h5, best.h5)
};

class Checkpointer {
 public:
  Checkpointer(const Model& model, const StateBuffers& buffers, ckpt::CheckpointStore& store);
  ~Checkpointer();  // waits for the write in flight (errors are printed)
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // Waits for the previous write, snapshots the buffers and queues the write.
  void save(SaveRequest request);
  // Waits for the write in flight; throws what the writer threw.
  void finish();
  // Seconds the writer thread spent per checkpoint, on average and at most (after finish()).
  double mean_write_s() const { return writes_ ? write_s_ / writes_ : 0; }
  double max_write_s() const { return max_write_s_; }

 private:
  void writer();
  void write(const SaveRequest& r);

  const Model& model_;
  StateBuffers buffers_;
  ckpt::CheckpointStore& store_;
  std::shared_ptr<void> pinned_;
  std::vector<std::pair<const Tensor*, Tensor>> slots_;  // buffer -> its view in pinned_
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<SaveRequest> pending_;
  bool busy_ = false, stop_ = false;
  std::string error_;
  double write_s_ = 0, max_write_s_ = 0;
  int64_t writes_ = 0;
  std::thread thread_;
};

// The state a resume starts from: buffers are written into `buffers` (which must be laid out
// like the model's), counters returned. Throws naming the file when the checkpoint lacks
// training state (a run file from before), or the model does not match it.
TrainCounters restore_state(const ckpt::Checkpoint& c, const std::string& path, Model& model,
                            const StateBuffers& buffers);

}  // namespace vt
