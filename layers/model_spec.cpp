// Model YAML parsing and resolution, after Ultralytics' parse_model (see model_spec.h).
#include "layers/model_spec.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <regex>
#include <sstream>

#include "layers/check.h"

namespace vt {

const char* module_name(ModuleKind m) {
  switch (m) {
    case ModuleKind::kConv:
      return "Conv";
    case ModuleKind::kC2f:
      return "C2f";
    case ModuleKind::kBottleneck:
      return "Bottleneck";
    case ModuleKind::kSPPF:
      return "SPPF";
    case ModuleKind::kUpsample:
      return "Upsample";
    case ModuleKind::kConcat:
      return "Concat";
    case ModuleKind::kDetect:
      return "Detect";
  }
  return "?";
}

namespace {

// An argument as Ultralytics sees it after its string resolution: `nc` becomes the class
// count, Python literals (None, True, False) their values, anything else stays a string.
struct Value {
  enum Kind { kNone, kBool, kInt, kFloat, kString, kList } kind = kNone;
  bool b = false;
  long long i = 0;
  double f = 0;
  std::string s;
  std::vector<Value> list;
};

Value resolve(const YAML::Node& node, int nc) {
  Value v;
  if (!node || node.IsNull()) return v;
  if (node.IsSequence()) {
    v.kind = Value::kList;
    for (const YAML::Node& x : node) v.list.push_back(resolve(x, nc));
    return v;
  }
  if (!node.IsScalar()) {
    v.kind = Value::kString;
    v.s = "<map>";
    return v;
  }
  const std::string s = node.Scalar();
  if (s == "None" || s == "null" || s == "~") return v;
  if (s == "nc") {
    v.kind = Value::kInt, v.i = nc;
  } else if (s == "True" || s == "true" || s == "False" || s == "false") {
    v.kind = Value::kBool, v.b = s[0] == 'T' || s[0] == 't';
  } else {
    char* end = nullptr;
    const long long i = std::strtoll(s.c_str(), &end, 10);
    if (!s.empty() && *end == '\0') {
      v.kind = Value::kInt, v.i = i;
      return v;
    }
    const double f = std::strtod(s.c_str(), &end);
    if (!s.empty() && *end == '\0') {
      v.kind = Value::kFloat, v.f = f;
      return v;
    }
    v.kind = Value::kString, v.s = s;
  }
  return v;
}

std::string flow(const YAML::Node& node) {
  YAML::Emitter e;
  e << YAML::Flow << node;
  return e.c_str();
}

// A row being resolved: its place for messages and typed access to its args.
class Row {
 public:
  Row(const std::string& path, const char* section, int pos, int index, const YAML::Node& node)
      : where_(cat("model ", path, ": ", section, " row ", pos, " (layer ", index, ") ", flow(node))) {}

  [[noreturn]] void fail(const std::string& why) const { throw Error(cat(where_, ": ", why)); }

  void set_args(std::vector<Value> args, const char* module, size_t max_args) {
    args_ = std::move(args);
    if (args_.size() > max_args) fail(cat(module, " takes at most ", max_args, " args, got ", args_.size()));
  }
  bool given(size_t i) const { return i < args_.size() && args_[i].kind != Value::kNone; }
  int int_arg(size_t i, const char* what, int dflt, int min_value) const {
    if (!given(i)) return dflt;
    const Value& v = args_[i];
    if (v.kind != Value::kInt) fail(cat("arg ", i, " (", what, ") must be an integer"));
    if (v.i < min_value || v.i > std::numeric_limits<int>::max())
      fail(cat("arg ", i, " (", what, ") = ", v.i, " must be >= ", min_value));
    return static_cast<int>(v.i);
  }
  bool bool_arg(size_t i, const char* what, bool dflt) const {
    if (!given(i)) return dflt;
    const Value& v = args_[i];
    if (v.kind == Value::kBool) return v.b;
    if (v.kind == Value::kInt && (v.i == 0 || v.i == 1)) return v.i == 1;
    fail(cat("arg ", i, " (", what, ") must be True or False"));
  }
  double float_arg(size_t i, const char* what, double dflt) const {
    if (!given(i)) return dflt;
    const Value& v = args_[i];
    if (v.kind == Value::kInt) return static_cast<double>(v.i);
    if (v.kind != Value::kFloat) fail(cat("arg ", i, " (", what, ") must be a number"));
    return v.f;
  }
  const Value& arg(size_t i) const { return args_[i]; }

