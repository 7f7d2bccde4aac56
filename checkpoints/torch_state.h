// The model's weights as PyTorch (Ultralytics) holds them, the common input of the exporters
// (safetensors, ONNX): one float32 tensor per state-dict entry, under Ultralytics' name, in
// the model's forward order (per Conv module: conv.weight, bn.weight, bn.bias,
// bn.running_mean, bn.running_var; Detect's final convs with their bias; the DFL constant
// last). Ultralytics orders Detect's branches cv2.* before cv3.*; names, not order, matter.
//
// Our conv weights are OHWI (Cout, KH, KW, Cin/groups); PyTorch's are OIHW, so they are
// permuted: oihw[o][i][h][w] = ohwi[o][h][w][i]. Other tensors are 1-D and copied.
// PyTorch's BN `num_batches_tracked` counters (int64, unused at inference) are not produced.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "layers/model.h"
#include "layers/model_graph.h"

namespace vt::ckpt {

struct TorchTensor {
  std::string name;            // "model.0.conv.weight", "model.0.bn.running_mean", ...
  std::vector<int64_t> shape;  // PyTorch's: conv weights (Cout, Cin/groups, KH, KW)
  std::vector<float> data;     // row-major
};

// Every parameter of `graph` (the DFL constant included) and every BN's running statistics,
// read from `values` (Model::state() layout, conv weights OHWI). Throws vt::Error naming
// `source` (the checkpoint) and the tensor when one is missing, has the wrong number of
// values, or holds a NaN or an infinity: an export never carries a broken weight.
std::vector<TorchTensor> torch_state(const ModelGraph& graph, const NamedValues& values,
                                     const std::string& source);

// OHWI (o, h, w, i) -> OIHW (o, i, h, w) for one conv weight; `ohwi` has o*h*w*i values.
std::vector<float> ohwi_to_oihw(const std::vector<float>& ohwi, int64_t o, int64_t h, int64_t w, int64_t i);

}  // namespace vt::ckpt
