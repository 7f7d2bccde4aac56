// The versioned checkpoint directory: file names, retention against an independent oracle over
// a sequence of commits, the `latest` pointer that is never pruned, removal of a killed writer's
// temporaries, and resume that falls back past corrupt, truncated and missing checkpoints.
#include "checkpoints/store.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "data/fileio.h"
#include "tests/test_util.h"

namespace vt::ckpt {
namespace {

namespace fs = std::filesystem;

constexpr double kNone = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Other people's files that share the directory: similar names, none of the exact pattern.
const std::vector<std::string> kForeignFiles = {"notes.txt",
                                                "best.h5",
                                                "ckpt-12.h5",
                                                "ckpt-0000000001.h5.bak",
                                                "my-ckpt-0000000001.h5",
                                                "ckpt-00000000012.h5",
                                                "ckpt-000000001a.h5",
                                                "CKPT-0000000001.h5"};

class StoreTest : public ::testing::Test {
 protected:

  std::string at(const std::string& name) const { return dir_ + "/" + name; }
  void write(const std::string& name, const std::string& text) const { std::ofstream(at(name)) << text; }
  std::string read(const std::string& name) const { return data::read_text_file(at(name)); }

  // A checkpoint whose tensor holds step * 1000 + i: a byte pattern found in its file only.
  static Checkpoint sample(int64_t step) {
    std::vector<float> w(64);
    for (int i = 0; i < 64; ++i) w[i] = static_cast<float>(step * 1000 + i);
    Checkpoint c;
    c.put("params/w", {64}, w);
    return c;
  }
  static std::string commit(CheckpointStore& s, int64_t step, double fitness) {
    Checkpoint c = sample(step);
    return s.commit(c, step, fitness);
  }
  static std::set<int64_t> steps(const CheckpointStore& s) {
    std::set<int64_t> out;
    for (const auto& e : s.list()) out.insert(e.step);
    return out;
  }
  // Flips one bit inside the tensor data of the checkpoint of `step`; false if not found.
  bool flip_tensor_byte(const std::string& path, int64_t step) const {
    std::vector<uint8_t> bytes = data::read_file(path);
    const float needle[2] = {static_cast<float>(step * 1000 + 10), static_cast<float>(step * 1000 + 11)};
    auto it = std::search(bytes.begin(), bytes.end(), reinterpret_cast<const uint8_t*>(needle),
                          reinterpret_cast<const uint8_t*>(needle) + sizeof(needle));
    if (it == bytes.end()) return false;
    *it ^= 0x01;
    std::ofstream(path, std::ios::binary | std::ios::trunc)
        .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    return true;
  }
  static void truncate_to_half(const std::string& path) { fs::resize_file(path, fs::file_size(path) / 2); }

  test::TempDir tmp_{"vt-store-"};
  const std::string dir_ = tmp_.path();
};

TEST_F(StoreTest, FileNameIsZeroPaddedToTenDigits) {
  EXPECT_EQ(CheckpointStore::file_name(123), "ckpt-0000000123.h5");
  EXPECT_EQ(CheckpointStore::file_name(0), "ckpt-0000000000.h5");
  EXPECT_EQ(CheckpointStore::file_name(9999999999), "ckpt-9999999999.h5");
  test::expect_error([] { CheckpointStore::file_name(-1); }, {"step -1", "10-digit"});
  test::expect_error([] { CheckpointStore::file_name(10000000000); }, {"step 10000000000"});
}

TEST_F(StoreTest, ListHasOnlyThePatternInStepOrder) {
  for (const auto& f : kForeignFiles) write(f, "x");
  for (const char* f : {"ckpt-0000000300.h5", "ckpt-0000000002.h5", "ckpt-0000000010.h5"}) write(f, "x");
  fs::create_directory(at("ckpt-0000000005.h5"));  // a directory with the pattern's name
  CheckpointStore s(dir_, {});
  const auto entries = s.list();
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].step, 2);
  EXPECT_EQ(entries[0].path, at("ckpt-0000000002.h5"));
  EXPECT_EQ(entries[1].step, 10);
  EXPECT_EQ(entries[2].step, 300);
  EXPECT_EQ(s.latest(), "");
  EXPECT_EQ(s.dir(), dir_);
}

