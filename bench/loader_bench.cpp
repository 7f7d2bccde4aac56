// loader_bench: how fast the data pipeline feeds a trainer, next to what the disk and the
// decoder allow.
//
// The same images are converted into raw (640 x 640 letterboxed pixels) and encoded (the
// source JPEGs) shards: coco128's train split when it is present, otherwise synth at 640.
// For each storage and each reader-thread count it measures
//   read-cold  pread of every payload byte through Dataset, the shards first evicted from
//              the page cache (posix_fadvise DONTNEED): the disk's rate (MB/s, images/s);
//   read       the same from the page cache, as the loader sees files it has read before;
//   decode     libjpeg-turbo decode of every payload already in memory (encoded only);
//   loader     the Loader in train mode with YOLOv8 augmentation (mosaic, affine, HSV,
//              flip), batches taken as fast as it delivers them (images/s).
// Each figure runs for at least --seconds (whole timed passes; the loader after a warm-up),
// --repeat times; the best run is reported, all of them are in the JSON. Next to the
// wall-clock rate stand the process's CPU seconds: images per CPU-second, and CPUs (CPU
// seconds / wall seconds, the cores the run actually got), so that a run on a machine
// shared with other work still shows whether the code scales.
// Prints a table and writes JSON (--out) with the machine, the date, the command and the
// load average before and after, since a shared machine's load moves the figures.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <cxxopts.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "data/codec.h"
#include "data/convert.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/synth.h"
#include "layers/check.h"

