// COCO box mAP, computed as pycocotools' COCOeval computes it (iouType "bbox", useCats 1),
// so the numbers `visiontrain train` and `eval` report are the numbers papers report.
//
// Same semantics, step by step: IoU thresholds .50:.05:.95 and recall points 0:.01:1 with the
// exact doubles np.linspace gives; area ranges all/small/medium/large on the GT box area w*h;
// per (image, class) detections ranked by score with a stable sort and cut at max_dets;
// greedy matching per IoU threshold with crowd and out-of-range GT as "ignore" regions;
// precision made monotone and sampled at 101 recall points; classes without GT excluded
// (-1). Boxes are converted once to COCO's [x, y, w, h] in double (coco_xywh), the numbers a
// COCO JSON file would hold, so every IoU equals the one pycocotools computes from that file.
// tests/trainer/coco_eval_test.cpp checks agreement with pycocotools itself.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace vt {

// Boxes are corner coordinates in pixels, x2 >= x1 and y2 >= y1. Crowd GT boxes are regions
// where detections are neither rewarded nor punished.
struct GroundTruth {
  int64_t image_id;
  int cls;
  float x1, y1, x2, y2;
  bool crowd = false;
};

struct Detection {
  int64_t image_id;
  int cls;
  float x1, y1, x2, y2;
  float score;
};

struct MapResult {
  // The 12 numbers of COCOeval.summarize(), -1 where no class has GT in that area range.
  // "100" means max_dets (100 unless evaluate_coco was asked otherwise).
  double map = -1;  // AP @ IoU .50:.95, all areas, max_dets
  double map50 = -1, map75 = -1;
  double map_small = -1, map_medium = -1, map_large = -1;
  double ar1 = -1, ar10 = -1, ar100 = -1;  // mean recall over IoU .50:.95 at 1, 10, max_dets
  double ar_small = -1, ar_medium = -1, ar_large = -1;
  // Per class (num_classes), all areas, max_dets; -1 for classes with no (non-crowd) GT.
  std::vector<double> ap_per_class, ap50_per_class;
  std::vector<int64_t> gt_per_class;  // non-crowd GT boxes
  int max_dets = 100;
  int64_t num_images = 0;

  // The 12 numbers in COCOeval.stats order.
  std::array<double, 12> stats() const;
};

// The box as COCO stores it: {x1, y1, x2 - x1, y2 - y1} in double (the subtraction is exact
// for pixel-range floats). Whoever writes a COCO JSON to compare with must use these.
std::array<double, 4> coco_xywh(float x1, float y1, float x2, float y2);

// The thresholds exactly as pycocotools makes them with np.linspace (10 and 101 values).
std::vector<double> coco_iou_thresholds();
std::vector<double> coco_recall_thresholds();

// Evaluates `dets` against `gt` over `image_ids` (every evaluated image, those without GT
// included; duplicates are merged). Classes are 0..num_classes-1. Detections beyond the
// max_dets highest-scoring of an (image, class) are dropped, as pycocotools does; AR is also
// reported at 1 and 10, so max_dets >= 10. Throws vt::Error naming the record when a box,
// class, score or image id is invalid.
MapResult evaluate_coco(const std::vector<GroundTruth>& gt, const std::vector<Detection>& dets,
                        int num_classes, const std::vector<int64_t>& image_ids, int max_dets = 100);

// The 12 summary lines in pycocotools' wording ("Average Precision (AP) @[ IoU=0.50:0.95 |
// area=   all | maxDets=100 ] = 0.412").
std::string format_coco_summary(const MapResult& r);

// A per-class table: class name, GT instances, AP50, AP50-95, then an "all" row with the
// means; classes without GT show "-". class_names.size() must equal the number of classes.
std::string format_class_table(const MapResult& r, const std::vector<std::string>& class_names);

}  // namespace vt