TEST_F(StoreTest, CommitWritesStepFitnessAndLatest) {
  CheckpointStore s(dir_, {});
  const std::string path = commit(s, 7, 0.1);
  EXPECT_EQ(path, at("ckpt-0000000007.h5"));
  EXPECT_EQ(read("latest"), "ckpt-0000000007.h5\n");
  EXPECT_EQ(s.latest(), path);
  const Checkpoint attrs = Checkpoint::load_attrs(path);
  EXPECT_TRUE(attrs.tensors().empty());
  EXPECT_EQ(attrs.get_int("step"), 7);
  EXPECT_EQ(attrs.get_string("fitness"), "0.10000000000000001");  // %.17g: the double exactly
  EXPECT_EQ(Checkpoint::load(path).get("params/w").data[3], 7003.0f);
  commit(s, 8, kNone);
  EXPECT_EQ(Checkpoint::load_attrs(at("ckpt-0000000008.h5")).get_string("fitness"), "nan");
  EXPECT_EQ(read("latest"), "ckpt-0000000008.h5\n");
}

// The oracle: what the policy keeps once `history` (ascending steps) has been committed. Written
// from the policy's definition with plain loops; since steps ascend, a file pruned earlier is
// never wanted again, so the state after a sequence equals the policy over the whole history.
std::set<int64_t> expected_kept(const std::vector<std::pair<int64_t, double>>& history,
                                const RetentionPolicy& p) {
  std::set<int64_t> keep;
  const size_t n = history.size();
  for (size_t i = 0; i < n; ++i) {
    const int64_t step = history[i].first;
    if (n - i <= static_cast<size_t>(p.keep_last)) keep.insert(step);
    if (p.milestone_every > 0 && step % p.milestone_every == 0) keep.insert(step);
  }
  if (p.keep_best) {
    int best = -1;
    for (size_t i = 0; i < n; ++i)
      if (std::isfinite(history[i].second) && (best < 0 || history[i].second >= history[best].second))
        best = static_cast<int>(i);
    if (best >= 0) keep.insert(history[best].first);
  }
  keep.insert(history.back().first);  // latest
  return keep;
}

// Twelve commits with fitness that rises, falls, ties (8 and 12 both 0.3: 12 wins), is sometimes
// absent, and once infinite (not finite: never the best); steps include multiples of 4 and of 5.
// Returns the steps left at the end.
std::set<int64_t> run_sequence(const std::string& dir, const RetentionPolicy& policy) {
  const std::vector<std::pair<int64_t, double>> seq = {{3, kNone}, {5, -0.1},   {8, 0.3},   {10, 0.2},
                                                       {12, 0.3},  {15, kNone}, {16, 0.25}, {20, 0.5},
                                                       {21, kInf}, {25, kNone}, {30, 0.4},  {32, 0.45}};
  for (const auto& f : kForeignFiles) std::ofstream(dir + "/" + f) << "user data " << f;
  fs::create_directory(dir + "/ckpt-0000000004.h5");  // never a commit step here
  CheckpointStore s(dir, policy);
  std::vector<std::pair<int64_t, double>> history;
  for (const auto& [step, fitness] : seq) {
    Checkpoint c;
    c.put("w", {1}, {static_cast<float>(step)});
    const std::string path = s.commit(c, step, fitness);
    history.push_back({step, fitness});
    std::set<int64_t> on_disk;
    for (const auto& e : s.list()) on_disk.insert(e.step);
    EXPECT_EQ(on_disk, expected_kept(history, policy)) << "after committing step " << step;
    EXPECT_EQ(s.latest(), path);
    EXPECT_TRUE(fs::is_regular_file(s.latest()));
  }
  for (const auto& f : kForeignFiles)
    EXPECT_EQ(data::read_text_file(dir + "/" + f), "user data " + f) << f << " was touched";
  EXPECT_TRUE(fs::is_directory(dir + "/ckpt-0000000004.h5"));
  std::set<int64_t> out;
  for (const auto& e : s.list()) out.insert(e.step);
  return out;
}

// The final sets, also worked out by hand, check the oracle itself.
TEST_F(StoreTest, RetentionKeepsLastThreeAndBest) {
  EXPECT_EQ(run_sequence(dir_, {3, true, 0}), (std::set<int64_t>{20, 25, 30, 32}));
}

TEST_F(StoreTest, RetentionKeepsLastTwoAndMultiplesOfFourWithoutBest) {
  EXPECT_EQ(run_sequence(dir_, {2, false, 4}), (std::set<int64_t>{8, 12, 16, 20, 30, 32}));
}

TEST_F(StoreTest, RetentionKeepsLastOneBestAndMultiplesOfFive) {
  EXPECT_EQ(run_sequence(dir_, {1, true, 5}), (std::set<int64_t>{5, 10, 15, 20, 25, 30, 32}));
}

