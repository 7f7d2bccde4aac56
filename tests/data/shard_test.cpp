// Shards and datasets: writing and reading back (both storages, across shard boundaries),
// byte-identical output, and every kind of bad shard failing Dataset::open with the file
// and dataset named.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "data/codec.h"
#include "data/dataset.h"
#include "data/dataset_writer.h"
#include "tests/data/data_fixtures.h"

namespace vt::data {
namespace {

using testing::expect_error;
using testing::gradient_image;
using testing::TempDir;

const std::vector<std::string> kNames = {"a", "b", "c"};

// Image i: (10 + i) x (20 + 2i) PNG with i % 3 boxes; box k of image i has class k.
Sample make_sample(int64_t i, Storage storage, int imgsz) {
  Sample s;
  const Image img = gradient_image(10 + int(i), 20 + 2 * int(i), int(i));
  s.record.file_name = "img" + std::to_string(i) + ".png";
  s.record.image_id = 100 + i;
  s.record.orig_h = img.h;
  s.record.orig_w = img.w;
  for (int k = 0; k < i % 3; ++k) s.record.boxes.push_back({1.f + k, 2.f, 5.f + k, 9.f, k});
  if (storage == Storage::kEncoded) {
    s.payload = encode_png(img);
  } else {
    s.payload.assign(size_t(imgsz) * imgsz * 3, static_cast<uint8_t>(i));
    s.record.letterbox = {0.5f, 1.f, float(i)};
  }
  return s;
}

Manifest write_test_dataset(const std::string& dir, Storage storage, int n = 5, int shard_size = 2,
                            int threads = 2) {
  WriteOptions opt;
  opt.out_dir = dir;
  opt.split = "train";
  opt.storage = storage;
  opt.imgsz = storage == Storage::kRaw ? 16 : 0;
  opt.shard_size = shard_size;
  opt.threads = threads;
  ConvertReport report;
  report.format = "test";
  return write_dataset(
      n, kNames, [&](int64_t i) { return make_sample(i, storage, opt.imgsz); }, report, opt);
}

TEST(Shard, EncodedRoundTripAcrossShards) {
  TempDir tmp;
  const Manifest m = write_test_dataset(tmp.path(), Storage::kEncoded);
  ASSERT_EQ(m.shards.size(), 3u);  // 2 + 2 + 1
  EXPECT_EQ(m.shards[0].file, "train-00000.h5");
  EXPECT_EQ(m.shards[2].file, "train-00002.h5");
  EXPECT_EQ(m.total_boxes, 0 + 1 + 2 + 0 + 1);
  EXPECT_EQ(m.per_class, (std::vector<int64_t>{3, 1, 0}));

  const Dataset ds = Dataset::open(tmp.path(), Verify::kFull);
  EXPECT_EQ(ds.size(), 5);
  EXPECT_EQ(ds.class_names(), kNames);
  EXPECT_EQ(ds.storage(), Storage::kEncoded);
  for (int64_t i = 0; i < 5; ++i) {
    const Record r = ds.meta(i);
    const Sample want = make_sample(i, Storage::kEncoded, 0);
    EXPECT_EQ(r.file_name, want.record.file_name);
    EXPECT_EQ(r.image_id, 100 + i);
    EXPECT_EQ(r.orig_h, 10 + i);
    EXPECT_EQ(r.orig_w, 20 + 2 * i);
    ASSERT_EQ(r.boxes.size(), size_t(i % 3));
    for (size_t k = 0; k < r.boxes.size(); ++k) {
      EXPECT_FLOAT_EQ(r.boxes[k].x1, 1.f + k);
      EXPECT_FLOAT_EQ(r.boxes[k].y2, 9.f);
      EXPECT_EQ(r.boxes[k].cls, int(k));
    }
    std::vector<uint8_t> bytes;
    ds.read_encoded(i, bytes);
    EXPECT_EQ(bytes, want.payload);
    EXPECT_EQ(ds.read_image(i).rgb, gradient_image(10 + int(i), 20 + 2 * int(i), int(i)).rgb);
  }
  for (const ShardCheck& c : ds.verify_checksums(2)) EXPECT_TRUE(c.ok()) << c.path;
  expect_error([&] { ds.meta(5); }, {"out of range"});
}

TEST(Shard, RawRoundTrip) {
  TempDir tmp;
  write_test_dataset(tmp.path(), Storage::kRaw);
  const Dataset ds = Dataset::open(tmp.path(), Verify::kFull);
  EXPECT_EQ(ds.imgsz(), 16);
  std::vector<uint8_t> px(16 * 16 * 3);
  for (int64_t i = 0; i < 5; ++i) {
    ds.read_raw(i, px.data());
    EXPECT_EQ(px, std::vector<uint8_t>(px.size(), static_cast<uint8_t>(i)));
    EXPECT_FLOAT_EQ(ds.meta(i).letterbox.pad_y, float(i));
  }
}

TEST(Shard, ConcurrentReadsAgree) {
  // Many threads reading through the same descriptors with pread, no locks.
  TempDir tmp;
  write_test_dataset(tmp.path(), Storage::kEncoded, 9, 4);
  const Dataset ds = Dataset::open(tmp.path());
  std::vector<std::vector<uint8_t>> want(9);
  for (int64_t i = 0; i < 9; ++i) ds.read_encoded(i, want[i]);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; ++t)
    pool.emplace_back([&, t] {
      std::vector<uint8_t> got;
      for (int rep = 0; rep < 50; ++rep)
        for (int64_t k = 0; k < 9; ++k) {
          const int64_t i = (k * 5 + t + rep) % 9;
          ds.read_encoded(i, got);
          if (got != want[i]) ++mismatches;
        }
    });
  for (std::thread& th : pool) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(Shard, OutputIsByteIdenticalForAnyThreadCount) {
  TempDir a, b;
  write_test_dataset(a.path(), Storage::kEncoded, 7, 3, 1);
  write_test_dataset(b.path(), Storage::kEncoded, 7, 3, 4);
  EXPECT_EQ(testing::snapshot(a.path()), testing::snapshot(b.path()));
}

TEST(Shard, RefusesToOverwriteUnlessAsked) {
  TempDir tmp;
  write_test_dataset(tmp.path(), Storage::kEncoded);
  expect_error([&] { write_test_dataset(tmp.path(), Storage::kEncoded); }, {"already holds a dataset"});
}

// --- bad shards ----------------------------------------------------------------------------

// Replaces dataset `name` of a shard by one of the given type and shape (HDF5 C API), then
// updates the manifest's recorded size so that the size check passes and the shape or type
// check is what must catch it.
void replace_dataset(const std::string& dir, const std::string& shard, const std::string& name, hid_t type,
                     const std::vector<hsize_t>& dims, const void* data) {
  const std::string path = dir + "/" + shard;
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  if (H5Lexists(f, name.c_str(), H5P_DEFAULT) > 0) {
    ASSERT_GE(H5Ldelete(f, name.c_str(), H5P_DEFAULT), 0);
  }
  if (type >= 0) {
    const hid_t space = H5Screate_simple(int(dims.size()), dims.data(), nullptr);
    const hid_t d = H5Dcreate2(f, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(d, 0);
    if (data) {
      ASSERT_GE(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), 0);
    }
    H5Dclose(d);
    H5Sclose(space);
  }
  H5Fclose(f);
  Manifest m = Manifest::load(dir);
  for (ShardEntry& e : m.shards)
    if (e.file == shard) e.bytes = file_size(path);
  m.save(dir);
}

class BadShard : public ::testing::Test {
 protected:
  void SetUp() override { write_test_dataset(tmp_.path(), Storage::kEncoded); }
  std::string shard(int k) const { return tmp_ / ("train-0000" + std::to_string(k) + ".h5"); }
  void expect_open_fails(const std::vector<std::string>& parts, Verify v = Verify::kStructure) {
    expect_error([&] { Dataset::open(tmp_.path(), v); }, parts);
  }
  TempDir tmp_;
};

TEST_F(BadShard, MissingShard) {
  std::filesystem::remove(shard(1));
  expect_open_fails({"missing shard", shard(1), "manifest.json"});
}

TEST_F(BadShard, TruncatedShard) {
  const int64_t size = file_size(shard(1));
  ASSERT_EQ(::truncate(shard(1).c_str(), size / 2), 0);
  expect_open_fails({shard(1), "truncated"});
  // Even when the manifest agrees with the new size, HDF5 must refuse it by name.
  Manifest m = Manifest::load(tmp_.path());
  m.shards[1].bytes = size / 2;
  m.save(tmp_.path());
  expect_open_fails({shard(1), "not a readable HDF5 file"});
}

TEST_F(BadShard, FlippedPayloadByteIsAChecksumMismatch) {
  // Find /image_bytes in the file, then flip one byte of it with plain file I/O.
  const hid_t f = H5Fopen(shard(2).c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  const hid_t d = H5Dopen2(f, "/image_bytes", H5P_DEFAULT);
  const haddr_t offset = H5Dget_offset(d);
  H5Dclose(d);
  H5Fclose(f);
  std::vector<uint8_t> bytes = read_file(shard(2));
  bytes[offset + 30] ^= 0x01;
  testing::write_bytes(shard(2), bytes);

  EXPECT_NO_THROW(Dataset::open(tmp_.path(), Verify::kStructure));  // structure is intact
  expect_open_fails({"checksum mismatch", shard(2)}, Verify::kFull);
  const std::vector<ShardCheck> checks = Dataset::open(tmp_.path()).verify_checksums(1);
  EXPECT_TRUE(checks[0].ok());
  EXPECT_TRUE(checks[1].ok());
  EXPECT_FALSE(checks[2].ok());
}

TEST_F(BadShard, WrongShape) {
  // Shard 0 holds images 0 and 1: one box. Three columns instead of four.
  const float boxes[3] = {1, 2, 3};
  replace_dataset(tmp_.path(), "train-00000.h5", "/boxes", H5T_NATIVE_FLOAT, {1, 3}, boxes);
  expect_open_fails({shard(0), "/boxes", "shape (1, 3)", "expected (1, 4)"});
}

TEST_F(BadShard, WrongType) {
  const float classes[1] = {0};
  replace_dataset(tmp_.path(), "train-00000.h5", "/classes", H5T_NATIVE_FLOAT, {1}, classes);
  expect_open_fails({shard(0), "/classes", "float32", "expected int32"});
}

TEST_F(BadShard, MissingDataset) {
  replace_dataset(tmp_.path(), "train-00001.h5", "/orig_size", -1, {}, nullptr);
  expect_open_fails({shard(1), "missing dataset /orig_size"});
}

TEST_F(BadShard, OffsetsOutOfOrder) {
  const int64_t offsets[3] = {0, 2, 1};  // shard 1: images 2 and 3, three boxes
  replace_dataset(tmp_.path(), "train-00001.h5", "/box_offsets", H5T_NATIVE_INT64, {3}, offsets);
  expect_open_fails({shard(1), "/box_offsets", "not monotone"});
}

TEST_F(BadShard, ManifestDisagreesWithShard) {
  Manifest m = Manifest::load(tmp_.path());
  m.schema.class_names[1] = "zebra";
  m.save(tmp_.path());
  expect_open_fails({shard(0), "class_names"});
}

TEST_F(BadShard, NoManifest) {
  std::filesystem::remove(tmp_ / "manifest.json");
  expect_open_fails({tmp_.path(), "no manifest.json"});
}

}  // namespace
}  // namespace vt::data
