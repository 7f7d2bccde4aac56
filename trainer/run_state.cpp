// Run files: model weights, EMA and metadata in a checkpoint (see run_state.h).
#include "trainer/run_state.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "layers/check.h"

namespace vt {

void put_named(ckpt::Checkpoint& c, const std::string& prefix, const Model& model, const NamedValues& values) {
  std::map<std::string, Shape> shapes;
  for (const ParamInfo& p : model.param_table()) shapes[p.name] = p.shape;
  for (const auto& [name, v] : values) {
    std::vector<int64_t> shape;
    auto it = shapes.find(name);
    if (it != shapes.end())
      for (int i = 0; i < it->second.rank(); ++i) shape.push_back(it->second[i]);
    else
      shape = {static_cast<int64_t>(v.size())};  // BN statistics: (C)
    c.put(prefix + "/" + name, shape, v);
  }
}

NamedValues get_named(const ckpt::Checkpoint& c, const std::string& prefix, const std::string& path) {
  NamedValues out;
  const std::string p = prefix + "/";
  for (const auto& [name, t] : c.tensors())
    if (name.rfind(p, 0) == 0) out[name.substr(p.size())] = t.data;
  VT_CHECK(!out.empty(), "checkpoint ", path, " has no '", prefix, "' weights");
  return out;
}

void put_info(ckpt::Checkpoint& c, const RunInfo& info) {
  c.set("model_yaml", info.model_yaml);
  c.set("model_path", info.model_path);
  c.set("class_names", nlohmann::json(info.class_names).dump());
  c.set("imgsz", info.imgsz);
  c.set("nc", static_cast<int64_t>(info.class_names.size()));
  c.set("epoch", info.epoch);
  c.set("step", info.step);
  c.set("metrics", info.metrics_json);
  c.set("program_version", std::string(VT_VERSION));
}

RunInfo get_info(const ckpt::Checkpoint& c, const std::string& path) {
  for (const char* key : {"model_yaml", "model_path", "class_names", "imgsz"})
    VT_CHECK(c.has_attr(key), "checkpoint ", path, " lacks '", key, "': not a visiontrain run file");
  RunInfo info;
  info.model_yaml = c.get_string("model_yaml");
  info.model_path = c.get_string("model_path");
  info.class_names = nlohmann::json::parse(c.get_string("class_names")).get<std::vector<std::string>>();
  info.imgsz = c.get_int("imgsz");
  info.epoch = c.has_attr("epoch") ? c.get_int("epoch") : 0;
  info.step = c.has_attr("step") ? c.get_int("step") : 0;
  info.metrics_json = c.has_attr("metrics") ? c.get_string("metrics") : "{}";
  return info;
}

LoadedModel read_run(const ckpt::Checkpoint& c, const std::string& path) {
  LoadedModel m;
  m.info = get_info(c, path);
  m.spec = parse_model_spec(m.info.model_yaml, m.info.model_path, static_cast<int>(m.info.class_names.size()));
  return m;
}

std::unique_ptr<Model> build_run_model(const ckpt::Checkpoint& c, const std::string& path, const std::string& which,
                                       ModelOptions options, RunInfo* info) {
  VT_CHECK(which == "ema" || which == "model", "weights must be 'ema' or 'model', not '", which, "'");
  const LoadedModel m = read_run(c, path);
  const NamedValues values = get_named(c, which, path);
  for (const auto& [name, v] : values)
    for (float x : v) VT_CHECK(std::isfinite(x), "checkpoint ", path, ": ", which, "/", name, " holds non-finite values");
  if (options.imgsz == 0) options.imgsz = m.info.imgsz;
  auto model = std::make_unique<Model>(m.spec, options);
  model->load_state(values);
  if (info) *info = m.info;
  return model;
}

std::unique_ptr<Model> load_run_model(const std::string& path, const std::string& which, ModelOptions options,
                                      RunInfo* info) {
  VT_CHECK(which == "ema" || which == "model", "weights must be 'ema' or 'model', not '", which, "'");
  return build_run_model(ckpt::Checkpoint::load(path), path, which, options, info);
}

}  // namespace vt