// A run resumed from an older checkpoint commits below the newest step: with keep_last 1 and no
// best, the policy alone would delete the file just committed, which `latest` names.
TEST_F(StoreTest, TheFileLatestNamesIsNeverPruned) {
  CheckpointStore s(dir_, {1, false, 0});
  commit(s, 100, kNone);
  commit(s, 200, kNone);
  EXPECT_EQ(steps(s), (std::set<int64_t>{200}));
  const std::string p150 = commit(s, 150, kNone);
  EXPECT_EQ(steps(s), (std::set<int64_t>{150, 200}));
  EXPECT_EQ(s.latest(), p150);
  commit(s, 120, kNone);  // 150 is no longer named: it goes; 200 stays the newest
  EXPECT_EQ(steps(s), (std::set<int64_t>{120, 200}));
  EXPECT_EQ(s.latest(), at("ckpt-0000000120.h5"));
  commit(s, 300, kNone);
  EXPECT_EQ(steps(s), (std::set<int64_t>{300}));
}

// Files committed before (an earlier process, or by hand) are ranked by their stored fitness;
// one whose attributes cannot be read ranks as having none but still counts for keep_last.
TEST_F(StoreTest, ExistingFilesAreRankedByTheirStoredAttributes) {
  Checkpoint good = sample(5);
  good.set("fitness", std::string("0.9"));
  good.save(at("ckpt-0000000005.h5"));
  sample(4).save(at("ckpt-0000000004.h5"));  // no fitness attribute
  write("ckpt-0000000006.h5", "not hdf5");
  CheckpointStore s(dir_, {2, true, 0});
  commit(s, 7, 0.5);
  EXPECT_EQ(steps(s), (std::set<int64_t>{5, 6, 7}));  // 6 is among the newest two
  commit(s, 8, 0.1);
  EXPECT_EQ(steps(s), (std::set<int64_t>{5, 7, 8}));
  commit(s, 9, 0.95);
  EXPECT_EQ(steps(s), (std::set<int64_t>{8, 9}));
}

// Committed files are immutable, so a store reads each one's fitness once. Replacing a file
// behind its back (which nothing should do) shows it: this store keeps using the cached value,
// while a new store on the directory reads the file again.
TEST_F(StoreTest, FitnessIsReadOncePerFile) {
  {
    CheckpointStore s(dir_, {1, true, 0});
    commit(s, 1, 0.9);
    Checkpoint replaced = sample(1);
    replaced.set("fitness", std::string("0"));
    replaced.save(at("ckpt-0000000001.h5"));
    commit(s, 2, 0.5);
    EXPECT_EQ(steps(s), (std::set<int64_t>{1, 2}));  // 1 is still best by its cached 0.9
  }
  CheckpointStore s(dir_, {1, true, 0});
  commit(s, 3, 0.4);
  EXPECT_EQ(steps(s), (std::set<int64_t>{2, 3}));  // 1 read again: 0 < 0.5
}

TEST_F(StoreTest, ConstructorRemovesOnlyItsOwnStaleTemporaries) {
  const std::vector<std::string> own = {"ckpt-0000000007.h5.tmp.12345", "ckpt-0000000008.h5.tmp.1",
                                        "latest.tmp"};
  const std::vector<std::string> foreign = {
      "ckpt-7.h5.tmp.1", "my-ckpt-0000000007.h5.tmp.1", "ckpt-0000000007.h5.tmp", "latest.tmp.1",
      "notes.tmp",       "ckpt-0000000007.h5.tmp1",     "ckpt-0000000007.h5",     "latest",
      "xlatest.tmp"};
  for (const auto& f : own) write(f, "partial");
  for (const auto& f : foreign) write(f, "keep");
  fs::create_directory(at("ckpt-0000000009.h5.tmp.2"));
  CheckpointStore s(dir_, {1, true, 0});
  for (const auto& f : own) EXPECT_FALSE(fs::exists(at(f))) << f;
  for (const auto& f : foreign) EXPECT_EQ(read(f), "keep") << f;
  EXPECT_TRUE(fs::is_directory(at("ckpt-0000000009.h5.tmp.2")));

  CheckpointStore nested(dir_ + "/a/b", {});
  EXPECT_TRUE(fs::is_directory(dir_ + "/a/b"));
  test::expect_error([&] { CheckpointStore(dir_, {0, true, 0}); }, {dir_, "keep_last is 0"});
}

TEST_F(StoreTest, ResumeTakesTheNewestWithoutNotes) {
  CheckpointStore s(dir_, {3, false, 0});
  std::vector<std::string> notes;
  EXPECT_FALSE(s.load_newest_good(&notes).has_value());
  EXPECT_TRUE(notes.empty());
  commit(s, 10, 0.1);
  commit(s, 20, 0.2);
  const std::string p30 = commit(s, 30, 0.3);
  const auto got = s.load_newest_good(&notes);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->first, p30);
  EXPECT_EQ(got->second.get_int("step"), 30);
  EXPECT_EQ(got->second.get("params/w").data[63], 30063.0f);
  EXPECT_TRUE(notes.empty());
}

