// The loader's SampleSource: labelled images read from a Dataset, with images that cannot be
// loaded replaced deterministically instead of stopping a run.
//
// A shard that passed validation can still hold an image that does not decode (a corrupt
// payload under Verify::kStructure, or bytes libjpeg rejects). Such an image is replaced by
// the next image in file order (index + 1, + 2, ... wrapping around) that loads. Which images
// fail is a property of the data alone, so the replacement is the same on every call, thread
// and rank, and the sample stream stays a pure function of (seed, epoch, index).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/augment.h"
#include "data/dataset.h"

namespace vt::data {

// An image that could not be loaded, and what was loaded in its place.
struct BadImage {
  int64_t index = 0;
  int64_t replacement = 0;
  std::string reason;  // the error it raised
};

class DatasetSource : public SampleSource {
 public:
  explicit DatasetSource(const Dataset& ds) : ds_(ds) {}

  int64_t size() const override { return ds_.size(); }
  // The image and boxes of `index`, or of its replacement; throws vt::Error when no image of
  // the dataset can be loaded.
  Labeled load(int64_t index) const override { return load_or_replace(index, nullptr).first; }

  // Like load(), also giving the index actually loaded, and appending every image that
  // failed on the way to *bad when bad is not null.
  std::pair<Labeled, int64_t> load_or_replace(int64_t index, std::vector<BadImage>* bad) const;

  // "image 17 (images/a.jpg) of shard /d/train-00000.h5": how messages name a record.
  std::string describe(int64_t index) const;

 private:
  Labeled load_one(int64_t index) const;

  const Dataset& ds_;
};

// A view of a DatasetSource for one sample on one thread: records which images were asked
// for, what was loaded for them, and which failed.
class RecordingSource : public SampleSource {
 public:
  explicit RecordingSource(const DatasetSource& base) : base_(base) {}

  int64_t size() const override { return base_.size(); }
  Labeled load(int64_t index) const override;

  // The index loaded for `index` (itself unless it was replaced); `index` must have been loaded.
  int64_t resolved(int64_t index) const;
  const std::vector<BadImage>& bad() const { return bad_; }

 private:
  const DatasetSource& base_;
  mutable std::vector<std::pair<int64_t, int64_t>> loads_;  // (asked, loaded)
  mutable std::vector<BadImage> bad_;
};

}  // namespace vt::data
