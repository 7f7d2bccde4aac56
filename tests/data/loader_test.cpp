// The prefetching loader: batches are exactly what make_sample makes for the sampler's
// refs, byte-identical for any thread count and prefetch depth, the same split over 2 ranks
// as on 1, resumable at state(); evaluation covers every sample once; targets are padded and
// capped; undecodable images are skipped, counted and named; bad datasets fail loudly.
#include "data/loader.h"

#include <gtest/gtest.h>
#include <hdf5.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>

#include "data/synth.h"
#include "tests/data/data_fixtures.h"
#include "tests/test_util.h"

namespace vt::data {
namespace {

using testing::expect_error;
using testing::TempDir;

constexpr int kImgsz = 48;  // augmented output side

// A copy of one delivered batch, to compare after the loader has moved on.
struct Copy {
  std::vector<uint8_t> images;
  std::vector<float> targets;
  std::vector<int64_t> index;
  std::vector<int32_t> num_boxes;
  int64_t valid = 0;
  bool operator==(const Copy& o) const {
    return images == o.images && targets == o.targets && index == o.index && num_boxes == o.num_boxes &&
           valid == o.valid;
  }
};

Copy copy_of(const Batch& b) {
  Copy c;
  if (b.images.is_cuda()) {  // Tensor::to copies on the legacy stream: order it after the copy
    b.wait({});
    synchronize({});
  }
  const Tensor images = b.images.is_cuda() ? b.images.to(Device::kCPU) : b.images;
  const Tensor targets = b.targets.is_cuda() ? b.targets.to(Device::kCPU) : b.targets;
  c.images.assign(images.data<uint8_t>(), images.data<uint8_t>() + images.numel());
  c.targets.assign(targets.data<float>(), targets.data<float>() + targets.numel());
  c.index = b.index;
  c.num_boxes = b.num_boxes;
  c.valid = b.valid;
  return c;
}

std::vector<Copy> take(Loader& loader, int n) {
  std::vector<Copy> out;
  for (int i = 0; i < n; ++i) {
    const Batch* b = loader.next();
    if (!b) break;
    out.push_back(copy_of(*b));
  }
  return out;
}

// A synthetic dataset in dir/train and dir/val: 96 x 96 images, 3 classes.
void write_dataset(const std::string& dir, int64_t train, int64_t val, Storage storage = Storage::kEncoded,
                   int shard_size = 8) {
  SynthOptions o;
  o.train = train;
  o.val = val;
  o.imgsz = 96;
  o.classes = 3;
  o.seed = 7;
  o.storage = storage;
  o.shard_size = shard_size;
  o.threads = 2;
  write_synth(dir, o);
}

LoaderConfig config(const std::string& dir, int64_t global_batch, int threads, int prefetch,
                    bool train = true) {
  LoaderConfig c;
  c.dir = dir;
  c.global_batch = global_batch;
  c.seed = 11;
  c.threads = threads;
  c.prefetch = prefetch;
  c.augment.imgsz = kImgsz;
  c.augment.train = train;
  c.max_boxes = 8;
  return c;
}

// Concatenates two ranks' batches along the batch axis.
Copy concat(const Copy& a, const Copy& b) {
  Copy c = a;
  c.images.insert(c.images.end(), b.images.begin(), b.images.end());
  c.targets.insert(c.targets.end(), b.targets.begin(), b.targets.end());
  c.index.insert(c.index.end(), b.index.begin(), b.index.end());
  c.num_boxes.insert(c.num_boxes.end(), b.num_boxes.begin(), b.num_boxes.end());
  c.valid += b.valid;
  return c;
}

// Overwrites the first bytes of image `index`'s JPEG in its shard: the magic number goes, so
// it no longer decodes; nothing else in the file or the manifest changes.
void corrupt_image(const std::string& dir, int64_t index) {
  const Dataset ds = Dataset::open(dir);
  int64_t first = 0;
  for (const ShardReader& s : ds.shards()) {
    if (index < first + s.size()) {
      const hid_t f = H5Fopen(s.path().c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
      const hid_t d = H5Dopen2(f, "/image_bytes", H5P_DEFAULT);
      const haddr_t offset = H5Dget_offset(d);
      H5Dclose(d);
      H5Fclose(f);
      ASSERT_NE(offset, HADDR_UNDEF);
      std::fstream file(s.path(), std::ios::in | std::ios::out | std::ios::binary);
      file.seekp(static_cast<std::streamoff>(offset + s.arrays().image_offsets[index - first]));
      const char zeros[4] = {0, 0, 0, 0};
      file.write(zeros, sizeof(zeros));
      ASSERT_TRUE(file.good());
      return;
    }
    first += s.size();
  }
  FAIL() << "no image " << index;
}

TEST(Loader, BatchesAreWhatMakeSampleMakes) {
  TempDir tmp;
  write_dataset(tmp.path(), 20, 0);
  LoaderConfig cfg = config(tmp / "train", 8, 2, 3);
  cfg.max_boxes = 2;  // synth images have 1..6 boxes, so some are dropped
  Loader loader(cfg);
  EXPECT_EQ(loader.batch_size(), 8);
  EXPECT_EQ(loader.num_batches(), 2);

  // The oracle: the sampler's refs through make_sample, one by one on this thread.
  const Dataset ds = Dataset::open(tmp / "train");
  const DatasetSource src(ds);
  Sampler sampler(ds.size(), 8, 1, 0, cfg.seed);
  BoxStats expected_stats;
  int64_t expected_over = 0;
  const size_t pixels = size_t(kImgsz) * kImgsz * 3;
  for (int step = 0; step < 5; ++step) {  // 2 steps per epoch: crosses two epoch boundaries
    const Batch* b = loader.next();
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(b->images.shape(), (Shape{8, kImgsz, kImgsz, 3}));
    EXPECT_EQ(b->targets.shape(), (Shape{8, 2, 5}));
    EXPECT_EQ(b->images.dtype(), DType::kU8);
    EXPECT_EQ(b->valid, 8);
    const std::vector<SampleRef> refs = sampler.next();
    for (size_t p = 0; p < refs.size(); ++p) {
      const Labeled want = make_sample(src, refs[p].index, refs[p].key, cfg.augment, &expected_stats);
      EXPECT_EQ(b->index[p], refs[p].index);
      EXPECT_EQ(0, std::memcmp(b->images.data<uint8_t>() + p * pixels, want.image.rgb.data(), pixels))
          << "step " << step << " image " << p;
      const int64_t n = std::min<int64_t>(int64_t(want.boxes.size()), 2);
      expected_over += int64_t(want.boxes.size()) - n;
      ASSERT_EQ(b->num_boxes[p], n);
      const float* rows = b->targets.data<float>() + p * 2 * 5;
      for (int64_t k = 0; k < 2; ++k, rows += 5) {
        if (k < n) {
          const Box& w = want.boxes[size_t(k)];
          EXPECT_EQ(rows[0], float(w.cls));
          EXPECT_EQ(rows[1], w.x1);
          EXPECT_EQ(rows[2], w.y1);
          EXPECT_EQ(rows[3], w.x2);
          EXPECT_EQ(rows[4], w.y2);
          EXPECT_TRUE(rows[1] >= 0 && rows[1] < rows[3] && rows[3] <= kImgsz) << rows[1] << " " << rows[3];
          EXPECT_TRUE(rows[2] >= 0 && rows[2] < rows[4] && rows[4] <= kImgsz) << rows[2] << " " << rows[4];
        } else {
          EXPECT_LT(rows[0], 0.f);  // padding
          EXPECT_EQ(rows[1] + rows[2] + rows[3] + rows[4], 0.f);
        }
      }
    }
    EXPECT_EQ(loader.state(), sampler.state());
  }
  const LoaderStats& st = loader.stats();
  EXPECT_EQ(st.batches, 5);
  EXPECT_EQ(st.images, 40);
  EXPECT_GT(expected_over, 0);
  EXPECT_EQ(st.boxes_over_max, expected_over);
  EXPECT_EQ(st.boxes.kept, expected_stats.kept);
  EXPECT_EQ(st.boxes.clipped, expected_stats.clipped);
  EXPECT_EQ(st.boxes.dropped, expected_stats.dropped);
  EXPECT_EQ(st.images_skipped, 0);
  EXPECT_GE(st.wait_s, st.last_wait_s);
  EXPECT_GE(st.last_wait_s, 0.0);
}

TEST(Loader, SameBytesForAnyThreadCountAndPrefetchDepth) {
  TempDir tmp;
  write_dataset(tmp.path(), 20, 0);
  Loader a(config(tmp / "train", 8, 1, 1));
  const std::vector<Copy> want = take(a, 5);
  ASSERT_EQ(want.size(), 5u);
  for (auto [threads, prefetch] : {std::pair{3, 4}, std::pair{3, 1}, std::pair{1, 4}, std::pair{2, 2}}) {
    Loader b(config(tmp / "train", 8, threads, prefetch));
    EXPECT_TRUE(take(b, 5) == want) << threads << " threads, prefetch " << prefetch;
  }
}

TEST(Loader, TwoRanksConcatenateToOneRank) {
  TempDir tmp;
  write_dataset(tmp.path(), 20, 0, Storage::kRaw);
  Loader one(config(tmp / "train", 8, 2, 2));
  LoaderConfig c0 = config(tmp / "train", 8, 2, 3), c1 = c0;
  c0.world_size = c1.world_size = 2;
  c1.rank = 1;
  Loader r0(c0), r1(c1);
  EXPECT_EQ(r0.batch_size(), 4);
  for (int step = 0; step < 5; ++step) {  // across two epoch boundaries
    const Copy whole = copy_of(*one.next()), a = copy_of(*r0.next()), b = copy_of(*r1.next());
    EXPECT_TRUE(concat(a, b) == whole) << "step " << step;
    EXPECT_EQ(r0.state(), one.state());
    EXPECT_EQ(r1.state(), one.state());
  }
}

TEST(Loader, ResumeAtStateIsExact) {
  TempDir tmp;
  write_dataset(tmp.path(), 20, 0);
  Loader a(config(tmp / "train", 8, 2, 4));
  EXPECT_EQ(a.state(), (LoaderState{0, 0}));
  take(a, 1);
  EXPECT_EQ(a.state(), (LoaderState{0, 8}));  // the next batch, not what the threads prefetched
  take(a, 2);
  const LoaderState saved = a.state();
  EXPECT_EQ(saved, (LoaderState{1, 8}));  // 2 steps per epoch, 4 samples dropped
  const std::vector<Copy> rest = take(a, 4);

  Loader b(config(tmp / "train", 8, 3, 2), saved);
  EXPECT_TRUE(take(b, 4) == rest);
  Loader c(config(tmp / "train", 8, 1, 1));
  take(c, 5);
  c.seek(saved);  // restarts a running pipeline
  EXPECT_EQ(c.state(), saved);
  EXPECT_TRUE(take(c, 4) == rest);
  expect_error([&] { c.seek({0, 99}); }, {"cannot resume", "cursor 99"});
  EXPECT_NE(c.next(), nullptr);  // a refused seek leaves the pipeline running
}

TEST(Loader, EvalCoversEverySampleOnceWithAPartialLastBatch) {
  TempDir tmp;
  write_dataset(tmp.path(), 0, 11);
  const Dataset ds = Dataset::open(tmp / "val");
  const DatasetSource src(ds);
  const LoaderConfig cfg = config(tmp / "val", 4, 2, 2, /*train=*/false);
  const size_t pixels = size_t(kImgsz) * kImgsz * 3;
  std::vector<int64_t> seen;
  Loader loader(cfg);
  EXPECT_EQ(loader.num_batches(), 3);
  for (int64_t want_valid : {4, 4, 3}) {
    const Batch* b = loader.next();
    ASSERT_NE(b, nullptr);
    ASSERT_EQ(b->valid, want_valid);
    for (int64_t p = 0; p < 4; ++p) {
      const uint8_t* img = b->images.data<uint8_t>() + p * pixels;
      const float* rows = b->targets.data<float>() + p * cfg.max_boxes * 5;
      if (p < b->valid) {
        seen.push_back(b->index[p]);
        const Labeled want = make_sample(src, b->index[p], {}, cfg.augment, nullptr);  // the letterbox
        EXPECT_EQ(0, std::memcmp(img, want.image.rgb.data(), pixels));
        EXPECT_EQ(b->num_boxes[p], int32_t(std::min<size_t>(want.boxes.size(), 8)));
      } else {  // padding: zero image, no targets
        EXPECT_EQ(b->index[p], -1);
        EXPECT_EQ(b->num_boxes[p], 0);
        EXPECT_TRUE(std::all_of(img, img + pixels, [](uint8_t v) { return v == 0; }));
        for (int k = 0; k < cfg.max_boxes; ++k) EXPECT_LT(rows[5 * k], 0.f);
      }
    }
  }
  EXPECT_EQ(loader.next(), nullptr);
  EXPECT_EQ(loader.next(), nullptr);
  std::vector<int64_t> all(11);
  for (int64_t i = 0; i < 11; ++i) all[size_t(i)] = i;
  EXPECT_EQ(seen, all);  // in file order, each once

  // Two ranks: contiguous ranges [0, 6) and [6, 11) between them cover everything once.
  std::multiset<int64_t> both;
  for (int r = 0; r < 2; ++r) {
    LoaderConfig c = cfg;
    c.world_size = 2;
    c.rank = r;
    c.global_batch = 4;  // 2 per rank
    Loader l(c);
    EXPECT_EQ(l.num_batches(), 3);
    while (const Batch* b = l.next())
      for (int64_t p = 0; p < b->valid; ++p) both.insert(b->index[p]);
  }
  EXPECT_EQ(both, std::multiset<int64_t>(all.begin(), all.end()));
}

TEST(Loader, CorruptImageIsSkippedCountedAndNamed) {
  TempDir tmp;
  write_dataset(tmp.path(), 12, 0, Storage::kEncoded, 4);  // shards of 4 images
  corrupt_image(tmp / "train", 5);                         // image 1 of shard 1
  const std::string shard = tmp / "train/train-00001.h5";
  const std::string file_name = Dataset::open(tmp / "train").meta(5).file_name;

  // kFull recomputes the checksum: the shard is refused before anything is loaded.
  expect_error([&] { Loader l(config(tmp / "train", 12, 2, 2)); }, {"checksum mismatch", shard});

  // kStructure lets it through; the image fails to decode and is replaced by image 6.
  LoaderConfig cfg = config(tmp / "train", 12, 2, 2);
  cfg.verify = Verify::kStructure;
  std::vector<std::string> warnings;
  cfg.warn = [&](const std::string& line) { warnings.push_back(line); };
  Loader loader(cfg);
  for (int epoch = 0; epoch < 3; ++epoch) {  // one step per epoch, each loads all 12
    const Batch* b = loader.next();
    EXPECT_EQ(std::count(b->index.begin(), b->index.end(), 5), 0);
    EXPECT_EQ(std::count(b->index.begin(), b->index.end(), 6), 2);
  }
  EXPECT_EQ(loader.stats().images_skipped, 1);
  ASSERT_EQ(warnings.size(), 1u);  // reported once, not once per use
  for (const std::string& part :
       {shard, file_name, std::string("image 5"), std::string("replaced by image 6")})
    EXPECT_NE(warnings[0].find(part), std::string::npos) << "missing \"" << part << "\" in: " << warnings[0];

  // Evaluation leaves the slot empty rather than scoring another image twice.
  cfg.augment.train = false;
  warnings.clear();
  Loader eval(cfg);
  const Batch* b = eval.next();
  ASSERT_EQ(b->valid, 12);
  EXPECT_EQ(b->index[5], -1);
  EXPECT_EQ(b->num_boxes[5], 0);
  EXPECT_EQ(b->index[6], 6);
  EXPECT_EQ(eval.stats().images_skipped, 1);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("left out of evaluation"), std::string::npos) << warnings[0];
}

TEST(Loader, NoLoadableImageThrowsNamingTheRecord) {
  TempDir tmp;
  write_dataset(tmp.path(), 4, 0, Storage::kEncoded, 4);
  for (int64_t i = 0; i < 4; ++i) corrupt_image(tmp / "train", i);
  LoaderConfig cfg = config(tmp / "train", 4, 2, 2);
  cfg.verify = Verify::kStructure;
  Loader loader(cfg);
  const std::vector<std::string> parts = {"none of its 4 images can be loaded", tmp / "train/train-00000.h5",
                                          "(epoch 0, position"};
  expect_error([&] { loader.next(); }, parts);
  expect_error([&] { loader.next(); }, parts);  // stays failed; and the destructor does not hang
}

TEST(Loader, BadConfigFailsAtConstruction) {
  TempDir tmp;
  write_dataset(tmp.path(), 10, 0);
  LoaderConfig c = config(tmp / "train", 6, 1, 1);
  c.world_size = 4;
  expect_error([&] { Loader l(c); }, {"global batch 6", "4 ranks"});
  expect_error([&] { Loader l(config(tmp / "train", 16, 1, 1)); }, {"10 training samples", "16"});
  c = config(tmp / "train", 4, 1, 0);
  expect_error([&] { Loader l(c); }, {"prefetch 0", tmp / "train"});
  expect_error([&] { Loader l(config(tmp / "missing", 4, 1, 1)); }, {tmp / "missing"});
}

TEST(Loader, StopsCleanlyWhileThreadsAreBusy) {
  TempDir tmp;
  write_dataset(tmp.path(), 20, 0);
  for (int taken = 0; taken < 3; ++taken) {
    Loader l(config(tmp / "train", 4, 3, 4));
    take(l, taken);  // destroyed with the ring full, partly full, or still filling
  }
}

TEST(Loader, CudaBatchesEqualHostBatches) {
  TempDir tmp;
  write_dataset(tmp.path(), 20, 0);
  LoaderConfig cfg = config(tmp / "train", 8, 2, 2);
  cfg.device = Device::kCUDA;
  if (!test::has_gpu()) {
    expect_error([&] { Loader l(cfg); }, {"CUDA"});  // refused, never silently on the host
    GTEST_SKIP() << "no CUDA device (or build without CUDA)";
  }
  Loader host(config(tmp / "train", 8, 2, 2)), dev(cfg);
  for (int step = 0; step < 5; ++step) {
    const Batch* b = dev.next();
    ASSERT_TRUE(b->images.is_cuda());
    EXPECT_TRUE(copy_of(*b) == copy_of(*host.next())) << "step " << step;
  }
  const LoaderState s = dev.state();
  const std::vector<Copy> rest = take(host, 3);
  dev.seek(s);
  EXPECT_TRUE(take(dev, 3) == rest);
}

}  // namespace
}  // namespace vt::data
