// Dataset: a validated dataset directory (see dataset.h).
#include "data/dataset.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <thread>

#include "data/codec.h"
#include "layers/check.h"

namespace vt::data {

Dataset Dataset::open(const std::string& dir, Verify verify, int threads) {
  Dataset ds;
  ds.dir_ = dir;
  ds.manifest_ = Manifest::load(dir);
  const std::string manifest_path = (std::filesystem::path(dir) / kManifestName).string();
  // HDF5 serialises its calls anyway, so shards are opened one after the other.
  for (const ShardEntry& e : ds.manifest_.shards) {
    ds.shards_.emplace_back(dir, e, ds.manifest_.schema, manifest_path);
    ds.offsets_.push_back(ds.offsets_.back() + e.images);
  }
  // Totals per class, which the manifest states separately from the shard list.
  std::vector<int64_t> per_class(ds.class_names().size(), 0);
  for (const ShardReader& s : ds.shards_)
    for (int32_t c : s.arrays().classes) ++per_class[c];
  VT_CHECK(per_class == ds.manifest_.per_class, manifest_path,
           ": totals.per_class disagrees with the shards' /classes");
  if (verify == Verify::kFull) {
    std::string bad;
    for (const ShardCheck& c : ds.verify_checksums(threads))
      if (!c.ok()) {
        char buf[64];
        std::snprintf(buf, sizeof(buf), " (crc32c %08x, expected %08x)", c.actual, c.expected);
        bad += cat(bad.empty() ? "" : "; ", c.path, buf);
      }
    if (!bad.empty()) throw Error(cat("checksum mismatch in shard ", bad, ": the file is corrupt"));
  }
  return ds;
}

std::pair<const ShardReader*, int64_t> Dataset::locate(int64_t index) const {
  VT_CHECK(index >= 0 && index < size(), dir_, ": image index ", index, " out of range (", size(),
           " images)");
  const size_t s =
      static_cast<size_t>(std::upper_bound(offsets_.begin(), offsets_.end(), index) - offsets_.begin()) - 1;
  return {&shards_[s], index - offsets_[s]};
}

Record Dataset::meta(int64_t index) const {
  const auto [shard, i] = locate(index);
  return shard->meta(i);
}

void Dataset::read_encoded(int64_t index, std::vector<uint8_t>& out) const {
  const auto [shard, i] = locate(index);
  shard->read_encoded(i, out);
}

void Dataset::read_raw(int64_t index, uint8_t* dst) const {
  const auto [shard, i] = locate(index);
  shard->read_raw(i, dst);
}

Image Dataset::read_image(int64_t index) const {
  const auto [shard, i] = locate(index);
  if (storage() == Storage::kRaw) {
    Image img(imgsz(), imgsz());
    shard->read_raw(i, img.rgb.data());
    return img;
  }
  std::vector<uint8_t> bytes;
  shard->read_encoded(i, bytes);
  return decode_image(bytes.data(), bytes.size(),
                      cat(shard->path(), ": image ", i, " (", shard->arrays().file_name[i], ")"));
}

std::vector<ShardCheck> Dataset::verify_checksums(int threads) const {
  std::vector<ShardCheck> out(shards_.size());
  const int n = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    for (size_t s; (s = next++) < shards_.size();) {
      try {
        out[s] = {shards_[s].path(), shards_[s].stored_crc32c(), shards_[s].compute_crc32c()};
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < std::min<int>(n, static_cast<int>(shards_.size())); ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  if (error) std::rethrow_exception(error);
  return out;
}

}  // namespace vt::data
