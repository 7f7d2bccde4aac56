// Labelled images from a Dataset, with deterministic replacement of bad ones (see
// dataset_source.h).
#include "data/dataset_source.h"

#include <algorithm>

#include "layers/check.h"

namespace vt::data {

Labeled DatasetSource::load_one(int64_t index) const {
  Labeled out;
  out.image = ds_.read_image(index);
  out.boxes = ds_.meta(index).boxes;
  return out;
}

std::pair<Labeled, int64_t> DatasetSource::load_or_replace(int64_t index, std::vector<BadImage>* bad) const {
  const int64_t n = size();
  VT_CHECK(index >= 0 && index < n, ds_.dir(), ": image index ", index, " out of range (", n, " images)");
  std::string first_reason;
  std::vector<BadImage> failed;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t j = (index + k) % n;
    try {
      Labeled s = load_one(j);
      for (BadImage& b : failed) b.replacement = j;
      if (bad) bad->insert(bad->end(), failed.begin(), failed.end());
      return {std::move(s), j};
    } catch (const Error& e) {
      // Only vt::Error (a payload that does not read or decode) is bad data; anything else,
      // such as std::bad_alloc, is not the image's fault and propagates.
      if (first_reason.empty()) first_reason = e.what();
      failed.push_back({j, -1, e.what()});
    }
  }
  throw Error(cat("dataset ", ds_.dir(), ": none of its ", n, " images can be loaded; the first, ",
                  describe(index), ", failed with: ", first_reason));
}

std::string DatasetSource::describe(int64_t index) const {
  if (index < 0 || index >= size()) return cat("image ", index, " (out of range)");
  int64_t first = 0;
  for (const ShardReader& s : ds_.shards()) {
    if (index < first + s.size())
      return cat("image ", index, " (", s.arrays().file_name[index - first], ") of shard ", s.path());
    first += s.size();
  }
  return cat("image ", index);
}

Labeled RecordingSource::load(int64_t index) const {
  auto [sample, loaded] = base_.load_or_replace(index, &bad_);
  loads_.emplace_back(index, loaded);
  return std::move(sample);
}

int64_t RecordingSource::resolved(int64_t index) const {
  const auto it = std::find_if(loads_.begin(), loads_.end(),
                               [&](const std::pair<int64_t, int64_t>& l) { return l.first == index; });
  VT_CHECK(it != loads_.end(), "RecordingSource: image ", index, " was never loaded");
  return it->second;
}

}  // namespace vt::data
