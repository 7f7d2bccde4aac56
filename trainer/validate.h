// Validation: a model in eval mode over a dataset split, scored with COCO mAP.
//
// The validator owns an eval-mode loader (letterboxed images in file order, the last batch
// partial), the decode buffers and the NMS workspace, all sized once for the model's batch.
// Detections are mapped back through each image's letterbox into the pixels of the stored
// image (the original image for encoded shards; the letterboxed square for raw shards) and
// scored against the stored boxes, with Ultralytics' validation NMS (conf 0.001, IoU 0.7,
// multi-label, 300 per image).
//
// With several ranks each validates its contiguous share of the split (validation_range);
// the detections and ground truth are gathered in rank order, which is file order, so the mAP
// is the one a single rank computes. Rank 0 receives and scores them; the other ranks' results
// are empty, with no mAP (every field -1).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "data/loader.h"
#include "layers/detect_postprocess.h"
#include "layers/memory_plan.h"
#include "layers/model.h"
#include "trainer/coco_eval.h"

namespace vt {

struct ValidationResult {
  MapResult map;
  std::vector<Detection> detections;  // image_id = dataset index
  std::vector<GroundTruth> ground_truth;
  double seconds = 0;
};

class Validator {
 public:
  // `model` must outlive the validator; its batch size is the validation batch per rank.
  // Every one of the world's ranks must build one and call run() together.
  Validator(Model& model, const std::string& dir, int threads, NmsParams nms = validation_nms(),
            int world_size = 1, int rank = 0);
  // One pass over the whole split with the model's current weights and BN statistics.
  ValidationResult run(bool progress);
  const data::Dataset& dataset() const { return loader_->dataset(); }

  static NmsParams validation_nms();

 private:
  Model& model_;
  int world_size_, rank_;
  std::unique_ptr<data::Loader> loader_;
  NmsParams nms_;
  MemoryPlan plan_;
  Tensor boxes_, scores_, workspace_;
};

}  // namespace vt
