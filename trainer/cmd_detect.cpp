// `visiontrain detect`: run a trained model on image files; write the boxes as JSON and the
// images with their boxes drawn.
#include <algorithm>
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "data/codec.h"
#include "data/dataset.h"
#include "data/fileio.h"
#include "data/resize.h"
#include "layers/check.h"
#include "layers/detect_postprocess.h"
#include "trainer/commands.h"
#include "trainer/draw.h"
#include "trainer/run_state.h"

namespace vt {
namespace {

namespace fs = std::filesystem;

// One input: a name for the outputs and where its pixels come from.
struct Input {
  std::string name;                     // file path, or "<dataset dir>:<source file name>"
  const data::Dataset* dataset = nullptr;  // null: read the file `name`
  int64_t index = 0;
};

// Image files named on the command line, directories expanded (sorted, .jpg/.jpeg/.png); a
// dataset directory (with manifest.json) gives its first `limit` images.
std::vector<Input> list_inputs(const std::vector<std::string>& args, int64_t limit,
                               std::vector<std::unique_ptr<data::Dataset>>& datasets) {
  std::vector<Input> out;
  auto is_image = [](const fs::path& p) {
    std::string e = p.extension().string();
    std::transform(e.begin(), e.end(), e.begin(), ::tolower);
    return e == ".jpg" || e == ".jpeg" || e == ".png";
  };
  for (const std::string& a : args) {
    if (fs::exists(fs::path(a) / "manifest.json")) {
      datasets.push_back(std::make_unique<data::Dataset>(data::Dataset::open(a)));
      const data::Dataset* ds = datasets.back().get();
      for (int64_t i = 0; i < std::min(limit, ds->size()); ++i) out.push_back({a + ":" + ds->meta(i).file_name, ds, i});
    } else if (fs::is_directory(a)) {
      std::vector<std::string> found;
      for (const auto& e : fs::directory_iterator(a))
        if (e.is_regular_file() && is_image(e.path())) found.push_back(e.path().string());
      std::sort(found.begin(), found.end());
      for (const std::string& f : found) out.push_back({f});
    } else {
      VT_CHECK(fs::exists(a), "detect: no such image or directory: ", a);
      out.push_back({a});
    }
  }
  VT_CHECK(!out.empty(), "detect: no images (.jpg, .jpeg, .png, or a dataset) in ", args.size(), " argument(s)");
  return out;
}

}  // namespace

int cmd_detect(int argc, char** argv) {
  cxxopts::Options opts(argv[0], "Detect objects in images with a trained run file; write detections.json, the "
                                 "images with their boxes drawn, and grid.jpg (a contact sheet) to --out.");
  // clang-format off
  opts.add_options()
    ("weights", "run file written by visiontrain train", cxxopts::value<std::string>())
    ("images", "image files, directories of them, or dataset directories (repeatable)",
     cxxopts::value<std::vector<std::string>>())
    ("limit", "images taken from each dataset directory", cxxopts::value<int64_t>()->default_value("16"))
    ("out", "output directory", cxxopts::value<std::string>()->default_value("runs/detect"))
    ("conf", "score threshold", cxxopts::value<float>()->default_value("0.25"))
    ("iou", "NMS IoU threshold", cxxopts::value<float>()->default_value("0.7"))
    ("max-det", "detections per image", cxxopts::value<int>()->default_value("300"))
    ("use", "which weights: ema or model", cxxopts::value<std::string>()->default_value("ema"))
    ("imgsz", "input size (0: the run's)", cxxopts::value<int64_t>()->default_value("0"))
    ("device", "auto, cpu or cuda", cxxopts::value<std::string>()->default_value("auto"))
    ("h,help", "show this help");
  // clang-format on
  opts.parse_positional({"images"});
  opts.positional_help("IMAGES...");
  const auto a = opts.parse(argc, argv);
  if (a.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  VT_CHECK(a.count("weights") && a.count("images"), "detect: --weights and images are required (see --help)");
  std::vector<std::unique_ptr<data::Dataset>> datasets;
  const std::vector<Input> inputs =
      list_inputs(a["images"].as<std::vector<std::string>>(), a["limit"].as<int64_t>(), datasets);
  const std::string dev_name = a["device"].as<std::string>();
  VT_CHECK(dev_name == "auto" || dev_name == "cpu" || dev_name == "cuda", "--device must be auto, cpu or cuda");
  const Device dev = dev_name == "cpu" || cuda_device_count() == 0 ? Device::kCPU : Device::kCUDA;
  RunInfo info;
  auto model = load_run_model(a["weights"].as<std::string>(), a["use"].as<std::string>(),
                              {dev, dev == Device::kCUDA ? DType::kBF16 : DType::kF32, 1, a["imgsz"].as<int64_t>(), 0},
                              &info);
  const int size = static_cast<int>(model->options().imgsz);
  NmsParams nms;
  nms.conf = a["conf"].as<float>();
  nms.iou = a["iou"].as<float>();
  nms.max_det = a["max-det"].as<int>();

  const int64_t anchors = detect_num_anchors(model->outputs());
  MemoryPlan plan(dev);
  const BufferId bid = plan.request("boxes", {1, anchors, 4}, DType::kF32);
  const BufferId sid = plan.request("scores", {1, anchors, model->nc()}, DType::kF32);
  const size_t ws = detect_nms_workspace_bytes(1, anchors, model->nc(), nms, dev);
  const BufferId wid = plan.request("nms.workspace", {std::max<int64_t>(1, static_cast<int64_t>(ws))}, DType::kU8);
  plan.allocate();
  const Tensor boxes = plan.get(bid), scores = plan.get(sid), work = ws ? plan.get(wid) : Tensor{};

  const std::string out = a["out"].as<std::string>();
  fs::create_directories(out);
  nlohmann::json all = nlohmann::json::array();
  // A contact sheet of the first 16 drawn images, 4 per row, each fitted into 256 x 256.
  constexpr int kTile = 256, kCols = 4, kTiles = 16;
  const int tiles = static_cast<int>(std::min<size_t>(inputs.size(), kTiles));
  data::Image grid(kTile * ((tiles + kCols - 1) / kCols), kTile * std::min(tiles, kCols));
  for (size_t n = 0; n < inputs.size(); ++n) {
    const Input& in = inputs[n];
    const std::string& file = in.name;
    data::Image img;
    if (in.dataset) {
      img = in.dataset->read_image(in.index);
    } else {
      const std::vector<uint8_t> bytes = data::read_file(file);
      img = data::decode_image(bytes.data(), bytes.size(), file);
    }
    data::Letterbox lb;
    data::Image input = data::letterbox(img, size, &lb);
    copy(Tensor::view(input.rgb.data(), {1, size, size, 3}, DType::kU8, Device::kCPU), model->input());
    model->forward(false);
    detect_decode(model->outputs(), model->strides(), boxes, scores);
    const auto dets = detect_nms(boxes, scores, nms, {{lb.scale, lb.pad_x, lb.pad_y, img.w, img.h}}, work)[0];
    nlohmann::json j = {{"file", file}, {"width", img.w}, {"height", img.h}, {"detections", nlohmann::json::array()}};
    for (const DetectedBox& d : dets)
      j["detections"].push_back({{"box", {d.x1, d.y1, d.x2, d.y2}}, {"score", d.score}, {"class", d.cls},
                                 {"name", d.cls < (int)info.class_names.size() ? info.class_names[d.cls] : ""}});
    all.push_back(j);
    draw_detections(img, dets, info.class_names);
    const std::string stem = in.dataset ? cat(n, "_", fs::path(in.dataset->meta(in.index).file_name).stem().string())
                                        : fs::path(file).stem().string();
    const std::string drawn = (fs::path(out) / (stem + ".jpg")).string();
    save_image(drawn, img);
    if (static_cast<int>(n) < tiles) {
      const data::Image tile = data::letterbox(img, kTile, nullptr, 0);
      const int gy = static_cast<int>(n) / kCols * kTile, gx = static_cast<int>(n) % kCols * kTile;
      for (int y = 0; y < kTile; ++y) std::copy_n(tile.px(y, 0), kTile * 3, grid.px(gy + y, gx));
    }
    std::printf("%s: %zu detections -> %s\n", file.c_str(), dets.size(), drawn.c_str());
  }
  std::ofstream(out + "/detections.json") << all.dump(1) << "\n";
  save_image(out + "/grid.jpg", grid);
  std::printf("wrote %s/detections.json and %s/grid.jpg (the first %d images)\n", out.c_str(), out.c_str(), tiles);
  return 0;
}

}  // namespace vt
