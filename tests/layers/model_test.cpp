// Model tests: Ultralytics' parameter counts and names, output shapes, the flat layout and
// its on_ready ranges, init, exchange by name, static memory, train vs eval, a
// finite-difference check of the whole tiny model in f64, the fused BN -> SiLU against the
// separate ops, and GPU parity (fused and separate).
#include "layers/model.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "layers/check.h"
#include "layers/cuda_graph.h"
#include "tests/test_util.h"

namespace vt {
namespace {

const std::string kConfigs = VT_SOURCE_DIR "/configs/";

ModelSpec spec(const std::string& name, int nc = 0) {
  return load_model_spec(kConfigs + name, nc);
}

ModelOptions options(Device dev, DType dt, int64_t batch, int64_t imgsz, uint64_t seed = 1) {
  ModelOptions o;
  o.device = dev, o.dtype = dt, o.batch = batch, o.imgsz = imgsz, o.seed = seed;
  return o;
}

// Seeded random RGB bytes into the model's input.
void set_images(const Model& m, uint64_t seed) {
  Tensor host = Tensor::empty(m.input().shape(), DType::kU8, Device::kCPU);
  std::mt19937_64 rng(seed);
  for (int64_t i = 0; i < host.numel(); ++i) host.data<uint8_t>()[i] = static_cast<uint8_t>(rng() & 255);
  copy(host, m.input());
}

// Fixed random weights r_l for the loss L = sum_l <r_l, outputs_l>, set as d(L)/d(outputs).
std::vector<Tensor> loss_weights(const Model& m) {
  std::vector<Tensor> r;
  for (size_t l = 0; l < m.outputs().size(); ++l)
    r.push_back(test::random_tensor(m.outputs()[l].shape(), DType::kF64, 50 + l));
  return r;
}

double loss(const Model& m, const std::vector<Tensor>& r) {
  double sum = 0;
  for (size_t l = 0; l < r.size(); ++l) {
    const std::vector<double> y = test::values(m.outputs()[l]), w = test::values(r[l]);
    for (size_t i = 0; i < y.size(); ++i) sum += y[i] * w[i];
  }
  return sum;
}

void train_step(Model& m, const std::vector<Tensor>& r, const Model::ReadyFn& on_ready = {}) {
  m.zero_grads();
  m.forward(true);
  for (size_t l = 0; l < r.size(); ++l) copy(r[l], m.output_grads()[l]);
  m.backward({}, on_ready);
  synchronize();
}

// Parameters per "model.<i>." prefix.
std::vector<int64_t> per_layer(const Model& m, size_t layers) {
  std::vector<int64_t> n(layers, 0);
  for (const ParamInfo& p : m.param_table()) n[std::stoi(p.name.substr(6))] += p.shape.numel();
  return n;
}

TEST(Model, ParameterCountsMatchUltralytics) {
  const Model n(spec("yolov8n.yaml"), options(Device::kCPU, DType::kF32, 1, 32));
  EXPECT_EQ(n.num_params(), 3157200);
  EXPECT_EQ(n.flat_size(), 3157200 - 16);  // the DFL projection is not trained
  // Ultralytics' model table for yolov8n, layer by layer.
  const std::vector<int64_t> expected = {464,    4672,   7360,   18560,  49664,  73984,  197632, 295424,
                                         460288, 164608, 0,      0,      148224, 0,      0,      37248,
                                         36992,  0,      123648, 147712, 0,      493056, 897664};
  EXPECT_EQ(per_layer(n, 23), expected);
  const Model s(spec("yolov8s.yaml"), options(Device::kCPU, DType::kF32, 1, 32));
  EXPECT_EQ(s.num_params(), 11166560);
  // Ultralytics trains yolov8n on one class with 3,011,043 parameters.
  EXPECT_EQ(Model(spec("yolov8n.yaml", 1), options(Device::kCPU, DType::kF32, 1, 32)).num_params(), 3011043);
}

TEST(Model, OutputShapes) {
  for (int64_t s : {640, 320}) {
    const ModelGraph g = build_model_graph(spec("yolov8n.yaml"), 2, s);
    EXPECT_EQ(g.strides, (std::vector<int>{8, 16, 32}));
    ASSERT_EQ(g.outputs.size(), 3u);
    for (int l = 0; l < 3; ++l)
      EXPECT_EQ(g.acts[g.outputs[l]].shape, Shape({2, s >> (3 + l), s >> (3 + l), 144}));
  }
  const Model m(spec("yolov8-tiny.yaml", 4), options(Device::kCPU, DType::kF32, 3, 96));
  EXPECT_EQ(m.nc(), 4);
  EXPECT_EQ(m.reg_max(), 16);
  ASSERT_EQ(m.outputs().size(), 3u);
  for (int l = 0; l < 3; ++l) {
    const Shape want{3, 12 >> l, 12 >> l, 64 + 4};
    EXPECT_EQ(m.outputs()[l].shape(), want);
    EXPECT_EQ(m.output_grads()[l].shape(), want);
    EXPECT_EQ(m.outputs()[l].dtype(), DType::kF32);
  }
  EXPECT_EQ(m.input().shape(), Shape({3, 96, 96, 3}));
  EXPECT_EQ(m.input().dtype(), DType::kU8);
  test::expect_error([] { Model(spec("yolov8-tiny.yaml"), options(Device::kCPU, DType::kF32, 1, 100)); },
                     {"yolov8-tiny.yaml", "imgsz 100", "multiple of the largest stride"});
}

TEST(Model, ParameterTable) {
  const Model m(spec("yolov8n.yaml"), options(Device::kCPU, DType::kF32, 1, 32));
  const std::vector<ParamInfo>& t = m.param_table();
  std::map<std::string, const ParamInfo*> by_name;
  int64_t next = 0;
  for (const ParamInfo& p : t) {
    EXPECT_TRUE(by_name.emplace(p.name, &p).second) << "duplicate " << p.name;
    if (p.constant) {
      EXPECT_EQ(p.offset, -1) << p.name;
      continue;
    }
    EXPECT_EQ(p.offset, next) << p.name << ": the flat buffer has gaps or overlaps";
    next += p.shape.numel();
    const bool bn_weight = p.name.size() > 10 && p.name.substr(p.name.size() - 10) == ".bn.weight";
    const bool bias = p.name.substr(p.name.size() - 5) == ".bias";
    EXPECT_EQ(p.group, bias ? kGroupBias : bn_weight ? kGroupNormWeight : kGroupWeight) << p.name;
  }
  EXPECT_EQ(next, m.flat_size());
  // Backward's order: the last op's parameters first.
  EXPECT_EQ(t[0].name, "model.22.cv3.2.2.weight");
  EXPECT_EQ(t[1].name, "model.22.cv3.2.2.bias");
  EXPECT_EQ(t[t.size() - 2].name, "model.0.conv.weight");
  auto expect_param = [&](const std::string& name, const Shape& shape, ParamGroup group) {
    ASSERT_TRUE(by_name.count(name)) << name;
    EXPECT_EQ(by_name[name]->shape, shape) << name;
    EXPECT_EQ(by_name[name]->group, group) << name;
  };
  expect_param("model.0.conv.weight", {16, 3, 3, 3}, kGroupWeight);
  expect_param("model.0.bn.weight", {16}, kGroupNormWeight);
  expect_param("model.0.bn.bias", {16}, kGroupBias);
  expect_param("model.2.m.0.cv1.conv.weight", {16, 3, 3, 16}, kGroupWeight);
  expect_param("model.4.m.1.cv2.bn.bias", {32}, kGroupBias);
  expect_param("model.9.cv2.conv.weight", {256, 1, 1, 512}, kGroupWeight);
  expect_param("model.22.cv2.0.0.conv.weight", {64, 3, 3, 64}, kGroupWeight);
  expect_param("model.22.cv2.0.2.bias", {64}, kGroupBias);
  expect_param("model.22.cv3.1.2.weight", {80, 1, 1, 80}, kGroupWeight);
  expect_param("model.22.dfl.conv.weight", {1, 1, 1, 16}, kGroupWeight);
  EXPECT_TRUE(by_name["model.22.dfl.conv.weight"]->constant);
  EXPECT_EQ(t.back().name, "model.22.dfl.conv.weight");
  // The groups buffer says the same per element.
  const std::vector<double> groups = test::values(m.groups());
  for (const ParamInfo& p : t)
    if (!p.constant) {
      EXPECT_EQ(groups[p.offset], p.group) << p.name;
      EXPECT_EQ(groups[p.offset + p.shape.numel() - 1], p.group) << p.name;
    }
  // State: every parameter plus two statistics per BN (57 Conv modules in yolov8n).
  int bns = 0;
  for (const ParamInfo& p : t) bns += p.name.find(".bn.weight") != std::string::npos;
  EXPECT_EQ(bns, 57);
  EXPECT_EQ(m.state().size(), t.size() + 2 * bns);
  int64_t bn_channels = 0;
  for (const ParamInfo& p : t)
    bn_channels += p.name.find(".bn.weight") != std::string::npos ? p.shape.numel() : 0;
  EXPECT_EQ(m.bn_stats().numel(), 2 * bn_channels);
}

TEST(Model, InitFollowsPyTorchAndBiasInit) {
  const Model m(spec("yolov8-tiny.yaml", 4), options(Device::kCPU, DType::kF32, 1, 64, 7));
  const NamedValues s = m.state();
  for (const ParamInfo& p : m.param_table()) {
    const std::vector<float>& v = s.at(p.name);
    const std::string& n = p.name;
    if (p.constant) {
      for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(v[i], static_cast<float>(i));
    } else if (n.find(".bn.weight") != std::string::npos) {
      EXPECT_EQ(*std::min_element(v.begin(), v.end()), 1.f) << n;
      EXPECT_EQ(*std::max_element(v.begin(), v.end()), 1.f) << n;
    } else if (n.find(".bn.bias") != std::string::npos) {
      EXPECT_EQ(
          *std::max_element(v.begin(), v.end(), [](float a, float b) { return std::abs(a) < std::abs(b); }),
          0.f);
    } else if (n.find(".2.bias") != std::string::npos) {
      // Detect.bias_init: box logits 1, class logits log(5 / nc / (640 / stride)^2).
      const int level = n[n.size() - 8] - '0', stride = 8 << level;
      const double want =
          n.find(".cv2.") != std::string::npos ? 1.0 : std::log(5.0 / 4 / std::pow(640.0 / stride, 2));
      for (float x : v) EXPECT_FLOAT_EQ(x, static_cast<float>(want)) << n;
    } else {
      // Conv weights: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = KH KW Cin/groups.
      const double bound = 1 / std::sqrt(static_cast<double>(p.shape[1] * p.shape[2] * p.shape[3]));
      double mx = 0, mean = 0;
      for (float x : v) mx = std::max(mx, std::abs(static_cast<double>(x))), mean += x;
      mean /= static_cast<double>(v.size());
      EXPECT_LE(mx, bound * (1 + 1e-6)) << n;
      if (v.size() >= 1000) {
        EXPECT_GT(mx, 0.95 * bound) << n;
        EXPECT_LT(std::abs(mean), 0.1 * bound) << n;
      }
    }
  }
  for (const auto& [name, v] : s) {
    const bool mean = name.find("running_mean") != std::string::npos,
               var = name.find("running_var") != std::string::npos;
    if (mean || var) {
      for (float x : v) EXPECT_EQ(x, mean ? 0.f : 1.f) << name;
    }
  }
  // Deterministic in the seed.
  const Model same(spec("yolov8-tiny.yaml", 4), options(Device::kCPU, DType::kF32, 2, 32, 7));
  const Model other(spec("yolov8-tiny.yaml", 4), options(Device::kCPU, DType::kF32, 1, 64, 8));
  EXPECT_EQ(same.state(), s);
  EXPECT_NE(other.state().at("model.0.conv.weight"), s.at("model.0.conv.weight"));
}

TEST(Model, StateRoundTripAndErrors) {
  Model a(spec("yolov8-tiny.yaml", 4), options(Device::kCPU, DType::kF32, 2, 64, 1));
  Model b(spec("yolov8-tiny.yaml", 4), options(Device::kCPU, DType::kF32, 2, 64, 2));
  set_images(a, 3), set_images(b, 3);
  a.forward(true);  // moves the running statistics away from init
  NamedValues s = a.state();
  b.load_state(s);
  EXPECT_EQ(b.state(), s);
  a.forward(false);
  b.forward(false);
  for (size_t l = 0; l < 3; ++l)
    test::expect_close(b.outputs()[l], a.outputs()[l], 0, 0, "outputs after load");

  // PyTorch's counters are ignored and the DFL constant is optional.
  s["model.0.bn.num_batches_tracked"] = {5};
  s.erase("model.22.dfl.conv.weight");
  b.load_state(s);
  NamedValues bad = s;
  bad["model.22.dfl.conv.weight"] = std::vector<float>(16, 1.f);
  test::expect_error([&] { b.load_state(bad); },
                     {"yolov8-tiny.yaml", "model.22.dfl.conv.weight", "constant"});
  bad = s;
  bad.erase("model.5.bn.running_var");
  test::expect_error([&] { b.load_state(bad); }, {"no values for 'model.5.bn.running_var'"});
  bad = s;
  bad["model.0.conv.weight"].pop_back();
  test::expect_error([&] { b.load_state(bad); }, {"'model.0.conv.weight' has 215 values, expected 216"});
  bad = s;
  bad["model.99.conv.weight"] = {1};
  test::expect_error([&] { b.load_state(bad); }, {"'model.99.conv.weight' is not a parameter"});
}

TEST(Model, StepAllocatesNothing) {
  Model m(spec("yolov8-tiny.yaml", 4), options(Device::kCPU, DType::kF32, 2, 64));
  set_images(m, 1);
  const std::vector<Tensor> r = loss_weights(m);
  train_step(m, r);  // warm: nothing lazily allocated either way
  const int64_t before = allocation_count();
  m.zero_grads();
  m.forward(true);
  m.backward({}, [](int64_t, int64_t) {});
  m.zero_activation_grads();
  m.forward(false);
  m.backward();
  m.refresh_weights();
  EXPECT_EQ(allocation_count(), before);
}

TEST(Model, OnReadyRangesAreFinalAndCoverOnce) {
  Model m(spec("yolov8-tiny.yaml", 4), options(Device::kCPU, DType::kF32, 2, 64));
  set_images(m, 2);
  const std::vector<Tensor> r = loss_weights(m);
  std::vector<std::pair<int64_t, int64_t>> ranges;
  std::vector<std::vector<float>> at_ready;
  train_step(m, r, [&](int64_t offset, int64_t count) {
    ranges.emplace_back(offset, count);
    const float* g = m.grads().data<float>() + offset;
    at_ready.emplace_back(g, g + count);
  });
  ASSERT_FALSE(ranges.empty());
  int64_t next = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    EXPECT_EQ(ranges[i].first, next) << "range " << i;
    EXPECT_GT(ranges[i].second, 0);
    next = ranges[i].first + ranges[i].second;
    // Nothing after on_ready changes the range: the gradients were final.
    const float* g = m.grads().data<float>() + ranges[i].first;
    EXPECT_TRUE(std::equal(at_ready[i].begin(), at_ready[i].end(), g)) << "range " << i;
  }
  EXPECT_EQ(next, m.flat_size());
  // Gradients accumulate: a second backward without zeroing the params doubles them.
  const std::vector<double> once = test::values(m.grads());
  m.zero_activation_grads();
  m.forward(true);
  for (size_t l = 0; l < r.size(); ++l) copy(r[l], m.output_grads()[l]);
  m.backward();
  const std::vector<double> twice = test::values(m.grads());
  for (size_t i = 0; i < once.size(); i += 97)
    EXPECT_NEAR(twice[i], 2 * once[i], 1e-4 * (1 + std::abs(once[i])));
}

// Central differences of the whole model's loss in f64 on ~60 parameters spread over the
// flat table (every layer kind and all three groups), BN in train mode; a few in eval mode
// (backward through the running statistics).
TEST(Model, GradientsMatchFiniteDifferences) {
  Model m(spec("yolov8-tiny.yaml", 3), options(Device::kCPU, DType::kF64, 2, 64, 11));
  set_images(m, 4);
  const std::vector<Tensor> r = loss_weights(m);
  std::vector<const ParamInfo*> trainable;
  for (const ParamInfo& p : m.param_table())
    if (!p.constant) trainable.push_back(&p);
  std::mt19937_64 rng(5);
  for (bool train : {true, false}) {
    SCOPED_TRACE(train ? "train" : "eval");
    m.zero_grads();
    m.forward(train);
    for (size_t l = 0; l < r.size(); ++l) copy(r[l], m.output_grads()[l]);
    m.backward();
    const int probes = train ? 60 : 15;
    int groups[3] = {0, 0, 0};
    double worst = 0;
    for (int k = 0; k < probes; ++k) {
      const ParamInfo& p = *trainable[k * (trainable.size() - 1) / (probes - 1)];
      const int64_t i = p.offset + static_cast<int64_t>(rng() % static_cast<uint64_t>(p.shape.numel()));
      double& v = m.params().data<double>()[i];
      const double saved = v, h = 1e-6;
      v = saved + h;
      m.forward(train);
      const double lp = loss(m, r);
      v = saved - h;
      m.forward(train);
      const double lm = loss(m, r);
      v = saved;
      const double num = (lp - lm) / (2 * h), ana = m.grads().data<double>()[i];
      // The loss is O(100) here: rounding in L costs ~1e-16 * 100 / h = 1e-8 absolute, and
      // truncation ~h^2 |L'''| is far below that; a wrong derivative errs by O(|grad|).
      EXPECT_NEAR(ana, num, 1e-6 + 1e-6 * std::abs(num)) << p.name << " [" << i - p.offset << "]";
      worst = std::max(worst, std::abs(ana - num) / (1e-6 + std::abs(num)));
      ++groups[p.group];
    }
    if (train) {
      for (int g = 0; g < 3; ++g) EXPECT_GT(groups[g], 5) << "group " << g << " barely probed";
    }
    RecordProperty(train ? "worst_train" : "worst_eval", std::to_string(worst));
  }
}

TEST(Model, TrainAndEvalModes) {
  Model m(spec("yolov8-tiny.yaml", 4), options(Device::kCPU, DType::kF32, 2, 64));
  set_images(m, 1);
  const std::vector<double> init_stats = test::values(m.bn_stats());
  m.forward(false);
  EXPECT_EQ(test::values(m.bn_stats()), init_stats) << "eval must not touch the running statistics";
  const std::vector<double> eval_out = test::values(m.outputs()[0]);
  m.forward(true);
  const std::vector<double> train_stats = test::values(m.bn_stats());
  EXPECT_NE(train_stats, init_stats) << "train must update the running statistics";
  // running_mean = 0.97 * 0 + 0.03 * batch mean: the first BN's mean moved, but by little.
  EXPECT_NE(test::values(m.outputs()[0]), eval_out);

  // Eval treats images independently; train normalises over the batch.
  const int64_t half = m.input().numel() / 2, per_out = m.outputs()[0].numel() / 2;
  auto first_image_outputs = [&](bool train, uint64_t partner_seed) {
    Tensor host = m.input().to(Device::kCPU);
    std::mt19937_64 rng(partner_seed);
    for (int64_t i = half; i < 2 * half; ++i) host.data<uint8_t>()[i] = static_cast<uint8_t>(rng() & 255);
    copy(host, m.input());
    m.forward(train);
    const std::vector<double> y = test::values(m.outputs()[0]);
    return std::vector<double>(y.begin(), y.begin() + per_out);
  };
  EXPECT_EQ(first_image_outputs(false, 10), first_image_outputs(false, 11));
  EXPECT_NE(first_image_outputs(true, 10), first_image_outputs(true, 11));
}

// ||a - b|| / ||b|| over all elements.
double relative_l2(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
  return std::sqrt(num / std::max(den, 1e-300));
}

// Running each BN -> SiLU fused changes nothing but the rounding of the BN output (none in
// f64 beyond ~1e-15) and saves that output's buffer and gradient: the same outputs, parameter
// gradients and running statistics, train and eval, in less memory.
// The fused ops (each Conv's BN with its SiLU, and the Bottleneck's residual add after such
// a pair) give the separate ops' results (f64: up to the rounding of the outputs they skip).
TEST(Model, FusedBnSiLUAndResidualMatchSeparateOps) {
  ModelOptions o = options(Device::kCPU, DType::kF64, 2, 64, 13);
  o.fusion = ModelOptions::Fusion::kOn;
  Model fused(spec("yolov8-tiny.yaml", 3), o);
  o.fusion = ModelOptions::Fusion::kOff;
  Model plain(spec("yolov8-tiny.yaml", 3), o);
  const std::vector<Tensor> r = loss_weights(fused);
  for (Model* m : {&fused, &plain}) set_images(*m, 8);
  for (bool train : {true, false}) {
    SCOPED_TRACE(train ? "train" : "eval");
    for (Model* m : {&fused, &plain}) {
      m->zero_grads();
      m->forward(train);
      for (size_t l = 0; l < r.size(); ++l) copy(r[l], m->output_grads()[l]);
      m->backward();
    }
    for (size_t l = 0; l < r.size(); ++l)
      EXPECT_LT(relative_l2(test::values(fused.outputs()[l]), test::values(plain.outputs()[l])), 1e-12)
          << "output " << l;
    EXPECT_LT(relative_l2(test::values(fused.grads()), test::values(plain.grads())), 1e-12);
    EXPECT_LT(relative_l2(test::values(fused.bn_stats()), test::values(plain.bn_stats())), 1e-12);
  }
  // Every Conv's BN output and its gradient are gone: (B, H, W, C) twice per Conv; and so are
  // the SiLU output and gradient of every Bottleneck with a shortcut.
  int64_t saved = 0, residuals = 0;
  const ModelGraph& g = plain.graph();
  for (size_t i = 0; i + 1 < g.ops.size(); ++i)
    if (g.ops[i].kind == OpKind::kBatchNorm && g.ops[i + 1].kind == OpKind::kSiLU) {
      saved += 2 * g.acts[g.ops[i].outputs[0]].shape.numel() * 8;
      const int z = g.ops[i + 1].outputs[0];
      if (i + 2 < g.ops.size() && g.ops[i + 2].kind == OpKind::kAdd &&
          (g.ops[i + 2].inputs[0] == z || g.ops[i + 2].inputs[1] == z)) {
        saved += 2 * g.acts[z].shape.numel() * 8;
        ++residuals;
      }
    }
  EXPECT_GT(residuals, 0) << "yolov8-tiny has shortcut Bottlenecks";
  EXPECT_LE(fused.memory().total_bytes() + saved, plain.memory().total_bytes());
}

// Gradients that their first writer (the last reader's backward) writes instead of adding
// into give the accumulated ones exactly (0 + v is v), also on a second step, when those
// gradients still hold the first step's values (they are not zeroed); and fewer elements are
// zeroed per step: fused, only the outputs' gradients (the loss adds into them), every other
// gradient's last reader being a conv, BN, concat, split or add.
TEST(Model, OverwrittenGradientsMatchAccumulated) {
  for (auto fusion : {ModelOptions::Fusion::kOn, ModelOptions::Fusion::kOff}) {
    SCOPED_TRACE(fusion == ModelOptions::Fusion::kOn ? "fused" : "separate");
    ModelOptions o = options(Device::kCPU, DType::kF64, 2, 64, 13);
    o.fusion = fusion;
    Model over(spec("yolov8-tiny.yaml", 3), o);
    o.overwrite_grads = false;
    Model acc(spec("yolov8-tiny.yaml", 3), o);
    EXPECT_LT(over.zeroed_grad_elems(), acc.zeroed_grad_elems());
    if (fusion == ModelOptions::Fusion::kOn) {
      // The outputs' gradients, each padded to the arena's 256-byte alignment (32 doubles).
      int64_t outputs = 0;
      for (const Tensor& t : over.output_grads()) outputs += (t.numel() + 31) / 32 * 32;
      EXPECT_EQ(over.zeroed_grad_elems(), outputs);
    }
    const std::vector<Tensor> r = loss_weights(over);
    for (uint64_t images : {8, 9}) {
      for (Model* m : {&over, &acc}) {
        set_images(*m, images);
        train_step(*m, r);
      }
      EXPECT_EQ(test::values(over.grads()), test::values(acc.grads())) << "images " << images;
    }
  }
}

// Concatenations written in place (ModelOptions::concat_in_place): C2f's cv1 output, its
// two halves and its Bottlenecks' outputs, the neck's upsampled and lateral inputs and the
// Detect's box and class outputs become channel views of their concatenations, so the splits
// and those concats do nothing; the step's results are the copying model's bit for bit
// (the same arithmetic in the same order: the views' gradients receive the concatenation's
// part first, then the readers' in the same backward order), train and eval, over two steps
// (the second with the first step's gradients left in the unzeroed buffers), in less memory.
TEST(Model, ConcatInPlaceMatchesCopies) {
  ModelOptions o = options(Device::kCPU, DType::kF64, 2, 64, 13);
  o.fusion = ModelOptions::Fusion::kOn;  // the BN ops that write the views
  Model placed(spec("yolov8-tiny.yaml", 3), o);
  o.concat_in_place = false;
  Model copied(spec("yolov8-tiny.yaml", 3), o);
  const std::vector<Tensor> r = loss_weights(placed);
  for (bool train : {true, false})
    for (uint64_t images : {8, 9}) {
      SCOPED_TRACE(cat(train ? "train" : "eval", ", images ", images));
      for (Model* m : {&placed, &copied}) {
        set_images(*m, images);
        m->zero_grads();
        m->forward(train);
        for (size_t l = 0; l < r.size(); ++l) copy(r[l], m->output_grads()[l]);
        m->backward();
      }
      for (size_t l = 0; l < r.size(); ++l)
        EXPECT_EQ(test::values(placed.outputs()[l]), test::values(copied.outputs()[l])) << "output " << l;
      EXPECT_EQ(test::values(placed.grads()), test::values(copied.grads()));
      EXPECT_EQ(test::values(placed.bn_stats()), test::values(copied.bn_stats()));
    }
  // Every split and concat is skipped (the hook never sees them) but the SPPF's concat, whose
  // inputs max pools read and write.
  const ModelGraph& g = placed.graph();
  int64_t splits = 0, sppf = 0;
  for (const GraphOp& op : g.ops) {
    splits += op.kind == OpKind::kSplit;
    if (op.kind == OpKind::kConcat)
      for (const GraphOp& w : g.ops)
        if (w.kind == OpKind::kMaxPool && w.outputs[0] == op.inputs.back()) ++sppf;
  }
  ASSERT_GT(splits, 0) << "yolov8-tiny has C2f modules";
  ASSERT_EQ(sppf, 1) << "and one SPPF";
  int64_t split_calls = 0, concat_calls = 0;
  placed.set_op_hook([&](size_t i, bool, bool after) {
    if (after) return;
    split_calls += g.ops[i].kind == OpKind::kSplit;
    concat_calls += g.ops[i].kind == OpKind::kConcat;
  });
  placed.forward(true);
  placed.backward();
  EXPECT_EQ(split_calls, 0);
  EXPECT_EQ(concat_calls, 2 * sppf);  // forward and backward
  // Memory: at least each C2f's cv1 output and its halves, once as activations and once as
  // gradients (f64), and its Bottlenecks' outputs besides.
  int64_t saved = 0;
  for (size_t i = 0; i < g.ops.size(); ++i) {
    if (g.ops[i].kind != OpKind::kSplit) continue;
    saved += 2 * g.acts[g.ops[i].inputs[0]].shape.numel() * 8;  // cv1's output = the two halves
    for (int a : g.ops[i].outputs) saved += 2 * g.acts[a].shape.numel() * 8;
  }
  EXPECT_LT(placed.memory().total_bytes() + saved, copied.memory().total_bytes());
}

// --disable's names switch the options off one by one; an unknown name says which it was.
TEST(Model, DisableFeatures) {
  ModelOptions o;
  disable_features(o, "");
  EXPECT_TRUE(o.fusion == ModelOptions::Fusion::kAuto && o.concat_in_place && o.conv_stats && o.overwrite_grads);
  disable_features(o, "concat-in-place,conv-stats");
  EXPECT_TRUE(o.fusion == ModelOptions::Fusion::kAuto && !o.concat_in_place && !o.conv_stats && o.overwrite_grads);
  disable_features(o, "fusion,overwrite-grads");
  EXPECT_TRUE(o.fusion == ModelOptions::Fusion::kOff && !o.overwrite_grads);
  test::expect_error([&] { disable_features(o, "fusion,in-place"); },
                     {"unknown model feature 'in-place'", "known: fusion, concat-in-place, conv-stats"});
}

TEST(Model, BadUse) {
  test::expect_error([] { Model(spec("yolov8-tiny.yaml"), options(Device::kCPU, DType::kBF16, 1, 64)); },
                     {"yolov8-tiny.yaml", "bf16", "not supported on cpu"});
  Model m(spec("yolov8-tiny.yaml"), options(Device::kCPU, DType::kF32, 1, 64));
  test::expect_error([&] { m.backward(); }, {"backward() before any forward()"});
  if (!test::has_gpu())
    test::expect_error([] { Model(spec("yolov8-tiny.yaml"), options(Device::kCUDA, DType::kF32, 1, 64)); },
                       {"no CUDA device"});
}

TEST(Model, GpuMatchesCpu) {
  VT_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kBF16})
    for (bool fuse : {true, false}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + (fuse ? " fused" : " separate"));
      // The CUDA emulator runs the fused model only, in half the time: the separate ops'
      // kernels are the op tests', and fused and separate agree on the CPU
      // (FusedBnSiLUAndResidualMatchSeparateOps).
      if (test::kCudaEmulated && !fuse) continue;
      // Batch 3 at 96 x 96: odd batch, 3 x 3 cells at stride 32, 5 classes.
      Model cpu(spec("yolov8-tiny.yaml", 5), options(Device::kCPU, DType::kF32, 3, 96, 9));
      set_images(cpu, 6);
      const std::vector<Tensor> r = loss_weights(cpu);
      train_step(cpu, r);
      ModelOptions go = options(Device::kCUDA, dt, 3, 96, 9);
      go.fusion = fuse ? ModelOptions::Fusion::kOn : ModelOptions::Fusion::kOff;
      Model gpu(spec("yolov8-tiny.yaml", 5), go);
      set_images(gpu, 6);
      std::vector<std::pair<int64_t, int64_t>> ranges;
      train_step(gpu, r, [&](int64_t o, int64_t n) { ranges.emplace_back(o, n); });
      EXPECT_EQ(ranges.back().first + ranges.back().second, gpu.flat_size());
      // f32: the same arithmetic in other summation orders, through ~40 layers with batch
      // norms (~1e-6 per op). bf16: every activation rounded to 8 significant bits at each
      // of ~40 layers; outputs and statistics stay within a few 1e-2, but the step's
      // gradients do not: at initialisation the layers amplify differences (see
      // GpuConvStatsMatchBatchNormPass), and under tests/cuda_emu they differ from the f32
      // CPU's by 0.18 (fused) and 0.32 (separate) relative L2. For bf16 the gradients are
      // checked op by op (the ops' parity tests); here only against gross errors (a
      // gradient that is missing, doubled or another layer's is off by ~1 or more).
      const double tol = dt == DType::kF32 ? 1e-3 : 5e-2, grad_tol = dt == DType::kF32 ? 1e-3 : 0.6;
      for (size_t l = 0; l < 3; ++l)
        EXPECT_LT(relative_l2(test::values(gpu.outputs()[l]), test::values(cpu.outputs()[l])), tol)
            << "output " << l;
      EXPECT_LT(relative_l2(test::values(gpu.grads()), test::values(cpu.grads())), grad_tol) << "grads";
      EXPECT_LT(relative_l2(test::values(gpu.bn_stats()), test::values(cpu.bn_stats())), tol) << "bn_stats";
      // Per parameter tensor too, so a small layer's error is not hidden by the big ones (f32).
      const std::vector<double> gg = test::values(gpu.grads()), cg = test::values(cpu.grads());
      for (const ParamInfo& p : cpu.param_table()) {
        if (p.constant || dt != DType::kF32) continue;
        const auto a = gg.begin() + p.offset, b = cg.begin() + p.offset;
        EXPECT_LT(relative_l2({a, a + p.shape.numel()}, {b, b + p.shape.numel()}), 4 * tol) << p.name;
      }
      cpu.forward(false), gpu.forward(false);
      synchronize();
      for (size_t l = 0; l < 3; ++l)
        EXPECT_LT(relative_l2(test::values(gpu.outputs()[l]), test::values(cpu.outputs()[l])), tol)
            << "eval " << l;
      // The GPU runs the same step with nothing allocated.
      const int64_t before = allocation_count();
      train_step(gpu, r);
      EXPECT_EQ(allocation_count(), before);
    }
}

