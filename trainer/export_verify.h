// `visiontrain export --verify`: exported files checked against the checkpoint by the
// reference implementations in the project's Python environment.
//
//   ONNX: the native CPU forward pass (f32) and decode of a fixed set of letterboxed images
//   against ONNX Runtime running the exported file (scripts/verify_onnx.py), on the head's
//   raw outputs (the graph's "detect.raw" logits), on the decoded outputs (boxes, scores)
//   and on the detections after NMS (native detect_nms on both decoded outputs, and, with --with-nms, the file's own NonMaxSuppression gathered as
//   docs/serving.md describes). Criteria and the figures measured are printed; any failure
//   throws vt::Error.
//   safetensors: every tensor and metadata entry read back with the `safetensors` package
//   and compared with the checkpoint read by h5py (scripts/verify_safetensors.py).
//
// Python: $VT_PYTHON, else the .venv/bin/python3 of the source tree (scripts/test.sh makes
// it from tests/requirements.txt), else python3 on PATH. A missing package is reported as
// such (the scripts exit 3 for it).
#pragma once

#include <string>
#include <vector>

#include "data/image.h"
#include "layers/detect_postprocess.h"
#include "layers/model.h"

namespace vt {

// An image as the network sees it: letterboxed into S x S exactly as eval and detect do.
struct VerifyImage {
  std::string name;
  data::Image canvas;  // S x S RGB u8
};

// The .jpg/.jpeg/.png files of `dir`, sorted by name; with an empty dir, three synthesized
// images (square, tall and downscaled, wide and upscaled), so the letterbox pads both ways.
std::vector<VerifyImage> verify_images(const std::string& dir, int imgsz);

struct OnnxVerifySpec {
  std::string onnx_path;
  bool dynamic_batch = false;  // the file takes any batch: ONNX Runtime gets all images at once
  bool with_nms = false;       // the file has selected_indices
  NmsParams nms;               // the thresholds the file was exported with
};

// `model`: the exported weights on the CPU in f32, batch 1, at the file's image size.
void verify_onnx(Model& model, const std::vector<VerifyImage>& images, const OnnxVerifySpec& spec);

// Compares the safetensors file with the checkpoint's `which` ("ema"/"model") weights.
void verify_safetensors(const std::string& safetensors_path, const std::string& checkpoint_path,
                        const std::string& which);

}  // namespace vt