TEST_F(StoreTest, ResumeTriesLatestsTargetFirst) {
  CheckpointStore s(dir_, {3, false, 0});
  const std::string p10 = commit(s, 10, kNone);
  commit(s, 20, kNone);
  write("latest", "ckpt-0000000010.h5\n");
  std::vector<std::string> notes;
  const auto got = s.load_newest_good(&notes);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->first, p10);
  EXPECT_TRUE(notes.empty());
}

TEST_F(StoreTest, ResumeFallsBackPastAFlippedByte) {
  CheckpointStore s(dir_, {3, false, 0});
  commit(s, 10, kNone);
  const std::string p20 = commit(s, 20, kNone);
  const std::string p30 = commit(s, 30, kNone);
  ASSERT_TRUE(flip_tensor_byte(p30, 30));
  test::expect_error([&] { Checkpoint::load(p30); }, {p30, "params/w", "CRC32C mismatch"});
  std::vector<std::string> notes;
  const auto got = s.load_newest_good(&notes);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->first, p20);
  EXPECT_EQ(got->second.get_int("step"), 20);
  ASSERT_EQ(notes.size(), 1u);
  for (const char* needle : {"params/w", "CRC32C mismatch", "falling back to"})
    EXPECT_NE(notes[0].find(needle), std::string::npos) << needle << " not in: " << notes[0];
  EXPECT_NE(notes[0].find(p30), std::string::npos) << notes[0];
  EXPECT_NE(notes[0].find(p20), std::string::npos) << notes[0];
}

TEST_F(StoreTest, ResumeFallsBackPastATruncatedFile) {
  CheckpointStore s(dir_, {3, false, 0});
  const std::string p10 = commit(s, 10, kNone);
  const std::string p20 = commit(s, 20, kNone);
  truncate_to_half(p20);
  test::expect_error([&] { Checkpoint::load(p20); }, {p20, "cannot be opened"});
  std::vector<std::string> notes;
  const auto got = s.load_newest_good(&notes);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->first, p10);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find(p20), std::string::npos) << notes[0];
  EXPECT_NE(notes[0].find("falling back"), std::string::npos) << notes[0];
}

TEST_F(StoreTest, ResumeFallsBackWhenLatestNamesAMissingFile) {
  CheckpointStore s(dir_, {3, false, 0});
  commit(s, 10, kNone);
  const std::string p20 = commit(s, 20, kNone);
  write("latest", "ckpt-0000000099.h5\n");
  std::vector<std::string> notes;
  const auto got = s.load_newest_good(&notes);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->first, p20);
  ASSERT_EQ(notes.size(), 1u);
  for (const std::string& needle : {at("ckpt-0000000099.h5"), std::string("latest"),
                                    std::string("does not exist"), std::string("falling back")})
    EXPECT_NE(notes[0].find(needle), std::string::npos) << needle << " not in: " << notes[0];
}

TEST_F(StoreTest, ResumeFallsBackWhenLatestCannotBeRead) {
  CheckpointStore s(dir_, {3, false, 0});
  const std::string p10 = commit(s, 10, kNone);
  fs::remove(at("latest"));
  fs::create_directory(at("latest"));
  std::vector<std::string> notes;
  const auto got = s.load_newest_good(&notes);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->first, p10);
  ASSERT_EQ(notes.size(), 1u);
  for (const std::string& needle :
       {at("latest"), std::string("not a regular file"), std::string("falling back")})
    EXPECT_NE(notes[0].find(needle), std::string::npos) << needle << " not in: " << notes[0];
}

TEST_F(StoreTest, ResumeWithEveryFileCorruptFindsNothingAndSaysWhyForEach) {
  CheckpointStore s(dir_, {3, false, 0});
  const std::string p10 = commit(s, 10, kNone);
  const std::string p20 = commit(s, 20, kNone);
  const std::string p30 = commit(s, 30, kNone);
  ASSERT_TRUE(flip_tensor_byte(p30, 30));
  truncate_to_half(p20);
  write("ckpt-0000000010.h5", "not hdf5");
  std::vector<std::string> notes;
  EXPECT_FALSE(s.load_newest_good(&notes).has_value());
  ASSERT_EQ(notes.size(), 3u);  // latest names 30: tried once
  EXPECT_NE(notes[0].find(p30), std::string::npos) << notes[0];
  EXPECT_NE(notes[0].find("CRC32C mismatch"), std::string::npos) << notes[0];
  EXPECT_NE(notes[1].find(p20), std::string::npos) << notes[1];
  EXPECT_NE(notes[2].find(p10), std::string::npos) << notes[2];
  EXPECT_NE(notes[2].find("no older checkpoint"), std::string::npos) << notes[2];
  EXPECT_FALSE(s.load_newest_good(nullptr).has_value());
}

}  // namespace
}  // namespace vt::ckpt
