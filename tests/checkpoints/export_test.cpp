// Export writers: the safetensors layout (length prefix, JSON header, 8-byte alignment,
// contiguous data offsets, metadata), the PyTorch-layout state (OHWI -> OIHW, BN statistics,
// refusal of missing and non-finite tensors naming them), SHA-256 against FIPS 180-4's
// examples, and the ONNX model's interface parsed back with the protobuf classes.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "checkpoints/export_onnx.h"
#include "checkpoints/export_safetensors.h"
#include "checkpoints/sha256.h"
#include "checkpoints/torch_state.h"
#include "layers/check.h"
#include "layers/model.h"

namespace vt::ckpt {
namespace {

// The message of the vt::Error that `f` throws ("" when it throws none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

struct Parsed {
  uint64_t header_len = 0;
  nlohmann::json header;
  std::string data;
};

Parsed parse(const std::string& bytes) {
  Parsed p;
  for (int i = 0; i < 8; ++i) p.header_len |= uint64_t(uint8_t(bytes[i])) << (8 * i);
  p.header = nlohmann::json::parse(bytes.substr(8, p.header_len));
  p.data = bytes.substr(8 + p.header_len);
  return p;
}

TEST(Safetensors, HeaderLayoutOffsetsAndAlignment) {
  const std::vector<TorchTensor> t = {
      {"b.weight", {2, 3}, {1, 2, 3, 4, 5, 6}}, {"a", {1}, {-0.5f}}, {"c", {0}, {}}};
  const std::string bytes = safetensors_bytes(t, {{"imgsz", "64"}, {"class_names", "[\"x\"]"}});
  const Parsed p = parse(bytes);
  EXPECT_EQ((8 + p.header_len) % 8, 0u) << "data must start 8-byte aligned";
  const std::string raw_header = bytes.substr(8, p.header_len);
  EXPECT_EQ(raw_header.front(), '{');
  EXPECT_EQ(raw_header.find_last_not_of(' '), raw_header.find_last_of('}'))
      << "padding is trailing spaces only";
  EXPECT_EQ(p.header["__metadata__"]["imgsz"], "64");
  EXPECT_EQ(p.header["__metadata__"]["class_names"], "[\"x\"]");
  // Offsets in the given order, contiguous from 0, covering the data exactly.
  EXPECT_EQ(p.header["b.weight"]["dtype"], "F32");
  EXPECT_EQ(p.header["b.weight"]["shape"], nlohmann::json({2, 3}));
  EXPECT_EQ(p.header["b.weight"]["data_offsets"], nlohmann::json({0, 24}));
  EXPECT_EQ(p.header["a"]["data_offsets"], nlohmann::json({24, 28}));
  EXPECT_EQ(p.header["c"]["data_offsets"], nlohmann::json({28, 28}));
  EXPECT_EQ(p.header["c"]["shape"], nlohmann::json({0}));
  ASSERT_EQ(p.data.size(), 28u);
  float back[7];
  std::memcpy(back, p.data.data(), 28);
  EXPECT_EQ(back[0], 1.f);
  EXPECT_EQ(back[5], 6.f);
  EXPECT_EQ(back[6], -0.5f);
  EXPECT_EQ(bytes.size(), 8 + p.header_len + 28);
}

TEST(Safetensors, NoMetadataKeyWhenEmptyAndAlignmentForEveryHeaderLength) {
  for (int len = 1; len <= 16; ++len) {
    const Parsed p = parse(safetensors_bytes({{std::string(len, 'n'), {1}, {2.f}}}, {}));
    EXPECT_EQ((8 + p.header_len) % 8, 0u) << len;
    EXPECT_FALSE(p.header.contains("__metadata__"));
  }
}

TEST(Safetensors, RefusesBadTensors) {
  EXPECT_NE(error_of([] {
              safetensors_bytes({{"w", {2, 2}, {1, 2, 3}}}, {});
            }).find("w has 3 values"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              safetensors_bytes({{"w", {1}, {1}}, {"w", {1}, {2}}}, {});
            }).find("given twice"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              safetensors_bytes({{"__metadata__", {1}, {1}}}, {});
            }).find("invalid tensor name"),
            std::string::npos);
}

