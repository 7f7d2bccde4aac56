// Model YAML resolution: the shipped configs resolve to Ultralytics' channels and repeats,
// scales are picked as Ultralytics picks them, and every kind of bad config fails with a
// message naming the file, the row and the problem.
#include "layers/model_spec.h"

#include <string>
#include <vector>

#include "layers/check.h"
#include "tests/test_util.h"

namespace vt {
namespace {

const std::string kConfigs = VT_SOURCE_DIR "/configs/";

// A minimal valid model around one row under test, placed as head row 0 (layer 2).
std::string with_row(const std::string& row, const std::string& top = "nc: 4\n") {
  return top +
         "backbone:\n"
         "  - [-1, 1, Conv, [16, 3, 2]]\n"
         "  - [-1, 1, Conv, [32, 3, 2]]\n"
         "head:\n"
         "  - " +
         row +
         "\n"
         "  - [[-1], 1, Detect, [nc]]\n";
}

TEST(ModelSpec, Yolov8nMatchesUltralytics) {
  const ModelSpec s = load_model_spec(kConfigs + "yolov8n.yaml");
  EXPECT_EQ(s.scale, "n");
  EXPECT_EQ(s.nc, 80);
  EXPECT_DOUBLE_EQ(s.depth, 0.33);
  EXPECT_DOUBLE_EQ(s.width, 0.25);
  ASSERT_EQ(s.layers.size(), 23u);
  // Ultralytics' model table for yolov8n: c2 per layer, and C2f's n after the depth gain.
  const std::vector<int> c2 = {16,  32,  32,  64, 64, 128, 128, 256, 256, 256, 256, 384,
                               128, 128, 192, 64, 64, 192, 128, 128, 384, 256, 0};
  for (size_t i = 0; i < c2.size(); ++i) EXPECT_EQ(s.layers[i].c2, c2[i]) << "layer " << i;
  EXPECT_EQ(s.layers[2].n, 1);
  EXPECT_EQ(s.layers[4].n, 2);  // 6 * 0.33 = 1.98 -> 2
  EXPECT_EQ(s.layers[6].n, 2);
  EXPECT_EQ(s.layers[8].n, 1);  // 3 * 0.33 = 0.99 -> 1
  EXPECT_TRUE(s.layers[2].shortcut);
  EXPECT_FALSE(s.layers[12].shortcut);
  EXPECT_EQ(s.layers[12].c1, 384);
  EXPECT_EQ(s.layers[9].k, 5);
  EXPECT_EQ(s.layers[0].k, 3);
  EXPECT_EQ(s.layers[0].s, 2);
  EXPECT_EQ(s.layers[0].p, 1);  // autopad
  EXPECT_EQ(s.layers[10].module, ModuleKind::kUpsample);
  EXPECT_EQ(s.layers[10].scale, 2);
  EXPECT_EQ(s.layers[11].from, (std::vector<int>{10, 6}));
  const LayerSpec& d = s.layers[22];
  EXPECT_EQ(d.module, ModuleKind::kDetect);
  EXPECT_EQ(d.from, (std::vector<int>{15, 18, 21}));
  EXPECT_EQ(d.ch, (std::vector<int>{64, 128, 256}));
  EXPECT_EQ(d.nc, 80);
}

TEST(ModelSpec, Yolov8sAndTiny) {
  const ModelSpec s = load_model_spec(kConfigs + "yolov8s.yaml");
  EXPECT_EQ(s.scale, "s");
  EXPECT_EQ(s.layers[22].ch, (std::vector<int>{128, 256, 512}));
  EXPECT_EQ(s.layers[9].c2, 512);
  const ModelSpec t = load_model_spec(kConfigs + "yolov8-tiny.yaml", 4);
  EXPECT_EQ(t.scale, "");
  EXPECT_EQ(t.nc, 4);
  EXPECT_EQ(t.layers[22].nc, 4);
  EXPECT_EQ(t.layers[22].ch, (std::vector<int>{32, 32, 32}));
  EXPECT_EQ(t.layers[0].c2, 8);
  EXPECT_EQ(t.layers[7].c2, 32);  // min(1024, 256) * 0.125
}

TEST(ModelSpec, ScaleSelection) {
  const std::string scaled = "scales:\n  n: [0.33, 0.25, 1024]\n  s: [0.33, 0.5, 1024]\n";
  const std::string text = with_row("[-1, 1, Conv, [64, 1, 1]]", "nc: 4\n" + scaled);
  // The file name's letter, as Ultralytics' guess_model_scale.
  EXPECT_EQ(parse_model_spec(text, "dir/yolov8s.yaml").layers[2].c2, 32);
  EXPECT_EQ(parse_model_spec(text, "dir/my-yolov8n-x.yaml").scale, "n");
  // No letter in the name: the scale: key, else the first scale.
  EXPECT_EQ(parse_model_spec(text, "custom.yaml").scale, "n");
  EXPECT_EQ(parse_model_spec(text + "scale: s\n", "custom.yaml").scale, "s");
  EXPECT_EQ(parse_model_spec(text + "scale: s\n", "yolov8s.yaml").scale, "s");
  test::expect_error([&] { parse_model_spec(text + "scale: s\n", "cfg/yolov8n.yaml"); },
                     {"cfg/yolov8n.yaml", "scale 'n'", "'s'"});
  test::expect_error([&] { parse_model_spec(text, "yolov8x.yaml"); }, {"yolov8x.yaml", "scale 'x'", "n, s"});
  // Explicit multiples without scales; max_channels caps before the width.
  const ModelSpec m =
      parse_model_spec(with_row("[-1, 1, Conv, [512, 1, 1]]",
                                "nc: 4\ndepth_multiple: 0.5\nwidth_multiple: 0.5\nmax_channels: 256\n"),
                       "yolov8n.yaml");
  EXPECT_EQ(m.scale, "");
  EXPECT_EQ(m.layers[2].c2, 128);
  EXPECT_EQ(m.layers[0].c2, 8);
}

TEST(ModelSpec, ChannelAndRepeatRules) {
  const std::string top = "nc: 6\ndepth_multiple: 0.5\nwidth_multiple: 0.3\n";
  // make_divisible(c2 * width, 8) rounds up: 100 * 0.3 = 30 -> 32.
  EXPECT_EQ(parse_model_spec(with_row("[-1, 1, Conv, [100, 1, 1]]", top), "m.yaml").layers[2].c2, 32);
  // args[0] == nc is left unscaled, as Ultralytics does.
  EXPECT_EQ(parse_model_spec(with_row("[-1, 1, Conv, [6, 1, 1]]", top), "m.yaml").layers[2].c2, 6);
  EXPECT_EQ(parse_model_spec(with_row("[-1, 1, Conv, [nc, 1, 1]]", top), "m.yaml").layers[2].c2, 6);
  // Depth gain with Python's round (half to even): 3 * 0.5 = 1.5 -> 2, 5 * 0.5 = 2.5 -> 2, 1 stays.
  EXPECT_EQ(parse_model_spec(with_row("[-1, 3, C2f, [64]]", top), "m.yaml").layers[2].n, 2);
  EXPECT_EQ(parse_model_spec(with_row("[-1, 5, C2f, [64]]", top), "m.yaml").layers[2].n, 2);
  EXPECT_EQ(parse_model_spec(with_row("[-1, 1, C2f, [64]]", top), "m.yaml").layers[2].n, 1);
  EXPECT_EQ(parse_model_spec(with_row("[-1, 1, C2f, [64]]", top), "m.yaml").layers[2].repeats, 1);
  // Chained repeats of a Conv keep their count (after the gain) and need c1 == c2.
  const ModelSpec r = parse_model_spec(with_row("[-1, 4, Conv, [32, 3, 1]]", "nc: 4\n"), "m.yaml");
  EXPECT_EQ(r.layers[2].repeats, 4);
  // Bottleneck args: shortcut, groups, kernels, expansion.
  const LayerSpec b =
      parse_model_spec(with_row("[-1, 1, Bottleneck, [32, False, 2, [1, 3], 0.25]]", "nc: 4\n"), "m.yaml")
          .layers[2];
  EXPECT_FALSE(b.shortcut);
  EXPECT_EQ(b.g, 2);
  EXPECT_EQ(b.k1, 1);
  EXPECT_EQ(b.k2, 3);
  EXPECT_DOUBLE_EQ(b.e, 0.25);
  // Concat sums channels, an override of nc reaches `nc` in args.
  const ModelSpec c = parse_model_spec(with_row("[[-1, 0, -2], 1, Concat, [1]]", "nc: 4\n"), "m.yaml", 9);
  EXPECT_EQ(c.layers[2].from, (std::vector<int>{1, 0, 0}));
  EXPECT_EQ(c.layers[2].c2, 32 + 16 + 16);
  EXPECT_EQ(c.layers[3].nc, 9);
  EXPECT_EQ(c.layers[3].ch, (std::vector<int>{64}));
}

TEST(ModelSpec, BadConfigsNameFileRowAndProblem) {
  auto bad = [](const std::string& row, const std::vector<std::string>& needles) {
    std::vector<std::string> all = {"bad.yaml", "head row 0 (layer 2)"};
    all.insert(all.end(), needles.begin(), needles.end());
    test::expect_error([&] { parse_model_spec(with_row(row), "cfg/bad.yaml"); }, all);
  };
  bad("[-1, 1, C2g, [64]]", {"C2g", "unknown module", "known: Conv"});
  bad("[5, 1, Conv, [64]]", {"from 5", "earlier layer"});
  bad("[-4, 1, Conv, [64]]", {"from -4"});
  bad("[x, 1, Conv, [64]]", {"from must be a layer index"});
  bad("[[-1, 0], 1, Conv, [64]]", {"from must be one layer index for Conv"});
  bad("[-1, 1, Concat, [1]]", {"from must be a list"});
  bad("[-1, 1, Conv, [64, 3, 1, None, 1, 2]]", {"dilation"});
  bad("[-1, 1, Conv, []]", {"output channels"});
  bad("[-1, 1, Conv, [64, three]]", {"arg 1 (k) must be an integer"});
  bad("[-1, 1, Conv, [64, 0]]", {"arg 1 (k) = 0 must be >= 1"});
  bad("[-1, 1, Conv, [64, 1, 1, 0, 1, 1, True, 7]]", {"at most 7 args"});
  bad("[-1, 1, C2f, [64, maybe]]", {"shortcut", "True or False"});
  bad("[-1, 1, C2f, [64, True, 1, 1.5]]", {"e = 1.5"});
  bad("[-1, 1, Bottleneck, [64, True, 1, [3]]]", {"two kernel sizes"});
  bad("[-1, 1, nn.Upsample, [None, 1.5, nearest]]", {"scale_factor 1.5"});
  bad("[-1, 1, nn.Upsample, [None, 2, bilinear]]", {"nearest"});
  bad("[-1, 1, nn.Upsample, [[4, 4], 2]]", {"by size"});
  bad("[[-1, 0], 1, Concat, [2]]", {"dimension 1"});
  bad("[[-1, 0], 2, Concat, [1]]", {"repeats must be 1"});
  bad("[-1, 2, Conv, [64, 3, 1]]", {"c1 == c2"});
  bad("[-1, 0, Conv, [64]]", {"repeats must be an integer >= 1"});
  bad("[-1, 1, Conv]", {"[from, repeats, module, args]"});
  test::expect_error([] { parse_model_spec(with_row("[[-1], 1, Detect, [nc]]"), "cfg/bad.yaml"); },
                     {"cfg/bad.yaml", "head row 1 (layer 3)", "Detect must be the last row"});

  test::expect_error([] { parse_model_spec("nc: [", "cfg/broken.yaml"); },
                     {"cfg/broken.yaml", "not valid YAML"});
  test::expect_error([] { parse_model_spec(with_row("[-1, 1, Conv, [8]]", ""), "a.yaml"); },
                     {"a.yaml", "no nc"});
  test::expect_error([] { parse_model_spec(with_row("[-1, 1, Conv, [8]]", "nc: 0\n"), "a.yaml"); },
                     {"nc must be"});
  test::expect_error(
      [] { parse_model_spec(with_row("[-1, 1, Conv, [8]]", "nc: 4\nactivation: nn.ReLU()\n"), "a.yaml"); },
      {"a.yaml", "activation"});
  test::expect_error([] { parse_model_spec("nc: 4\nbackbone:\n  - [-1, 1, Conv, [8]]\n", "a.yaml"); },
                     {"a.yaml", "head must be a non-empty list"});
  test::expect_error(
      [] {
        parse_model_spec("nc: 4\nbackbone:\n  - [-1, 1, Conv, [8]]\nhead:\n  - [-1, 1, Conv, [8]]\n",
                         "a.yaml");
      },
      {"a.yaml", "last row must be Detect"});
  test::expect_error(
      [] { parse_model_spec(with_row("[-1, 1, Conv, [8]]", "nc: 4\nscales: {n: [1, 2]}\n"), "a.yaml"); },
      {"scales.n must be [depth, width, max_channels]"});
  test::expect_error(
      [] {
        parse_model_spec(with_row("[-1, 1, Conv, [8]]", "nc: 4\nscales: {n: [1, 1, 64]}\nscale: {x: 1}\n"),
                         "a.yaml");
      },
      {"a.yaml", "not valid YAML for a model"});
  test::expect_error([] { load_model_spec("/nonexistent/m.yaml"); }, {"/nonexistent/m.yaml", "cannot open"});
}

}  // namespace
}  // namespace vt