 private:
  std::string where_;
  std::vector<Value> args_;
};

// Python's round() (half to even) of a double, as parse_model's depth gain uses it.
int python_round(double x) {
  return static_cast<int>(std::nearbyint(x));
}

// Ultralytics' make_divisible(x, 8): ceil(x / 8) * 8, in double as Python computes it.
int make_divisible(double x, int divisor) {
  return static_cast<int>(std::ceil(x / divisor) * divisor);
}

// The scale letter of a file name, as Ultralytics' guess_model_scale: yolov8n.yaml -> "n".
std::string scale_from_name(const std::string& path) {
  std::string stem =
      path.substr(path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/') + 1);
  stem = stem.substr(0, stem.find_last_of('.'));
  std::smatch m;
  static const std::regex re("yolov\\d+([nslmx])");
  return std::regex_search(stem, m, re) ? m[1].str() : "";
}

double number(const YAML::Node& node, const std::string& where) {
  try {
    return node.as<double>();
  } catch (const YAML::Exception&) {
    throw Error(cat(where, " must be a number, got ", flow(node)));
  }
}

// Multiples from `scales` (picked as the header says) or from the top-level keys.
void read_multiples(const YAML::Node& doc, ModelSpec& spec) {
  const std::string where = cat("model ", spec.path);
  spec.max_channels = std::numeric_limits<double>::infinity();
  const YAML::Node scales = doc["scales"];
  if (!scales) {
    if (doc["depth_multiple"]) spec.depth = number(doc["depth_multiple"], where + ": depth_multiple");
    if (doc["width_multiple"]) spec.width = number(doc["width_multiple"], where + ": width_multiple");
    if (doc["max_channels"]) spec.max_channels = number(doc["max_channels"], where + ": max_channels");
  } else {
    if (!scales.IsMap() || scales.size() == 0)
      throw Error(where + ": scales must be a map of name: [depth, width, max_channels]");
    const std::string named = scale_from_name(spec.path);
    const std::string keyed = doc["scale"] ? doc["scale"].as<std::string>() : "";
    if (!named.empty() && !keyed.empty() && named != keyed)
      throw Error(
          cat(where, ": the file name says scale '", named, "' but its scale: key says '", keyed, "'"));
    spec.scale = !named.empty() ? named : !keyed.empty() ? keyed : scales.begin()->first.as<std::string>();
    const YAML::Node s = scales[spec.scale];
    std::string known;
    for (const auto& kv : scales) known += (known.empty() ? "" : ", ") + kv.first.as<std::string>();
    if (!s) throw Error(cat(where, ": scale '", spec.scale, "' is not in scales (", known, ")"));
    if (!s.IsSequence() || s.size() != 3)
      throw Error(
          cat(where, ": scales.", spec.scale, " must be [depth, width, max_channels], got ", flow(s)));
    spec.depth = number(s[0], cat(where, ": scales.", spec.scale, " depth"));
    spec.width = number(s[1], cat(where, ": scales.", spec.scale, " width"));
    spec.max_channels = number(s[2], cat(where, ": scales.", spec.scale, " max_channels"));
  }
  if (!(spec.depth > 0 && spec.width > 0 && spec.max_channels >= 8))
    throw Error(cat(where, ": need depth > 0, width > 0 and max_channels >= 8; got ", spec.depth, ", ",
                    spec.width, ", ", spec.max_channels));
}

// `from` as absolute indices: -1 is the previous layer (the image for layer 0), other
// negative values count back from this layer, as Python indexes the outputs so far.
std::vector<int> resolve_from(const YAML::Node& node, int index, bool list_wanted, const char* module,
                              const Row& row) {
  std::vector<int> out;
  auto one = [&](const YAML::Node& x) {
    const Value v = resolve(x, 0);
    if (v.kind != Value::kInt) row.fail(cat("from must be a layer index (an integer), got ", flow(x)));
    const long long f = v.i < 0 ? index + v.i : v.i;
    if (index == 0 && v.i != -1) row.fail("the first layer must read the image: from -1");
    if (index > 0 && (f < 0 || f >= index))
      row.fail(cat("from ", v.i, " does not name an earlier layer (this is layer ", index, ")"));
    out.push_back(static_cast<int>(f));
  };
  if (node.IsSequence()) {
    if (!list_wanted) row.fail(cat("from must be one layer index for ", module));
    if (node.size() == 0) row.fail("from is an empty list");
    for (const YAML::Node& x : node) one(x);
  } else {
    if (list_wanted) row.fail(cat("from must be a list of layer indices for ", module));
    one(node);
  }
  return out;
}

bool parse_module(const std::string& name, ModuleKind* m) {
  static const std::pair<const char*, ModuleKind> kModules[] = {{"Conv", ModuleKind::kConv},
                                                                {"C2f", ModuleKind::kC2f},
                                                                {"Bottleneck", ModuleKind::kBottleneck},
                                                                {"SPPF", ModuleKind::kSPPF},
                                                                {"nn.Upsample", ModuleKind::kUpsample},
                                                                {"Upsample", ModuleKind::kUpsample},
                                                                {"Concat", ModuleKind::kConcat},
                                                                {"Detect", ModuleKind::kDetect}};
  for (const auto& [n, k] : kModules)
    if (name == n) {
      *m = k;
      return true;
    }
  return false;
}

// Resolves one row into `layer`, given the channels of every earlier layer (ch[-1] is the
// image's 3 channels, kept apart since Python's ch list restarts after layer 0).
void resolve_row(const YAML::Node& node, Row& row, const ModelSpec& spec, const std::vector<int>& ch,
                 LayerSpec& layer) {
  if (!node.IsSequence() || node.size() != 4) row.fail("a row must be [from, repeats, module, args]");
  const std::string name = node[2].IsScalar() ? node[2].Scalar() : "";
  if (!parse_module(name, &layer.module))
    row.fail(cat("unknown module '", name,
                 "' (known: Conv, C2f, Bottleneck, SPPF, nn.Upsample, Upsample, Concat, Detect)"));
  const char* mod = module_name(layer.module);
  const bool list_from = layer.module == ModuleKind::kConcat || layer.module == ModuleKind::kDetect;
  layer.from = resolve_from(node[0], layer.index, list_from, mod, row);
  auto channels = [&](int f) { return f < 0 ? 3 : ch[f]; };
  layer.c1 = channels(layer.from[0]);

  const Value reps = resolve(node[1], spec.nc);
  if (reps.kind != Value::kInt || reps.i < 1) row.fail("repeats must be an integer >= 1");
  int n = static_cast<int>(reps.i);
  if (n > 1) n = std::max(python_round(n * spec.depth), 1);

  if (!node[3].IsSequence()) row.fail("args must be a list");
  std::vector<Value> args;
  for (const YAML::Node& a : node[3]) args.push_back(resolve(a, spec.nc));
  const size_t max_args[] = {7, 4, 5, 2, 3, 1, 1};
  row.set_args(std::move(args), mod, max_args[static_cast<int>(layer.module)]);

  // c2 for the modules that scale their width (parse_model's first branch).
  auto scaled_c2 = [&]() {
    const int c2 = row.int_arg(0, "c2", -1, 1);
    if (c2 < 0) row.fail(cat(mod, " needs its output channels as arg 0"));
    return c2 == spec.nc ? c2 : make_divisible(std::min<double>(c2, spec.max_channels) * spec.width, 8);
  };
  switch (layer.module) {
    case ModuleKind::kConv:
      layer.c2 = scaled_c2();
      layer.k = row.int_arg(1, "k", 1, 1);
      layer.s = row.int_arg(2, "s", 1, 1);
      layer.p = row.int_arg(3, "p", layer.k / 2, 0);
      layer.g = row.int_arg(4, "g", 1, 1);
      if (row.int_arg(5, "d", 1, 1) != 1) row.fail("dilation d != 1 is not supported");
      if (!row.bool_arg(6, "act", true)) row.fail("act=False is not supported (Conv is conv + BN + SiLU)");
      break;
    case ModuleKind::kC2f:
      layer.c2 = scaled_c2();
      layer.n = n, n = 1;
      layer.shortcut = row.bool_arg(1, "shortcut", false);
      layer.g = row.int_arg(2, "g", 1, 1);
      layer.e = row.float_arg(3, "e", 0.5);
      break;
    case ModuleKind::kBottleneck:
      layer.c2 = scaled_c2();
      layer.shortcut = row.bool_arg(1, "shortcut", true);
      layer.g = row.int_arg(2, "g", 1, 1);
      if (row.given(3)) {
        const Value& k = row.arg(3);
        if (k.kind != Value::kList || k.list.size() != 2 || k.list[0].kind != Value::kInt ||
            k.list[1].kind != Value::kInt || k.list[0].i < 1 || k.list[1].i < 1)
          row.fail("arg 3 (k) must be a list of two kernel sizes, e.g. [3, 3]");
        layer.k1 = static_cast<int>(k.list[0].i), layer.k2 = static_cast<int>(k.list[1].i);
      }
      layer.e = row.float_arg(4, "e", 0.5);
      break;
    case ModuleKind::kSPPF:
      layer.c2 = scaled_c2();
      layer.k = row.int_arg(1, "k", 5, 1);
      break;
    case ModuleKind::kUpsample: {
      layer.c2 = layer.c1;
      if (row.given(0)) row.fail("Upsample by size is not supported: give size None and a scale_factor");
      const double f = row.float_arg(1, "scale_factor", 2);
      if (f < 1 || f != std::floor(f)) row.fail(cat("scale_factor ", f, " must be an integer >= 1"));
      layer.scale = static_cast<int>(f);
      if (row.given(2) && !(row.arg(2).kind == Value::kString && row.arg(2).s == "nearest"))
        row.fail("only mode \"nearest\" is supported");
      break;
    }
    case ModuleKind::kConcat:
      if (row.int_arg(0, "dimension", 1, -100) != 1) row.fail("only dimension 1 (channels) is supported");
      layer.c2 = 0;
      for (int f : layer.from) layer.c2 += channels(f);
      break;
    case ModuleKind::kDetect:
      layer.nc = row.int_arg(0, "nc", spec.nc, 1);
      for (int f : layer.from) layer.ch.push_back(channels(f));
      layer.c2 = 0;
      break;
  }
  if ((layer.module == ModuleKind::kC2f || layer.module == ModuleKind::kBottleneck) &&
      !(layer.e > 0 && layer.e <= 1))
    row.fail(cat("e = ", layer.e, " must be in (0, 1]"));
  const bool repeatable = layer.module == ModuleKind::kConv || layer.module == ModuleKind::kBottleneck ||
                          layer.module == ModuleKind::kSPPF;
  if (n > 1 && !repeatable) row.fail(cat(mod, " cannot be repeated: repeats must be 1"));
  if (n > 1 && layer.c1 != layer.c2)
    row.fail(cat("repeats ", n, " chains the module, which needs c1 == c2 (got ", layer.c1, " -> ", layer.c2,
                 ")"));
  layer.repeats = n;
}

ModelSpec resolve_spec(const YAML::Node& doc, const std::string& path, int nc) {
  ModelSpec spec;
  spec.path = path;
  const std::string where = cat("model ", path);
  if (!doc.IsMap()) throw Error(where + ": expected a map with nc, backbone and head");
  if (nc > 0) {
    spec.nc = nc;
  } else {
    if (!doc["nc"]) throw Error(where + ": no nc: entry (number of classes)");
    const Value v = resolve(doc["nc"], 0);
    if (v.kind != Value::kInt || v.i < 1)
      throw Error(cat(where, ": nc must be an integer >= 1, got ", flow(doc["nc"])));
    spec.nc = static_cast<int>(v.i);
  }
  if (doc["activation"]) throw Error(where + ": activation: is not supported (Conv always uses SiLU)");
  if (doc["ch"] && resolve(doc["ch"], 0).i != 3) throw Error(where + ": ch must be 3 (RGB input)");
  read_multiples(doc, spec);

  std::vector<int> ch;  // output channels of the layers so far
  int index = 0;
  for (const char* section : {"backbone", "head"}) {
    const YAML::Node rows = doc[section];
    if (!rows || !rows.IsSequence() || rows.size() == 0)
      throw Error(
          cat(where, ": ", section, " must be a non-empty list of [from, repeats, module, args] rows"));
    int pos = 0;
    for (const YAML::Node& node : rows) {
      Row row(path, section, pos++, index, node);
      LayerSpec layer;
      layer.index = index++;
      layer.text = flow(node);
      resolve_row(node, row, spec, ch, layer);
      if (!spec.layers.empty() && spec.layers.back().module == ModuleKind::kDetect)
        row.fail("Detect must be the last row");
      ch.push_back(layer.c2);
      spec.layers.push_back(std::move(layer));
    }
  }
  if (spec.layers.back().module != ModuleKind::kDetect) throw Error(where + ": the last row must be Detect");
  return spec;
}

}  // namespace

ModelSpec parse_model_spec(const std::string& yaml, const std::string& path, int nc) {
  // yaml-cpp throws its own exceptions for malformed text and for values of the wrong kind
  // (a map where a string was expected); both become errors that name the file.
  try {
    return resolve_spec(YAML::Load(yaml), path, nc);
  } catch (const YAML::Exception& e) {
    throw Error(cat("model ", path, ": not valid YAML for a model (", e.what(), ")"));
  }
}

ModelSpec load_model_spec(const std::string& path, int nc) {
  std::ifstream in(path);
  if (!in) throw Error(cat("model ", path, ": cannot open the file"));
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_model_spec(ss.str(), path, nc);
}

}  // namespace vt
