// `visiontrain convert`: YOLO, COCO or Pascal VOC datasets to HDF5 shards (data/convert.h).
#include <cxxopts.hpp>
#include <filesystem>
#include <iostream>
#include <memory>

#include "data/convert.h"
#include "layers/check.h"
#include "trainer/commands.h"
#include "trainer/progress.h"

namespace vt {
namespace {

namespace fs = std::filesystem;

const char* kUsage = R"(Convert a detection dataset into HDF5 shards.

  YOLO (Ultralytics):  --format yolo --data data.yaml --out DIR         (DIR/train, DIR/val, DIR/test)
                       --format yolo --images DIR --labels DIR --names FILE --out DIR
  COCO:                --format coco --annotations instances.json --images DIR --out DIR
  Pascal VOC:          --format voc --voc-root VOCdevkit/VOC2012 --split train --out DIR
                       --format voc --images DIR --annotations XML_DIR [--names FILE] --out DIR

Corrupt images are skipped, invalid boxes left out, boxes clipped to their image, and all of
it counted and reported with file names (a summary at the end, all of it in DIR/manifest.json). The
sources are only read. Output does not depend on --threads.)";

void print_issues(const char* title, const std::vector<data::Issue>& v, int64_t omitted) {
  constexpr size_t kShown = 10;
  if (v.empty()) return;
  std::cout << "  " << title << ":\n";
  for (size_t k = 0; k < v.size() && k < kShown; ++k)
    std::cout << "    " << v[k].file << (v[k].line ? cat(":", v[k].line) : "") << ": " << v[k].reason << "\n";
  const int64_t more = int64_t(v.size()) - int64_t(std::min(v.size(), kShown)) + omitted;
  if (more > 0) std::cout << "    ... and " << more << " more (see manifest.json)\n";
}

}  // namespace

void print_split_summary(const data::Manifest& m, const std::string& dir) {
  int64_t bytes = 0;
  for (const data::ShardEntry& e : m.shards) bytes += e.bytes;
  const data::ConvertReport& r = m.report;
  std::cout << m.split << ": " << m.total_images << " images, " << m.total_boxes << " boxes, "
            << m.shards.size() << " shard" << (m.shards.size() == 1 ? "" : "s") << " (" << human_bytes(bytes)
            << ", " << data::storage_name(m.schema.storage)
            << (m.schema.storage == data::Storage::kRaw ? cat(" ", m.schema.imgsz, "x", m.schema.imgsz) : "")
            << ") in " << dir << "\n";
  std::cout << "  images: " << r.images_seen << " seen, " << r.images_skipped
            << " skipped;  boxes: " << r.boxes_invalid << " invalid, " << r.boxes_clipped << " clipped, "
            << r.boxes_dropped << " dropped (zero area)";
  if (r.boxes_crowd) std::cout << ", " << r.boxes_crowd << " crowd left out";
  if (r.boxes_orphaned) std::cout << ", " << r.boxes_orphaned << " orphaned (their image does not exist)";
  std::cout << "\n";
  print_issues("skipped images", r.skipped, 0);
  print_issues("box problems", r.box_issues, r.box_issues_omitted);
}

