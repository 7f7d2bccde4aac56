// Model parameters from the host side: initialisation, exchange by name, and the layer
// table (see model.h).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <sstream>

#include "layers/check.h"
#include "layers/model.h"

namespace vt {
namespace {

std::string join(const std::vector<int>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += cat(i ? ", " : "", v[i]);
  return s;
}

// The resolved args as Ultralytics' model table prints them (c1 and c2 included).
std::string layer_args(const LayerSpec& l) {
  const char* sc = l.shortcut ? "True" : "False";
  switch (l.module) {
    case ModuleKind::kConv:
      return cat("[", l.c1, ", ", l.c2, ", ", l.k, ", ", l.s, "]");
    case ModuleKind::kC2f:
      return cat("[", l.c1, ", ", l.c2, ", ", l.n, ", ", sc, "]");
    case ModuleKind::kBottleneck:
      return cat("[", l.c1, ", ", l.c2, ", ", sc, "]");
    case ModuleKind::kSPPF:
      return cat("[", l.c1, ", ", l.c2, ", ", l.k, "]");
    case ModuleKind::kUpsample:
      return cat("[None, ", l.scale, ", 'nearest']");
    case ModuleKind::kConcat:
      return "[1]";
    case ModuleKind::kDetect:
      return cat("[", l.nc, ", [", join(l.ch), "]]");
  }
  return "";
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

void Model::init(uint64_t seed) {
  // Draws in flat order from one mt19937_64 stream, mapped to [0, 1) by its top 53 bits
  // (std::uniform_real_distribution's algorithm is not pinned down by the standard).
  std::mt19937_64 rng(seed);
  std::vector<double> host(static_cast<size_t>(flat_size_));
  std::vector<int> ids;
  for (size_t id = 0; id < graph_.params.size(); ++id)
    if (!graph_.params[id].constant) ids.push_back(static_cast<int>(id));
  std::sort(ids.begin(), ids.end(), [&](int a, int b) { return param_offset_[a] < param_offset_[b]; });
  for (int id : ids) {
    const GraphParam& p = graph_.params[id];
    double* v = host.data() + param_offset_[id];
    const double bound = p.has_fill ? 0 : 1 / std::sqrt(static_cast<double>(p.fan_in));
    for (int64_t i = 0; i < p.shape.numel(); ++i)
      v[i] = p.has_fill ? p.fill : (2 * static_cast<double>(rng() >> 11) * 0x1.0p-53 - 1) * bound;
  }
  copy(Tensor::view(host.data(), {flat_size_}, DType::kF64, Device::kCPU), params_);

  std::vector<double> stats(static_cast<size_t>(stats_size_), 0.0);
  for (size_t b = 0; b < graph_.bns.size(); ++b)
    std::fill_n(stats.begin() + bn_offset_[b] + graph_.bns[b].channels, graph_.bns[b].channels, 1.0);
  copy(Tensor::view(stats.data(), {stats_size_}, DType::kF64, Device::kCPU), bn_stats_);
  refresh_weights();
  synchronize();
}

NamedValues Model::state() const { return state_of(params_, bn_stats_); }

NamedValues Model::state_of(const Tensor& params, const Tensor& bn_stats) const {
  VT_CHECK(params.numel() == flat_size_ && bn_stats.numel() == stats_size_, "model ", path_, ": state_of: ",
           params.str("params"), " and ", bn_stats.str("bn_stats"), " are not laid out like this model's (",
           flat_size_, " and ", stats_size_, " values)");
  const Tensor p = params.to(Device::kCPU, DType::kF32), s = bn_stats.to(Device::kCPU, DType::kF32);
  NamedValues out;
  for (const ParamInfo& info : table_) {
    std::vector<float>& v = out[info.name];
    v.resize(static_cast<size_t>(info.shape.numel()));
    if (info.constant) {
      for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);  // DFL: the bin values
    } else {
      std::copy_n(p.data<float>() + info.offset, v.size(), v.begin());
    }
  }
  for (size_t b = 0; b < graph_.bns.size(); ++b) {
    const float* base = s.data<float>() + bn_offset_[b];
    const size_t c = static_cast<size_t>(graph_.bns[b].channels);
    out[graph_.bns[b].name + ".running_mean"].assign(base, base + c);
    out[graph_.bns[b].name + ".running_var"].assign(base + c, base + 2 * c);
  }
  return out;
}

void Model::load_state(const NamedValues& values) {
  const std::string where = cat("model ", path_, ": load_state");
  // Every name this model knows, with where its values go.
  struct Place {
    enum Kind { kParam, kStat, kConstant } kind;
    int64_t offset, count;
  };
  std::map<std::string, Place> known;
  for (const ParamInfo& info : table_)
    known[info.name] = {info.constant ? Place::kConstant : Place::kParam, info.offset, info.shape.numel()};
  for (size_t b = 0; b < graph_.bns.size(); ++b) {
    const int64_t c = graph_.bns[b].channels;
    known[graph_.bns[b].name + ".running_mean"] = {Place::kStat, bn_offset_[b], c};
    known[graph_.bns[b].name + ".running_var"] = {Place::kStat, bn_offset_[b] + c, c};
  }
  for (const auto& kv : values)
    if (!known.count(kv.first) && !ends_with(kv.first, ".num_batches_tracked"))
      throw Error(cat(where, ": '", kv.first, "' is not a parameter or statistic of this model"));

  std::vector<float> p(static_cast<size_t>(flat_size_)), s(static_cast<size_t>(stats_size_));
  for (const auto& [name, place] : known) {
    const auto it = values.find(name);
    if (it == values.end()) {
      if (place.kind == Place::kConstant) continue;
      throw Error(cat(where, ": no values for '", name, "'"));
    }
    const std::vector<float>& v = it->second;
    if (static_cast<int64_t>(v.size()) != place.count)
      throw Error(cat(where, ": '", name, "' has ", v.size(), " values, expected ", place.count));
    switch (place.kind) {
      case Place::kParam:
        std::copy(v.begin(), v.end(), p.begin() + place.offset);
        break;
      case Place::kStat:
        std::copy(v.begin(), v.end(), s.begin() + place.offset);
        break;
      case Place::kConstant:
        for (size_t i = 0; i < v.size(); ++i)
          if (v[i] != static_cast<float>(i))
            throw Error(cat(where, ": '", name, "' is the constant DFL projection 0..", v.size() - 1,
                            ", got ", v[i], " at ", i));
        break;
    }
  }
  copy(Tensor::view(p.data(), {flat_size_}, DType::kF32, Device::kCPU), params_);
  copy(Tensor::view(s.data(), {stats_size_}, DType::kF32, Device::kCPU), bn_stats_);
  refresh_weights();
  synchronize();
}

std::string Model::summary() const {
  std::vector<int64_t> per_layer(layers_.size(), 0);
  for (const GraphParam& p : graph_.params) per_layer[p.layer] += p.shape.numel();
  std::ostringstream os;
  char line[256];
  std::snprintf(line, sizeof(line), "%4s %16s %3s %10s  %-11s %s\n", "", "from", "n", "params", "module",
                "arguments");
  os << line;
  for (const LayerSpec& l : layers_) {
    const std::string from = l.from.size() == 1 ? cat(l.from[0]) : cat("[", join(l.from), "]");
    const int n = l.module == ModuleKind::kC2f ? l.n : l.repeats;
    std::snprintf(line, sizeof(line), "%4d %16s %3d %10lld  %-11s %s\n", l.index, from.c_str(), n,
                  static_cast<long long>(per_layer[l.index]), module_name(l.module), layer_args(l).c_str());
    os << line;
  }
  std::string strides;
  for (int s : graph_.strides) strides += cat(strides.empty() ? "" : "/", s);
  os << cat(layers_.size(), " layers, ", num_params(), " parameters (", flat_size_, " trained), ", graph_.nc,
            " classes, strides ", strides, "\n");
  std::snprintf(line, sizeof(line), "memory plan: %.1f MiB on %s (%s activations, batch %lld, imgsz %lld)\n",
                plan_.total_bytes() / 1048576.0, device_name(opt_.device), dtype_name(opt_.dtype),
                static_cast<long long>(opt_.batch), static_cast<long long>(opt_.imgsz));
  os << line;
  return os.str();
}

}  // namespace vt
