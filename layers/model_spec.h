// ModelSpec: an Ultralytics-style model YAML, resolved into concrete layers.
//
// The file format is Ultralytics' (ultralytics/cfg/models/v8/yolov8.yaml): `nc`, either
// `scales` {key: [depth, width, max_channels]} or `depth_multiple` / `width_multiple` /
// `max_channels`, and `backbone` and `head` lists of rows [from, repeats, module, args].
// Resolution follows ultralytics/nn/tasks.py parse_model exactly, so a config gives the same
// layers, channel counts and parameter names as Ultralytics builds from it:
//   - the scale is the letter in the file name (yolov8n.yaml -> n, the pattern yolov<digits>
//     <letter>), else a `scale:` key, else the first entry of `scales` (Ultralytics' fallback);
//     a file whose name and `scale:` key disagree is an error;
//   - repeats n > 1 become max(round(n * depth), 1) (Python's round: half to even);
//   - Conv, C2f, Bottleneck and SPPF take c1 from their input and
//     c2 = ceil(min(args[0], max_channels) * width / 8) * 8, except that args[0] == nc is left
//     unscaled (Ultralytics' test for a classifier output, which it applies to every layer);
//     C2f gets the repeats as its n and is then built once;
//   - Concat sums its inputs' channels, Upsample keeps them, Detect gets the list of its
//     inputs' channels; the string `nc` in args is the class count (after an override).
// Supported modules and their args (Ultralytics' signatures after c1 and, for C2f, n):
//   Conv [c2, k=1, s=1, p=None (autopad k/2), g=1, d=1, act=True]   (d 1 and act True only)
//   C2f [c2, shortcut=False, g=1, e=0.5]
//   Bottleneck [c2, shortcut=True, g=1, k=[3, 3], e=0.5]
//   SPPF [c2, k=5]
//   nn.Upsample / Upsample [size=None, scale_factor=2, mode="nearest"]   (integer factor)
//   Concat [dimension=1]   (channels only)
//   Detect [nc]            (reg_max 16; the last row, exactly once)
// Conv, Bottleneck and SPPF with repeats > 1 are chained copies (Ultralytics' nn.Sequential,
// whose parameter names gain an index: model.<i>.<j>.conv.weight).
//
// Every error names the file, and for a row its section, position, layer index and text:
//   "model configs/x.yaml: head row 2 (layer 12) [-1, 3, C2g, [512]]: unknown module 'C2g'
//    (known: Conv, C2f, Bottleneck, SPPF, nn.Upsample, Upsample, Concat, Detect)".
#pragma once

#include <string>
#include <vector>

namespace vt {

enum class ModuleKind { kConv, kC2f, kBottleneck, kSPPF, kUpsample, kConcat, kDetect };
const char* module_name(ModuleKind m);

// One row, resolved: channels known, arguments defaulted and checked.
struct LayerSpec {
  int index = 0;          // position in backbone + head: the <i> of "model.<i>...." names
  std::vector<int> from;  // absolute layer indices of the inputs; -1 is the image (layer 0)
  int repeats = 1;        // copies chained in sequence (1 for C2f, which takes n instead)
  ModuleKind module = ModuleKind::kConv;
  std::string text;  // the row as written, for messages
  int c1 = 0;        // input channels (of the first input)
  int c2 = 0;        // output channels
  // Conv: kernel, stride, padding (resolved), groups. SPPF: k is the pool size.
  int k = 1, s = 1, p = 0, g = 1;
  // C2f: n bottlenecks; C2f and Bottleneck: shortcut, expansion e, Bottleneck kernels k1, k2.
  int n = 1;
  bool shortcut = false;
  double e = 0.5;
  int k1 = 3, k2 = 3;
  int scale = 2;        // Upsample factor
  int nc = 0;           // Detect classes
  std::vector<int> ch;  // Detect input channels, one per level
};

struct ModelSpec {
  std::string path;             // the file (or name) the spec came from
  int nc = 0;                   // classes (the YAML's, or the override)
  std::string scale;            // the scale picked from `scales`, "" without scales
  double depth = 1, width = 1;  // multiples
  double max_channels = 0;      // +inf when unbounded
  std::vector<LayerSpec> layers;
};

// Reads and resolves a model YAML. nc > 0 overrides the file's `nc` (the dataset's class
// count), as Ultralytics' DetectionModel(cfg, nc=...) does.
ModelSpec load_model_spec(const std::string& path, int nc = 0);
// The same from YAML text; `path` names it in messages and supplies the scale letter.
ModelSpec parse_model_spec(const std::string& yaml, const std::string& path, int nc = 0);

}  // namespace vt
