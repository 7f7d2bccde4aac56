// `visiontrain export`: a run file's weights as safetensors (PyTorch layout, Ultralytics
// names) or as an ONNX model with the decode (and optionally NMS) built in, for serving with
// ONNX Runtime, TensorRT or Triton (docs/serving.md); --verify checks the file against the
// checkpoint (trainer/export_verify.h). Formats: docs/formats/export.md.
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "checkpoints/export_onnx.h"
#include "checkpoints/export_safetensors.h"
#include "checkpoints/sha256.h"
#include "layers/check.h"
#include "trainer/commands.h"
#include "trainer/export_verify.h"
#include "trainer/run_state.h"
#include "trainer/version.h"

namespace vt {

int cmd_export(int argc, char** argv) {
  cxxopts::Options opts(
      argv[0],
      "Export a run file's weights: --format safetensors (every parameter and BN statistic, "
      "PyTorch layout and Ultralytics names) or --format onnx (opset 17: images (B, 3, S, S) RGB in "
      "[0, 1] -> boxes (B, A, 4) xyxy pixels, scores (B, A, nc); see docs/serving.md).");
  const NmsParams nms_defaults;  // detect's defaults
  // clang-format off
  opts.add_options()
    ("weights", "run file written by visiontrain train (last.h5, best.h5, ckpt-*.h5)", cxxopts::value<std::string>())
    ("format", "onnx or safetensors", cxxopts::value<std::string>())
    ("ema", "export the EMA weights (the default: eval and detect use them)")
    ("weights-of", "which weights: ema or model", cxxopts::value<std::string>()->default_value("ema"))
    ("imgsz", "ONNX input size S (0: the run's); a multiple of the largest stride", cxxopts::value<int64_t>()->default_value("0"))
    ("dynamic-batch", "ONNX: a symbolic batch dimension instead of 1")
    ("with-nms", "ONNX: add NonMaxSuppression and the selected_indices output")
    ("conf", "ONNX NMS score threshold (keeps score > conf)", cxxopts::value<float>()->default_value(cat(nms_defaults.conf)))
    ("iou", "ONNX NMS IoU threshold (suppresses IoU > iou)", cxxopts::value<float>()->default_value(cat(nms_defaults.iou)))
    ("max-det", "ONNX NMS detections per class and image", cxxopts::value<int>()->default_value(std::to_string(nms_defaults.max_det)))
    ("out", "output file (default: the weights' path with .onnx or .safetensors)", cxxopts::value<std::string>())
    ("verify", "check the file against the checkpoint (ONNX: against the native forward pass with ONNX Runtime)")
    ("images", "ONNX --verify: a directory of .jpg/.png images (default: three synthesized ones)", cxxopts::value<std::string>())
    ("h,help", "show this help");
  // clang-format on
  const auto a = opts.parse(argc, argv);
  if (a.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  VT_CHECK(a.count("weights") && a.count("format"),
           "export: --weights and --format are required (see --help)");
  const std::string path = a["weights"].as<std::string>(), format = a["format"].as<std::string>();
  VT_CHECK(format == "onnx" || format == "safetensors", "export: --format must be onnx or safetensors, not '",
           format, "'");
  const std::string which = a["weights-of"].as<std::string>();
  VT_CHECK(!(a.count("ema") && which != "ema"), "export: --ema contradicts --weights-of ", which);
  VT_CHECK(which == "ema" || which == "model", "export: --weights-of must be ema or model, not '", which,
           "'");
  VT_CHECK(format == "onnx" || !(a.count("dynamic-batch") || a.count("with-nms") || a.count("images")),
           "export: --dynamic-batch, --with-nms and --images apply to --format onnx only");
  const std::string out = a.count("out")
                              ? a["out"].as<std::string>()
                              : std::filesystem::path(path).replace_extension("." + format).string();

  // The checkpoint once: the model (which refuses non-finite weights) and its attributes.
  const ckpt::Checkpoint c = ckpt::Checkpoint::load(path);
  RunInfo info;
  auto model =
      build_run_model(c, path, which, {Device::kCPU, DType::kF32, 1, a["imgsz"].as<int64_t>(), 0}, &info);
  const int64_t S = model->options().imgsz;
  const NamedValues values = model->state();

  std::map<std::string, std::string> meta = {
      {"source", path},
      {"source_sha256", ckpt::sha256_file(path)},
      {"weights", which},
      {"class_names", nlohmann::json(info.class_names).dump()},
      {"nc", std::to_string(info.class_names.size())},
      {"model_yaml", info.model_yaml},
      {"model_path", info.model_path},
      {"program_version", VT_VERSION},
      {"git_commit", git_commit()},
  };
  for (const char* key : {"config", "step", "epoch"})
    if (c.has_attr(key))
      meta[key] = key == std::string("config") ? c.get_string(key) : std::to_string(c.get_int(key));

  if (format == "safetensors") {
    meta["format"] = "visiontrain.weights.v1";
    meta["imgsz"] = std::to_string(info.imgsz);  // the weights do not depend on the input size
    meta["conv_weight_layout"] = "OIHW";
    const std::vector<ckpt::TorchTensor> tensors = ckpt::torch_state(model->graph(), values, path);
    ckpt::write_safetensors(out, tensors, meta);
    int64_t n = 0;
    for (const ckpt::TorchTensor& t : tensors) n += static_cast<int64_t>(t.data.size());
    std::printf("wrote %s: %zu tensors, %lld float32 values (%s weights of %s)\n", out.c_str(),
                tensors.size(), (long long)n, which.c_str(), path.c_str());
    if (a.count("verify")) verify_safetensors(out, path, which);
    return 0;
  }

  ckpt::OnnxExportOptions o;
  o.dynamic_batch = a.count("dynamic-batch") > 0;
  o.with_nms = a.count("with-nms") > 0;
  o.nms.conf = a["conf"].as<float>();
  o.nms.iou = a["iou"].as<float>();
  o.nms.max_det = a["max-det"].as<int>();
  o.metadata = meta;
  o.metadata["format"] = "visiontrain.onnx.v1";
  o.metadata["imgsz"] = std::to_string(S);
  o.metadata["strides"] = nlohmann::json(model->strides()).dump();
  o.metadata["batch"] = o.dynamic_batch ? "dynamic" : "1";
  o.metadata["outputs"] = "boxes (B, A, 4) xyxy pixels of the S x S input; scores (B, A, nc) sigmoid" +
                          std::string(o.with_nms ? "; selected_indices (K, 3) (image, class, anchor)" : "");
  if (o.with_nms)
    o.metadata["nms"] =
        nlohmann::json{{"conf", o.nms.conf}, {"iou", o.nms.iou}, {"max_det", o.nms.max_det}}.dump();
  ckpt::export_onnx(out, model->graph(), values, path, o);
  std::printf("wrote %s: ONNX opset %d, input images (%s, 3, %lld, %lld), %d classes%s (%s weights of %s)\n",
              out.c_str(), ckpt::kOnnxOpset, o.dynamic_batch ? "batch" : "1", (long long)S, (long long)S,
              model->nc(), o.with_nms ? ", with NMS" : "", which.c_str(), path.c_str());
  if (a.count("verify"))
    verify_onnx(*model,
                verify_images(a.count("images") ? a["images"].as<std::string>() : "", static_cast<int>(S)),
                {out, o.dynamic_batch, o.with_nms, o.nms});
  return 0;
}

}  // namespace vt
