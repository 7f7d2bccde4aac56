// The ordered parallel pipeline behind every dataset written (see dataset_writer.h).
#include "data/dataset_writer.h"

#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "layers/check.h"

namespace vt::data {
namespace {

namespace fs = std::filesystem;

// Runs produce(i) on `threads` workers and hands the results to consume(i, sample) in index
// order on the calling thread. At most `window` samples wait in memory, so a slow writer
// throttles the producers. The first exception anywhere stops everything and is rethrown.
void for_each_ordered(int64_t n, int threads, const std::function<Sample(int64_t)>& produce,
                      const std::function<void(int64_t, Sample&&)>& consume) {
  const int64_t window = 4 * int64_t(threads) + 4;
  std::vector<std::optional<Sample>> ring(static_cast<size_t>(window));
  std::mutex m;
  std::condition_variable ready, freed;
  int64_t next = 0, consumed = 0;
  bool stop = false;
  std::exception_ptr error;

  auto fail = [&](std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(m);
    if (!error) error = e;
    stop = true;
    ready.notify_all();
    freed.notify_all();
  };
  auto worker = [&] {
    for (;;) {
      int64_t i;
      {
        std::unique_lock<std::mutex> lock(m);
        freed.wait(lock, [&] { return stop || next >= n || next < consumed + window; });
        if (stop || next >= n) return;
        i = next++;
      }
      try {
        Sample s = produce(i);
        std::lock_guard<std::mutex> lock(m);
        ring[static_cast<size_t>(i % window)] = std::move(s);
        ready.notify_all();
      } catch (...) {
        fail(std::current_exception());
        return;
      }
    }
  };

  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(worker);
  // Joins the workers however this function is left.
  struct Joiner {
    std::vector<std::thread>& pool;
    std::function<void()> stop_all;
    ~Joiner() {
      stop_all();
      for (std::thread& t : pool) t.join();
    }
  } joiner{pool, [&] {
             std::lock_guard<std::mutex> lock(m);
             stop = true;
             freed.notify_all();
           }};

  for (int64_t i = 0; i < n; ++i) {
    Sample s;
    {
      std::unique_lock<std::mutex> lock(m);
      auto& slot = ring[static_cast<size_t>(i % window)];
      ready.wait(lock, [&] { return stop || slot.has_value(); });
      if (error) std::rethrow_exception(error);
      s = std::move(*slot);
      slot.reset();
      consumed = i + 1;
      freed.notify_all();
    }
    try {
      consume(i, std::move(s));
    } catch (...) {
      fail(std::current_exception());
      throw;
    }
  }
}

// Makes out_dir ready: created if absent; a dataset already there is refused, or removed
// (its manifest and the shards that manifest lists, nothing else) when overwrite is set.
void prepare_dir(const WriteOptions& opt) {
  fs::create_directories(opt.out_dir);
  const fs::path manifest = fs::path(opt.out_dir) / kManifestName;
  if (!fs::exists(manifest)) return;
  VT_CHECK(opt.overwrite, opt.out_dir, " already holds a dataset (", manifest.string(),
           "); remove it, choose another output directory, or pass --overwrite");
  Manifest old;
  try {
    old = Manifest::load(opt.out_dir);
  } catch (const Error&) {
    fs::remove(manifest);  // unreadable: only the manifest is known to be ours
    return;
  }
  fs::remove(manifest);
  for (const ShardEntry& e : old.shards) fs::remove(fs::path(opt.out_dir) / e.file);
}

}  // namespace

int resolve_threads(int threads) {
  return threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

Manifest write_dataset(int64_t n, const std::vector<std::string>& class_names,
                       const std::function<Sample(int64_t)>& produce, ConvertReport report,
                       const WriteOptions& opt) {
  VT_CHECK(!class_names.empty(), opt.out_dir, ": no class names");
  VT_CHECK(opt.shard_size > 0, "shard size ", opt.shard_size, " must be positive");
  VT_CHECK((opt.storage == Storage::kRaw) == (opt.imgsz > 0), "storage ", storage_name(opt.storage),
           " with imgsz ", opt.imgsz, ": raw storage needs --imgsz, encoded storage takes none");
  VT_CHECK(!opt.split.empty() && opt.split.find('/') == std::string::npos, "bad split name \"", opt.split,
           "\"");
  prepare_dir(opt);

  Manifest m;
  m.split = opt.split;
  m.schema = {opt.storage, opt.imgsz, class_names};
  m.per_class.assign(class_names.size(), 0);
  m.created_by = program_version();
  std::unique_ptr<ShardWriter> writer;
  auto finish_shard = [&] {
    const ShardEntry e = writer->finish();
    m.shards.push_back(e);
    m.total_images += e.images;
    m.total_boxes += e.boxes;
    writer.reset();
  };

  // Runs on this thread, in index order: counts, then appends to the current shard.
  auto consume = [&](int64_t i, Sample&& s) {
    if (s.skipped) {
      ++report.images_skipped;
      report.skipped.push_back(std::move(s.skip));
    } else {
      report.boxes_invalid += s.invalid_boxes + s.stats.invalid;
      report.boxes_clipped += s.stats.clipped;
      report.boxes_dropped += s.stats.dropped;
      report.boxes_crowd += s.crowd_boxes;
      for (Issue& is : s.box_issues) report.add_box_issue(std::move(is));
      for (const Box& b : s.record.boxes) ++m.per_class.at(static_cast<size_t>(b.cls));
      if (!writer) {
        const std::string name = shard_file_name(opt.split, static_cast<int>(m.shards.size()));
        writer = std::make_unique<ShardWriter>((fs::path(opt.out_dir) / name).string(), m.schema);
      }
      writer->add(s.record, s.payload.data(), s.payload.size());
      if (writer->size() == opt.shard_size) finish_shard();
    }
    if (opt.progress) opt.progress(i + 1, n);
  };
  report.images_seen += n;
  const int threads =
      static_cast<int>(std::min<int64_t>(resolve_threads(opt.threads), std::max<int64_t>(n, 1)));
  for_each_ordered(n, threads, produce, consume);
  if (writer) finish_shard();
  if (m.total_images == 0) {
    std::string why;
    for (size_t k = 0; k < report.skipped.size() && k < 3; ++k)
      why += cat("\n  ", report.skipped[k].file, ": ", report.skipped[k].reason);
    throw Error(cat(opt.out_dir, ": no valid image left (", report.images_seen, " seen, ",
                    report.images_skipped, " skipped)", why.empty() ? "" : "; first problems:", why));
  }
  m.report = std::move(report);
  m.save(opt.out_dir);
  return m;
}

}  // namespace vt::data
