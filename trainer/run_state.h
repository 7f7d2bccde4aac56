// What a training run saves and what eval, detect and export read back: the model's weights
// (and its EMA) by Ultralytics name, plus everything needed to rebuild the model without
// the training config: the model YAML text, class names, image size.
//
// Checkpoint layout (checkpoints/checkpoint.h; docs/formats/checkpoint.md):
//   model/<name>   parameters and BN statistics of the trained model
//   ema/<name>     the same for the EMA weights (what eval and detect use by default)
//   attrs: model_yaml, model_path, class_names (JSON list), imgsz, nc, epoch, step,
//          metrics (JSON), program_version
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "checkpoints/checkpoint.h"
#include "layers/model.h"

namespace vt {

struct RunInfo {
  std::string model_yaml;  // the spec's text, so the run does not depend on the file
  std::string model_path;  // where it came from (for the spec's scale letter and messages)
  std::vector<std::string> class_names;
  int64_t imgsz = 640;
  int64_t epoch = 0, step = 0;
  std::string metrics_json = "{}";
};

// Writes `values` under "<prefix>/<name>" with their table shapes.
void put_named(ckpt::Checkpoint& c, const std::string& prefix, const Model& model, const NamedValues& values);
// Reads back every "<prefix>/<name>" tensor; throws naming the file when there is none.
NamedValues get_named(const ckpt::Checkpoint& c, const std::string& prefix, const std::string& path);

void put_info(ckpt::Checkpoint& c, const RunInfo& info);
RunInfo get_info(const ckpt::Checkpoint& c, const std::string& path);

// The model a checkpoint describes: its metadata and its spec (with the run's class count);
// build a Model from the spec, then load_state(get_named(c, "ema" or "model", path)).
struct LoadedModel {
  RunInfo info;
  ModelSpec spec;
};
LoadedModel read_run(const ckpt::Checkpoint& c, const std::string& path);

// Builds the model of the run file `c` (read from `path`, named in errors) for `options`
// (imgsz 0: the run's) with the "ema" or "model" weights; refuses non-finite weights, naming
// the tensor. `info` receives the metadata.
std::unique_ptr<Model> build_run_model(const ckpt::Checkpoint& c, const std::string& path, const std::string& which,
                                       ModelOptions options, RunInfo* info);
// The same from the file: Checkpoint::load (which names the file when it is missing,
// truncated or corrupt), then build_run_model.
std::unique_ptr<Model> load_run_model(const std::string& path, const std::string& which, ModelOptions options,
                                      RunInfo* info);

}  // namespace vt