// BN statistics from the convs' epilogues (ModelOptions::conv_stats) against BN's own pass,
// bf16 on the GPU. The first BN reads the same values either way: its statistics agree to
// fp32 summation order. After it, the two models drift apart: a statistic differing in its
// last bits flips the bf16 rounding of a few activations (2^-8 each), and ~40 layers at
// initialisation amplify those flips (measured under tests/cuda_emu: the first layers'
// running statistics agree to 1e-9, the Detect convs' weight gradients differ by ~10%,
// all gradients by ~20% relative L2). So past the first BN only gross errors are testable: every BN's
// statistics reading another conv's tiles, or none, would be off by O(1).
TEST(Model, GpuConvStatsMatchBatchNormPass) {
  VT_REQUIRE_GPU();
  ModelOptions o = options(Device::kCUDA, DType::kBF16, 3, 96, 9);
  Model with(spec("yolov8-tiny.yaml", 5), o);
  o.conv_stats = false;
  Model without(spec("yolov8-tiny.yaml", 5), o);
  const GraphOp& first = with.graph().ops[1];  // the stem conv: 3 -> 8 channels, stride 2
  ASSERT_EQ(first.kind, OpKind::kConv);
  ASSERT_GT(conv2d_tile_stats_tiles(with.graph().acts[first.inputs[0]].shape,
                                    with.graph().params[first.weight].shape, first.conv, DType::kBF16,
                                    Device::kCUDA),
            0)
      << "the tensor-core path (and the statistics) should run here";
  const std::vector<Tensor> r = loss_weights(with);
  for (Model* m : {&with, &without}) {
    set_images(*m, 6);
    train_step(*m, r);
  }
  const NamedValues a = with.state(), b = without.state();
  for (const char* stat : {"model.0.bn.running_mean", "model.0.bn.running_var"}) {
    const std::vector<float>& x = a.at(stat);
    const std::vector<float>& y = b.at(stat);
    EXPECT_LT(relative_l2({x.begin(), x.end()}, {y.begin(), y.end()}), 1e-6) << stat;
  }
  EXPECT_LT(relative_l2(test::values(with.bn_stats()), test::values(without.bn_stats())), 1e-3) << "bn_stats";
  for (size_t l = 0; l < 3; ++l)
    EXPECT_LT(relative_l2(test::values(with.outputs()[l]), test::values(without.outputs()[l])), 5e-2)
        << "output " << l;
}