namespace vt::data {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// CPU seconds used by the whole process so far (all threads, user + system).
double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// A timed interval in wall-clock and CPU seconds: on a machine shared with other work, the
// CPU seconds say how many cores the run actually got.
struct Timer {
  Clock::time_point wall0 = Clock::now();
  double cpu0 = cpu_seconds();
  double wall() const { return seconds_since(wall0); }
  double cpu() const { return cpu_seconds() - cpu0; }
};

struct Row {
  std::string storage, stage;
  int threads = 0;
  int64_t images = 0;
  double seconds = 0, mbytes = 0;
  double cpu_seconds = 0;
  double images_per_s() const { return images / seconds; }
  double images_per_cpu_s() const { return images / cpu_seconds; }
};

// The best of `repeat` runs: on a shared machine, other work only ever slows a run down.
Row best_of(int repeat, const std::function<Row()>& run, std::vector<double>& all) {
  Row best;
  for (int k = 0; k < repeat; ++k) {
    const Row r = run();
    all.push_back(r.images_per_s());
    if (k == 0 || r.images_per_s() > best.images_per_s()) best = r;
  }
  return best;
}

std::string first_line_with(const std::string& path, const std::string& key) {
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);)
    if (line.rfind(key, 0) == 0) {
      const size_t colon = line.find(':');
      return colon == std::string::npos ? line : line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  return "unknown";
}

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// Asks the kernel to drop the dataset's shards from the page cache (they were written and
// synced, so their pages are clean); the next read then comes from the disk.
void evict(const Dataset& ds) {
  for (const ShardReader& s : ds.shards()) {
    const int fd = ::open(s.path().c_str(), O_RDONLY);
    VT_CHECK(fd >= 0, s.path(), ": cannot open");
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

struct Passes {
  int64_t items = 0;
  double wall = 0, cpu = 0;
};

// Runs fn(thread, item) over items [0, n) on `threads` threads, pass after pass, until at
// least min_s have passed. `before_pass`, when given, runs untimed before each pass.
Passes run_passes(int threads, int64_t n, double min_s, const std::function<void(int, int64_t)>& fn,
                  const std::function<void()>& before_pass = nullptr) {
  Passes out;
  do {
    if (before_pass) before_pass();
    const Timer timer;
    std::atomic<int64_t> next{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        for (int64_t i; (i = next++) < n;) fn(t, i);
      });
    for (std::thread& th : pool) th.join();
    out.items += n;
    out.wall += timer.wall();
    out.cpu += timer.cpu();
  } while (out.wall < min_s);
  return out;
}

// cold: every pass starts with the shards evicted from the page cache.
Row bench_read(const Dataset& ds, int threads, double min_s, bool cold) {
  const bool raw = ds.storage() == Storage::kRaw;
  std::vector<std::vector<uint8_t>> buf(static_cast<size_t>(threads));
  if (raw)
    for (auto& b : buf) b.resize(static_cast<size_t>(ds.imgsz()) * ds.imgsz() * 3);
  std::vector<int64_t> bytes(static_cast<size_t>(threads), 0);
  const Passes p = run_passes(
      threads, ds.size(), min_s,
      [&](int t, int64_t i) {
        if (raw)
          ds.read_raw(i, buf[t].data());
        else
          ds.read_encoded(i, buf[t]);
        bytes[t] += static_cast<int64_t>(buf[t].size());
      },
      cold ? std::function<void()>([&] { evict(ds); }) : nullptr);
  double total = 0;
  for (int64_t b : bytes) total += double(b);
  return {
      storage_name(ds.storage()), cold ? "read-cold" : "read", threads, p.items, p.wall, total / 1e6, p.cpu};
}

Row bench_decode(const Dataset& ds, int threads, double min_s) {
  std::vector<std::vector<uint8_t>> payloads(static_cast<size_t>(ds.size()));
  double pass_mb = 0;
  for (int64_t i = 0; i < ds.size(); ++i) {
    ds.read_encoded(i, payloads[i]);
    pass_mb += double(payloads[i].size()) / 1e6;
  }
  const Passes p = run_passes(threads, ds.size(), min_s, [&](int, int64_t i) {
    const Image img = decode_image(payloads[i].data(), payloads[i].size(), "bench");
    VT_CHECK(img.h > 0, "bench: empty image");
  });
  return {storage_name(ds.storage()),
          "decode",
          threads,
          p.items,
          p.wall,
          pass_mb * double(p.items) / double(ds.size()),
          p.cpu};
}

Row bench_loader(const std::string& dir, Storage storage, int threads, int64_t batch, int imgsz,
                 double min_s) {
  LoaderConfig cfg;
  cfg.dir = dir;
  cfg.verify = Verify::kStructure;  // checksums are a start-up cost, not throughput
  cfg.global_batch = batch;
  cfg.threads = threads;
  cfg.prefetch = 4;
  cfg.augment.imgsz = imgsz;
  cfg.augment.train = true;
  Loader loader(cfg);
  for (int k = 0; k < 2; ++k) loader.next();  // warm-up: the ring fills, threads settle
  int64_t images = 0;
  const Timer timer;
  do images += loader.next()->valid;
  while (timer.wall() < min_s);
  return {storage_name(storage), "loader", threads, images, timer.wall(), 0, timer.cpu()};
}

// The benchmark's dataset in work/<storage>/train: coco128's train split, or synth at imgsz.
std::string prepare(const std::string& coco128, const std::string& work, Storage storage, int imgsz,
                    int64_t synth_n, std::string& source) {
  const std::string dir = (fs::path(work) / storage_name(storage) / "train").string();
  if (!coco128.empty() && fs::exists(fs::path(coco128) / "data.yaml")) {
    for (auto& [split, src] : yolo_from_data_yaml((fs::path(coco128) / "data.yaml").string()))
      if (split == "train") {
        WriteOptions opt;
        opt.out_dir = dir;
        opt.split = "train";
        opt.storage = storage;
        opt.imgsz = storage == Storage::kRaw ? imgsz : 0;
        opt.overwrite = true;
        convert(*src, opt);
        source = "coco128 train (" + coco128 + ")";
        return dir;
      }
  }
  SynthOptions o;
  o.train = synth_n;
  o.val = 0;
  o.imgsz = imgsz;
  o.storage = storage;
  o.classes = 6;
  o.overwrite = true;
  write_synth((fs::path(work) / storage_name(storage)).string(), o);
  source = "synth " + std::to_string(synth_n) + " images at " + std::to_string(imgsz);
  return dir;
}

std::vector<std::string> split_list(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  for (std::string tok; std::getline(ss, tok, ',');) out.push_back(tok);
  return out;
}

std::vector<int> parse_threads(const std::string& list) {
  const int all = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<int> out;
  for (const std::string& tok : split_list(list)) {
    const int t = tok == "all" ? all : std::stoi(tok);
    VT_CHECK(t >= 1, "--threads: ", tok, " is not a thread count");
    if (std::find(out.begin(), out.end(), t) == out.end()) out.push_back(t);
  }
  return out;
}

int run(int argc, char** argv) {
  std::string command;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
  cxxopts::Options opts("loader_bench",
                        "Loader throughput for raw and JPEG shards, next to read and decode rates.");
  // clang-format off
  opts.add_options()
    ("data", "coco128 directory (YOLO, with data.yaml); synth when absent", cxxopts::value<std::string>()->default_value(VT_COCO128_DIR))
    ("synth", "use synth even when coco128 is present")
    ("synth-images", "images of the synth fallback", cxxopts::value<int64_t>()->default_value("256"))
    ("imgsz", "raw storage side and augmented output side", cxxopts::value<int>()->default_value("640"))
    ("batch", "global batch of the loader", cxxopts::value<int64_t>()->default_value("16"))
    ("threads", "reader thread counts, comma-separated; 'all' = hardware threads", cxxopts::value<std::string>()->default_value("1,2,all"))
    ("seconds", "minimum timed seconds per figure", cxxopts::value<double>()->default_value("3"))
    ("storage", "storages to measure, comma-separated", cxxopts::value<std::string>()->default_value("raw,encoded"))
    ("stages", "stages to measure, comma-separated", cxxopts::value<std::string>()->default_value("read-cold,read,decode,loader"))
    ("repeat", "runs of each figure; the best is reported (all are in the JSON)", cxxopts::value<int>()->default_value("3"))
    ("work", "directory for the converted shards, replaced (default: a temporary one, removed)", cxxopts::value<std::string>())
    ("out", "JSON file for the results", cxxopts::value<std::string>())
    ("h,help", "this help");
  // clang-format on
  const auto args = opts.parse(argc, argv);
  if (args.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  const int imgsz = args["imgsz"].as<int>();
  const double min_s = args["seconds"].as<double>();
  const std::vector<int> thread_counts = parse_threads(args["threads"].as<std::string>());
  const std::string coco128 = args.count("synth") ? "" : args["data"].as<std::string>();

  std::string work;
  bool temporary = false;
  if (args.count("work")) {
    work = args["work"].as<std::string>();
  } else {
    char tmpl[] = "/tmp/vt_loader_bench_XXXXXX";
    VT_CHECK(mkdtemp(tmpl) != nullptr, "loader_bench: cannot create a temporary directory");
    work = tmpl;
    temporary = true;
  }

  nlohmann::json out;
  out["machine"] = {{"cpu", first_line_with("/proc/cpuinfo", "model name")},
                    {"hardware_threads", std::thread::hardware_concurrency()}};
  out["date"] = utc_now();
  out["command"] = command;
  out["load_average_before"] = load_average();
  const int repeat = std::max(1, args["repeat"].as<int>());
  std::vector<Row> rows;
  std::vector<std::vector<double>> runs;  // images/s of every run behind each row
  std::string source;
  const std::vector<std::string> stages = split_list(args["stages"].as<std::string>());
  const auto wanted = [&](const char* stage) {
    return std::find(stages.begin(), stages.end(), stage) != stages.end();
  };
  for (const std::string& name : split_list(args["storage"].as<std::string>())) {
    const Storage storage = parse_storage(name);
    const std::string dir =
        prepare(coco128, work, storage, imgsz, args["synth-images"].as<int64_t>(), source);
    const Dataset ds = Dataset::open(dir, Verify::kStructure);
    const int64_t batch = args["batch"].as<int64_t>();
    const auto measure = [&](const std::function<Row()>& fn) {
      std::vector<double> all;
      rows.push_back(best_of(repeat, fn, all));
      runs.push_back(all);
      const Row& r = rows.back();
      std::cerr << "  " << r.storage << " " << r.stage << ", " << r.threads
                << " threads: " << r.images_per_s() << " images/s\n";
    };
    for (int t : thread_counts) {
      if (wanted("read-cold")) measure([&] { return bench_read(ds, t, min_s, /*cold=*/true); });
      if (wanted("read")) measure([&] { return bench_read(ds, t, min_s, /*cold=*/false); });
      if (wanted("decode") && storage == Storage::kEncoded)
        measure([&] { return bench_decode(ds, t, min_s); });
      if (wanted("loader")) measure([&] { return bench_loader(dir, storage, t, batch, imgsz, min_s); });
    }
  }
  out["load_average_after"] = load_average();
  out["dataset"] = source;
  out["imgsz"] = imgsz;
  out["global_batch"] = args["batch"].as<int64_t>();

  std::printf("\n%s on %s (%u hardware threads), %s\n", source.c_str(),
              out["machine"]["cpu"].get<std::string>().c_str(), std::thread::hardware_concurrency(),
              out["date"].get<std::string>().c_str());
  std::printf("load average before %s, after %s\n\n", out["load_average_before"].get<std::string>().c_str(),
              out["load_average_after"].get<std::string>().c_str());
  std::printf("%-8s %-9s %7s %10s %11s %12s %8s %9s\n", "storage", "stage", "threads", "images/s",
              "per thread", "per CPU-s", "CPUs", "MB/s");
  for (size_t k = 0; k < rows.size(); ++k) {
    const Row& r = rows[k];
    const std::string mb = r.mbytes > 0 ? cat(int64_t(r.mbytes / r.seconds + 0.5)) : "-";
    std::printf("%-8s %-9s %7d %10.1f %11.1f %12.1f %8.2f %9s\n", r.storage.c_str(), r.stage.c_str(),
                r.threads, r.images_per_s(), r.images_per_s() / r.threads, r.images_per_cpu_s(),
                r.cpu_seconds / r.seconds, mb.c_str());
    out["results"].push_back({{"storage", r.storage},
                              {"stage", r.stage},
                              {"threads", r.threads},
                              {"images", r.images},
                              {"seconds", r.seconds},
                              {"images_per_s", r.images_per_s()},
                              {"images_per_s_all_runs", runs[k]},
                              {"cpu_seconds", r.cpu_seconds},
                              {"images_per_cpu_s", r.images_per_cpu_s()},
                              {"mb_per_s", r.mbytes > 0 ? r.mbytes / r.seconds : 0.0}});
  }
  if (args.count("out")) {
    std::ofstream f(args["out"].as<std::string>());
    f << out.dump(2) << "\n";
    VT_CHECK(f.good(), "loader_bench: cannot write ", args["out"].as<std::string>());
  }
  if (temporary) fs::remove_all(work);
  return 0;
}

}  // namespace
}  // namespace vt::data

int main(int argc, char** argv) {
  try {
    return vt::data::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "loader_bench: %s\n", e.what());
    return 1;
  }
}
