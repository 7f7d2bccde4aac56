// Data-parallel training: the step loop of `visiontrain train`, on every rank.
//
// A step consumes the global batch B: each of the N ranks runs k micro-steps (--accumulate)
// of b = B / (N k) images: the loader's micro-batch (waited for on the compute stream),
// forward in train mode, the YOLOv8 loss accumulating its gradient into the model's output
// gradients, and backward, whose finished parameter gradients are added range by range into
// the step's gradient sum. On the last micro-step of a step that ends in an optimizer update,
// each finished bucket of that sum is all-reduced while backward continues (comm/); inner
// micro-steps communicate nothing. BN running statistics are averaged over the N k
// micro-batches (each updates from the same starting point), so every rank holds the same
// statistics and the result does not depend on how B is split. All ranks start from rank 0's
// weights and stay bit-identical. Every max(round(nbs / B), 1) steps (Ultralytics' nominal
// batch rule) the optimizer: the gradient norm on the device, a fused SGD/AdamW step with
// clipping by global norm, the EMA of the weights and BN statistics, and the bf16 weight copy refreshed. A step
// whose gradients are not finite is skipped and reported. Every epoch ends with validation of
// the EMA weights (COCO mAP), each rank scoring its share of the split. metrics.jsonl (rank 0) gets one line per step, with
// the step's compute, data-wait, communication and exposed-communication times, one per
// epoch (with the validation's mAP) and one per checkpoint (the step's stall).
//
// Checkpoints (trainer/checkpointing.h): rank 0 saves the whole training state every
// --save-every steps, at every epoch's end (also as last.h5, and best.h5 when the fitness
// 0.1 mAP@.5 + 0.9 mAP@.5:.95 improves) and on exit, to <out>/checkpoints in the background.
// --resume continues bit-exactly from one, on any number of ranks with the same global batch.
// SIGTERM or SIGINT on any rank: every rank finishes the same step, rank 0 saves, exit 0.
// Before step 0 the ranks check they agree (comm/handshake.h).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "checkpoints/store.h"
#include "data/augment.h"
#include "optim/schedule.h"

namespace vt {

struct TrainOptions {
  std::string data;                        // dataset root: <data>/train and <data>/val
  std::string model = "configs/yolov8n.yaml";
  std::string out = "runs/train";
  int64_t epochs = 100;
  int64_t steps = 0;                       // stop after this many steps (0: run every epoch)
  int64_t batch = 16;                      // global: all ranks and micro-steps together
  int accumulate = 1;                      // k micro-steps per step and rank
  int64_t imgsz = 640;
  int threads = 0;                         // loader threads; 0: one per hardware thread
  uint64_t seed = 0;
  std::string device = "auto";             // auto | cpu | cuda
  std::string precision = "auto";          // auto (bf16 on the GPU, fp32 on the CPU) | fp32 | bf16
  std::string optimizer = "auto";          // auto | sgd | adamw
  ScheduleConfig schedule;                 // lr0, lrf, momentum, weight decay, warmup, cos_lr
  data::AugmentConfig augment;             // imgsz is set from `imgsz`
  int64_t close_mosaic = 10;               // last epochs without mosaic
  double max_norm = 10.0;                  // gradient clipping by global norm
  int max_boxes = 300;                     // per image in a batch
  bool val = true;                         // validate after every epoch
  bool progress = true;
  std::string comm = "auto";               // auto | nccl | mpi
  double bucket_mb = 25, first_bucket_mb = 1;
  double comm_timeout = 300;               // watchdog, seconds (0: off)
  bool cuda_graph = false;                 // replay each step's forward/loss/backward as a CUDA graph
  std::string disable;                     // model speed features turned off (disable_features in model.h)
  std::string trace;                       // Chrome trace file ("": none)
  int64_t trace_steps = 20;
  std::string resume;                      // "": a new run; "auto": the newest good checkpoint; or a path
  bool overwrite = false;                  // a new run may delete a previous run's files in `out`
  int64_t save_every = 0;                  // checkpoint every N steps (0: at epoch ends only)
  ckpt::RetentionPolicy retention;         // of <out>/checkpoints
};

// Runs the whole training on this rank (initialising MPI: a singleton without mpirun);
// returns the process exit code. Throws vt::Error on bad input.
int run_training(TrainOptions opt);

// The options that must agree on every rank, as "name" -> "value" (for the handshake and the
// run files); paths, threads and display settings are left out.
std::vector<std::pair<std::string, std::string>> config_fields(const TrainOptions& opt);

}  // namespace vt
