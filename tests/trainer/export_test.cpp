// `visiontrain export` refusals, through the command itself: a run file with a non-finite
// weight (the tensor named), a truncated file and a missing file (the file named); and the
// weights selection (--weights-of model exports the clean model weights of that same file).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "checkpoints/checkpoint.h"
#include "data/fileio.h"
#include "layers/check.h"
#include "trainer/commands.h"
#include "tests/test_util.h"
#include "trainer/run_state.h"

namespace vt {
namespace {

namespace fs = std::filesystem;

class ExportCommand : public ::testing::Test {
 protected:

  // A run file of the tiny model (3 classes, imgsz 64) whose EMA holds a NaN.
  std::string run_file_with_nan_ema() const {
    const std::string yaml_path = std::string(VT_SOURCE_DIR) + "/configs/yolov8-tiny.yaml";
    RunInfo info;
    info.model_yaml = data::read_text_file(yaml_path);
    info.model_path = yaml_path;
    info.class_names = {"a", "b", "c"};
    info.imgsz = 64;
    const ModelSpec spec = parse_model_spec(info.model_yaml, yaml_path, 3);
    Model model(spec, {Device::kCPU, DType::kF32, 1, 64, 1});
    const NamedValues clean = model.state();
    NamedValues ema = clean;
    ema["model.6.m.1.cv2.conv.weight"][3] = NAN;
    ckpt::Checkpoint c;
    put_named(c, "model", model, clean);
    put_named(c, "ema", model, ema);
    put_info(c, info);
    const std::string path = dir_ + "/nan.h5";
    c.save(path);
    return path;
  }

  // Runs `visiontrain export ARGS...`; returns the error message ("" when it succeeds).
  static std::string run(std::vector<std::string> args) {
    args.insert(args.begin(), "visiontrain export");
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    try {
      EXPECT_EQ(cmd_export(static_cast<int>(argv.size()), argv.data()), 0);
    } catch (const std::exception& e) {
      return e.what();
    }
    return "";
  }

  test::TempDir tmp_{"vt-export-test-"};
  const std::string dir_ = tmp_.path();
};

TEST_F(ExportCommand, RefusesNonFiniteWeightsNamingTheTensor) {
  const std::string path = run_file_with_nan_ema();
  for (const char* format : {"safetensors", "onnx"}) {
    const std::string msg = run({"--weights", path, "--format", format, "--out", dir_ + "/x." + format});
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("ema/model.6.m.1.cv2.conv.weight holds non-finite values"), std::string::npos) << msg;
    EXPECT_FALSE(fs::exists(dir_ + "/x." + format));
  }
  // The model weights of the same file are finite and export.
  EXPECT_EQ(
      run({"--weights", path, "--format", "safetensors", "--weights-of", "model", "--out", dir_ + "/m.st"}),
      "");
  EXPECT_GT(fs::file_size(dir_ + "/m.st"), 0u);
}

TEST_F(ExportCommand, RefusesTruncatedAndMissingFilesNamingThem) {
  const std::string good = run_file_with_nan_ema(), cut = dir_ + "/truncated.h5";
  const std::vector<uint8_t> bytes = data::read_file(good);
  std::ofstream(cut, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size() / 2);
  std::string msg = run({"--weights", cut, "--format", "onnx", "--weights-of", "model"});
  EXPECT_NE(msg.find(cut), std::string::npos) << msg;
  msg = run({"--weights", dir_ + "/missing.h5", "--format", "safetensors"});
  EXPECT_NE(msg.find(dir_ + "/missing.h5"), std::string::npos) << msg;
}

TEST_F(ExportCommand, RefusesBadOptions) {
  EXPECT_NE(run({"--weights", "x.h5", "--format", "tflite"}).find("onnx or safetensors"), std::string::npos);
  EXPECT_NE(run({"--weights", "x.h5", "--format", "safetensors", "--with-nms"}).find("onnx only"),
            std::string::npos);
  EXPECT_NE(
      run({"--weights", "x.h5", "--format", "onnx", "--ema", "--weights-of", "model"}).find("contradicts"),
      std::string::npos);
}

}  // namespace
}  // namespace vt
