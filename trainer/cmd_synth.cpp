// `visiontrain synth`: the built-in synthetic detection dataset (data/synth.h).
#include <cxxopts.hpp>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>

#include "data/synth.h"
#include "layers/check.h"
#include "trainer/commands.h"
#include "trainer/progress.h"

namespace vt {

int cmd_synth(int argc, char** argv) {
  cxxopts::Options opts(
      argv[0],
      "Write a synthetic detection dataset: shapes of several classes (circle, rectangle, triangle,\n"
      "cross, diamond, ring) on textured backgrounds, as DIR/train and DIR/val. The same options give\n"
      "byte-identical shards whatever --threads.");
  // clang-format off
  opts.add_options()
    ("out", "output directory (DIR/train, DIR/val)", cxxopts::value<std::string>())
    ("train", "training images", cxxopts::value<int64_t>()->default_value("1024"))
    ("val", "validation images", cxxopts::value<int64_t>()->default_value("256"))
    ("imgsz", "image side in pixels", cxxopts::value<int>()->default_value("256"))
    ("classes", "number of shape classes (2..6)", cxxopts::value<int>()->default_value("4"))
    ("seed", "random seed", cxxopts::value<uint64_t>()->default_value("0"))
    ("store", "encoded (alias jpeg) or raw", cxxopts::value<std::string>()->default_value("encoded"))
    ("quality", "JPEG quality for encoded storage", cxxopts::value<int>()->default_value("90"))
    ("shard-size", "images per shard", cxxopts::value<int>()->default_value("1000"))
    ("threads", "threads (0: all hardware threads)", cxxopts::value<int>()->default_value("0"))
    ("overwrite", "replace datasets already in the output directories")
    ("quiet", "no progress bar")
    ("h,help", "show this help");
  // clang-format on
  const auto args = opts.parse(argc, argv);
  if (args.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  VT_CHECK(args.count("out"), "--out is required (see --help)");
  const std::string out = args["out"].as<std::string>();
  data::SynthOptions o;
  o.train = args["train"].as<int64_t>();
  o.val = args["val"].as<int64_t>();
  o.imgsz = args["imgsz"].as<int>();
  o.classes = args["classes"].as<int>();
  o.seed = args["seed"].as<uint64_t>();
  o.storage = data::parse_storage(args["store"].as<std::string>());
  o.jpeg_quality = args["quality"].as<int>();
  o.shard_size = args["shard-size"].as<int>();
  o.threads = args["threads"].as<int>();
  o.overwrite = args.count("overwrite") > 0;
  VT_CHECK(o.shard_size > 0, "--shard-size must be positive");

  std::map<std::string, std::unique_ptr<ProgressBar>> bars;
  if (!args.count("quiet"))
    o.progress = [&](const std::string& split, int64_t done, int64_t total) {
      auto& bar = bars[split];
      if (!bar) bar = std::make_unique<ProgressBar>(cat("synth ", split), total);
      bar->update(done);
      if (done == total) bar->finish();
    };
  for (const data::Manifest& m : data::write_synth(out, o))
    print_split_summary(m, (std::filesystem::path(out) / m.split).string());
  return 0;
}

}  // namespace vt