int cmd_convert(int argc, char** argv) {
  cxxopts::Options opts(argv[0], kUsage);
  // clang-format off
  opts.add_options()
    ("format", "source format: yolo, coco or voc", cxxopts::value<std::string>())
    ("data", "yolo: Ultralytics data.yaml (path, train, val, names)", cxxopts::value<std::string>())
    ("images", "image directory (yolo, coco, voc)", cxxopts::value<std::string>())
    ("labels", "yolo: label directory mirroring --images", cxxopts::value<std::string>())
    ("annotations", "coco: instances JSON file; voc: directory of XML files", cxxopts::value<std::string>())
    ("voc-root", "voc: dataset root with ImageSets/, Annotations/, JPEGImages/", cxxopts::value<std::string>())
    ("names", "class names: a .yaml with names:, or one name per line (yolo --images; voc, default the 20 VOC classes)",
     cxxopts::value<std::string>())
    ("split", "split name, the shard file prefix (voc --voc-root: also the ImageSets list; default train there, data elsewhere)",
     cxxopts::value<std::string>())
    ("out", "output dataset directory", cxxopts::value<std::string>())
    ("shard-size", "images per shard", cxxopts::value<int>()->default_value("1000"))
    ("store", "encoded (alias jpeg: the source files' bytes) or raw (uint8 pixels letterboxed to --imgsz)",
     cxxopts::value<std::string>()->default_value("encoded"))
    ("imgsz", "raw storage: side of the letterboxed square", cxxopts::value<int>()->default_value("0"))
    ("threads", "decode threads (0: all hardware threads)", cxxopts::value<int>()->default_value("0"))
    ("overwrite", "replace a dataset already in the output directory")
    ("quiet", "no progress bar")
    ("h,help", "show this help");
  // clang-format on
  const auto args = opts.parse(argc, argv);
  if (args.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  auto need = [&](const char* name) {
    VT_CHECK(args.count(name), "--", name, " is required here (see --help)");
    return args[name].as<std::string>();
  };
  auto opt_str = [&](const char* name, const std::string& fallback) {
    return args.count(name) ? args[name].as<std::string>() : fallback;
  };
  const std::string format = need("format"), out = need("out");

  data::WriteOptions base;
  base.storage = data::parse_storage(args["store"].as<std::string>());
  base.imgsz = args["imgsz"].as<int>();
  base.shard_size = args["shard-size"].as<int>();
  base.threads = args["threads"].as<int>();
  base.overwrite = args.count("overwrite") > 0;
  VT_CHECK(base.storage != data::Storage::kRaw || base.imgsz > 0, "--store raw needs --imgsz");
  VT_CHECK(base.storage != data::Storage::kEncoded || base.imgsz == 0,
           "--imgsz applies to --store raw only (encoded storage keeps the original images)");
  VT_CHECK(base.shard_size > 0, "--shard-size must be positive");

  // (split name, output directory, source)
  struct Job {
    std::string split, dir;
    std::unique_ptr<data::Source> src;
  };
  std::vector<Job> jobs;
  if (format == "yolo") {
    if (args.count("data")) {
      for (auto& [split, src] : data::yolo_from_data_yaml(args["data"].as<std::string>()))
        jobs.push_back({split, (fs::path(out) / split).string(), std::move(src)});
    } else {
      jobs.push_back(
          {opt_str("split", "data"), out,
           data::yolo_from_dirs(need("images"), need("labels"), data::read_class_names(need("names")))});
    }
  } else if (format == "coco") {
    jobs.push_back({opt_str("split", "data"), out, data::coco_source(need("annotations"), need("images"))});
  } else if (format == "voc") {
    const std::vector<std::string> names =
        args.count("names") ? data::read_class_names(need("names")) : std::vector<std::string>{};
    if (args.count("voc-root")) {
      const std::string split = opt_str("split", "train");
      jobs.push_back({split, out, data::voc_from_root(need("voc-root"), split, names)});
    } else {
      jobs.push_back(
          {opt_str("split", "data"), out, data::voc_from_dirs(need("images"), need("annotations"), names)});
    }
  } else {
    throw Error(cat("unknown --format \"", format, "\" (expected yolo, coco or voc)"));
  }

  int64_t images = 0, boxes = 0, skipped = 0;
  for (Job& job : jobs) {
    data::WriteOptions w = base;
    w.out_dir = job.dir;
    w.split = job.split;
    std::unique_ptr<ProgressBar> bar;
    if (!args.count("quiet")) {
      bar = std::make_unique<ProgressBar>(cat("convert ", job.split), int64_t(job.src->images.size()));
      w.progress = [&](int64_t done, int64_t) { bar->update(done); };
    }
    const data::Manifest m = data::convert(*job.src, w);
    if (bar) bar->finish();
    print_split_summary(m, job.dir);
    images += m.total_images;
    boxes += m.total_boxes;
    skipped += m.report.images_skipped;
  }
  if (jobs.size() > 1)
    std::cout << "total: " << images << " images, " << boxes << " boxes, " << skipped << " images skipped\n";
  return 0;
}

}  // namespace vt