TEST(Safetensors, WriteNamesTheFileOnError) {
  const std::string msg = error_of([] { write_safetensors("/nonexistent-dir/x.safetensors", {}, {}); });
  EXPECT_NE(msg.find("/nonexistent-dir/x.safetensors"), std::string::npos) << msg;
}

TEST(TorchState, OhwiToOihw) {
  // o = 2, h = 1, w = 2, i = 3: value = 100 o + 10 w + i in OHWI.
  std::vector<float> ohwi;
  for (int o = 0; o < 2; ++o)
    for (int w = 0; w < 2; ++w)
      for (int i = 0; i < 3; ++i) ohwi.push_back(100.f * o + 10.f * w + i);
  const std::vector<float> oihw = ohwi_to_oihw(ohwi, 2, 1, 2, 3);
  for (int o = 0; o < 2; ++o)
    for (int i = 0; i < 3; ++i)
      for (int w = 0; w < 2; ++w) EXPECT_EQ(oihw[(o * 3 + i) * 2 + w], 100.f * o + 10.f * w + i);
}

class TinyModel : public ::testing::Test {
 protected:
  TinyModel()
      : spec_(load_model_spec(std::string(VT_SOURCE_DIR) + "/configs/yolov8-tiny.yaml", 3)),
        model_(spec_, {Device::kCPU, DType::kF32, 1, 64, 7}) {}
  ModelSpec spec_;
  Model model_;
};

TEST_F(TinyModel, TorchStateHasEveryTensorInPyTorchLayout) {
  const NamedValues v = model_.state();
  const std::vector<TorchTensor> t = torch_state(model_.graph(), v, "run.h5");
  EXPECT_EQ(t.size(), model_.graph().params.size() + 2 * model_.graph().bns.size());
  std::set<std::string> names;
  for (const TorchTensor& x : t) names.insert(x.name);
  EXPECT_EQ(names.size(), v.size()) << "the same names as Model::state()";
  // model.0.conv.weight: OHWI -> OIHW; the BN statistics follow the BN bias.
  for (size_t k = 0; k < t.size(); ++k) {
    if (t[k].name == "model.0.bn.bias") {
      EXPECT_EQ(t[k + 1].name, "model.0.bn.running_mean");
      EXPECT_EQ(t[k + 2].name, "model.0.bn.running_var");
    }
    if (t[k].name == "model.0.conv.weight") {
      const Shape& s = model_.graph().params[0].shape;
      EXPECT_EQ(t[k].shape, (std::vector<int64_t>{s[0], s[3], s[1], s[2]}));
      EXPECT_EQ(t[k].data, ohwi_to_oihw(v.at(t[k].name), s[0], s[1], s[2], s[3]));
    }
  }
  EXPECT_EQ(t.back().name, "model.22.dfl.conv.weight");
  EXPECT_EQ(t.back().shape, (std::vector<int64_t>{1, 16, 1, 1}));
  EXPECT_EQ(t.back().data[15], 15.f);
}

TEST_F(TinyModel, TorchStateRefusesNonFiniteAndMissingTensorsNamingThem) {
  NamedValues v = model_.state();
  v["model.2.m.0.cv1.conv.weight"][5] = NAN;
  std::string msg = error_of([&] { torch_state(model_.graph(), v, "runs/x/last.h5"); });
  EXPECT_NE(msg.find("runs/x/last.h5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.2.m.0.cv1.conv.weight holds a non-finite value"), std::string::npos) << msg;
  v = model_.state();
  v["model.9.cv2.bn.running_var"][0] = INFINITY;
  msg = error_of([&] { torch_state(model_.graph(), v, "r.h5"); });
  EXPECT_NE(msg.find("model.9.cv2.bn.running_var"), std::string::npos) << msg;
  v = model_.state();
  v.erase("model.4.cv1.bn.weight");
  msg = error_of([&] { torch_state(model_.graph(), v, "r.h5"); });
  EXPECT_NE(msg.find("no weights for model.4.cv1.bn.weight"), std::string::npos) << msg;
  // The ONNX exporter reads through the same check.
  v = model_.state();
  v["model.0.conv.weight"][0] = NAN;
  msg = error_of([&] { onnx_model_bytes(model_.graph(), v, "r.h5", {}); });
  EXPECT_NE(msg.find("model.0.conv.weight holds a non-finite value"), std::string::npos) << msg;
}