// The same on the GPU, f32 and bf16: bit for bit, as on the CPU (the same kernels on the same
// values in the same order: a view only moves where a row starts; the convs and BN passes
// whose views are unaligned for 16-byte vectors take their scalar paths, which give the same
// bits).
TEST(Model, GpuConcatInPlaceMatchesCopies) {
  VT_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    // The CUDA emulator takes bf16 only (the f32 views are ChannelView's): minutes a model.
    if (test::kCudaEmulated && dt == DType::kF32) continue;
    SCOPED_TRACE(dtype_name(dt));
    ModelOptions o = options(Device::kCUDA, dt, 3, 96, 9);
    Model placed(spec("yolov8-tiny.yaml", 5), o);
    o.concat_in_place = false;
    Model copied(spec("yolov8-tiny.yaml", 5), o);
    const std::vector<Tensor> r = loss_weights(placed);
    for (uint64_t images : {6, 7})
      for (Model* m : {&placed, &copied}) {
        set_images(*m, images);
        train_step(*m, r);
      }
    for (size_t l = 0; l < 3; ++l)
      EXPECT_EQ(test::values(placed.outputs()[l]), test::values(copied.outputs()[l])) << "output " << l;
    EXPECT_EQ(test::values(placed.grads()), test::values(copied.grads()));
    EXPECT_EQ(test::values(placed.bn_stats()), test::values(copied.bn_stats()));
  }
}

