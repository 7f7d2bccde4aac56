// Single-process training: the step loop of `visiontrain train`.
//
// One step: the loader's next batch (waited for on the compute stream), forward in train
// mode, the YOLOv8 loss accumulating its gradient into the model's output gradients,
// backward, then every `accumulate` iterations (Ultralytics' nominal-batch rule) the
// optimizer: the gradient norm on the device, a fused SGD/AdamW step with clipping by global
// norm, the EMA of the weights and BN statistics, and the bf16 weight copy refreshed. A step
// whose gradients are not finite is skipped and reported. Every epoch ends with validation of
// the EMA weights (COCO mAP) and writes last.h5, and best.h5 when the fitness
// 0.1 mAP@.5 + 0.9 mAP@.5:.95 improves. metrics.jsonl gets one line per step and one per
// validation.
#pragma once

#include <cstdint>
#include <string>

#include "data/augment.h"
#include "optim/schedule.h"

namespace vt {

struct TrainOptions {
  std::string data;                        // dataset root: <data>/train and <data>/val
  std::string model = "configs/yolov8n.yaml";
  std::string out = "runs/train";
  int64_t epochs = 100;
  int64_t batch = 16;
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
};

// Runs the whole training; returns the process exit code. Throws vt::Error on bad input.
int run_training(TrainOptions opt);

}  // namespace vt