TEST_F(TinyModel, OnnxInterface) {
  for (bool dynamic : {false, true})
    for (bool nms : {false, true}) {
      OnnxExportOptions o;
      o.dynamic_batch = dynamic, o.with_nms = nms, o.metadata = {{"imgsz", "64"}};
      onnx::ModelProto m;
      ASSERT_TRUE(m.ParseFromString(onnx_model_bytes(model_.graph(), model_.state(), "r.h5", o)));
      EXPECT_EQ(m.opset_import(0).version(), 17);
      EXPECT_EQ(m.metadata_props(0).key(), "imgsz");
      const onnx::GraphProto& g = m.graph();
      ASSERT_EQ(g.input_size(), 1);
      const auto& in = g.input(0).type().tensor_type();
      EXPECT_EQ(g.input(0).name(), "images");
      EXPECT_EQ(in.elem_type(), onnx::TensorProto::FLOAT);
      EXPECT_EQ(dynamic ? in.shape().dim(0).dim_param() : std::to_string(in.shape().dim(0).dim_value()),
                dynamic ? "batch" : "1");
      EXPECT_EQ(in.shape().dim(1).dim_value(), 3);
      EXPECT_EQ(in.shape().dim(2).dim_value(), 64);
      ASSERT_EQ(g.output_size(), nms ? 3 : 2);
      EXPECT_EQ(g.output(0).name(), "boxes");
      EXPECT_EQ(g.output(1).name(), "scores");
      // A = 8^2 + 4^2 + 2^2 anchors at 64 x 64; 3 classes.
      EXPECT_EQ(g.output(0).type().tensor_type().shape().dim(1).dim_value(), 84);
      EXPECT_EQ(g.output(1).type().tensor_type().shape().dim(2).dim_value(), 3);
      std::set<std::string> ops;
      for (const auto& n : g.node()) ops.insert(n.op_type());
      EXPECT_EQ(ops.count("NonMaxSuppression"), nms ? 1u : 0u);
      for (const char* op : {"Conv", "BatchNormalization", "Sigmoid", "Mul", "MaxPool", "Resize", "Concat",
                             "Split", "Add", "Softmax"})
        EXPECT_EQ(ops.count(op), 1u) << op;
    }
}

TEST_F(TinyModel, OnnxRefusesBadNmsSettings) {
  OnnxExportOptions o;
  o.with_nms = true;
  o.nms.iou = 1.5f;
  EXPECT_NE(
      error_of([&] { onnx_model_bytes(model_.graph(), model_.state(), "r.h5", o); }).find("iou in [0, 1]"),
      std::string::npos);
}

TEST(Sha256, Fips180Examples) {
  EXPECT_EQ(sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  EXPECT_EQ(sha256_hex(two_blocks.data(), two_blocks.size()),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a');
  EXPECT_EQ(sha256_hex(million.data(), million.size()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, FileEqualsBytesAndNamesAMissingFile) {
  char tmpl[] = "/tmp/vt-sha-XXXXXX";
  const int fd = mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  const std::string text(3 << 20, 'q');  // several read chunks
  ASSERT_EQ(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  close(fd);
  EXPECT_EQ(sha256_file(tmpl), sha256_hex(text.data(), text.size()));
  std::filesystem::remove(tmpl);
  EXPECT_NE(error_of([&] { sha256_file(tmpl); }).find(tmpl), std::string::npos);
}

}  // namespace
}  // namespace vt::ckpt