// The training step's device work replayed from CUDA graphs gives the eager step's
// gradients bit for bit, and keeps doing so on new images copied into the same input (the
// kernels are deterministic, so any difference is the capture's).
TEST(Model, GpuStepReplaysAsCudaGraph) {
  VT_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    if (test::kCudaEmulated && dt == DType::kF32) continue;  // the capture is the same: bf16 only there
    SCOPED_TRACE(dtype_name(dt));
    Model m(spec("yolov8-tiny.yaml", 5), options(Device::kCUDA, dt, 3, 96, 9));
    const std::vector<Tensor> r = loss_weights(m);
    const CudaStream cs;
    const Stream s = cs.get();
    CudaGraph fwd, bwd;
    auto step = [&](uint64_t seed, bool graphed) {
      set_images(m, seed);
      if (graphed)
        fwd.launch(s);
      else
        m.zero_grads(s), m.forward(true, s);
      synchronize(s);
      for (size_t l = 0; l < r.size(); ++l) copy(r[l], m.output_grads()[l]);
      if (graphed)
        bwd.launch(s);
      else
        m.backward(s);
      synchronize(s);
      return test::values(m.grads());
    };
    const std::vector<double> want6 = step(6, false), want7 = step(7, false);
    fwd.capture(s, [&] {
      m.zero_grads(s);
      m.forward(true, s);
    });
    bwd.capture(s, [&] { m.backward(s); });
    EXPECT_EQ(step(6, true), want6);
    EXPECT_EQ(step(7, true), want7);
    EXPECT_EQ(step(6, true), want6);
  }
}

}  // namespace
}  // namespace vt
