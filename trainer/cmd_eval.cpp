// `visiontrain eval`: COCO mAP of a trained run file on a dataset split.
#include <cstdio>
#include <cxxopts.hpp>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "layers/check.h"
#include "trainer/commands.h"
#include "trainer/run_state.h"
#include "trainer/validate.h"

namespace vt {

int cmd_eval(int argc, char** argv) {
  cxxopts::Options opts(argv[0],
                        "Evaluate a run file (last.h5 / best.h5) on a dataset split: COCO mAP@[.5:.95], mAP@.5, "
                        "mAP@.75 and per-class AP, computed as pycocotools does.");
  // clang-format off
  opts.add_options()
    ("weights", "run file written by visiontrain train", cxxopts::value<std::string>())
    ("data", "dataset split directory (e.g. runs/quickstart/data/val)", cxxopts::value<std::string>())
    ("use", "which weights: ema or model", cxxopts::value<std::string>()->default_value("ema"))
    ("batch", "images per forward pass", cxxopts::value<int64_t>()->default_value("16"))
    ("imgsz", "input size (0: the run's)", cxxopts::value<int64_t>()->default_value("0"))
    ("device", "auto, cpu or cuda", cxxopts::value<std::string>()->default_value("auto"))
    ("workers", "loader threads (0: one per hardware thread)", cxxopts::value<int>()->default_value("0"))
    ("json", "also write the detections as COCO results JSON here", cxxopts::value<std::string>())
    ("quiet", "no progress bar")
    ("h,help", "show this help");
  // clang-format on
  const auto a = opts.parse(argc, argv);
  if (a.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  VT_CHECK(a.count("weights") && a.count("data"), "eval: --weights and --data are required (see --help)");
  const std::string dev_name = a["device"].as<std::string>();
  VT_CHECK(dev_name == "auto" || dev_name == "cpu" || dev_name == "cuda", "--device must be auto, cpu or cuda");
  const Device dev = dev_name == "cpu" || cuda_device_count() == 0 ? Device::kCPU : Device::kCUDA;
  RunInfo info;
  auto model = load_run_model(a["weights"].as<std::string>(), a["use"].as<std::string>(),
                              {dev, dev == Device::kCUDA ? DType::kBF16 : DType::kF32, a["batch"].as<int64_t>(),
                               a["imgsz"].as<int64_t>(), 0},
                              &info);
  Validator v(*model, a["data"].as<std::string>(), a["workers"].as<int>());
  VT_CHECK(v.dataset().class_names() == info.class_names, "eval: the dataset's class names differ from the run's");
  const ValidationResult r = v.run(a.count("quiet") == 0);
  std::printf("%s\n%s", format_coco_summary(r.map).c_str(), format_class_table(r.map, info.class_names).c_str());
  std::printf("mAP@.5:.95 %.4f  mAP@.5 %.4f  mAP@.75 %.4f  (%lld images, %.1f s)\n", r.map.map, r.map.map50,
              r.map.map75, (long long)r.map.num_images, r.seconds);
  if (a.count("json")) {
    nlohmann::json out = nlohmann::json::array();
    for (const Detection& d : r.detections) {
      const auto xywh = coco_xywh(d.x1, d.y1, d.x2, d.y2);
      out.push_back({{"image_id", d.image_id}, {"category_id", d.cls}, {"bbox", xywh}, {"score", d.score}});
    }
    std::ofstream(a["json"].as<std::string>()) << out.dump() << "\n";
  }
  return 0;
}

}  // namespace vt
