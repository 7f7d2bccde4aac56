// Checkpoint files: round trip, corruption detection naming file and tensor, atomic save,
// and readability by h5py (the format is meant for other tools too).
#include "checkpoints/checkpoint.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "data/fileio.h"
#include "tests/test_util.h"

namespace vt::ckpt {
namespace {

namespace fs = std::filesystem;

// Flips one bit inside the data of sample()'s optim/momentum tensor (found by its values
// 1010, 1011), as a disk error would; false when the pattern is not in the file.
bool flip_byte_of_momentum(const std::string& path) {
  std::vector<uint8_t> bytes = data::read_file(path);
  const float needle[2] = {1010.0f, 1011.0f};
  auto it = std::search(bytes.begin(), bytes.end(), reinterpret_cast<const uint8_t*>(needle),
                        reinterpret_cast<const uint8_t*>(needle) + sizeof(needle));
  if (it == bytes.end()) return false;
  *it ^= 0x01;
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  return true;
}

class CheckpointTest : public ::testing::Test {
 protected:
  Checkpoint sample() const {
    Checkpoint c;
    c.put("params/model.0.conv.weight", {2, 3, 3, 1}, std::vector<float>(18, 0.25f));
    // A distinctive pattern, easy to find in the file's bytes.
    std::vector<float> pattern(64);
    for (int i = 0; i < 64; ++i) pattern[i] = 1000.0f + i;
    c.put("optim/momentum", {64}, pattern);
    c.put("step_marker", {1}, {7.0f});
    c.set("step", int64_t{1234});
    c.set("config", std::string("{\"lr0\": 0.01}"));
    return c;
  }
  test::TempDir tmp_{"vt-ckpt-"};
  const std::string dir_ = tmp_.path();
};

TEST_F(CheckpointTest, RoundTripKeepsTensorsAndAttributes) {
  const std::string path = dir_ + "/ckpt-00001234.h5";
  sample().save(path);
  const Checkpoint c = Checkpoint::load(path);
  EXPECT_EQ(c.tensors().size(), 3u);
  EXPECT_EQ(c.get("params/model.0.conv.weight").shape, (std::vector<int64_t>{2, 3, 3, 1}));
  EXPECT_EQ(c.get("optim/momentum").data[63], 1063.0f);
  EXPECT_EQ(c.get("step_marker").data[0], 7.0f);
  EXPECT_EQ(c.get_int("step"), 1234);
  EXPECT_EQ(c.get_string("config"), "{\"lr0\": 0.01}");
  test::expect_error([&] { c.get("nope"); }, {"no tensor 'nope'"});
  test::expect_error([&] { c.get_int("config"); }, {"no integer attribute 'config'"});
  // Only the committed file remains: the temp file was renamed, not copied.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir_)) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST_F(CheckpointTest, FlippedByteIsNamedWithTheTensor) {
  const std::string path = dir_ + "/c.h5";
  sample().save(path);
  ASSERT_TRUE(flip_byte_of_momentum(path));
  test::expect_error([&] { Checkpoint::load(path); }, {path, "optim/momentum", "CRC32C mismatch"});
}

TEST_F(CheckpointTest, TruncatedMissingAndForeignFilesAreRefused) {
  const std::string path = dir_ + "/c.h5";
  sample().save(path);
  fs::resize_file(path, fs::file_size(path) / 2);
  test::expect_error([&] { Checkpoint::load(path); }, {path, "cannot be opened"});
  test::expect_error([&] { Checkpoint::load(dir_ + "/none.h5"); }, {"none.h5 does not exist"});
  std::ofstream(dir_ + "/text.h5") << "not hdf5";
  test::expect_error([&] { Checkpoint::load(dir_ + "/text.h5"); }, {"text.h5", "cannot be opened"});
}

// load_attrs reads the root only: a tensor's flipped byte goes unnoticed there (load sees it),
// while a file that cannot be opened at all is refused the same way.
TEST_F(CheckpointTest, LoadAttrsReadsOnlyTheRoot) {
  const std::string path = dir_ + "/c.h5";
  sample().save(path);
  ASSERT_TRUE(flip_byte_of_momentum(path));
  test::expect_error([&] { Checkpoint::load(path); }, {path, "optim/momentum", "CRC32C mismatch"});
  const Checkpoint attrs = Checkpoint::load_attrs(path);
  EXPECT_TRUE(attrs.tensors().empty());
  EXPECT_EQ(attrs.get_int("step"), 1234);
  EXPECT_EQ(attrs.get_string("config"), "{\"lr0\": 0.01}");
  EXPECT_FALSE(attrs.has_attr("format_version"));
  fs::resize_file(path, fs::file_size(path) / 2);
  test::expect_error([&] { Checkpoint::load_attrs(path); }, {path, "cannot be opened"});
  test::expect_error([&] { Checkpoint::load_attrs(dir_ + "/none.h5"); }, {"none.h5 does not exist"});
}

TEST_F(CheckpointTest, BadNamesAndShapesAreRefused) {
  Checkpoint c;
  test::expect_error([&] { c.put("a/b/c", {1}, {1.0f}); }, {"'a/b/c'", "'group/name'"});
  test::expect_error([&] { c.put("/a", {1}, {1.0f}); }, {"'/a'"});
  test::expect_error([&] { c.put("a", {2, 2}, {1.0f}); }, {"'a'", "1 values for a shape of 4"});
}

TEST_F(CheckpointTest, ReadableWithH5py) {
  const std::string py = VT_PYTHON;
  if (!fs::exists(py) || std::system((py + " -c 'import h5py' 2>/dev/null").c_str()) != 0)
    GTEST_SKIP() << "no Python with h5py at " << py << " (scripts/test.sh creates it)";
  const std::string path = dir_ + "/c.h5";
  sample().save(path);
  const std::string script = dir_ + "/read.py";
  std::ofstream(script) << "import h5py, sys\n"
                           "f = h5py.File(sys.argv[1], 'r')\n"
                           "assert f.attrs['step'] == 1234, f.attrs['step']\n"
                           "assert f.attrs['format_version'] == 1\n"
                           "w = f['params/model.0.conv.weight']\n"
                           "assert w.shape == (2, 3, 3, 1) and abs(float(w[1, 2, 2, 0]) - 0.25) < 1e-9\n"
                           "assert float(f['optim/momentum'][5]) == 1005.0\n";
  EXPECT_EQ(std::system((py + " " + script + " " + path).c_str()), 0);
}

}  // namespace
}  // namespace vt::ckpt
