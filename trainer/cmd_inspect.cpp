// `visiontrain inspect DIR`: what a dataset holds (counts, classes, box statistics, the
// conversion report) and a full checksum verification of its shards. DIR is a dataset
// directory, or a directory of them (the output of synth or of convert --data).
#include <algorithm>
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>
#include <iostream>

#include "data/dataset.h"
#include "layers/check.h"
#include "trainer/commands.h"
#include "trainer/progress.h"

namespace vt {
namespace {

namespace fs = std::filesystem;

// "min 0.01  median 0.20  max 0.98" of v (sorted in place).
std::string spread(std::vector<double>& v, const char* fmt) {
  if (v.empty()) return "-";
  std::sort(v.begin(), v.end());
  char a[32], b[32], c[32];
  std::snprintf(a, sizeof(a), fmt, v.front());
  std::snprintf(b, sizeof(b), fmt, v[v.size() / 2]);
  std::snprintf(c, sizeof(c), fmt, v.back());
  return cat("min ", a, "  median ", b, "  max ", c);
}

void print_classes(const data::Dataset& ds) {
  const auto& names = ds.class_names();
  const auto& counts = ds.manifest().per_class;
  const int64_t top = std::max<int64_t>(1, *std::max_element(counts.begin(), counts.end()));
  size_t width = 5;
  for (const std::string& n : names) width = std::max(width, std::min<size_t>(n.size(), 24));
  std::cout << "classes (" << names.size() << "):\n";
  constexpr int kBar = 40;
  for (size_t c = 0; c < names.size(); ++c) {
    const int len = static_cast<int>((counts[c] * kBar + top - 1) / top);
    std::printf("  %3zu %-*.*s %8lld  %s\n", c, static_cast<int>(width), static_cast<int>(width),
                names[c].c_str(), static_cast<long long>(counts[c]),
                std::string(static_cast<size_t>(len), '#').c_str());
  }
}

// Box sizes as fractions of their source image (raw storage is mapped back through the
// letterbox, so both storages of one source give the same figures).
void print_boxes(const data::Dataset& ds) {
  std::vector<double> w, h, area, per_image;
  int64_t empty = 0;
  const bool raw = ds.storage() == data::Storage::kRaw;
  for (const data::ShardReader& s : ds.shards()) {
    const data::ShardArrays& a = s.arrays();
    for (int64_t i = 0; i < s.size(); ++i) {
      const double H = a.orig_size[2 * i], W = a.orig_size[2 * i + 1], scale = raw ? a.letterbox[3 * i] : 1.0;
      const int64_t nb = a.box_offsets[i + 1] - a.box_offsets[i];
      per_image.push_back(double(nb));
      empty += nb == 0;
      for (int64_t k = a.box_offsets[i]; k < a.box_offsets[i + 1]; ++k) {
        const double bw = (a.boxes[4 * k + 2] - a.boxes[4 * k]) / scale / W;
        const double bh = (a.boxes[4 * k + 3] - a.boxes[4 * k + 1]) / scale / H;
        w.push_back(bw);
        h.push_back(bh);
        area.push_back(bw * bh);
      }
    }
  }
  const double mean = per_image.empty() ? 0 : double(w.size()) / per_image.size();
  char m[32];
  std::snprintf(m, sizeof(m), "%.2f", mean);
  std::cout << "boxes per image: " << spread(per_image, "%.0f") << "  mean " << m << "  (" << empty
            << " images without boxes)\n";
  std::cout << "box width  / image width:  " << spread(w, "%.3f") << "\n";
  std::cout << "box height / image height: " << spread(h, "%.3f") << "\n";
  std::cout << "box area   / image area:   " << spread(area, "%.4f") << "\n";
}

// Returns true when everything checks out.
bool inspect_one(const std::string& dir, int threads) {
  std::cout << "== " << dir << "\n";
  data::Dataset ds;
  try {
    ds = data::Dataset::open(dir, data::Verify::kStructure);
  } catch (const std::exception& e) {
    std::cout << "FAILED: " << e.what() << "\n";
    return false;
  }
  const data::Manifest& m = ds.manifest();
  int64_t bytes = 0;
  for (const data::ShardEntry& e : m.shards) bytes += e.bytes;
  std::cout << "split " << m.split << ": " << m.total_images << " images, " << m.total_boxes << " boxes, "
            << m.shards.size() << (m.shards.size() == 1 ? " shard, " : " shards, ") << human_bytes(bytes)
            << "; storage " << data::storage_name(ds.storage())
            << (ds.storage() == data::Storage::kRaw ? cat(" ", ds.imgsz(), "x", ds.imgsz()) : "")
            << "; created by " << m.created_by << "\n";
  const data::ConvertReport& r = m.report;
  std::cout << "source (" << r.format << "): " << r.source << "\n  " << r.images_seen << " images seen, "
            << r.images_skipped << " skipped; boxes " << r.boxes_invalid << " invalid, " << r.boxes_clipped
            << " clipped, " << r.boxes_dropped << " dropped, " << r.boxes_crowd << " crowd and "
            << r.boxes_orphaned << " orphaned left out\n";
  print_classes(ds);
  print_boxes(ds);

  std::cout << "checksums (crc32c):\n";
  bool ok = true;
  for (const data::ShardCheck& c : ds.verify_checksums(threads)) {
    char line[64];
    std::snprintf(line, sizeof(line), "%08x", c.actual);
    std::cout << "  " << (c.ok() ? "OK       " : "MISMATCH ") << c.path << "  " << line;
    if (!c.ok()) {
      std::snprintf(line, sizeof(line), "%08x", c.expected);
      std::cout << " (expected " << line << ")";
    }
    std::cout << "\n";
    ok = ok && c.ok();
  }
  std::cout << (ok ? "all shards OK" : "CHECKSUM MISMATCH: the dataset is corrupt") << "\n";
  return ok;
}

}  // namespace

int cmd_inspect(int argc, char** argv) {
  cxxopts::Options opts(
      argv[0],
      "Show a dataset's counts, class histogram and box statistics, and verify the checksum of\n"
      "every shard. DIR is a dataset directory (with manifest.json) or a directory of them.\n"
      "Exits non-zero when any check fails.");
  opts.positional_help("DIR");
  // clang-format off
  opts.add_options()
    ("dir", "dataset directory", cxxopts::value<std::string>())
    ("threads", "checksum threads (0: all hardware threads)", cxxopts::value<int>()->default_value("0"))
    ("h,help", "show this help");
  // clang-format on
  opts.parse_positional({"dir"});
  const auto args = opts.parse(argc, argv);
  if (args.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  VT_CHECK(args.count("dir"), "give the dataset directory: visiontrain inspect DIR");
  const std::string dir = args["dir"].as<std::string>();
  VT_CHECK(fs::is_directory(dir), dir, ": no such directory");

  std::vector<std::string> datasets;
  if (fs::exists(fs::path(dir) / data::kManifestName)) {
    datasets.push_back(dir);
  } else {
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_directory() && fs::exists(e.path() / data::kManifestName))
        datasets.push_back(e.path().string());
    std::sort(datasets.begin(), datasets.end());
  }
  VT_CHECK(!datasets.empty(), dir, ": no ", data::kManifestName,
           " here or in its subdirectories (not a dataset)");
  bool ok = true;
  for (const std::string& d : datasets) ok = inspect_one(d, args["threads"].as<int>()) && ok;
  return ok ? 0 : 1;
}

}  // namespace vt
